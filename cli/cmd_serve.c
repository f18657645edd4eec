#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/models.h"

#ifndef FINCH_SOURCE_DIR
#define FINCH_SOURCE_DIR "."
#endif
#include "serve/serve.h"
#include "serve/webhook.h"

/* The options struct of `finch serve`: the server's own, and the CLI's. */
typedef struct {
  finch_serve_opts s;
  int no_database;
} serve_args;

#define F(m) FINCH_OPT_FIELD(serve_args, s.m)
#define MS_DAY 86400000

/* Defaults that the server also applies to a zero field are its constants
 * (FINCH_SERVE_DEFAULT_* in serve/serve.h, FINCH_WEBHOOK_DEFAULT_* in
 * serve/webhook.h); the gate's come from finch_gate_opts_default() (init
 * below). */
static const finch_opt serve_opts[] = {
    {"model", 'm', FINCH_OPT_STRING, F(model_path), .arg = "FILE|ID", .help = "model file (or registered model id) to serve"},
    {"host", 0, FINCH_OPT_STRING, F(host), .def = FINCH_SERVE_DEFAULT_HOST, .arg = "ADDR", .help = "address to bind"},
    {"port", 'p', FINCH_OPT_INT, F(port), .def = "8080", .min = 0, .max = 65535, .arg = "N",
     .help = "TCP port; 0 picks a free one"},
    {"max-body", 0, FINCH_OPT_INT, F(max_body), .setting = "max_body", .min = 1, .max = 1e308, .arg = "BYTES",
     .help = "largest request body; larger gets 413"},
    {"threads", 0, FINCH_OPT_INT, F(threads), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_THREADS), .min = 1, .max = 256, .arg = "N", .help = "worker threads"},
    {"no-database", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(serve_args, no_database),
     .help = "serve without the database: only /v1/intent and /healthz, no API keys"},
    {"rules", 0, FINCH_OPT_STRING, F(rules_path), .def = CLI_DEFAULT_RULES,
     .arg = "FILE", .help = "legacy rule file"},
    {"deployment", 'd', FINCH_OPT_STRING, F(deployment), .def = FINCH_SERVE_DEFAULT_DEPLOYMENT, .arg = "NAME",
     .help = "the deployment this server answers for"},
    {"oos-label", 0, FINCH_OPT_STRING, F(oos_label), .arg = "LABEL",
     .help = "a label of the model that means out of scope (besides its file's abstention policy): /v1/intent answers "
             "it as out_of_scope, turns hand it to the rules or a human"},
    {"min-confidence", 0, FINCH_OPT_FLOAT, F(min_confidence), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_MIN_CONFIDENCE), .min = 0, .max = 1, .arg = "X",
     .help = "the model answers at or above it in canary/primary"},
    {"canary-share", 0, FINCH_OPT_FLOAT, F(canary_share), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_CANARY_SHARE), .min = 0, .max = 1, .arg = "X",
     .help = "canary share when the stage does not set one"},
    {"handoff-below", 0, FINCH_OPT_FLOAT, F(handoff_below), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_HANDOFF_BELOW), .min = 0, .max = 1, .arg = "X",
     .help = "handoff.requested under this confidence"},
    {"rate", 0, FINCH_OPT_FLOAT, F(rate_per_s), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_RATE), .min = 0, .max = 1e308, .arg = "N",
     .help = "requests a second per key, refilled"},
    {"burst", 0, FINCH_OPT_FLOAT, F(rate_burst), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_BURST), .min = 0, .max = 1e308, .arg = "N",
     .help = "requests per key at once"},
    {"no-webhooks", 0, FINCH_OPT_BOOL, F(no_webhook_worker), .help = "do not run a webhook delivery worker in this process"},
    {"webhook-poll-ms", 0, FINCH_OPT_INT, F(webhook_poll_ms), .def = FINCH_OPT_DEF(FINCH_WEBHOOK_DEFAULT_POLL_MS), .min = 0, .max = 3600000, .arg = "N",
     .help = "webhook worker: idle wait between outbox passes"},
    {"webhook-backoff-ms", 0, FINCH_OPT_INT, F(webhook_backoff_ms), .def = FINCH_OPT_DEF(FINCH_WEBHOOK_DEFAULT_BASE_BACKOFF_MS), .min = 0, .max = MS_DAY,
     .arg = "N", .help = "webhook worker: first retry delay bound"},
    {"webhook-max-backoff-ms", 0, FINCH_OPT_INT, F(webhook_max_backoff_ms), .def = FINCH_OPT_DEF(FINCH_WEBHOOK_DEFAULT_MAX_BACKOFF_MS), .min = 0,
     .max = MS_DAY, .arg = "N", .help = "webhook worker: largest retry delay bound"},
    {"webhook-max-attempts", 0, FINCH_OPT_INT, F(webhook_max_attempts), .def = FINCH_OPT_DEF(FINCH_WEBHOOK_DEFAULT_MAX_ATTEMPTS), .min = 0, .max = 1000,
     .arg = "N", .help = "webhook worker: attempts before an event is dead"},
    {"gate-margin", 0, FINCH_OPT_FLOAT, F(gate.margin), .arg = "X",
     .help = "promotion gate margin (see finch rollout --help)"},
    {"gate-confidence", 0, FINCH_OPT_FLOAT, F(gate.confidence), .min = 0.5, .max = 1,
     .flags = FINCH_OPT_MIN_OPEN | FINCH_OPT_MAX_OPEN, .arg = "X", .help = "promotion gate one-sided confidence"},
    {"gate-min-tasks", 0, FINCH_OPT_INT, F(gate.min_tasks), .min = 0, .max = 1e308, .arg = "N",
     .help = "promotion gate: labelled tasks needed"},
    {"gate-intent-floor", 0, FINCH_OPT_FLOAT, F(gate.intent_floor), .arg = "X",
     .help = "promotion gate: per-intent accuracy floor"},
    {"batch-window-us", 0, FINCH_OPT_INT, F(batch_window_us), .def = "0", .min = 0, .max = 1000000, .arg = "N",
     .help = "batch /v1/intent, waiting up to N us for a batch while busy; 0: no batching"},
    {"max-batch", 0, FINCH_OPT_INT, F(max_batch), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_MAX_BATCH), .min = 1, .max = 65536, .arg = "N",
     .help = "texts per batch"},
    {"batch-threads", 0, FINCH_OPT_INT, F(batch_threads), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_BATCH_THREADS), .min = 1, .max = 64, .arg = "N",
     .help = "batcher threads"},
    {"max-queue", 0, FINCH_OPT_INT, F(max_queue), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_MAX_QUEUE), .min = 1, .max = 1000000, .arg = "N",
     .help = "classifications in flight; one more is answered 503 with Retry-After"},
    {"drain-ms", 0, FINCH_OPT_INT, F(drain_ms), .def = FINCH_OPT_DEF(FINCH_SERVE_DEFAULT_DRAIN_MS), .min = 1, .max = 3600000, .arg = "N",
     .help = "on SIGTERM/SIGINT, wait this long for requests in flight"},
    {"access-log", 0, FINCH_OPT_STRING, F(access_log), .def = "-", .arg = "FILE|-|off",
     .help = "one JSON line per request to FILE, stderr (-) or nowhere (off)"},
    {"log-text", 0, FINCH_OPT_BOOL, F(log_text), .help = "put the request text, normalised and redacted, in access log lines"},
};

