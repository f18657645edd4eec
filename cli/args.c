#include "cli/args.h"

#include <stdlib.h>
#include <string.h>

void cli_print_options(const finch_opt *opts, size_t n, const void *values, FILE *out) {
  for (size_t i = 0; i < n; i++) {
    const finch_opt *o = &opts[i];
    char left[64], def[256] = "";
    const char *arg = o->type == FINCH_OPT_BOOL ? NULL : o->arg ? o->arg : "X";
    snprintf(left, sizeof left, "%c%c%s--%s%s%s", o->shortc ? '-' : ' ', o->shortc ? o->shortc : ' ',
             o->shortc ? ", " : "  ", o->name, arg ? " " : "", arg ? arg : "");
    if (values && finch_opt_shows_default(o, values)) {
      char v[200];
      finch_opt_format(o, values, v, sizeof v);
      if (o->setting)
        snprintf(def, sizeof def, " (default: setting %s, %s)", o->setting, v);
      else
        snprintf(def, sizeof def, " (default %s)", v);
    }
    fprintf(out, "  %-28s %s%s\n", left, o->help, def);
  }
}

void cli_usage(const cli_cmd *cmd, const void *opts, FILE *out) {
  fprintf(out, "usage: finch %s %s\n\n%s\n", cmd->name, cmd->usage, cmd->summary);
  if (cmd->nopts) fprintf(out, "\noptions:\n");
  cli_print_options(cmd->opts, cmd->nopts, opts, out);
  fprintf(out, "  %-28s %s\n", "-h, --help", "show this help");
  if (cmd->details) fprintf(out, "\n%s\n", cmd->details);
}

int cli_usage_error(const cli_cmd *cmd, const void *opts) {
  cli_usage(cmd, opts, stderr);
  return 2;
}

static const finch_opt *find_long(const cli_cmd *cmd, const char *name, size_t len) {
  for (size_t i = 0; i < cmd->nopts; i++)
    if (strlen(cmd->opts[i].name) == len && strncmp(cmd->opts[i].name, name, len) == 0) return &cmd->opts[i];
  return NULL;
}

static const finch_opt *find_short(const cli_cmd *cmd, char c) {
  for (size_t i = 0; i < cmd->nopts; i++)
    if (cmd->opts[i].shortc == c) return &cmd->opts[i];
  return NULL;
}

static int resolve(const cli_cmd *cmd, void *opts, finch_cfg_src *src) {
  memset(opts, 0, cmd->size);
  if (cmd->init) cmd->init(opts);
  finch_err err;
  if (finch_opts_resolve(cmd->name, cmd->opts, cmd->nopts, opts, src, &err)) {
    fprintf(stderr, "finch %s: %s\n", cmd->name, err.msg);
    return 2;
  }
  return 0;
}

/* The field's items so far, a comma, and val: a string that lives until the
 * process ends (option fields point into their text), kept reachable here. */
static const char *cli__joined(const finch_opt *o, const void *opts, const char *val) {
  static char *kept[64];
  static size_t n_kept;
  const char *prev = *(const char *const *)((const unsigned char *)opts + o->offset);
  size_t n = (prev ? strlen(prev) : 0) + strlen(val) + 2;
  char *s = n_kept < sizeof kept / sizeof *kept ? malloc(n) : NULL;
  if (!s) return NULL;
  snprintf(s, n, "%s%s%s", prev ? prev : "", prev && *prev ? "," : "", val);
  kept[n_kept++] = s;
  return s;
}

