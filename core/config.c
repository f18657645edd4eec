#include "core/config.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/dburl.h"

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
    {"home", "FINCH_HOME", T_STR, "", 0, 0,
     "directory for the embedded database, models and reports; empty = the nearest .finch at or above the "
     "current directory, else $XDG_DATA_HOME/finch (~/.local/share/finch)", NULL, 0},
    {"database_url", "FINCH_DATABASE_URL", T_STR, "", 0, 0,
     "libpq URI of an external PostgreSQL; empty = embedded cluster under home", NULL, 0},
    {"db_name", "FINCH_DB_NAME", T_STR, "finch", 0, 0, "database name in the embedded cluster", NULL,
     0},
    {"data_dir", "FINCH_DATA_DIR", T_STR, "", 0, 0,
     "where the public data sets live; empty = ../shared/data beside the checkout", NULL, 0},
    {"pretrained_dir", "FINCH_PRETRAINED_DIR", T_STR, "", 0, 0,
     "where scripts/fetch-pretrained.sh installs pretrained encoders; empty = home/pretrained", NULL, 0},
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

/* Registered command tables, and the config file's lines of their sections
 * (checked when read, applied when the command resolves its options). */
typedef struct {
  const char *name;
  const finch_opt *opts;
  size_t n;
} cfg_section;

typedef struct {
  const cfg_section *sec;
  const finch_opt *opt;
  char *value, *path;
  int line;
} cfg_line;

#define MAX_SECTIONS 32
static cfg_section g_sections[MAX_SECTIONS];
static size_t g_nsections;
static cfg_line *g_lines;
static size_t g_nlines, g_caplines;

finch_status finch_config_section(const char *section, const finch_opt *opts, size_t n, finch_err *err) {
  for (size_t i = 0; i < g_nsections; i++)
    if (strcmp(g_sections[i].name, section) == 0) {
      g_sections[i].opts = opts;
      g_sections[i].n = n;
      return FINCH_OK;
    }
  if (g_nsections == MAX_SECTIONS) return finch_err_set(err, FINCH_EINVAL, "too many config sections");
  g_sections[g_nsections++] = (cfg_section){section, opts, n};
  return FINCH_OK;
}

static const cfg_section *find_section(const char *name) {
  for (size_t i = 0; i < g_nsections; i++)
    if (strcmp(g_sections[i].name, name) == 0) return &g_sections[i];
  return NULL;
}

static const finch_opt *find_opt(const finch_opt *opts, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(opts[i].name, name) == 0) return &opts[i];
  return NULL;
}

/* A config-file key names an option by its flag name, '_' standing for
 * '-' (student_epochs = student-epochs), the way the global settings are
 * spelled in the same file. */
static const finch_opt *find_opt_key(const finch_opt *opts, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++) {
    const char *a = opts[i].name, *b = key;
    while (*a && (*a == *b || (*a == '-' && *b == '_'))) a++, b++;
    if (!*a && !*b) return &opts[i];
  }
  return NULL;
}

/* Checks a section line against its option (into a scratch struct large
 * enough for any field) and keeps it. */
