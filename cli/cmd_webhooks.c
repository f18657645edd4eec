/* finch webhooks: subscriptions, the outbox, redelivery and a delivery worker
 * (serve/webhook.h). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "serve/serve.h"
#include "serve/webhook.h"

/* Prints every row of r as tab-separated columns under a header line. */
static void print_table(PGresult *r) {
  int nf = PQnfields(r);
  for (int f = 0; f < nf; f++) printf("%s%s", f ? "\t" : "", PQfname(r, f));
  printf("\n");
  for (int i = 0; i < PQntuples(r); i++) {
    for (int f = 0; f < nf; f++) printf("%s%s", f ? "\t" : "", PQgetisnull(r, i, f) ? "-" : PQgetvalue(r, i, f));
    printf("\n");
  }
}

static int query_print(PGconn *c, const char *sql, int n, const char *const *params) {
  PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    fprintf(stderr, "finch webhooks: %s", PQresultErrorMessage(r));
    PQclear(r);
    return 1;
  }
  print_table(r);
  PQclear(r);
  return 0;
}

/* Reads a secret from standard input (first line), for `--secret -`. */
static int read_secret_stdin(char *buf, size_t n) {
  if (!fgets(buf, (int)n, stdin)) return -1;
  buf[strcspn(buf, "\r\n")] = '\0';
  return 0;
}

