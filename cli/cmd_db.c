#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/dburl.h"
#include "core/paths.h"
#include "core/pgcluster.h"

static int db_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_db = {
    "db", "the database: url, up, down, migrate, status", "ACTION",
    "Manage finch's database. ACTION is one of:\n"
    "  url      print the libpq URI in use (starts the embedded cluster when needed),\n"
    "           so that  psql \"$(finch db url)\"  works; the one place that prints its\n"
    "           password: everything else (status, --settings, errors) shows ****\n"
    "  up       start the embedded cluster (initialised on first use) and migrate\n"
    "  down     stop the embedded cluster cleanly\n"
    "  migrate  apply pending schemas/NNN_name.sql migrations (a no-op when none)\n"
    "  status   say which database is used and whether it answers",
    "With no FINCH_DATABASE_URL and no PG* variables, finch runs its own PostgreSQL cluster\n"
    "under $FINCH_HOME/pg (as the 'postgres' account when run as root).",
    NULL, 0, 1, NULL, 1, db_run, 0};

static int db_run(void *opts, const char **pos, size_t npos) {
  if (npos != 1) return cli_usage_error(&cli_db, NULL);
  const char *action = pos[0];
  finch_err err;
  char url[PATH_MAX * 4];
  if (strcmp(action, "url") == 0) {
    if (finch_db_resolve_url(url, sizeof url, 1, &err)) return cli_fail(&err);
    printf("%s\n", url);
    return 0;
  }
  if (strcmp(action, "up") == 0 || strcmp(action, "migrate") == 0) {
    finch_db *db;
    if (finch_db_connect(&db, &err)) return cli_fail(&err);
    int applied = 0;
    finch_status st = finch_db_migrate(db, finch_db_schema_dir(), &applied, &err);
    finch_db_close(db);
    if (st) return cli_fail(&err);
    printf("database ready; %d migration(s) applied\n", applied);
    return 0;
  }
  const char *ext = finch_config_get("database_url");
  if (strcmp(action, "down") == 0) {
    if (*ext) {
      fprintf(stderr, "finch db down: an external database (FINCH_DATABASE_URL) is in use; nothing to stop\n");
      return 1;
    }
    char home[PATH_MAX];
    if (finch_home_dir(home, sizeof home, &err) || finch_pgcluster_stop(home, &err)) return cli_fail(&err);
    printf("embedded cluster stopped\n");
    return 0;
  }
  if (strcmp(action, "status") == 0) {
    if (finch_db_resolve_url(url, sizeof url, 0, &err)) {
      printf("embedded cluster: not initialised (%s)\n", err.msg);
      return 1;
    }
    PGPing ping = PQping(url);
    char shown[sizeof url];
    finch_db_url_masked(url, shown, sizeof shown);
    printf("%s: %s\n", *url ? shown : "(libpq defaults from PG* variables)",
           ping == PQPING_OK ? "running" : "not answering");
    return ping == PQPING_OK ? 0 : 1;
  }
  fprintf(stderr, "finch db: unknown action '%s' (url, up, down, migrate, status)\n", action);
  return 2;
}
