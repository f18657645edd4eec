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
#include "serve/serve.h"

int finch_cmd_serve(int argc, char **argv) {
  cli_opt opts[] = {
      {"model", 'm', "FILE|ID", "model file (or registered model id) to serve", NULL},
      {"host", 0, "ADDR", "address to bind (default 127.0.0.1)", NULL},
      {"port", 'p', "N", "TCP port; 0 picks a free one (default 8080)", NULL},
      {"max-body", 0, "BYTES", "largest request body; larger gets 413 (default: setting max_body, 65536)", NULL},
      {"threads", 0, "N", "worker threads (default 2)", NULL},
  };
  cli_cmd cmd = {"serve", "--model FILE [--host ADDR] [--port N]",
                 "Serve intent recognition over HTTP until SIGINT or SIGTERM.",
                 "endpoints:\n"
                 "  POST /v1/intent  {\"text\": \"...\"} -> {\"intent\", \"confidence\", \"source\": \"model\", \"model\": SHA256}\n"
                 "  GET  /healthz",
                 opts, sizeof opts / sizeof opts[0]};
  const char *pos[1];
  size_t npos;
  int rc = cli_parse(&cmd, argc, argv, pos, 0, &npos);
  if (rc) return rc == 1 ? 0 : 2;
  long long port = 8080, max_body = finch_config_int("max_body"), threads = 2;
  if (cli_get_long(&cmd, "port", &port) || cli_get_long(&cmd, "max-body", &max_body) ||
      cli_get_long(&cmd, "threads", &threads))
    return 2;
  if (!cli_get(&cmd, "model") || port < 0 || port > 65535 || max_body < 1 || threads < 1 || threads > 256) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  const char *model = cli_get(&cmd, "model");
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s", model);
  finch_err err;
  if (!finch_models_ref_is_file(model)) {
    /* Only a registered id needs the database. */
    finch_db *db = cli_db_open();
    if (!db) return 1;
    long long id;
    finch_status st = finch_models_resolve(db, model, path, sizeof path, &id, NULL, &err);
    finch_db_close(db);
    if (st) return cli_fail(&err);
  }
  /* Block the signals before the server's threads start, so that only
   * sigwait() below receives them. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  finch_serve_opts o = {.model_path = path, .host = cli_get(&cmd, "host") ? cli_get(&cmd, "host") : "127.0.0.1",
                        .port = (unsigned)port, .max_body = (size_t)max_body, .threads = (unsigned)threads};
  finch_server *srv;
  if (finch_server_start(&srv, &o, &err)) return cli_fail(&err);
  printf("finch: serving %s on http://%s:%u\n", path, o.host, finch_server_port(srv));
  fflush(stdout);
  int sig;
  sigwait(&set, &sig);
  fprintf(stderr, "finch: %s received, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  finch_server_stop(srv);
  return 0;
}
