/* Outbound webhooks (serve/webhook.h) against a real PostgreSQL and a
 * loopback receiver (tests/serve/receiver.h) that records every request and checks its
 * signature: the outbox follows the caller's transaction, retries keep their
 * idempotency key, each event is delivered once per key, two workers never
 * deliver a row twice, permanent failures die, dead rows can be redelivered,
 * leases of crashed workers expire, and malformed input is refused clearly.
 * Timing is only used for generous polling deadlines. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/db.h"
#include "serve/webhook.h"
#include "tests/dbtest.h"
#include "tests/serve/receiver.h"
#include "tests/test.h"

#define SECRET "whsec_test_0123456789abcdef"

/* --- helpers ----------------------------------------------------------------- */

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Polls until the query's value is want, for at most seconds. */
static int wait_for(finch_db *db, long long want, int seconds, const char *sql) {
  for (int i = 0; i < seconds * 100; i++) {
    if (test_scalar(db, sql) == want) return 1;
    sleep_ms(10);
  }
  fprintf(stderr, "timed out waiting for %lld: %s (last %lld)\n", want, sql, test_scalar(db, sql));
  return 0;
}

static void only_active(finch_db *db, long long sub) {
  char sql[160];
  snprintf(sql, sizeof sql, "UPDATE webhook_subscriptions SET active = (id = %lld)", sub);
  test_exec(db, sql);
}

/* The key of outbox row id (static buffer). */
static const char *key_of(finch_db *db, long long id) {
  static char key[128];
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT idempotency_key FROM webhook_outbox WHERE id = %lld", id);
  finch_err err;
  PGresult *r = finch_db_query(db, sql, 0, NULL, &err);
  key[0] = '\0';
  if (r && PQntuples(r) == 1) snprintf(key, sizeof key, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  return key;
}

/* Every row of subscription sub with id > after: each key was answered 2xx
 * exactly once, nothing after that, all signed and shaped right; and the
 * requests per key equal the attempts recorded (no request unaccounted for).
 * *min_requests gets the fewest requests any key saw. */
static void check_exactly_once(finch_db *db, test_receiver *rx, long long sub, long long after, int *min_requests) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT idempotency_key, attempts FROM webhook_outbox WHERE subscription_id = %lld AND id > %lld", sub,
           after);
  finch_err err;
  PGresult *r = finch_db_query(db, sql, 0, NULL, &err);
  CHECK(r != NULL);
  if (!r) return;
  *min_requests = 1 << 30;
  for (int i = 0; i < PQntuples(r); i++) {
    const char *key = PQgetvalue(r, i, 0);
    int total, ok, bad, after_ok;
    test_receiver_count(rx, key, &total, &ok, &bad, &after_ok);
    if (ok != 1 || after_ok || bad || total != atoi(PQgetvalue(r, i, 1)))
      fprintf(stderr, "key %s: %d requests, %d 2xx, %d after the first 2xx, %d bad, %s attempts\n", key, total, ok,
              after_ok, bad, PQgetvalue(r, i, 1));
    CHECK_INT_EQ(ok, 1);
    CHECK_INT_EQ(after_ok, 0);
    CHECK_INT_EQ(bad, 0);
    CHECK_INT_EQ(total, atoi(PQgetvalue(r, i, 1)));
    if (total < *min_requests) *min_requests = total;
  }
  PQclear(r);
}

/* Runs the finch binary with args; returns its exit code and its output (both streams) in out. */
static int run_cli(const char *args, char *out, size_t n) {
  const char *bin = getenv("FINCH_BIN");
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin, args);
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t got = fread(out, 1, n - 1, p);
  out[got] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* --- tests -------------------------------------------------------------------- */

static void test_sign(void) {
  char hex[65];
  /* printf '%s' 'whk_test.1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test */
  finch_webhook_sign("whsec_test", "whk_test", 1700000000, "{\"a\":1}", 7, hex);
  CHECK_STR_EQ(hex, "dee42ef13e7446427c71410e68dfd3738897a0f214439f7e35f2fca07f5bada1");
  char other[65];
  finch_webhook_sign("whsec_test", "whk_test", 1700000000, "{\"a\":2}", 7, other);
  CHECK(strcmp(hex, other) != 0);
}

