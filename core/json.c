#include "core/json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

finch_status finch_json_read_file(const char *path, json_t **root, finch_err *err) {
  *root = NULL;
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return finch_err_set(err, errno == ENOENT ? FINCH_ENOTFOUND : FINCH_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
  json_error_t je;
  *root = json_loadf(fp, 0, &je);
  fclose(fp);
  if (!*root) return finch_err_set(err, FINCH_EFORMAT, "%s:%d:%d: not valid JSON: %s", path, je.line, je.column, je.text);
  return FINCH_OK;
}
