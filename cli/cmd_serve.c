#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/models.h"

#ifndef FINCH_SOURCE_DIR
#define FINCH_SOURCE_DIR "."
#endif
#include "serve/serve.h"

int finch_cmd_serve(int argc, char **argv) {
  cli_opt opts[] = {
      {"model", 'm', "FILE|ID", "model file (or registered model id) to serve", NULL},
      {"host", 0, "ADDR", "address to bind (default 127.0.0.1)", NULL},
      {"port", 'p', "N", "TCP port; 0 picks a free one (default 8080)", NULL},
      {"max-body", 0, "BYTES", "largest request body; larger gets 413 (default: setting max_body, 65536)", NULL},
      {"threads", 0, "N", "worker threads (default 2)", NULL},
      {"no-database", 0, NULL, "serve without the database: only /v1/intent and /healthz, no API keys", NULL},
      {"rules", 0, "FILE", "legacy rule file (default: serve/rules/banking77.rules of the source tree)", NULL},
      {"deployment", 'd', "NAME", "the deployment this server answers for (default \"default\")", NULL},
      {"oos-label", 0, "LABEL", "the model's out-of-scope label; the rules answer it in primary", NULL},
      {"min-confidence", 0, "X", "the model answers at or above it in canary/primary (default 0.5)", NULL},
      {"canary-share", 0, "X", "canary share when the stage does not set one (default 0.1)", NULL},
      {"handoff-below", 0, "X", "handoff.requested under this confidence (default 0.5)", NULL},
      {"rate", 0, "N", "requests a second per key, refilled (default 20)", NULL},
      {"burst", 0, "N", "requests per key at once (default 40)", NULL},
      {"no-webhooks", 0, NULL, "do not run a webhook delivery worker in this process", NULL},
      {"webhook-poll-ms", 0, "N", "webhook worker: idle wait between outbox passes (default 1000)", NULL},
      {"webhook-backoff-ms", 0, "N", "webhook worker: first retry delay bound (default 1000)", NULL},
      {"webhook-max-backoff-ms", 0, "N", "webhook worker: largest retry delay bound (default 600000)", NULL},
      {"webhook-max-attempts", 0, "N", "webhook worker: attempts before an event is dead (default 10)", NULL},
      {"gate-margin", 0, "X", "promotion gate margin (default 0.02; see finch rollout --help)", NULL},
      {"gate-confidence", 0, "X", "promotion gate one-sided confidence (default 0.95)", NULL},
      {"gate-min-tasks", 0, "N", "promotion gate: labelled tasks needed (default 30)", NULL},
      {"gate-intent-floor", 0, "X", "promotion gate: per-intent accuracy floor (default 0.5)", NULL},
      {"batch-window-us", 0, "N", "batch /v1/intent, waiting up to N us for a batch while busy; 0: no batching "
                                  "(default)", NULL},
      {"max-batch", 0, "N", "texts per batch (default 32)", NULL},
      {"batch-threads", 0, "N", "batcher threads (default 1)", NULL},
      {"max-queue", 0, "N", "classifications in flight; one more is answered 503 with Retry-After (default 1024)",
       NULL},
      {"drain-ms", 0, "N", "on SIGTERM/SIGINT, wait this long for requests in flight (default 5000)", NULL},
      {"access-log", 0, "FILE|-|off", "one JSON line per request to FILE, stderr (-, the default) or nowhere (off)",
       NULL},
      {"log-text", 0, NULL, "put the request text, normalised and redacted, in access log lines", NULL},
  };
  cli_cmd cmd = {"serve", "--model FILE [--host ADDR] [--port N] [--deployment NAME]",
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
                 "then needs an API key (finch keys create).",
                 opts, sizeof opts / sizeof opts[0]};
  const char *pos[1];
  size_t npos;
  int rc = cli_parse(&cmd, argc, argv, pos, 0, &npos);
  if (rc) return rc == 1 ? 0 : 2;
  long long port = 8080, max_body = finch_config_int("max_body"), threads = 2;
  long long window = 0, max_batch = 32, batch_threads = 1, max_queue = 1024, drain_ms = 5000;
  if (cli_get_long(&cmd, "port", &port) || cli_get_long(&cmd, "max-body", &max_body) ||
      cli_get_long(&cmd, "threads", &threads) || cli_get_long(&cmd, "batch-window-us", &window) ||
      cli_get_long(&cmd, "max-batch", &max_batch) || cli_get_long(&cmd, "batch-threads", &batch_threads) ||
      cli_get_long(&cmd, "max-queue", &max_queue) || cli_get_long(&cmd, "drain-ms", &drain_ms))
    return 2;
  if (!cli_get(&cmd, "model") || port < 0 || port > 65535 || max_body < 1 || threads < 1 || threads > 256) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  if (window < 0 || window > 1000000 || max_batch < 1 || max_batch > 65536 || batch_threads < 1 ||
      batch_threads > 64 || max_queue < 1 || max_queue > 1000000 || drain_ms < 1 || drain_ms > 3600000) {
    fprintf(stderr, "finch serve: --batch-window-us 0..1000000, --max-batch 1..65536, --batch-threads 1..64, "
                    "--max-queue 1..1000000, --drain-ms 1..3600000\n");
    return 2;
  }
  finch_gate_opts gate = finch_gate_opts_default();
  double min_conf = 0, share = 0, handoff = 0, rate = 0, burst = 0;
  long long gate_min = gate.min_tasks;
  if (cli_get_double(&cmd, "min-confidence", &min_conf) || cli_get_double(&cmd, "canary-share", &share) ||
      cli_get_double(&cmd, "handoff-below", &handoff) || cli_get_double(&cmd, "rate", &rate) ||
      cli_get_double(&cmd, "burst", &burst) || cli_get_double(&cmd, "gate-margin", &gate.margin) ||
      cli_get_double(&cmd, "gate-confidence", &gate.confidence) ||
      cli_get_double(&cmd, "gate-intent-floor", &gate.intent_floor) || cli_get_long(&cmd, "gate-min-tasks", &gate_min))
    return 2;
  if (min_conf < 0 || min_conf > 1 || share < 0 || share > 1 || handoff < 0 || handoff > 1 || rate < 0 ||
      burst < 0 || gate_min < 0 || !(gate.confidence > 0.5 && gate.confidence < 1)) {
    fprintf(stderr, "finch serve: confidences and shares are in [0, 1], --gate-confidence in (0.5, 1), rates "
                    "and counts non-negative\n");
    return 2;
  }
  long long wh_poll = 0, wh_backoff = 0, wh_max_backoff = 0, wh_attempts = 0;
  if (cli_get_long(&cmd, "webhook-poll-ms", &wh_poll) || cli_get_long(&cmd, "webhook-backoff-ms", &wh_backoff) ||
      cli_get_long(&cmd, "webhook-max-backoff-ms", &wh_max_backoff) ||
      cli_get_long(&cmd, "webhook-max-attempts", &wh_attempts))
    return 2;
  if (wh_poll < 0 || wh_poll > 3600000 || wh_backoff < 0 || wh_backoff > 86400000 || wh_max_backoff < 0 ||
      wh_max_backoff > 86400000 || wh_attempts < 0 || wh_attempts > 1000) {
    fprintf(stderr, "finch serve: --webhook-poll-ms 0..3600000, --webhook-backoff-ms and --webhook-max-backoff-ms "
                    "0..86400000, --webhook-max-attempts 0..1000 (0: the default)\n");
    return 2;
  }
  gate.min_tasks = (long)gate_min;
  if (cli_get(&cmd, "canary-share") && share == 0) share = -1; /* an explicit 0, not the default */
  const char *model = cli_get(&cmd, "model");
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s", model);
  finch_err err;
  /* Database mode when a database is configured or the embedded cluster
   * exists; it is started and migrated here, before serving. */
  char url[PATH_MAX * 4];
  int use_db = !cli_get(&cmd, "no-database") && finch_db_resolve_url(url, sizeof url, 0, &err) == FINCH_OK;
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
  char rules[PATH_MAX];
  snprintf(rules, sizeof rules, "%s", cli_get(&cmd, "rules") ? cli_get(&cmd, "rules") : FINCH_SOURCE_DIR "/serve/rules/banking77.rules");
  /* Routed to this thread before the server's threads start, so that only
   * sigwait() below receives them. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  finch_serve_signals_to_caller(&set);
  signal(SIGPIPE, SIG_IGN);
  finch_serve_opts o = {.model_path = path, .host = cli_get(&cmd, "host") ? cli_get(&cmd, "host") : "127.0.0.1",
                        .port = (unsigned)port, .max_body = (size_t)max_body, .threads = (unsigned)threads,
                        .conninfo = use_db ? url : NULL, .rules_path = rules,
                        .deployment = cli_get(&cmd, "deployment"), .oos_label = cli_get(&cmd, "oos-label"),
                        .min_confidence = min_conf, .canary_share = share, .handoff_below = handoff,
                        .gate = gate, .rate_per_s = rate, .rate_burst = burst,
                        .no_webhook_worker = cli_get(&cmd, "no-webhooks") != NULL,
                        .webhook_poll_ms = (unsigned)wh_poll, .webhook_max_attempts = (unsigned)wh_attempts,
                        .webhook_backoff_ms = (unsigned)wh_backoff,
                        .webhook_max_backoff_ms = (unsigned)wh_max_backoff,
                        .batch_window_us = (unsigned)window, .max_batch = (unsigned)max_batch,
                        .batch_threads = (unsigned)batch_threads, .max_queue = (unsigned)max_queue,
                        .drain_ms = (unsigned)drain_ms, .access_log = cli_get(&cmd, "access-log"),
                        .log_text = cli_get(&cmd, "log-text") != NULL};
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
