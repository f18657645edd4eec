/* Reading a whole JSON file (jansson), with errors that name the file and,
 * for a parse error, the line and column. */
#ifndef FINCH_CORE_JSON_H
#define FINCH_CORE_JSON_H

#include <jansson.h>

#include "core/status.h"

/* Parses path into *root (the caller json_decrefs it; NULL on error).
 * FINCH_ENOTFOUND when it does not exist, FINCH_EIO when it cannot be
 * opened, FINCH_EFORMAT "path:line:column: not valid JSON: why". */
finch_status finch_json_read_file(const char *path, json_t **root, finch_err *err);

#endif
