#include "core/config.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_STR, T_INT, T_FLOAT } cfg_type;

typedef struct {
  const char *name;
  const char *env;
  cfg_type type;
  const char *def;
  double min, max; /* numeric bounds, inclusive */
  const char *help;
  /* resolved state */
  char *value;
  finch_cfg_src src;
} cfg_entry;

static cfg_entry g_cfg[] = {
    {"home", "FINCH_HOME", T_STR, ".finch", 0, 0,
     "directory for the embedded database, models and reports", NULL, 0},
    {"database_url", "FINCH_DATABASE_URL", T_STR, "", 0, 0,
     "libpq URI of an external PostgreSQL; empty = embedded cluster under home", NULL, 0},
    {"db_name", "FINCH_DB_NAME", T_STR, "finch", 0, 0, "database name in the embedded cluster", NULL,
     0},
    {"data_dir", "FINCH_DATA_DIR", T_STR, "", 0, 0,
     "where the public data sets live; empty = ../shared/data beside the checkout", NULL, 0},
    {"log_level", "FINCH_LOG", T_STR, "info", 0, 0, "error, warn, info or debug", NULL, 0},
    {"device", "FINCH_DEVICE", T_STR, "auto", 0, 0, "compute device: cpu, cuda or auto", NULL, 0},
    {"seed", "FINCH_SEED", T_INT, "42", 0, 4294967295.0, "seed for splits, augmentation and training",
     NULL, 0},
    {"holdout", "FINCH_HOLDOUT", T_FLOAT, "0.1", 0, 0.9, "share of each intent held out as dev",
     NULL, 0},
    {"max_body", "FINCH_MAX_BODY", T_INT, "65536", 64, 67108864,
     "largest accepted HTTP request body in bytes", NULL, 0},
};

#define N_CFG (sizeof g_cfg / sizeof g_cfg[0])

static cfg_entry *find(const char *name) {
  for (size_t i = 0; i < N_CFG; i++)
    if (strcmp(g_cfg[i].name, name) == 0) return &g_cfg[i];
  return NULL;
}

finch_status finch_config_set(const char *name, const char *value, finch_cfg_src src, finch_err *err) {
  cfg_entry *e = find(name);
  if (!e) return finch_err_set(err, FINCH_EINVAL, "unknown setting '%s'", name);
  if (e->value && e->src > src) return FINCH_OK; /* a stronger source already set it */
  if (e->type != T_STR) {
    char *end;
    errno = 0;
    double v = e->type == T_INT ? (double)strtoll(value, &end, 10) : strtod(value, &end);
    if (errno || end == value || *end)
      return finch_err_set(err, FINCH_EINVAL, "setting %s: '%s' is not a%s", name, value,
                           e->type == T_INT ? "n integer" : " number");
    if (v < e->min || v > e->max)
      return finch_err_set(err, FINCH_EINVAL, "setting %s: %s is outside [%g, %g]", name, value,
                           e->min, e->max);
  }
  char *copy = strdup(value);
  if (!copy) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  free(e->value);
  e->value = copy;
  e->src = src;
  return FINCH_OK;
}

finch_status finch_config_load_env(finch_err *err) {
  for (size_t i = 0; i < N_CFG; i++) {
    const char *v = getenv(g_cfg[i].env);
    if (v && *v) {
      finch_status st = finch_config_set(g_cfg[i].name, v, FINCH_CFG_SRC_ENV, err);
      if (st) {
        finch_err_prefix(err, "environment variable %s", g_cfg[i].env);
        return st;
      }
    }
  }
  return FINCH_OK;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) *--e = '\0';
  return s;
}

finch_status finch_config_load_file(const char *path, finch_err *err) {
  FILE *fp = fopen(path, "r");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(errno));
  char line[4096];
  int lineno = 0;
  finch_status st = FINCH_OK;
  while (fgets(line, sizeof line, fp)) {
    lineno++;
    char *s = trim(line);
    if (!*s || *s == '#') continue;
    char *eq = strchr(s, '=');
    if (!eq) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s:%d: expected 'name = value'", path, lineno);
      break;
    }
    *eq = '\0';
    char *name = trim(s), *value = trim(eq + 1);
    st = finch_config_set(name, value, FINCH_CFG_SRC_FILE, err);
    if (st) {
      finch_err_prefix(err, "%s:%d", path, lineno);
      break;
    }
  }
  fclose(fp);
  return st;
}

const char *finch_config_get(const char *name) {
  cfg_entry *e = find(name);
  assert(e && "unknown setting");
  if (!e) return "";
  return e->value ? e->value : e->def;
}

long finch_config_int(const char *name) { return strtol(finch_config_get(name), NULL, 10); }
double finch_config_float(const char *name) { return strtod(finch_config_get(name), NULL); }

void finch_config_print(FILE *out) {
  static const char *srcs[] = {"default", "file", "env", "flag"};
  for (size_t i = 0; i < N_CFG; i++) {
    const cfg_entry *e = &g_cfg[i];
    fprintf(out, "%-13s = %-24s (%s; %s) %s\n", e->name, e->value ? e->value : e->def,
            e->value ? srcs[e->src] : "default", e->env, e->help);
  }
}
