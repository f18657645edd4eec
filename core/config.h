/* Settings: one declarative table (name, environment variable, type,
 * default, bounds, help) in core/config.c. A value resolves, highest first,
 * from a CLI flag (finch_config_set with FINCH_CFG_SRC_FLAG), the environment,
 * the config file (`--config FILE`, else $FINCH_HOME/finch.conf when present;
 * lines `name = value`, '#' comments), then the default. */
#ifndef FINCH_CORE_CONFIG_H
#define FINCH_CORE_CONFIG_H

#include <stdio.h>

#include "core/status.h"

typedef enum { FINCH_CFG_SRC_DEFAULT, FINCH_CFG_SRC_FILE, FINCH_CFG_SRC_ENV, FINCH_CFG_SRC_FLAG } finch_cfg_src;

/* Validates value against the setting's type and bounds. */
finch_status finch_config_set(const char *name, const char *value, finch_cfg_src src, finch_err *err);
/* Reads a config file; errors name the file and line. */
finch_status finch_config_load_file(const char *path, finch_err *err);
/* Applies environment variables; called once at start-up. */
finch_status finch_config_load_env(finch_err *err);

/* The resolved value ("" when unset with no default). Unknown names abort in
 * debug builds; they are programming errors. */
const char *finch_config_get(const char *name);
long finch_config_int(const char *name);
double finch_config_float(const char *name);

/* Prints every setting with its value, source and help. */
void finch_config_print(FILE *out);

#endif