static void serve_init(void *p) { ((serve_args *)p)->s.gate = finch_gate_opts_default(); }

static int serve_run(void *opts, const char **pos, size_t npos);

const cli_cmd cli_serve = {
    "serve", "serve intent recognition over HTTP", "--model FILE [--host ADDR] [--port N] [--deployment NAME]",
    "Serve intent recognition over HTTP until SIGINT or SIGTERM.",
    "endpoints (serve/serve.h has the details):\n"
    "  POST /v1/intent  {\"text\": \"...\"} -> {\"intent\", \"confidence\", \"source\": \"model\", \"model\": SHA256}\n"
    "  GET  /healthz\n"
    "  POST /v1/conversations/{id}/turns, GET /v1/labeling/tasks, POST /v1/labeling/tasks/{id},\n"
    "  GET  /v1/labeling/stats, GET|POST /v1/rollout, POST /v1/admin/reload (these need the database)\n"
    "  GET  /metrics (Prometheus; admin key in database mode)\n"
    "SIGHUP reloads the model file; SIGTERM and SIGINT stop after the requests in flight.\n"
    "The database is used when one is configured (--database-url, FINCH_DATABASE_URL, PG*\n"
    "variables) or the embedded cluster under FINCH_HOME exists; every endpoint but /healthz\n"
    "then needs an API key (finch keys create). Options can also be set in the [serve] section\n"
    "of the config file.",
    serve_opts, CLI_N(serve_opts), sizeof(serve_args), serve_init, 0, serve_run, 0};

static int serve_run(void *opts, const char **pos, size_t npos) {
  serve_args a = *(serve_args *)opts;
  finch_serve_opts o = a.s;
  if (!o.model_path) return cli_usage_error(&cli_serve, &a);
  if (o.canary_share == 0) o.canary_share = -1; /* an explicit 0, not the server's default */
  const char *model = o.model_path;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s", model);
  o.model_path = path;
  finch_err err;
  /* Database mode when a database is configured or the embedded cluster
   * exists; it is started and migrated here, before serving. */
  char url[PATH_MAX * 4];
  int use_db = !a.no_database && finch_db_resolve_url(url, sizeof url, 0, &err) == FINCH_OK;
  if (use_db || !finch_models_ref_is_file(model)) {
    finch_db *db = cli_db_open();
    if (!db) return 1;
    finch_status st = FINCH_OK;
    if (!finch_models_ref_is_file(model)) {
      long long id;
      st = finch_models_resolve(db, model, path, sizeof path, &id, NULL, &err);
    }
    finch_db_close(db);
    if (st) return cli_fail(&err);
    if (use_db && finch_db_resolve_url(url, sizeof url, 1, &err)) return cli_fail(&err);
  }
  o.conninfo = use_db ? url : NULL;
  /* Routed to this thread before the server's threads start, so that only
   * sigwait() below receives them. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  finch_serve_signals_to_caller(&set);
  signal(SIGPIPE, SIG_IGN);
  finch_server *srv;
  if (finch_server_start(&srv, &o, &err)) return cli_fail(&err);
  printf("finch: serving %s on http://%s:%u\n", path, o.host, finch_server_port(srv));
  if (use_db)
    printf("finch: deployment %s, database mode: API keys required (finch keys create)\n",
           o.deployment ? o.deployment : "default");
  fflush(stdout);
  int sig;
  for (;;) {
    if (sigwait(&set, &sig) != 0) continue;
    if (sig != SIGHUP) break;
    /* The file named at start, read again; a failure keeps the old model
     * and is logged by the server. */
    fprintf(stderr, "finch: SIGHUP received, reloading %s\n", path);
    (void)finch_server_reload(srv, NULL, &err);
  }
  fprintf(stderr, "finch: %s received, finishing the requests in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  finch_server_stop(srv);
  return 0;
}