static int deliver_forever(const finch_webhook_opts *o) {
  /* Routed to this thread before the worker's thread starts, so that only
   * sigwait() below receives them. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  finch_serve_signals_to_caller(&set);
  signal(SIGPIPE, SIG_IGN);
  finch_err err;
  finch_webhook_worker *w;
  if (finch_webhook_worker_start(&w, o, &err)) return cli_fail(&err);
  printf("finch: delivering webhooks until SIGINT or SIGTERM\n");
  fflush(stdout);
  int sig;
  sigwait(&set, &sig);
  fprintf(stderr, "finch: %s received, finishing the delivery in flight\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  finch_webhook_worker_stop(w);
  return 0;
}

typedef struct {
  finch_webhook_opts wo;
  const char *secret, *events, *status;
  long long limit;
  int once;
} webhooks_args;

#define F(m) FINCH_OPT_FIELD(webhooks_args, m)
static const finch_opt webhooks_opts[] = {
    {"secret", 0, FINCH_OPT_STRING, F(secret), .arg = "S",
     .help = "subscribe: the signing secret (- reads it from standard input)"},
    {"events", 0, FINCH_OPT_LIST, F(events), .arg = "LIST", .help = "subscribe: comma-separated event types, or * for all"},
    {"status", 0, FINCH_OPT_ENUM, F(status), .choices = "pending|delivered|dead", .arg = "S",
     .help = "outbox: only rows with this status"},
    {"limit", 0, FINCH_OPT_INT, F(limit), .def = "50", .min = 1, .max = 1e308, .arg = "N",
     .help = "outbox: at most N rows, newest first"},
    {"once", 0, FINCH_OPT_BOOL, F(once), .help = "deliver: one pass over the due rows, then exit"},
    {"max-attempts", 0, FINCH_OPT_INT, F(wo.max_attempts), .def = FINCH_OPT_DEF(FINCH_WEBHOOK_DEFAULT_MAX_ATTEMPTS),
     .min = 1, .max = 1000, .arg = "N", .help = "deliver: attempts before a row is dead"},
    {"worker-id", 0, FINCH_OPT_STRING, F(wo.worker_id), .arg = "ID",
     .help = "deliver: name recorded on claimed rows (default host:pid:n)"},
};
#undef F

static int webhooks_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_webhooks = {
    "webhooks", "outbound webhooks: subscribe, list, outbox, redeliver, deliver",
    "subscribe URL --secret S --events a,b | list | unsubscribe ID | outbox [--status dead] | "
    "redeliver ID | deliver [--once]",
    "Outbound webhooks: subscriptions, the outbox and its delivery.\n"
    "  subscribe    add an endpoint for some events (intent.classified, handoff.requested,\n"
    "               labeling.task_created, rollout.changed, or *)\n"
    "  list         the subscriptions (secrets are never printed)\n"
    "  unsubscribe  deactivate a subscription; its pending rows die instead of being sent\n"
    "  outbox       outbox rows with status, attempts and last result\n"
    "  redeliver    queue a dead or delivered row again, with the same idempotency key\n"
    "  deliver      run a delivery worker until SIGINT/SIGTERM (--once: one pass)",
    "Deliveries are signed: Finch-Signature: v1=<hex HMAC-SHA256(secret, \"<id>.<timestamp>.<body>\")>\n"
    "with the id and timestamp in Finch-Webhook-Id and Finch-Webhook-Timestamp (serve/webhook.h).\n"
    "Secrets are stored in clear in webhook_subscriptions: the worker needs them to sign.",
    webhooks_opts, CLI_N(webhooks_opts), sizeof(webhooks_args), NULL, 2, webhooks_run, 0};

static int webhooks_run(void *opts, const char **pos, size_t npos) {
  webhooks_args a = *(webhooks_args *)opts;
  if (npos < 1) return cli_usage_error(&cli_webhooks, &a);
  const char *action = pos[0];
  int want_arg = strcmp(action, "subscribe") == 0 || strcmp(action, "redeliver") == 0 ||
                 strcmp(action, "unsubscribe") == 0;
  int no_arg = strcmp(action, "list") == 0 || strcmp(action, "outbox") == 0 || strcmp(action, "deliver") == 0;
  if (!want_arg && !no_arg) {
    fprintf(stderr, "finch webhooks: unknown action '%s' (subscribe, list, unsubscribe, outbox, redeliver, deliver)\n",
            action);
    return 2;
  }
  if ((want_arg && npos != 2) || (no_arg && npos != 1)) return cli_usage_error(&cli_webhooks, &a);
  long long num = 0;
  if (strcmp(action, "redeliver") == 0 || strcmp(action, "unsubscribe") == 0) {
    char *end;
    num = strtoll(pos[1], &end, 10);
    if (end == pos[1] || *end || num <= 0) {
      fprintf(stderr, "finch webhooks %s: '%s' is not a row id\n", action, pos[1]);
      return 2;
    }
  }
  const char *status = a.status;
  long long limit = a.limit;
  finch_webhook_opts wo = a.wo;
  if (strcmp(action, "deliver") == 0 && !a.once) return deliver_forever(&wo);

  char secret_buf[1024];
  const char *secret = a.secret;
  if (strcmp(action, "subscribe") == 0) {
    if (!secret || !a.events) {
      fprintf(stderr, "finch webhooks subscribe: --secret and --events are required\n");
      return 2;
    }
    if (strcmp(secret, "-") == 0) {
      if (read_secret_stdin(secret_buf, sizeof secret_buf)) {
        fprintf(stderr, "finch webhooks subscribe: no secret on standard input\n");
        return 2;
      }
      secret = secret_buf;
    }
  }

  finch_db *db = cli_db_open();
  if (!db) return 1;
  PGconn *c = finch_db_conn(db);
  finch_err err;
  int code = 0;
  if (strcmp(action, "subscribe") == 0) {
    long long id;
    if (finch_webhook_subscribe(c, pos[1], secret, a.events, &id, &err))
      code = cli_fail(&err);
    else
      printf("subscription %lld: %s\n", id, pos[1]);
  } else if (strcmp(action, "list") == 0) {
    code = query_print(c,
                       "SELECT id, url, array_to_string(event_types, ',') AS events, active, "
                       "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') AS created_at "
                       "FROM webhook_subscriptions ORDER BY id",
                       0, NULL);
  } else if (strcmp(action, "unsubscribe") == 0) {
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", num);
    const char *p[] = {ids};
    PGresult *r = PQexecParams(c, "UPDATE webhook_subscriptions SET active = false WHERE id = $1::bigint", 1, NULL,
                               p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      fprintf(stderr, "finch webhooks unsubscribe: %s", PQresultErrorMessage(r));
      code = 1;
    } else if (strcmp(PQcmdTuples(r), "1") != 0) {
      fprintf(stderr, "finch webhooks unsubscribe: subscription %lld does not exist\n", num);
      code = 1;
    } else {
      printf("subscription %lld deactivated\n", num);
    }
    PQclear(r);
  } else if (strcmp(action, "outbox") == 0) {
    char lim[32];
    snprintf(lim, sizeof lim, "%lld", limit);
    const char *p[] = {status, lim};
    code = query_print(c,
                       "SELECT id, event_type, subscription_id AS sub, status, attempts, last_status, "
                       "to_char(next_attempt_at, 'YYYY-MM-DD HH24:MI:SS') AS next_attempt_at, "
                       "idempotency_key, last_error "
                       "FROM webhook_outbox WHERE ($1::text IS NULL OR status = $1) "
                       "ORDER BY id DESC LIMIT $2::bigint",
                       2, p);
  } else if (strcmp(action, "redeliver") == 0) {
    if (finch_webhook_redeliver(c, num, &err))
      code = cli_fail(&err);
    else
      printf("outbox row %lld queued for redelivery\n", num);
  } else { /* deliver --once */
    int n = 0;
    if (finch_webhook_deliver_due(c, &wo, 1000, &n, &err))
      code = cli_fail(&err);
    else
      printf("%d row(s) delivered or failed; %zu pending\n", n, finch_webhook_backlog(c));
  }
  finch_db_close(db);
  return code;
}