static void test_malformed(finch_db *db) {
  PGconn *c = finch_db_conn(db);
  finch_err err;
  int n = -1;
  CHECK_INT_EQ(finch_webhook_emit(c, "intent.unknown", "{}", &n, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "unknown webhook event type 'intent.unknown'");
  CHECK_CONTAINS(err.msg, "rollout.changed");
  CHECK_INT_EQ(n, 0);
  CHECK_INT_EQ(finch_webhook_emit(c, NULL, "{}", NULL, &err), FINCH_EINVAL);
  CHECK_INT_EQ(finch_webhook_emit(c, "intent.classified", "[1, 2]", NULL, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "not a JSON object");
  CHECK_INT_EQ(finch_webhook_emit(c, "intent.classified", "{\"a\":", NULL, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "not valid JSON");
  CHECK_INT_EQ(finch_webhook_emit(c, "intent.classified", NULL, NULL, &err), FINCH_EINVAL);

  long long id = -1;
  CHECK_INT_EQ(finch_webhook_subscribe(c, "not-a-url", SECRET, "intent.classified", &id, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "'not-a-url' is not http:// or https://");
  CHECK_INT_EQ(id, 0);
  CHECK_INT_EQ(finch_webhook_subscribe(c, "ftp://example.com/x", SECRET, "*", &id, &err), FINCH_EINVAL);
  CHECK_INT_EQ(finch_webhook_subscribe(c, "http://", SECRET, "*", &id, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "malformed");
  CHECK_INT_EQ(finch_webhook_subscribe(c, "http://exa mple.com/", SECRET, "*", &id, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "white space");
  CHECK_INT_EQ(finch_webhook_subscribe(c, "http://127.0.0.1:9/x", "", "*", &id, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "secret is empty");
  CHECK_INT_EQ(finch_webhook_subscribe(c, "http://127.0.0.1:9/x", SECRET, "intent.classified, bogus.event", &id, &err),
               FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "unknown event type 'bogus.event'");
  CHECK_INT_EQ(finch_webhook_subscribe(c, "http://127.0.0.1:9/x", SECRET, " , ", &id, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "no events");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_subscriptions"), 0);

  /* Delivery refuses a connection inside a transaction: its claims would not commit. */
  test_exec(db, "BEGIN");
  CHECK_INT_EQ(finch_webhook_deliver_due(c, NULL, 1, &n, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "inside a transaction");
  test_exec(db, "ROLLBACK");
  finch_webhook_opts bad = {.conninfo = "host=/nonexistent-finch-socket-dir dbname=none connect_timeout=2"};
  finch_webhook_worker *w = NULL;
  CHECK_INT_EQ(finch_webhook_worker_start(&w, &bad, &err), FINCH_EDB);
  CHECK_CONTAINS(err.msg, "cannot connect");
  CHECK(w == NULL);
  finch_webhook_worker_stop(NULL); /* a no-op */
  CHECK_INT_EQ(finch_webhook_redeliver(c, 999999, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "999999 does not exist");
}

/* Emitting follows the caller's transaction. */
static void test_transaction(finch_db *db, long long main_sub) {
  PGconn *c = finch_db_conn(db);
  finch_err err;
  int n = -1;
  only_active(db, main_sub);
  test_exec(db, "BEGIN");
  CHECK_INT_EQ(finch_webhook_emit(c, "intent.classified", "{\"intent\":\"card_arrival\"}", &n, &err), FINCH_OK);
  CHECK_INT_EQ(n, 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox"), 1);
  test_exec(db, "ROLLBACK");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox"), 0);

  /* No subscriber for the event: nothing queued. */
  CHECK_INT_EQ(finch_webhook_emit(c, "rollout.changed", "{}", &n, &err), FINCH_OK);
  CHECK_INT_EQ(n, 0);

  /* Committed with the state it reports. */
  test_exec(db, "BEGIN");
  test_exec(db, "INSERT INTO audit_log (actor, action) VALUES ('test', 'state change')");
  CHECK_INT_EQ(finch_webhook_emit(c, "handoff.requested", "{\"conversation\":\"c-1\"}", &n, &err), FINCH_OK);
  CHECK_INT_EQ(n, 1);
  test_exec(db, "COMMIT");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox"), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'state change'"), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE payload->>'type' = 'handoff.requested'"
                               " AND payload->'data'->>'conversation' = 'c-1' AND payload->>'id' = event_id"),
               1);
  CHECK_INT_EQ(finch_webhook_backlog(c), 1);
}

static const char *const main_events[] = {"intent.classified", "handoff.requested", "labeling.task_created"};

static void emit_many(finch_db *db, int n) {
  PGconn *c = finch_db_conn(db);
  finch_err err;
  test_exec(db, "BEGIN");
  for (int i = 0; i < n; i++) {
    char payload[64];
    snprintf(payload, sizeof payload, "{\"seq\":%d}", i);
    int q = 0;
    if (finch_webhook_emit(c, main_events[i % 3], payload, &q, &err)) {
      fprintf(stderr, "emit: %s\n", err.msg);
      exit(1);
    }
    CHECK_INT_EQ(q, 1);
  }
  test_exec(db, "COMMIT");
}

static finch_webhook_opts fast_opts(const char *worker_id) {
  return (finch_webhook_opts){.worker_id = worker_id, .poll_ms = 20, .max_attempts = 1000, .base_backoff_ms = 5,
                              .max_backoff_ms = 40, .timeout_ms = 5000};
}

/* The receiver is down (503) until every event has been retried; then up.
 * Two workers share the outbox. */
static void test_retry_then_deliver(finch_db *db, test_receiver *rx, long long main_sub) {
  enum { N = 6 };
  char sql[256];
  long long after = test_scalar(db, "SELECT coalesce(max(id), 0) FROM webhook_outbox");
  test_exec(db, "UPDATE webhook_outbox SET status = 'delivered'"); /* the committed one above, not under test */
  atomic_store(&rx->down, 1);
  emit_many(db, N);
  CHECK_INT_EQ(finch_webhook_backlog(finch_db_conn(db)), N);
  finch_webhook_opts o1 = fast_opts("retry-a"), o2 = fast_opts("retry-b");
  finch_webhook_worker *w1 = NULL, *w2 = NULL;
  finch_err err;
  CHECK_INT_EQ(finch_webhook_worker_start(&w1, &o1, &err), FINCH_OK);
  CHECK_INT_EQ(finch_webhook_worker_start(&w2, &o2, &err), FINCH_OK);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM webhook_outbox WHERE id > %lld AND attempts >= 2", after);
  CHECK(wait_for(db, N, 60, sql));
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id > %lld AND status = 'pending'", after), N);
  CHECK(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id > %lld AND last_status = 503", after) > 0);
  atomic_store(&rx->down, 0);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM webhook_outbox WHERE id > %lld AND status = 'delivered'", after);
  CHECK(wait_for(db, N, 60, sql));
  finch_webhook_worker_stop(w1);
  finch_webhook_worker_stop(w2);
  int min_requests = 0;
  check_exactly_once(db, rx, main_sub, after, &min_requests);
  CHECK(min_requests >= 2); /* every key was retried, with the same key */
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id > %lld AND last_status = 200"
                        " AND delivered_at IS NOT NULL AND locked_until IS NULL", after), N);
  CHECK_INT_EQ(finch_webhook_backlog(finch_db_conn(db)), 0);
}

/* A healthy receiver and two workers racing for the same rows: no row is
 * delivered twice. */
static void test_two_workers(finch_db *db, test_receiver *rx, long long main_sub) {
  enum { M = 60 };
  long long after = test_scalar(db, "SELECT coalesce(max(id), 0) FROM webhook_outbox");
  size_t before = rx->n;
  finch_webhook_opts o1 = fast_opts("pair-a"), o2 = fast_opts("pair-b");
  finch_webhook_worker *w1 = NULL, *w2 = NULL;
  finch_err err;
  CHECK_INT_EQ(finch_webhook_worker_start(&w1, &o1, &err), FINCH_OK);
  CHECK_INT_EQ(finch_webhook_worker_start(&w2, &o2, &err), FINCH_OK);
  emit_many(db, M); /* the commit's NOTIFY wakes both at once */
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM webhook_outbox WHERE id > %lld AND status = 'delivered'", after);
  CHECK(wait_for(db, M, 60, sql));
  finch_webhook_worker_stop(w1);
  finch_webhook_worker_stop(w2);
  int min_requests = 0;
  check_exactly_once(db, rx, main_sub, after, &min_requests);
  CHECK_INT_EQ(min_requests, 1);
  pthread_mutex_lock(&rx->lock);
  size_t got = rx->n - before;
  pthread_mutex_unlock(&rx->lock);
  CHECK_INT_EQ(got, M);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id > %lld AND attempts = 1", after), M);
  printf("two workers: pair-a delivered %lld, pair-b %lld of %d\n",
         test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id > %lld AND locked_by = 'pair-a'", after),
         test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id > %lld AND locked_by = 'pair-b'", after), M);
  /* What a deduplicating receiver kept: one per event of this and the previous test. */
  CHECK_INT_EQ(test_receiver_distinct_ok(rx, "/main"), 6 + M);
}

/* Runs deliver_due passes until the query gives want. */
static int drive_until(finch_db *db, const finch_webhook_opts *o, long long want, const char *sql) {
  finch_err err;
  for (int i = 0; i < 3000; i++) {
    if (test_scalar(db, sql) == want) return 1;
    int n = 0;
    if (finch_webhook_deliver_due(finch_db_conn(db), o, 10, &n, &err)) {
      fprintf(stderr, "deliver_due: %s\n", err.msg);
      return 0;
    }
    if (!n) sleep_ms(5);
  }
  fprintf(stderr, "timed out waiting for %lld: %s\n", want, sql);
  return 0;
}

/* 410 is permanent: dead at once; redelivery sends it again with the same key. */
static void test_dead_and_redeliver(finch_db *db, test_receiver *rx, long long gone_sub) {
  PGconn *c = finch_db_conn(db);
  finch_err err;
  only_active(db, gone_sub);
  int q = 0;
  CHECK_INT_EQ(finch_webhook_emit(c, "rollout.changed", "{\"deployment\":\"eu\",\"stage\":\"canary\"}", &q, &err),
               FINCH_OK);
  CHECK_INT_EQ(q, 1);
  long long id = test_scalar(db, "SELECT max(id) FROM webhook_outbox");
  finch_webhook_opts o = fast_opts("sync");
  char sql[200];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND status = 'dead'", id);
  CHECK(drive_until(db, &o, 1, sql));
  CHECK_INT_EQ(test_sqlf(db, "SELECT attempts FROM webhook_outbox WHERE id = %lld", id), 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT last_status FROM webhook_outbox WHERE id = %lld", id), 410);
  char key[128];
  snprintf(key, sizeof key, "%s", key_of(db, id));
  int total, ok, bad, after_ok;
  test_receiver_count(rx, key, &total, &ok, &bad, &after_ok);
  CHECK_INT_EQ(total, 1);
  CHECK_INT_EQ(ok, 0);
  CHECK_INT_EQ(bad, 0);

  atomic_store(&rx->gone_ok, 1);
  test_exec(db, "SET finch.actor = 'test-operator'");
  CHECK_INT_EQ(finch_webhook_redeliver(c, id, &err), FINCH_OK);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND status = 'pending' AND attempts = 0",
                    id), 1);
  CHECK_INT_EQ(finch_webhook_redeliver(c, id, &err), FINCH_EINVAL); /* pending now */
  CHECK_CONTAINS(err.msg, "is pending");
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM audit_log WHERE action = 'webhook.redeliver' AND actor = "
                        "'test-operator' AND subject = 'webhook_outbox:%lld' AND details->>'previous_status' = 'dead'",
                    id), 1);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND status = 'delivered'", id);
  CHECK(drive_until(db, &o, 1, sql));
  CHECK_STR_EQ(key_of(db, id), key);
  test_receiver_count(rx, key, &total, &ok, &bad, &after_ok);
  CHECK_INT_EQ(total, 2);
  CHECK_INT_EQ(ok, 1);
  CHECK_INT_EQ(bad, 0);
  /* Both requests carried the same body. */
  pthread_mutex_lock(&rx->lock);
  const char *first = NULL;
  int same = 0;
  for (size_t i = 0; i < rx->n; i++)
    if (strcmp(rx->reqs[i].key, key) == 0) {
      if (!first) first = rx->reqs[i].body;
      else same = strcmp(first, rx->reqs[i].body) == 0;
    }
  pthread_mutex_unlock(&rx->lock);
  CHECK(same);
}

/* 500 every time: dead after max_attempts, with the last status kept. */
static void test_retry_limit(finch_db *db, test_receiver *rx, long long flaky_sub) {
  PGconn *c = finch_db_conn(db);
  finch_err err;
  only_active(db, flaky_sub);
  CHECK_INT_EQ(finch_webhook_emit(c, "labeling.task_created", "{\"task\":7}", NULL, &err), FINCH_OK);
  long long id = test_scalar(db, "SELECT max(id) FROM webhook_outbox");
  finch_webhook_opts o = fast_opts("sync");
  o.max_attempts = 3;
  char sql[200];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND status = 'dead'", id);
  CHECK(drive_until(db, &o, 1, sql));
  CHECK_INT_EQ(test_sqlf(db, "SELECT attempts FROM webhook_outbox WHERE id = %lld", id), 3);
  CHECK_INT_EQ(test_sqlf(db, "SELECT last_status FROM webhook_outbox WHERE id = %lld", id), 500);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND last_error LIKE '%%gave up after 3%%'",
                    id), 1);
  int total, ok, bad, after_ok;
  test_receiver_count(rx, key_of(db, id), &total, &ok, &bad, &after_ok);
  CHECK_INT_EQ(total, 3);
  CHECK_INT_EQ(bad, 0);
}

/* 429 with Retry-After: 2 waits at least two seconds, beyond max_backoff_ms. */
static void test_retry_after(finch_db *db, long long busy_sub) {
  PGconn *c = finch_db_conn(db);
  finch_err err;
  only_active(db, busy_sub);
  CHECK_INT_EQ(finch_webhook_emit(c, "intent.classified", "{}", NULL, &err), FINCH_OK);
  long long id = test_scalar(db, "SELECT max(id) FROM webhook_outbox");
  finch_webhook_opts o = fast_opts("sync");
  int n = 0;
  CHECK_INT_EQ(finch_webhook_deliver_due(c, &o, 10, &n, &err), FINCH_OK);
  CHECK_INT_EQ(n, 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND status = 'pending' AND last_status = 429"
                        " AND next_attempt_at - last_attempt_at >= interval '2 seconds'", id), 1);
  test_exec(db, "UPDATE webhook_outbox SET status = 'dead' WHERE status = 'pending'");
}

/* Nothing listens: a connection error is retried, recorded without a status. */
static void test_connection_refused(finch_db *db, test_receiver *rx) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  CHECK(s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(s, (struct sockaddr *)&sa, &sl) == 0);
  close(s); /* the port is now (almost surely) closed */
  char url[96];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/nobody", (unsigned)ntohs(sa.sin_port));
  PGconn *c = finch_db_conn(db);
  finch_err err;
  long long sub = 0;
  CHECK_INT_EQ(finch_webhook_subscribe(c, url, SECRET, "handoff.requested", &sub, &err), FINCH_OK);
  only_active(db, sub);
  CHECK_INT_EQ(finch_webhook_emit(c, "handoff.requested", "{}", NULL, &err), FINCH_OK);
  long long id = test_scalar(db, "SELECT max(id) FROM webhook_outbox");
  finch_webhook_opts o = fast_opts("sync");
  int n = 0;
  /* One claim: with a few ms of backoff a second one could retry the row at once. */
  CHECK_INT_EQ(finch_webhook_deliver_due(c, &o, 1, &n, &err), FINCH_OK);
  CHECK_INT_EQ(n, 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND status = 'pending' AND attempts = 1"
                        " AND last_status IS NULL AND length(last_error) > 0", id), 1);
  int total, ok, bad, after_ok;
  test_receiver_count(rx, key_of(db, id), &total, &ok, &bad, &after_ok);
  CHECK_INT_EQ(total, 0);
  /* Deactivated: the pending row dies on its next claim instead of being sent. */
  test_exec(db, "UPDATE webhook_subscriptions SET active = false");
  test_exec(db, "UPDATE webhook_outbox SET next_attempt_at = now() WHERE status = 'pending'");
  CHECK_INT_EQ(finch_webhook_deliver_due(c, &o, 10, &n, &err), FINCH_OK);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND status = 'dead'"
                        " AND last_error LIKE '%%inactive%%'", id), 1);
}

