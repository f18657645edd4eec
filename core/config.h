/* Settings: one declarative table (name, environment variable, type,
 * default, bounds, help) in core/config.c. A value resolves, highest first,
 * from a CLI flag (finch_config_set with FINCH_CFG_SRC_FLAG), the environment,
 * the config file (`--config FILE`, else $FINCH_HOME/finch.conf when present;
 * lines `name = value`, '#' comments), then the default.
 *
 * Commands: each command declares one table of options (finch_opt), each
 * filling a field of the command's options struct through offsetof. From
 * that table come its flags, its --help (with defaults), its range errors,
 * its part of `finch --settings` and its section of the config file: lines
 * under `[serve]` set serve's options. An option resolves, highest first,
 * from its flag, its environment variable (an option that takes its default
 * from a global setting has that setting's), its line in the file's section,
 * then its default. */
#ifndef FINCH_CORE_CONFIG_H
#define FINCH_CORE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "core/status.h"

typedef enum { FINCH_CFG_SRC_DEFAULT, FINCH_CFG_SRC_FILE, FINCH_CFG_SRC_ENV, FINCH_CFG_SRC_FLAG } finch_cfg_src;

/* Validates value against the setting's type and bounds. */
finch_status finch_config_set(const char *name, const char *value, finch_cfg_src src, finch_err *err);
/* Reads a config file: global `name = value` lines, and `[command]`
 * sections for the tables registered with finch_config_section(); lines of
 * a section are checked against its table here. Errors name the file and
 * line. Keys are spelled with '-' or '_' alike: `student_epochs` and
 * `student-epochs` under [distill] are the same option, `log-level` the
 * setting log_level. The file's values live until the process ends. */
finch_status finch_config_load_file(const char *path, finch_err *err);
/* Applies environment variables; called once at start-up. */
finch_status finch_config_load_env(finch_err *err);

/* The resolved value ("" when unset with no default). Unknown names abort in
 * debug builds; they are programming errors. */
const char *finch_config_get(const char *name);
long finch_config_int(const char *name);
double finch_config_float(const char *name);
/* Where the setting's value came from. */
finch_cfg_src finch_config_src(const char *name);
/* The name of a source: "default", "file", "env" or "flag". */
const char *finch_config_src_name(finch_cfg_src src);

/* Prints every setting with its value, source and help. */
void finch_config_print(FILE *out);

/* --- option tables ------------------------------------------------------ */

typedef enum {
  FINCH_OPT_BOOL,   /* an int field; a flag without value sets it to 1 (0 with FINCH_OPT_INVERT) */
  FINCH_OPT_INT,    /* an integer field of any width, signed or not (min < 0 means signed) */
  FINCH_OPT_FLOAT,  /* a float or double field */
  FINCH_OPT_STRING, /* a const char * field */
  FINCH_OPT_ENUM,   /* a const char * field holding one of choices */
  FINCH_OPT_LIST    /* a const char * field: comma-separated items, each one of choices when given */
} finch_opt_type;

enum {
  FINCH_OPT_INVERT = 1u,   /* bool: `--no-x` given (or `no-x = true`) stores 0 */
  FINCH_OPT_MIN_OPEN = 2u, /* numbers: min itself is out of range */
  FINCH_OPT_MAX_OPEN = 4u, /* numbers: max itself is out of range */
  FINCH_OPT_HIDE_DEFAULT = 8u, /* --help shows no default: the help text says what 0 or unset means */
  FINCH_OPT_REPEAT = 16u       /* LIST: given again on the command line, adds its items (`--model 1 --model 2`
                                  = `--model 1,2`); any other option given twice is an error */
};

typedef struct {
  const char *name;    /* the flag (--name) and the key in the command's config-file section */
  char shortc;         /* -x, or 0 */
  finch_opt_type type;
  size_t offset, size; /* the field it fills (FINCH_OPT_FIELD) */
  const char *def;     /* default as text; NULL: the field keeps what the command's init put there */
  double min, max;     /* INT and FLOAT: accepted range, inclusive unless flagged; min == max: any */
  const char *choices; /* ENUM and LIST: "a|b|c" */
  const char *setting; /* default: this global setting's value (and its environment variable) */
  const char *env;     /* an environment variable of the option's own, or NULL */
  const char *arg;     /* metavariable in --help; NULL for a bool */
  const char *help;
  unsigned flags;
} finch_opt;

/* .offset and .size of a field of struct type T, for a table entry. */
#define FINCH_OPT_FIELD(T, member) .offset = offsetof(T, member), .size = sizeof(((T *)0)->member)
/* A default given by a library's constant (a plain literal): `.def =
 * FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_PORT)`, so the number is written once. */
#define FINCH_OPT_DEF(literal) FINCH_OPT_DEF_(literal)
#define FINCH_OPT_DEF_(literal) #literal

/* Parses text as the option's type, checks it against the bounds or
 * choices and stores it in the option's field of opts. Errors name the
 * option as `<dash><name>` ("--port: 70000 is out of range 0..65535"). The
 * field keeps pointing into text for strings: text must outlive opts. */
finch_status finch_opt_set(const finch_opt *o, void *opts, const char *text, const char *dash, finch_err *err);
/* The option's flag value: bools take none and store 1, or 0 inverted. */
void finch_opt_set_flag(const finch_opt *o, void *opts);
/* Writes the field's value as text ("" for an unset string). */
void finch_opt_format(const finch_opt *o, const void *opts, char *buf, size_t n);
/* 1 when --help should show the field's value as the option's default. */
int finch_opt_shows_default(const finch_opt *o, const void *opts);

/* Registers a command's table so that the config file's [section] lines are
 * checked against it; tables are static and outlive the registry. */
finch_status finch_config_section(const char *section, const finch_opt *opts, size_t n, finch_err *err);
/* Resolves each option into opts, lowest first: its default (def, or its
 * setting's value), the [section] lines of the config file, its environment
 * variable. src, when not NULL, receives each option's source. */
finch_status finch_opts_resolve(const char *section, const finch_opt *opts, size_t n, void *out,
                                finch_cfg_src *src, finch_err *err);

#endif
