/* finch: one binary, a subcommand per pipeline stage. */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"
#include "core/paths.h"

static char g_cmdline[4096];

const char *cli_command_line(void) { return g_cmdline; }

void cli_print_json(json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) printf("%s\n", s);
  free(s);
  json_decref(j);
}

json_t *cli_query_json(finch_db *db, const char *sql, int n, const char *const *p) {
  finch_err err;
  PGresult *r = finch_db_query(db, sql, n, p, &err);
  if (!r) {
    cli_fail(&err);
    return NULL;
  }
  json_error_t je;
  json_t *j = json_loads(PQgetvalue(r, 0, 0), JSON_DECODE_ANY, &je);
  PQclear(r);
  if (!j) finch_error("the database's JSON did not parse: %s", je.text);
  return j;
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

static const cli_cmd *const commands[] = {
    &cli_db,    &cli_ingest, &cli_augment, &cli_teacher, &cli_distill, &cli_compile, &cli_eval, &cli_serve,
    &cli_models, &cli_runs, &cli_rules, &cli_demo,    &cli_rollout, &cli_keys,    &cli_webhooks, &cli_soft_labels,
    &cli_monitor, &cli_report, &cli_pipeline, &cli_jobs,
};

/* The options before COMMAND. */
typedef struct {
  const char *home, *config, *database_url, *data_dir, *log_level;
  int settings, version, help;
} global_args;

#define G(m) FINCH_OPT_FIELD(global_args, m)

/* Options whose value is a global setting of the same name ('-' for '_'). */
static const finch_opt global_opts[] = {
    {"home", 0, FINCH_OPT_STRING, G(home), .arg = "DIR",
     .help = "finch's directory: embedded database, models, reports (FINCH_HOME; default: the nearest .finch "
             "at or above the current directory, else $XDG_DATA_HOME/finch, i.e. ~/.local/share/finch)"},
    {"config", 0, FINCH_OPT_STRING, G(config), .arg = "FILE",
     .help = "settings file of 'name = value' lines and [command] sections (default $FINCH_HOME/finch.conf)"},
    {"database-url", 0, FINCH_OPT_STRING, G(database_url), .arg = "URL",
     .help = "an external PostgreSQL (FINCH_DATABASE_URL); default: embedded cluster"},
    {"data-dir", 0, FINCH_OPT_STRING, G(data_dir), .arg = "DIR",
     .help = "public data sets (FINCH_DATA_DIR, default ../shared/data)"},
    {"log-level", 0, FINCH_OPT_STRING, G(log_level), .arg = "LEVEL", .help = "error, warn, info or debug (FINCH_LOG)"},
    {"settings", 0, FINCH_OPT_BOOL, G(settings),
     .help = "print every setting and command option with its value and source, then exit"},
    {"version", 0, FINCH_OPT_BOOL, G(version), .help = "print the version"},
    {"help", 'h', FINCH_OPT_BOOL, G(help), .help = "show this help"},
};

static const cli_cmd globals = {.name = "", .opts = global_opts, .nopts = CLI_N(global_opts),
                                .size = sizeof(global_args), .leading = 1};

static void usage(FILE *out) {
  fprintf(out,
          "usage: finch [global options] COMMAND [options]\n\n"
          "finch adapts a small, fast intent model to financial customer-service chat and serves it.\n\n"
          "commands:\n");
  for (size_t i = 0; i < CLI_N(commands); i++) fprintf(out, "  %-12s %s\n", commands[i]->name, commands[i]->brief);
  fprintf(out, "\nglobal options (before COMMAND):\n");
  cli_print_options(global_opts, CLI_N(global_opts), NULL, out);
  fprintf(out, "\nRun 'finch COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv) {
  size_t o = 0;
  for (int i = 0; i < argc && o + 2 < sizeof g_cmdline; i++)
    o += (size_t)snprintf(g_cmdline + o, sizeof g_cmdline - o, "%s%s", i ? " " : "", argv[i]);

  setvbuf(stdout, NULL, _IOLBF, 0); /* progress interleaves sensibly with stderr */
  finch_err err;
  if (finch_config_load_env(&err)) return cli_fail(&err);
  for (size_t c = 0; c < CLI_N(commands); c++)
    if (finch_config_section(commands[c]->name, commands[c]->opts, commands[c]->nopts, &err)) return cli_fail(&err);
  global_args g;
  size_t first;
  int rc = cli_parse(&globals, &g, argc, argv, NULL, &first);
  if (rc >= 0) return rc;
  int i = (int)first;
  if (g.help) {
    usage(stdout);
    return 0;
  }
  if (g.version) {
    printf("finch %s\n", FINCH_VERSION);
    return 0;
  }
  for (size_t k = 0; k < CLI_N(global_opts); k++) {
    const finch_opt *go = &global_opts[k];
    const char *v;
    memcpy(&v, (const char *)&g + go->offset, sizeof v);
    if (go->type != FINCH_OPT_STRING || !v || go->offset == offsetof(global_args, config)) continue;
    char setting[32];
    snprintf(setting, sizeof setting, "%s", go->name);
    for (char *p = setting; *p; p++)
      if (*p == '-') *p = '_';
    if (finch_config_set(setting, v, FINCH_CFG_SRC_FLAG, &err)) return cli_fail(&err);
  }
  if (g.config) {
    if (finch_config_load_file(g.config, &err)) return cli_fail(&err);
  } else {
    char home[PATH_MAX], path[PATH_MAX + 16];
    if (finch_home_find(home, sizeof home, NULL, &err)) return cli_fail(&err);
    snprintf(path, sizeof path, "%s/finch.conf", home);
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
  if (g.settings) {
    finch_config_print(stdout);
    char home[PATH_MAX];
    const char *origin;
    if (finch_home_find(home, sizeof home, &origin, &err)) return cli_fail(&err);
    printf("%-13s = %-24s (%s) the home in use\n", "home (found)", home, origin);
    for (size_t c = 0; c < CLI_N(commands); c++)
      if (cli_print_settings(commands[c], stdout)) return 1;
    return 0;
  }
  if (i >= argc) {
    usage(stderr);
    return 2;
  }
  for (size_t c = 0; c < CLI_N(commands); c++)
    if (strcmp(argv[i], commands[c]->name) == 0) return cli_run(commands[c], argc - i, argv + i);
  fprintf(stderr, "finch: unknown command '%s' (see finch --help)\n", argv[i]);
  return 2;
}