static finch_status section_line(const cfg_section *sec, const char *name, const char *value, const char *path,
                                 int lineno, finch_err *err) {
  const finch_opt *o = find_opt_key(sec->opts, sec->n, name);
  if (!o)
    return finch_err_set(err, FINCH_EINVAL, "%s:%d: [%s] has no option '%s' (see finch %s --help)", path, lineno,
                         sec->name, name, sec->name);
  union {
    long double ld;
    void *p;
    unsigned long long u;
    unsigned char bytes[64];
  } scratch;
  finch_opt at0 = *o;
  at0.offset = 0;
  char where[96];
  snprintf(where, sizeof where, "[%s] ", sec->name);
  if (finch_opt_set(&at0, &scratch, value, where, err)) {
    finch_err_prefix(err, "%s:%d", path, lineno);
    return err ? err->code : FINCH_EINVAL;
  }
  if (g_nlines == g_caplines) {
    size_t cap = g_caplines ? 2 * g_caplines : 16;
    cfg_line *l = realloc(g_lines, cap * sizeof *l);
    if (!l) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
    g_lines = l;
    g_caplines = cap;
  }
  cfg_line *l = &g_lines[g_nlines];
  l->sec = sec;
  l->opt = o;
  l->value = strdup(value);
  l->path = strdup(path);
  l->line = lineno;
  if (!l->value || !l->path) {
    free(l->value);
    free(l->path);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  g_nlines++;
  return FINCH_OK;
}

finch_status finch_config_load_file(const char *path, finch_err *err) {
  FILE *fp = fopen(path, "r");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(errno));
  char line[4096];
  int lineno = 0;
  const cfg_section *sec = NULL; /* NULL: global settings */
  finch_status st = FINCH_OK;
  while (fgets(line, sizeof line, fp)) {
    lineno++;
    char *s = trim(line);
    if (!*s || *s == '#') continue;
    if (*s == '[') {
      char *close = strchr(s, ']');
      if (!close || *trim(close + 1)) {
        st = finch_err_set(err, FINCH_EFORMAT, "%s:%d: expected '[command]'", path, lineno);
        break;
      }
      *close = '\0';
      const char *name = trim(s + 1);
      sec = find_section(name);
      if (!sec) {
        st = finch_err_set(err, FINCH_EINVAL, "%s:%d: no command '%s' for a section", path, lineno, name);
        break;
      }
      continue;
    }
    char *eq = strchr(s, '=');
    if (!eq) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s:%d: expected 'name = value'", path, lineno);
      break;
    }
    *eq = '\0';
    char *name = trim(s), *value = trim(eq + 1);
    if (sec) {
      st = section_line(sec, name, value, path, lineno, err);
      if (st) break;
      continue;
    }
    for (char *p = name; *p; p++) /* a global setting may be spelled like its flag: log-level */
      if (*p == '-') *p = '_';
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

finch_cfg_src finch_config_src(const char *name) {
  cfg_entry *e = find(name);
  assert(e && "unknown setting");
  return e && e->value ? e->src : FINCH_CFG_SRC_DEFAULT;
}

const char *finch_config_src_name(finch_cfg_src src) {
  static const char *srcs[] = {"default", "file", "env", "flag"};
  return srcs[src];
}

void finch_config_print(FILE *out) {
  for (size_t i = 0; i < N_CFG; i++) {
    const cfg_entry *e = &g_cfg[i];
    /* Every value goes through the mask: database_url may hold a password. */
    char shown[4096];
    finch_db_url_masked(e->value ? e->value : e->def, shown, sizeof shown);
    fprintf(out, "%-13s = %-24s (%s; %s) %s\n", e->name, shown,
            finch_config_src_name(e->value ? e->src : FINCH_CFG_SRC_DEFAULT), e->env, e->help);
  }
}

/* --- option tables ------------------------------------------------------ */

static int opt_signed(const finch_opt *o) { return o->min < 0 || o->min == o->max; }

static void store_int(const finch_opt *o, void *opts, long long v) {
  unsigned char *p = (unsigned char *)opts + o->offset;
  switch (o->size) {
  case 1: { uint8_t x = (uint8_t)v; memcpy(p, &x, 1); break; }
  case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
  case 4: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
  default: { uint64_t x = (uint64_t)v; memcpy(p, &x, 8); break; }
  }
}

static long long load_int(const finch_opt *o, const void *opts) {
  const unsigned char *p = (const unsigned char *)opts + o->offset;
  int sgn = opt_signed(o) || o->type == FINCH_OPT_BOOL;
  switch (o->size) {
  case 1: { uint8_t x; memcpy(&x, p, 1); return sgn ? (long long)(int8_t)x : (long long)x; }
  case 2: { uint16_t x; memcpy(&x, p, 2); return sgn ? (long long)(int16_t)x : (long long)x; }
  case 4: { uint32_t x; memcpy(&x, p, 4); return sgn ? (long long)(int32_t)x : (long long)x; }
  default: { uint64_t x; memcpy(&x, p, 8); return (long long)x; }
  }
}

static double load_float(const finch_opt *o, const void *opts) {
  const unsigned char *p = (const unsigned char *)opts + o->offset;
  if (o->size == sizeof(float)) {
    float f;
    memcpy(&f, p, sizeof f);
    return f;
  }
  double d;
  memcpy(&d, p, sizeof d);
  return d;
}

/* "1..65535", "(0, 1]", "> 0": the accepted range, for errors. */
static void range_text(const finch_opt *o, char *buf, size_t n) {
  int lo_open = (o->flags & FINCH_OPT_MIN_OPEN) != 0, hi_open = (o->flags & FINCH_OPT_MAX_OPEN) != 0;
  if (o->max >= 1e300)
    snprintf(buf, n, "%s %.15g", lo_open ? ">" : ">=", o->min);
  else if (!lo_open && !hi_open)
    snprintf(buf, n, "%.15g..%.15g", o->min, o->max);
  else
    snprintf(buf, n, "%c%.15g, %.15g%c", lo_open ? '(' : '[', o->min, o->max, hi_open ? ')' : ']');
}

static int in_range(const finch_opt *o, double v) {
  if (o->min == o->max) return 1;
  if (o->flags & FINCH_OPT_MIN_OPEN ? v <= o->min : v < o->min) return 0;
  if (o->flags & FINCH_OPT_MAX_OPEN ? v >= o->max : v > o->max) return 0;
  return 1;
}

/* 1 when item (len bytes) is one of "a|b|c". */
static int is_choice(const char *choices, const char *item, size_t len) {
  for (const char *c = choices; *c;) {
    size_t k = strcspn(c, "|");
    if (k == len && strncmp(c, item, len) == 0) return 1;
    c += k + (c[k] == '|');
  }
  return 0;
}

/* "bow or tfm", "a, b or c". */
static void choices_text(const char *choices, char *buf, size_t n) {
  size_t o = 0;
  buf[0] = '\0';
  for (const char *c = choices; *c && o < n;) {
    size_t k = strcspn(c, "|");
    const char *sep = !o ? "" : c[k] ? ", " : " or ";
    o += (size_t)snprintf(buf + o, n - o, "%s%.*s", sep, (int)k, c);
    c += k + (c[k] == '|');
  }
}

finch_status finch_opt_set(const finch_opt *o, void *opts, const char *text, const char *dash, finch_err *err) {
  char range[96];
  switch (o->type) {
  case FINCH_OPT_BOOL: {
    int v;
    if (!strcmp(text, "1") || !strcasecmp(text, "true") || !strcasecmp(text, "yes") || !strcasecmp(text, "on"))
      v = 1;
    else if (!strcmp(text, "0") || !strcasecmp(text, "false") || !strcasecmp(text, "no") || !strcasecmp(text, "off"))
      v = 0;
    else
      return finch_err_set(err, FINCH_EINVAL, "%s%s: '%s' is not true or false", dash, o->name, text);
    store_int(o, opts, o->flags & FINCH_OPT_INVERT ? !v : v);
    return FINCH_OK;
  }
  case FINCH_OPT_INT: {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end)
      return finch_err_set(err, FINCH_EINVAL, "%s%s: '%s' is not an integer", dash, o->name, text);
    if (!in_range(o, (double)v)) {
      range_text(o, range, sizeof range);
      return finch_err_set(err, FINCH_EINVAL, "%s%s: %lld is out of range %s", dash, o->name, v, range);
    }
    store_int(o, opts, v);
    return FINCH_OK;
  }
  case FINCH_OPT_FLOAT: {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || v != v)
      return finch_err_set(err, FINCH_EINVAL, "%s%s: '%s' is not a number", dash, o->name, text);
    if (!in_range(o, v)) {
      range_text(o, range, sizeof range);
      return finch_err_set(err, FINCH_EINVAL, "%s%s: %s is out of range %s", dash, o->name, text, range);
    }
    unsigned char *p = (unsigned char *)opts + o->offset;
    if (o->size == sizeof(float)) {
      float f = (float)v;
      memcpy(p, &f, sizeof f);
    } else {
      memcpy(p, &v, sizeof v);
    }
    return FINCH_OK;
  }
  case FINCH_OPT_ENUM:
  case FINCH_OPT_LIST:
    if (o->choices) {
      int list = o->type == FINCH_OPT_LIST;
      for (const char *c = text;;) {
        size_t k = list ? strcspn(c, ",") : strlen(c);
        if (!is_choice(o->choices, c, k)) {
          choices_text(o->choices, range, sizeof range);
          return finch_err_set(err, FINCH_EINVAL, "%s%s: '%.*s' is not %s%s", dash, o->name, (int)k, c,
                               list ? "one of " : "", range);
        }
        if (!c[k]) break;
        c += k + 1;
      }
    }
    /* fall through */
  case FINCH_OPT_STRING:
    memcpy((unsigned char *)opts + o->offset, &text, sizeof text);
    return FINCH_OK;
  }
  return finch_err_set(err, FINCH_EINVAL, "%s%s: unknown option type", dash, o->name);
}