int cli_parse(const cli_cmd *cmd, void *opts, int argc, char **argv, const char **pos, size_t *npos) {
  if (resolve(cmd, opts, NULL)) return 2;
  *npos = 0;
  char who[64]; /* "finch serve", or "finch" for the options before a command */
  snprintf(who, sizeof who, "finch%s%s", *cmd->name ? " " : "", cmd->name);
  /* First the spelling of every argument, so that --help anywhere shows the
   * defaults before any flag; then the values, in order. */
  for (int i = 1; i < argc && !cmd->leading; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      cli_usage(cmd, opts, stdout);
      return 0;
    }
  }
  /* The options given so far: a second --x is an error (the first would be
   * silently lost), or for FINCH_OPT_REPEAT adds its items. */
  const finch_opt *seen[64];
  size_t n_seen = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const finch_opt *o = NULL;
    const char *val = NULL;
    if (a[0] == '-' && a[1] == '-' && a[2]) {
      const char *eq = strchr(a + 2, '=');
      o = find_long(cmd, a + 2, eq ? (size_t)(eq - (a + 2)) : strlen(a + 2));
      if (eq) val = eq + 1;
    } else if (a[0] == '-' && a[1] && a[1] != '-' && !a[2]) {
      o = find_short(cmd, a[1]);
    } else {
      if (cmd->leading) {
        *npos = (size_t)i;
        return -1;
      }
      if (*npos >= cmd->maxpos) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", who, a);
        return 2;
      }
      pos[(*npos)++] = a;
      continue;
    }
    if (!o) {
      fprintf(stderr, "%s: unknown %soption '%s' (see %s --help)\n", who, cmd->leading ? "global " : "", a, who);
      return 2;
    }
    int again = 0;
    for (size_t k = 0; k < n_seen; k++) again |= seen[k] == o;
    if (again && !(o->flags & FINCH_OPT_REPEAT)) {
      fprintf(stderr, "%s: --%s is given twice; give it once\n", who, o->name);
      return 2;
    }
    if (!again && n_seen < sizeof seen / sizeof *seen) seen[n_seen++] = o;
    if (o->type == FINCH_OPT_BOOL) {
      if (val) {
        fprintf(stderr, "%s: --%s takes no value\n", who, o->name);
        return 2;
      }
      finch_opt_set_flag(o, opts);
      continue;
    }
    if (!val && i + 1 >= argc) {
      fprintf(stderr, "%s: --%s needs a value (%s)\n", who, o->name, o->arg ? o->arg : "X");
      return 2;
    }
    if (!val) val = argv[++i];
    if (again && (val = cli__joined(o, opts, val)) == NULL) {
      fprintf(stderr, "%s: out of memory\n", who);
      return 2;
    }
    finch_err err;
    if (finch_opt_set(o, opts, val, "--", &err)) {
      fprintf(stderr, "%s: %s\n", who, err.msg);
      return 2;
    }
  }
  if (cmd->leading) *npos = (size_t)argc;
  return -1;
}

int cli_run(const cli_cmd *cmd, int argc, char **argv) {
  void *opts = calloc(1, cmd->size ? cmd->size : 1);
  if (!opts) {
    fprintf(stderr, "finch %s: out of memory\n", cmd->name);
    return 1;
  }
  const char *pos[CLI_MAX_POS];
  size_t npos;
  int rc = cli_parse(cmd, opts, argc, argv, pos, &npos);
  if (rc < 0) rc = cmd->run(opts, pos, npos);
  free(opts);
  return rc;
}

int cli_print_settings(const cli_cmd *cmd, FILE *out) {
  if (!cmd->nopts) return 0;
  void *opts = calloc(1, cmd->size);
  finch_cfg_src *src = calloc(cmd->nopts, sizeof *src);
  int rc = !opts || !src || resolve(cmd, opts, src);
  if (!rc) {
    fprintf(out, "\n[%s]\n", cmd->name);
    for (size_t i = 0; i < cmd->nopts; i++) {
      char v[256];
      finch_opt_format(&cmd->opts[i], opts, v, sizeof v);
      fprintf(out, "%-22s = %-24s (%s) %s\n", cmd->opts[i].name, v, finch_config_src_name(src[i]),
              cmd->opts[i].help);
    }
  }
  free(opts);
  free(src);
  return rc;
}
