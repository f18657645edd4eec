/* End to end: two `finch serve` processes ($FINCH_BIN) on one database walk
 * deployment bank-a through every stage, driven by the CLI (finch keys,
 * finch rollout) and the HTTP API, alternating between the servers: each
 * change made through one is seen by the other on the next turn, a canary
 * conversation gets the same engine from both, and the audit log holds every
 * change. A webhook receiver on loopback, subscribed to every event, answers
 * 503 until the canary stage and 200 after it, while the delivery workers of
 * both servers compete for the outbox: in the end every event is delivered,
 * exactly once per idempotency key, signed, with the same body on every
 * attempt, and none is lost. */
#include <curl/curl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "serve/rollout.h"
#include "tests/dbtest.h"
#include "tests/serve/api_fixture.h"
#include "tests/serve/fixture.h"
#include "tests/serve/receiver.h"

#define SECRET "whsec_e2e_0123456789abcdef"

static const char *bin;
static char k_admin[64], k_int[64], k_lab[64];

static void cli_key(const char *role, const char *name, char *out) {
  char cmd[512];
  int st;
  snprintf(cmd, sizeof cmd, "'%s' keys create --role %s --name %s 2>/dev/null", bin, role, name);
  char *o = api_run(cmd, &st);
  CHECK_INT_EQ(st, 0);
  snprintf(out, 64, "%s", o ? o : "");
  out[strcspn(out, "\n")] = '\0';
  CHECK_INT_EQ(strlen(out), 43);
  free(o);
}

/* finch rollout ACTION ... ; returns the exit status. */
static int cli_rollout(const char *args) {
  char cmd[1024];
  int st;
  snprintf(cmd, sizeof cmd, "'%s' rollout %s --deployment bank-a --min-tasks 10 --margin 0.05", bin, args);
  char *o = api_run(cmd, &st);
  printf("$ finch rollout %s\n%s", args, o ? o : "");
  free(o);
  return st;
}

static api_reply turn(unsigned port, const char *conv, const char *text) {
  char path[256];
  snprintf(path, sizeof path, "/v1/conversations/%s/turns?deployment=bank-a", conv);
  json_t *b = json_pack("{s:s}", "text", text);
  char *s = json_dumps(b, JSON_COMPACT);
  api_reply r = api_http(port, "POST", path, k_int, s);
  free(s);
  json_decref(b);
  if (r.status != 200) TEST_FAIL_("turn %s on port %u: %ld %s", conv, port, r.status, r.raw);
  return r;
}

/* The stage and engine of one turn on port. */
static void expect_turn(unsigned port, const char *conv, const char *text, const char *stage, const char *engine) {
  api_reply r = turn(port, conv, text);
  CHECK_STR_EQ(api_str(r.json, "stage"), stage);
  if (engine) CHECK_STR_EQ(api_str(r.json, "engine"), engine);
  api_reply_free(&r);
}

/* --handoff-below 1: every model answer (confidence under 1) also queues
 * handoff.requested, so that all four events occur. Short webhook backoffs and
 * attempts enough never to die while the receiver is down. */