void finch_opt_set_flag(const finch_opt *o, void *opts) { store_int(o, opts, o->flags & FINCH_OPT_INVERT ? 0 : 1); }

void finch_opt_format(const finch_opt *o, const void *opts, char *buf, size_t n) {
  switch (o->type) {
  case FINCH_OPT_BOOL: {
    long long v = load_int(o, opts);
    snprintf(buf, n, "%s", (o->flags & FINCH_OPT_INVERT ? !v : v) ? "true" : "false");
    return;
  }
  case FINCH_OPT_INT:
    if (opt_signed(o))
      snprintf(buf, n, "%lld", load_int(o, opts));
    else
      snprintf(buf, n, "%llu", (unsigned long long)load_int(o, opts));
    return;
  case FINCH_OPT_FLOAT:
    snprintf(buf, n, "%g", load_float(o, opts));
    return;
  default: {
    const char *s;
    memcpy(&s, (const unsigned char *)opts + o->offset, sizeof s);
    snprintf(buf, n, "%s", s ? s : "");
  }
  }
}

int finch_opt_shows_default(const finch_opt *o, const void *opts) {
  if (o->type == FINCH_OPT_BOOL || (o->flags & FINCH_OPT_HIDE_DEFAULT)) return 0;
  if (o->def || o->setting) return 1;
  if (o->type == FINCH_OPT_INT) return load_int(o, opts) != 0;
  if (o->type == FINCH_OPT_FLOAT) return load_float(o, opts) != 0;
  const char *s;
  memcpy(&s, (const unsigned char *)opts + o->offset, sizeof s);
  return s != NULL;
}

