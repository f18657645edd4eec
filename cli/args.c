#include "cli/args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void cli_usage(const cli_cmd *cmd, FILE *out) {
  fprintf(out, "usage: finch %s %s\n\n%s\n", cmd->name, cmd->usage, cmd->summary);
  if (cmd->nopts) fprintf(out, "\noptions:\n");
  for (size_t i = 0; i < cmd->nopts; i++) {
    const cli_opt *o = &cmd->opts[i];
    char left[64];
    if (o->shortc)
      snprintf(left, sizeof left, "-%c, --%s%s%s", o->shortc, o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    else
      snprintf(left, sizeof left, "    --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    fprintf(out, "  %-28s %s\n", left, o->help);
  }
  fprintf(out, "  %-28s %s\n", "-h, --help", "show this help");
  if (cmd->details) fprintf(out, "\n%s\n", cmd->details);
}

static cli_opt *find_long(cli_cmd *cmd, const char *name, size_t len) {
  for (size_t i = 0; i < cmd->nopts; i++)
    if (strlen(cmd->opts[i].name) == len && strncmp(cmd->opts[i].name, name, len) == 0) return &cmd->opts[i];
  return NULL;
}

int cli_parse(cli_cmd *cmd, int argc, char **argv, const char **pos, size_t maxpos, size_t *npos) {
  *npos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      cli_usage(cmd, stdout);
      return 1;
    }
    cli_opt *o = NULL;
    const char *inline_val = NULL;
    if (a[0] == '-' && a[1] == '-' && a[2]) {
      const char *eq = strchr(a + 2, '=');
      size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
      o = find_long(cmd, a + 2, len);
      if (eq) inline_val = eq + 1;
    } else if (a[0] == '-' && a[1] && a[1] != '-' && !a[2]) {
      for (size_t k = 0; k < cmd->nopts; k++)
        if (cmd->opts[k].shortc == a[1]) o = &cmd->opts[k];
    } else {
      if (*npos >= maxpos) {
        fprintf(stderr, "finch %s: unexpected argument '%s'\n", cmd->name, a);
        return 2;
      }
      pos[(*npos)++] = a;
      continue;
    }
    if (!o) {
      fprintf(stderr, "finch %s: unknown option '%s' (see finch %s --help)\n", cmd->name, a, cmd->name);
      return 2;
    }
    if (!o->arg) {
      if (inline_val) {
        fprintf(stderr, "finch %s: --%s takes no value\n", cmd->name, o->name);
        return 2;
      }
      o->value = "1";
    } else if (inline_val) {
      o->value = inline_val;
    } else if (i + 1 < argc) {
      o->value = argv[++i];
    } else {
      fprintf(stderr, "finch %s: --%s needs a value (%s)\n", cmd->name, o->name, o->arg);
      return 2;
    }
  }
  return 0;
}

const char *cli_get(const cli_cmd *cmd, const char *name) {
  for (size_t i = 0; i < cmd->nopts; i++)
    if (strcmp(cmd->opts[i].name, name) == 0) return cmd->opts[i].value;
  return NULL;
}

int cli_get_double(const cli_cmd *cmd, const char *name, double *out) {
  const char *v = cli_get(cmd, name);
  if (!v) return 0;
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (errno || end == v || *end) {
    fprintf(stderr, "finch %s: --%s: '%s' is not a number\n", cmd->name, name, v);
    return -1;
  }
  *out = d;
  return 0;
}

int cli_get_long(const cli_cmd *cmd, const char *name, long long *out) {
  const char *v = cli_get(cmd, name);
  if (!v) return 0;
  char *end;
  errno = 0;
  long long d = strtoll(v, &end, 10);
  if (errno || end == v || *end) {
    fprintf(stderr, "finch %s: --%s: '%s' is not an integer\n", cmd->name, name, v);
    return -1;
  }
  *out = d;
  return 0;
}