/* A crashed worker's lease blocks the row until it expires; then another
 * worker delivers it with the same key. */
static void test_lease_expiry(finch_db *db, test_receiver *rx, long long main_sub) {
  PGconn *c = finch_db_conn(db);
  finch_err err;
  only_active(db, main_sub);
  CHECK_INT_EQ(finch_webhook_emit(c, "intent.classified", "{\"intent\":\"exchange_rate\"}", NULL, &err), FINCH_OK);
  long long id = test_scalar(db, "SELECT max(id) FROM webhook_outbox");
  char sql[256];
  snprintf(sql, sizeof sql,
           "UPDATE webhook_outbox SET locked_by = 'crashed', locked_until = now() + interval '1 hour', attempts = 1,"
           " last_attempt_at = now() WHERE id = %lld", id);
  test_exec(db, sql);
  finch_webhook_opts o = fast_opts("survivor");
  int n = -1;
  CHECK_INT_EQ(finch_webhook_deliver_due(c, &o, 10, &n, &err), FINCH_OK);
  CHECK_INT_EQ(n, 0);
  char key[128];
  snprintf(key, sizeof key, "%s", key_of(db, id));
  int total, ok, bad, after_ok;
  test_receiver_count(rx, key, &total, &ok, &bad, &after_ok);
  CHECK_INT_EQ(total, 0);
  snprintf(sql, sizeof sql, "UPDATE webhook_outbox SET locked_until = now() - interval '1 second' WHERE id = %lld", id);
  test_exec(db, sql);
  CHECK_INT_EQ(finch_webhook_deliver_due(c, &o, 10, &n, &err), FINCH_OK);
  CHECK_INT_EQ(n, 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND status = 'delivered' AND attempts = 2"
                        " AND locked_by = 'survivor'", id), 1);
  test_receiver_count(rx, key, &total, &ok, &bad, &after_ok);
  CHECK_INT_EQ(total, 1);
  CHECK_INT_EQ(ok, 1);
  CHECK_INT_EQ(bad, 0);
}

