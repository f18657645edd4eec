/* finch keys: API keys for the HTTP server (serve/auth.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "serve/auth.h"

/* "cli:<user>", the actor recorded in audit_log for CLI changes. */
static void cli_actor(char *buf, size_t n) {
  const char *u = getenv("USER");
  snprintf(buf, n, "cli:%s", u && *u ? u : "unknown");
}

typedef struct {
  const char *role, *name;
  int json;
} keys_args;

static const finch_opt keys_opts[] = {
    {"role", 0, FINCH_OPT_STRING, FINCH_OPT_FIELD(keys_args, role), .arg = "ROLE",
     .help = "create: integration, labeler or admin"},
    {"name", 0, FINCH_OPT_STRING, FINCH_OPT_FIELD(keys_args, name), .arg = "NAME",
     .help = "create: who or what the key is for (labellers are known by it)"},
    {"json", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(keys_args, json), .help = "list: print JSON"},
};

static int keys_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_keys = {
    "keys", "API keys for the server: create, list, revoke", "create --role ROLE --name NAME | list [--json] | revoke ID",
    "API keys for finch serve (Authorization: Bearer <key>).\n"
    "  create  make a key; it is printed once, only its SHA-256 is stored\n"
    "  list    the keys: id, name, role, prefix, created, revoked\n"
    "  revoke  a revoked key is refused (401) from the next request on",
    "Roles: integration (turns, /v1/intent), labeler (labelling), admin (everything, rollout changes).",
    keys_opts, CLI_N(keys_opts), sizeof(keys_args), NULL, 2, keys_run, 0};

static int keys_run(void *opts, const char **pos, size_t npos) {
  keys_args a = *(keys_args *)opts;
  const char *action = npos ? pos[0] : "";
  int create = strcmp(action, "create") == 0, list = strcmp(action, "list") == 0,
      revoke = strcmp(action, "revoke") == 0;
  if ((!create && !list && !revoke) || (revoke ? npos != 2 : npos != 1)) return cli_usage_error(&cli_keys, &a);
  int role = create ? finch_role_parse(a.role) : 0;
  if (create && (role < 0 || !a.name || !*a.name)) {
    fprintf(stderr, "finch keys create: --role (integration, labeler or admin) and --name are required\n");
    return 2;
  }
  long long id = 0;
  if (revoke) {
    char *end;
    id = strtoll(pos[1], &end, 10);
    if (end == pos[1] || *end || id <= 0) {
      fprintf(stderr, "finch keys revoke: '%s' is not a key id\n", pos[1]);
      return 2;
    }
  }
  finch_db *db = cli_db_open();
  if (!db) return 1;
  PGconn *c = finch_db_conn(db);
  finch_err err;
  char actor[160];
  cli_actor(actor, sizeof actor);
  int ret = 0;
  if (create) {
    char key[FINCH_API_KEY_LEN + 1];
    if (finch_auth_key_create(c, a.name, (finch_role)role, actor, key, &id, &err)) {
      ret = cli_fail(&err);
    } else {
      fprintf(stderr, "finch: key %lld (%s, role %s) created; it is shown only this once:\n", id,
              a.name, finch_role_name((finch_role)role));
      printf("%s\n", key);
    }
  } else if (revoke) {
    if (finch_auth_key_revoke(c, id, actor, &err))
      ret = cli_fail(&err);
    else
      printf("key %lld revoked\n", id);
  } else {
    PGresult *r = PQexec(c, "SELECT id, name, role, prefix, created_at::text, coalesce(revoked_at::text, '')"
                            " FROM api_keys ORDER BY id");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      fprintf(stderr, "finch keys list: %s", PQresultErrorMessage(r));
      ret = 1;
    } else if (a.json) {
      json_t *arr = json_array();
      for (int i = 0; i < PQntuples(r); i++)
        json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:s, s:s, s:o}", "id",
                                             (json_int_t)atoll(PQgetvalue(r, i, 0)), "name", PQgetvalue(r, i, 1),
                                             "role", PQgetvalue(r, i, 2), "prefix", PQgetvalue(r, i, 3),
                                             "created_at", PQgetvalue(r, i, 4), "revoked_at",
                                             *PQgetvalue(r, i, 5) ? json_string(PQgetvalue(r, i, 5)) : json_null()));
      cli_print_json(arr);
    } else {
      printf("id\tname\trole\tprefix\tcreated\trevoked\n");
      for (int i = 0; i < PQntuples(r); i++)
        printf("%s\t%s\t%s\t%s…\t%s\t%s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
               PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), *PQgetvalue(r, i, 5) ? PQgetvalue(r, i, 5) : "-");
    }
    PQclear(r);
  }
  finch_db_close(db);
  return ret;
}