finch_status finch_opts_resolve(const char *section, const finch_opt *opts, size_t n, void *out,
                                finch_cfg_src *src, finch_err *err) {
  for (size_t i = 0; i < n; i++) {
    const finch_opt *o = &opts[i];
    if (src) src[i] = o->setting && !o->def ? finch_config_src(o->setting) : FINCH_CFG_SRC_DEFAULT;
    const char *def = o->def ? o->def : o->setting ? finch_config_get(o->setting) : NULL;
    if (def && finch_opt_set(o, out, def, "default of --", err)) return err ? err->code : FINCH_EINVAL;
  }
  const cfg_section *sec = section ? find_section(section) : NULL;
  for (size_t l = 0; sec && l < g_nlines; l++) {
    if (g_lines[l].sec != sec) continue;
    const finch_opt *o = find_opt(opts, n, g_lines[l].opt->name);
    if (!o) continue;
    char where[96];
    snprintf(where, sizeof where, "[%s] ", section);
    if (finch_opt_set(o, out, g_lines[l].value, where, err)) {
      finch_err_prefix(err, "%s:%d", g_lines[l].path, g_lines[l].line);
      return err ? err->code : FINCH_EINVAL;
    }
    if (src) src[o - opts] = FINCH_CFG_SRC_FILE;
  }
  for (size_t i = 0; i < n; i++) {
    const finch_opt *o = &opts[i];
    const char *v = o->env ? getenv(o->env) : NULL, *name = o->env;
    if (!(v && *v) && o->setting && finch_config_src(o->setting) >= FINCH_CFG_SRC_ENV) {
      v = finch_config_get(o->setting);
      name = NULL;
    }
    if (!v || !*v) continue;
    if (finch_opt_set(o, out, v, "--", err)) {
      if (name) finch_err_prefix(err, "environment variable %s", name);
      return err ? err->code : FINCH_EINVAL;
    }
    if (src) src[i] = name ? FINCH_CFG_SRC_ENV : finch_config_src(o->setting);
  }
  return FINCH_OK;
}