/* A receiver's check fails on a tampered body, timestamp or secret. */
static void test_tampered(test_receiver *rx) {
  pthread_mutex_lock(&rx->lock);
  CHECK(rx->n > 0);
  test_rx_req r = rx->n ? rx->reqs[0] : (test_rx_req){0};
  char *body = r.body ? strdup(r.body) : NULL;
  pthread_mutex_unlock(&rx->lock);
  if (!body) return;
  char good[65], bad[65];
  finch_webhook_sign(SECRET, r.id, r.ts, body, r.len, good);
  CHECK(r.sig_ok);
  body[r.len / 2] ^= 1;
  finch_webhook_sign(SECRET, r.id, r.ts, body, r.len, bad);
  CHECK(CRYPTO_memcmp(good, bad, 64) != 0);
  body[r.len / 2] ^= 1;
  finch_webhook_sign(SECRET, r.id, r.ts + 1, body, r.len, bad);
  CHECK(CRYPTO_memcmp(good, bad, 64) != 0);
  finch_webhook_sign("another secret", r.id, r.ts, body, r.len, bad);
  CHECK(CRYPTO_memcmp(good, bad, 64) != 0);
  free(body);
}

static void test_cli(finch_db *db) {
  if (!getenv("FINCH_BIN")) {
    printf("FINCH_BIN not set: CLI checks skipped\n");
    return;
  }
  char out[8192];
  CHECK_INT_EQ(run_cli("webhooks subscribe not-a-url --secret s --events intent.classified", out, sizeof out), 1);
  CHECK_CONTAINS(out, "'not-a-url' is not http:// or https://");
  CHECK_INT_EQ(run_cli("webhooks subscribe http://127.0.0.1:9/x --secret s --events intent.classifed", out, sizeof out),
               1);
  CHECK_CONTAINS(out, "unknown event type 'intent.classifed'");
  CHECK_INT_EQ(run_cli("webhooks subscribe http://127.0.0.1:9/x --events intent.classified", out, sizeof out), 2);
  CHECK_CONTAINS(out, "--secret and --events are required");
  CHECK_INT_EQ(run_cli("webhooks redeliver abc", out, sizeof out), 2);
  CHECK_CONTAINS(out, "'abc' is not a row id");
  CHECK_INT_EQ(run_cli("webhooks outbox --status lost", out, sizeof out), 2);
  CHECK_INT_EQ(run_cli("webhooks deliver --once --max-attempts 0", out, sizeof out), 2);
  CHECK_INT_EQ(run_cli("webhooks frobnicate", out, sizeof out), 2);
  CHECK_CONTAINS(out, "unknown action 'frobnicate'");
  CHECK_INT_EQ(run_cli("webhooks redeliver 987654", out, sizeof out), 1);
  CHECK_CONTAINS(out, "987654 does not exist");

  CHECK_INT_EQ(run_cli("webhooks subscribe http://127.0.0.1:9/cli --secret cli-secret-xyz --events '*'", out, sizeof out),
               0);
  CHECK_CONTAINS(out, "subscription ");
  CHECK_INT_EQ(run_cli("webhooks list", out, sizeof out), 0);
  CHECK_CONTAINS(out, "http://127.0.0.1:9/cli");
  CHECK(strstr(out, "cli-secret-xyz") == NULL); /* secrets are never printed */
  CHECK(strstr(out, SECRET) == NULL);
  CHECK_INT_EQ(run_cli("webhooks outbox --status dead", out, sizeof out), 0);
  CHECK_CONTAINS(out, "labeling.task_created"); /* the row that gave up after 3 attempts */
  long long dead = test_scalar(db, "SELECT min(id) FROM webhook_outbox WHERE status = 'dead' AND last_status = 500");
  char args[96];
  snprintf(args, sizeof args, "webhooks redeliver %lld", dead);
  CHECK_INT_EQ(run_cli(args, out, sizeof out), 0);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_outbox WHERE id = %lld AND status = 'pending'", dead), 1);
}