static int start_server(api_child *c, const char *model, const char *rules, unsigned *port) {
  char *argv[] = {(char *)bin, "serve", "--model", (char *)model, "--port", "0", "--rules", (char *)rules,
                  "--deployment", "bank-a", "--oos-label", "request_refund", "--gate-min-tasks", "10",
                  "--gate-margin", "0.05", "--handoff-below", "1", "--webhook-poll-ms", "100",
                  "--webhook-backoff-ms", "50", "--webhook-max-backoff-ms", "500", "--webhook-max-attempts", "1000",
                  NULL};
  if (api_child_start(c, argv) != 0) return -1;
  char line[1024];
  if (api_child_wait_line(c, "finch: serving ", line, sizeof line, 120) != 0) return -1;
  const char *colon = strrchr(line, ':');
  long p = colon ? strtol(colon + 1, NULL, 10) : 0;
  if (p <= 0 || p > 65535) return -1;
  *port = (unsigned)p;
  return 0;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Requests the receiver answered with status code. */
static size_t rx_answered(test_receiver *rx, unsigned code) {
  size_t n = 0;
  pthread_mutex_lock(&rx->lock);
  for (size_t i = 0; i < rx->n; i++) n += rx->reqs[i].answered == code;
  pthread_mutex_unlock(&rx->lock);
  return n;
}

/* Every outbox row against what the receiver saw (after the servers and the
 * receiver stopped): one 2xx per idempotency key, every request for it
 * signed, with the row's event and the row's payload as its body, as many
 * requests as attempts recorded, and no request for any other key. */
static void check_deliveries(finch_db *db, test_receiver *rx) {
  finch_err err;
  PGresult *r = finch_db_query(db, "SELECT idempotency_key, event_type, payload::text, attempts FROM webhook_outbox",
                               0, NULL, &err);
  CHECK(r != NULL);
  if (!r) return;
  size_t attempts = 0, distinct_ok = 0;
  for (int i = 0; i < PQntuples(r); i++) {
    const char *key = PQgetvalue(r, i, 0), *event = PQgetvalue(r, i, 1), *payload = PQgetvalue(r, i, 2);
    int total = 0, ok = 0, bad = 0;
    for (size_t j = 0; j < rx->n; j++) {
      const test_rx_req *q = &rx->reqs[j];
      if (strcmp(q->key, key) != 0) continue;
      total++;
      ok += q->answered >= 200 && q->answered < 300;
      bad += !q->ok || strcmp(q->event, event) != 0 || strcmp(q->body, payload) != 0;
    }
    if (ok != 1 || bad || total != atoi(PQgetvalue(r, i, 3)))
      fprintf(stderr, "key %s (%s): %d requests, %d 2xx, %d bad, %s attempts\n", key, event, total, ok, bad,
              PQgetvalue(r, i, 3));
    CHECK_INT_EQ(ok, 1);
    CHECK_INT_EQ(bad, 0);
    CHECK_INT_EQ(total, atoi(PQgetvalue(r, i, 3)));
    attempts += (size_t)atoi(PQgetvalue(r, i, 3));
    distinct_ok += ok > 0;
  }
  CHECK_INT_EQ(distinct_ok, PQntuples(r));
  CHECK_INT_EQ(rx->n, attempts);
  PQclear(r);
}

static const char *const card_texts[] = {
    "my card has not arrived",        "my card hasn't arrived yet",        "when will my card arrive",
    "i am still waiting for my card", "card still not arrived",            "where is my new card",
    "has my card been sent",          "how long until my card arrives",    "the card i ordered has not arrived",
    "my new card is late",            "i never received my card",          "is my card on its way",
};

int main(void) {
  bin = getenv("FINCH_BIN");
  if (!bin || access(bin, X_OK) != 0) TEST_SKIP("FINCH_BIN is not set");
  finch_db *db = test_db_open();
  curl_global_init(CURL_GLOBAL_DEFAULT);
  finch_err err;
  char model[4096], rules[4096], name[64], sha[65];
  snprintf(name, sizeof name, "test_rollout_e2e.%ld.model", (long)getpid());
  fixture_tmp_path(model, sizeof model, name);
  snprintf(name, sizeof name, "test_rollout_e2e.%ld.rules", (long)getpid());
  fixture_tmp_path(rules, sizeof rules, name);
  if (fixture_build_model(model, sha, &err)) {
    fprintf(stderr, "cannot build the model: %s\n", err.msg);
    return 1;
  }
  static const char rule_text[] = "exchange_rate 50 /\\bcard\\b/i\nrequest_refund 50 /\\brefund/i\n";
  test_write_file(rules, rule_text, sizeof rule_text - 1);

  cli_key("admin", "ops", k_admin);
  cli_key("integration", "contact-centre", k_int);
  cli_key("labeler", "lab", k_lab);

  /* The receiver is down from the start, and subscribed to every event. */
  test_receiver rx;
  if (test_receiver_start(&rx, SECRET, TEST_RX_ONE_ROUTE) != 0) {
    fprintf(stderr, "cannot start the webhook receiver\n");
    return 1;
  }
  atomic_store(&rx.down, 1);
  char cmd[512];
  int sub_st;
  snprintf(cmd, sizeof cmd, "'%s' webhooks subscribe http://127.0.0.1:%u/hook --secret %s --events '*'", bin, rx.port,
           SECRET);
  free(api_run(cmd, &sub_st));
  CHECK_INT_EQ(sub_st, 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_subscriptions WHERE active"), 1);

  api_child a = {.pid = 0, .out_fd = -1}, b = {.pid = 0, .out_fd = -1};
  unsigned pa = 0, pb = 0;
  if (start_server(&a, model, rules, &pa) || start_server(&b, model, rules, &pb)) {
    TEST_FAIL_("a finch serve did not start");
    api_child_kill(&a);
    api_child_kill(&b);
    TEST_DONE();
  }

  /* assist, on both servers. */
  expect_turn(pa, "e-1", "my card has not arrived", "assist", "rules");
  expect_turn(pb, "e-1", "where is my new card", "assist", "rules");
  CHECK_INT_EQ(test_scalar(db, "SELECT max(turn_index) FROM conversation_turns WHERE conversation_id = 'e-1'"), 1);

  /* shadow, by the CLI; server B sees it at once. */
  CHECK_INT_EQ(cli_rollout("promote --reason 'assist reviewed'"), 0);
  expect_turn(pb, "e-2", "my card has not arrived", "shadow", "rules");
  for (size_t i = 0; i < sizeof card_texts / sizeof card_texts[0]; i++) {
    char conv[32];
    snprintf(conv, sizeof conv, "t-%zu", i);
    api_reply r = turn(i % 2 ? pa : pb, conv, card_texts[i]);
    api_reply_free(&r);
  }
  /* canary is refused until the tasks are labelled. */
  CHECK_INT_EQ(cli_rollout("promote --reason 'too early'"), 1);
  api_reply r = api_http(pa, "GET", "/v1/labeling/tasks?deployment=bank-a&limit=500", k_lab, NULL);
  CHECK_INT_EQ(r.status, 200);
  size_t k;
  json_t *t;
  json_array_foreach(json_object_get(r.json, "tasks"), k, t) {
    char path[128];
    snprintf(path, sizeof path, "/v1/labeling/tasks/%lld?deployment=bank-a",
             (long long)json_integer_value(json_object_get(t, "id")));
    const char *s = api_str(json_object_get(t, "suggestion"), "label");
    api_reply l = api_http(k % 2 ? pa : pb, "POST", path, k_lab,
                           s && strcmp(s, "card_arrival") == 0 ? "{\"decision\": \"accept\"}"
                                                               : "{\"decision\": \"correct\", \"label\": \"card_arrival\"}");
    CHECK_INT_EQ(l.status, 200);
    api_reply_free(&l);
  }
  api_reply_free(&r);

  /* canary, over HTTP on server A. */
  r = api_http(pa, "POST", "/v1/rollout?deployment=bank-a", k_admin,
               "{\"action\": \"promote\", \"reason\": \"labels are in\", \"canary_share\": 0.5}");
  CHECK_INT_EQ(r.status, 200);
  api_reply_free(&r);
  /* The receiver comes back once it has refused at least one delivery. */
  for (int i = 0; i < 3000 && rx_answered(&rx, 503) == 0; i++) sleep_ms(10);
  CHECK(rx_answered(&rx, 503) > 0);
  atomic_store(&rx.down, 0);
  int model_n = 0;
  for (int i = 0; i < 30; i++) {
    char conv[32];
    snprintf(conv, sizeof conv, "c-%d", i);
    api_reply r1 = turn(pa, conv, "my card has not arrived"), r2 = turn(pb, conv, "my card has not arrived");
    CHECK_STR_EQ(api_str(r1.json, "stage"), "canary");
    CHECK_STR_EQ(api_str(r1.json, "engine"), api_str(r2.json, "engine")); /* the same engine on both servers */
    model_n += api_str(r1.json, "engine") && strcmp(api_str(r1.json, "engine"), "model") == 0;
    api_reply_free(&r1);
    api_reply_free(&r2);
  }
  CHECK(model_n > 0 && model_n < 30);

  /* primary by the CLI, retired over HTTP on server B. */
  CHECK_INT_EQ(cli_rollout("promote --reason 'canary clean'"), 0);
  expect_turn(pa, "p-1", "my card has not arrived", "primary", "model");
  expect_turn(pb, "p-2", "i want a refund", "primary", "rules"); /* out of scope: the rules answer */
  r = api_http(pb, "POST", "/v1/rollout?deployment=bank-a", k_admin,
               "{\"action\": \"promote\", \"reason\": \"rules team disbanded\"}");
  CHECK_INT_EQ(r.status, 200);
  CHECK_STR_EQ(api_str(r.json, "to"), "retired");
  api_reply_free(&r);
  expect_turn(pa, "r-1", "i want a refund", "retired", "model"); /* rules are off */

  /* rollback to assist by the CLI: the rules answer again, with suggestions. */
  CHECK_INT_EQ(cli_rollout("rollback --to assist --reason 'incident 7'"), 0);
  r = turn(pb, "b-1", "my card has not arrived");
  CHECK_STR_EQ(api_str(r.json, "stage"), "assist");
  CHECK_STR_EQ(api_str(r.json, "engine"), "rules");
  CHECK(json_object_get(r.json, "suggestion") != NULL);
  api_reply_free(&r);

  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM rollout_state WHERE deployment = 'bank-a'"), 5);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'rollout.promote'"), 4);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'rollout.rollback'"), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'rollout.refused'"), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM audit_log WHERE action LIKE 'rollout.%' AND actor LIKE 'cli:%'"), 4);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM audit_log WHERE action LIKE 'rollout.%' AND actor LIKE 'key:ops#%'"), 2);

  /* Every event leaves the outbox (60 s at most), then both servers stop. */
  for (int i = 0; i < 6000 && test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE status = 'pending'"); i++)
    sleep_ms(10);

  /* Both stop cleanly on SIGTERM. */
  api_child *cs[2] = {&a, &b};
  for (int i = 0; i < 2; i++) {
    kill(cs[i]->pid, SIGTERM);
    int st = api_child_wait_exit(cs[i], 15);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) TEST_FAIL_("server %d did not exit cleanly (%d)", i, st);
    api_child_kill(cs[i]);
  }
  test_receiver_stop(&rx);

  /* Webhooks: none pending, none dead; each event once per key; one per
   * turn, task and stage change. */
  long long rows = test_scalar(db, "SELECT count(*) FROM webhook_outbox");
  CHECK(rows > 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE status = 'delivered'"), rows);
  CHECK(rx_answered(&rx, 503) > 0);
  check_deliveries(db, &rx);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'intent.classified'"),
               test_scalar(db, "SELECT count(*) FROM conversation_turns"));
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'labeling.task_created'"),
               test_scalar(db, "SELECT count(*) FROM labeling_tasks"));
  CHECK(test_scalar(db, "SELECT count(*) FROM labeling_tasks") > 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'handoff.requested'"),
               test_scalar(db, "SELECT count(*) FROM conversation_turns WHERE handoff"));
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'rollout.changed'"),
               test_scalar(db, "SELECT count(*) FROM rollout_state"));
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'rollout.changed'"), 5);
  CHECK(test_scalar(db, "SELECT count(*) FROM conversation_turns WHERE handoff") > 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(DISTINCT event_type) FROM webhook_outbox"), 4);
  printf("webhooks: %lld events, %zu requests, %zu answered 503, %lld handoffs, %lld workers delivered\n", rows,
         rx.n, rx_answered(&rx, 503),
         test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'handoff.requested'"),
         test_scalar(db, "SELECT count(DISTINCT locked_by) FROM webhook_outbox"));
  test_receiver_free(&rx);
  remove(model);
  remove(rules);
  finch_db_close(db);
  curl_global_cleanup();
  TEST_DONE();
}
