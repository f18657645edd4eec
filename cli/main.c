/* finch: one binary, a subcommand per pipeline stage. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"

static char g_cmdline[4096];

const char *cli_command_line(void) { return g_cmdline; }

void cli_print_json(json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) printf("%s\n", s);
  free(s);
  json_decref(j);
}

int cli_fail(const finch_err *err) {
  finch_error("%s", err->msg);
  return 1;
}

finch_db *cli_db_open(void) {
  finch_db *db;
  finch_err err;
  if (finch_db_open(&db, &err)) {
    cli_fail(&err);
    return NULL;
  }
  return db;
}

typedef struct {
  const char *name;
  int (*fn)(int, char **);
  const char *summary;
} command;

static const command commands[] = {
    {"db", finch_cmd_db, "the database: url, up, down, migrate, status"},
    {"ingest", finch_cmd_ingest, "load labelled utterances into PostgreSQL"},
    {"augment", finch_cmd_augment, "add label-preserving variants of training rows"},
    {"teacher", finch_cmd_teacher, "train the ensemble teacher and select it on the holdout"},
    {"distill", finch_cmd_distill, "distil a teacher into a smaller student (bow or transformer)"},
    {"compile", finch_cmd_compile, "write a model as a deployable (quantised) file"},
    {"eval", finch_cmd_eval, "measure a model on labelled rows; store and write a report"},
    {"serve", finch_cmd_serve, "serve intent recognition over HTTP"},
    {"models", finch_cmd_models, "list registered models"},
    {"rules", finch_cmd_rules, "check and measure the legacy PCRE2 rule engine"},
    {"demo", finch_cmd_demo, "run every stage on BANKING77 (or the bundled sample)"},
    {"rollout", finch_cmd_rollout, "staged rollout beside the rules: status, promote, rollback"},
    {"keys", finch_cmd_keys, "API keys for the server: create, list, revoke"},
    {"webhooks", finch_cmd_webhooks, "outbound webhooks: subscribe, list, outbox, redeliver, deliver"},
    {"soft-labels", finch_cmd_soft_labels, "an external teacher's soft labels: import JSONL or query an endpoint"},
};

static void usage(FILE *out) {
  fprintf(out,
          "usage: finch [global options] COMMAND [options]\n\n"
          "finch adapts a small, fast intent model to financial customer-service chat and serves it.\n\n"
          "commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf(out,
          "\nglobal options (before COMMAND):\n"
          "  --home DIR           finch's directory: embedded database, models, reports "
          "(FINCH_HOME, default ./.finch)\n"
          "  --config FILE        settings file of 'name = value' lines (default $FINCH_HOME/finch.conf)\n"
          "  --database-url URL   an external PostgreSQL (FINCH_DATABASE_URL); default: embedded cluster\n"
          "  --data-dir DIR       public data sets (FINCH_DATA_DIR, default ../shared/data)\n"
          "  --log-level LEVEL    error, warn, info or debug (FINCH_LOG)\n"
          "  --settings           print every setting with its value and source, then exit\n"
          "  --version            print the version\n"
          "  -h, --help           show this help\n\n"
          "Run 'finch COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv) {
  size_t o = 0;
  for (int i = 0; i < argc && o + 2 < sizeof g_cmdline; i++)
    o += (size_t)snprintf(g_cmdline + o, sizeof g_cmdline - o, "%s%s", i ? " " : "", argv[i]);

  setvbuf(stdout, NULL, _IOLBF, 0); /* progress interleaves sensibly with stderr */
  finch_err err;
  if (finch_config_load_env(&err)) return cli_fail(&err);
  const char *config_file = NULL;
  int print_settings = 0;
  int i = 1;
  static const struct {
    const char *flag, *setting;
  } globals[] = {{"--home", "home"}, {"--database-url", "database_url"}, {"--data-dir", "data_dir"},
                 {"--log-level", "log_level"}};
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if (strcmp(a, "--version") == 0) {
      printf("finch %s\n", FINCH_VERSION);
      return 0;
    }
    if (strcmp(a, "--settings") == 0) {
      print_settings = 1;
      continue;
    }
    if (strcmp(a, "--config") == 0 && i + 1 < argc) {
      config_file = argv[++i];
      continue;
    }
    int matched = 0;
    for (size_t g = 0; g < sizeof globals / sizeof globals[0]; g++)
      if (strcmp(a, globals[g].flag) == 0 && i + 1 < argc) {
        if (finch_config_set(globals[g].setting, argv[++i], FINCH_CFG_SRC_FLAG, &err)) return cli_fail(&err);
        matched = 1;
      }
    if (!matched) {
      fprintf(stderr, "finch: unknown global option '%s' (see finch --help)\n", a);
      return 2;
    }
  }
  if (config_file) {
    if (finch_config_load_file(config_file, &err)) return cli_fail(&err);
  } else {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/finch.conf", finch_config_get("home"));
    FILE *fp = fopen(path, "r");
    if (fp) {
      fclose(fp);
      if (finch_config_load_file(path, &err)) return cli_fail(&err);
    }
  }
  int level = finch_log_level_parse(finch_config_get("log_level"));
  if (level < 0) {
    fprintf(stderr, "finch: log level '%s' is not error, warn, info or debug\n", finch_config_get("log_level"));
    return 2;
  }
  finch_log_set_level((finch_log_level)level);
  if (print_settings) {
    finch_config_print(stdout);
    return 0;
  }
  if (i >= argc) {
    usage(stderr);
    return 2;
  }
  for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++)
    if (strcmp(argv[i], commands[c].name) == 0) return commands[c].fn(argc - i, argv + i);
  fprintf(stderr, "finch: unknown command '%s' (see finch --help)\n", argv[i]);
  return 2;
}