int main(void) {
  finch_db *db = test_db_open();
  finch_err err;
  PGconn *c = finch_db_conn(db);
  test_sign();
  test_malformed(db);

  test_receiver rx;
  if (test_receiver_start(&rx, SECRET, TEST_RX_ROUTES)) {
    fprintf(stderr, "cannot start the receiver\n");
    return 1;
  }
  char url[128];
  long long main_sub = 0, gone_sub = 0, flaky_sub = 0, busy_sub = 0;
  snprintf(url, sizeof url, "http://127.0.0.1:%u/main", rx.port);
  CHECK_INT_EQ(finch_webhook_subscribe(c, url, SECRET, "intent.classified,handoff.requested,labeling.task_created",
                                       &main_sub, &err), FINCH_OK);
  snprintf(url, sizeof url, "http://127.0.0.1:%u/gone", rx.port);
  CHECK_INT_EQ(finch_webhook_subscribe(c, url, SECRET, "rollout.changed", &gone_sub, &err), FINCH_OK);
  snprintf(url, sizeof url, "http://127.0.0.1:%u/flaky", rx.port);
  CHECK_INT_EQ(finch_webhook_subscribe(c, url, SECRET, "*", &flaky_sub, &err), FINCH_OK);
  snprintf(url, sizeof url, "http://127.0.0.1:%u/busy", rx.port);
  CHECK_INT_EQ(finch_webhook_subscribe(c, url, SECRET, "intent.classified", &busy_sub, &err), FINCH_OK);
  CHECK(main_sub > 0 && gone_sub > 0 && flaky_sub > 0 && busy_sub > 0);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM webhook_subscriptions WHERE id = %lld AND event_types = "
                        "'{intent.classified,handoff.requested,labeling.task_created}'", main_sub), 1);

  test_transaction(db, main_sub);
  test_retry_then_deliver(db, &rx, main_sub);
  test_two_workers(db, &rx, main_sub);
  test_dead_and_redeliver(db, &rx, gone_sub);
  test_retry_limit(db, &rx, flaky_sub);
  test_retry_after(db, busy_sub);
  test_connection_refused(db, &rx);
  test_lease_expiry(db, &rx, main_sub);
  test_tampered(&rx);
  test_cli(db);

  test_receiver_free(&rx);
  finch_db_close(db);
  TEST_DONE();
}
