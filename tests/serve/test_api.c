/* The server in database mode, black-box over HTTP against a real
 * PostgreSQL: API keys and roles (401/403), conversation turns through every
 * rollout stage, labelling (accept, correct, second labels) flowing back to
 * utterances, the promotion gate refusing and then allowing, rollback
 * restoring the rules, audit_log and webhook_outbox rows, the rate limit, and
 * 503 from the new endpoints without a database. */
#include <curl/curl.h>
#include <jansson.h>
#include <unistd.h>

#include "serve/auth.h"
#include "serve/rollout.h"
#include "serve/serve.h"
#include "serve/webhook.h"
#include "tests/dbtest.h"
#include "tests/serve/api_fixture.h"
#include "tests/serve/fixture.h"

/* Expects status; returns the api_reply (free it). */
#define EXPECT(r, want)                                                                                                \
  do {                                                                                                                 \
    if ((r).status != (want)) TEST_FAIL_("status %ld, want %d: %s", (r).status, (int)(want), (r).raw);               \
  } while (0)

#define jstr api_str

static unsigned port;
static char k_admin[64], k_int[64], k_lab1[64], k_lab2[64], sha[65];

/* POST a user turn and return the api_reply (caller frees). */
static api_reply turn(const char *conv, const char *text) {
  char path[256], body[512];
  snprintf(path, sizeof path, "/v1/conversations/%s/turns", conv);
  json_t *b = json_pack("{s:s, s:s}", "text", text, "speaker", "user");
  char *s = json_dumps(b, JSON_COMPACT);
  snprintf(body, sizeof body, "%s", s);
  free(s);
  json_decref(b);
  return api_http(port, "POST", path, k_int, body);
}

static api_reply rollout(const char *key, const char *body) { return api_http(port, "POST", "/v1/rollout", key, body); }

static void make_key(PGconn *c, const char *name, finch_role role, char *out) {
  finch_err err;
  char key[FINCH_API_KEY_LEN + 1];
  if (finch_auth_key_create(c, name, role, "test", key, NULL, &err)) {
    fprintf(stderr, "cannot create key: %s\n", err.msg);
    exit(1);
  }
  CHECK_INT_EQ(strlen(key), FINCH_API_KEY_LEN);
  strcpy(out, key);
}

static long long scalar(finch_db *db, const char *sql) { return test_scalar(db, sql); }

static void test_no_database(const char *model_path) {
  finch_serve_opts o = {.model_path = model_path, .port = 0, .threads = 1};
  finch_server *s;
  finch_err err;
  if (finch_server_start(&s, &o, &err)) {
    TEST_FAIL_("start without database: %s", err.msg);
    return;
  }
  unsigned p = finch_server_port(s);
  api_reply r = api_http(p, "POST", "/v1/conversations/c1/turns", NULL, "{\"text\": \"my card\"}");
  EXPECT(r, 503);
  CHECK_CONTAINS(jstr(r.json, "error"), "needs finch's database");
  api_reply_free(&r);
  r = api_http(p, "GET", "/v1/labeling/tasks", NULL, NULL);
  EXPECT(r, 503);
  api_reply_free(&r);
  r = api_http(p, "POST", "/v1/rollout", "whatever", "{}");
  EXPECT(r, 503);
  api_reply_free(&r);
  r = api_http(p, "POST", "/v1/intent", NULL, "{\"text\": \"my card has not arrived\"}"); /* auth is off */
  EXPECT(r, 200);
  api_reply_free(&r);
  r = api_http(p, "GET", "/healthz", NULL, NULL);
  EXPECT(r, 200);
  CHECK(json_is_false(json_object_get(r.json, "database")));
  api_reply_free(&r);
  finch_server_stop(s);
}

static void test_auth(finch_db *db) {
  api_reply r = api_http(port, "GET", "/healthz", NULL, NULL);
  EXPECT(r, 200);
  CHECK(json_is_true(json_object_get(r.json, "database")));
  api_reply_free(&r);
  r = api_http(port, "POST", "/v1/intent", NULL, "{\"text\": \"my card has not arrived\"}");
  EXPECT(r, 401);
  CHECK_STR_EQ(r.www_auth, "Bearer");
  CHECK_CONTAINS(jstr(r.json, "error"), "missing API key");
  api_reply_free(&r);
  r = api_http(port, "POST", "/v1/conversations/x/turns", "fk_0000000000000000000000000000000000000000", "{\"text\": \"a\"}");
  EXPECT(r, 401);
  CHECK_CONTAINS(jstr(r.json, "error"), "unknown or revoked");
  api_reply_free(&r);
  r = api_http(port, "GET", "/v1/rollout", "not-a-key-at-all", NULL);
  EXPECT(r, 401);
  api_reply_free(&r);
  r = api_http(port, "POST", "/v1/conversations/x/turns", k_lab1, "{\"text\": \"a\"}");
  EXPECT(r, 403);
  CHECK_CONTAINS(jstr(r.json, "error"), "role labeler");
  api_reply_free(&r);
  r = api_http(port, "GET", "/v1/labeling/tasks", k_int, NULL);
  EXPECT(r, 403);
  api_reply_free(&r);
  r = rollout(k_int, "{\"action\": \"promote\", \"reason\": \"x\"}");
  EXPECT(r, 403);
  api_reply_free(&r);
  r = rollout(k_lab1, "{\"action\": \"promote\", \"reason\": \"x\"}");
  EXPECT(r, 403);
  api_reply_free(&r);
  r = api_http(port, "POST", "/v1/intent", k_int, "{\"text\": \"my card has not arrived\"}");
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "intent"), "card_arrival");
  api_reply_free(&r);
  r = api_http(port, "GET", "/v1/labeling/stats", k_admin, NULL); /* admin may use everything */
  EXPECT(r, 200);
  api_reply_free(&r);
  /* A revoked key is refused from the next request on. */
  finch_err err;
  char key[FINCH_API_KEY_LEN + 1];
  long long id;
  CHECK_INT_EQ(finch_auth_key_create(finch_db_conn(db), "temp", FINCH_ROLE_INTEGRATION, "test", key, &id, &err), 0);
  r = api_http(port, "POST", "/v1/intent", key, "{\"text\": \"refund\"}");
  EXPECT(r, 200);
  api_reply_free(&r);
  CHECK_INT_EQ(finch_auth_key_revoke(finch_db_conn(db), id, "test", &err), 0);
  r = api_http(port, "POST", "/v1/intent", key, "{\"text\": \"refund\"}");
  EXPECT(r, 401);
  api_reply_free(&r);
  CHECK_INT_EQ(finch_auth_key_revoke(finch_db_conn(db), id, "test", &err), FINCH_ENOTFOUND);
  /* Only hashes are stored. */
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM api_keys WHERE key_sha256 ~ '^[0-9a-f]{64}$'"),
               scalar(db, "SELECT count(*) FROM api_keys"));
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'key.create'"), 5);
  /* Malformed turns. */
  r = api_http(port, "POST", "/v1/conversations/bad%20id/turns", k_int, "{\"text\": \"card\"}");
  EXPECT(r, 400);
  api_reply_free(&r);
  r = api_http(port, "POST", "/v1/conversations/c/turns", k_int, "{\"text\": \"card\", \"speaker\": \"bot\"}");
  EXPECT(r, 400);
  api_reply_free(&r);
  r = api_http(port, "POST", "/v1/conversations/c/turns", k_int, "{\"text\": \"   \"}");
  EXPECT(r, 400);
  api_reply_free(&r);
  r = api_http(port, "GET", "/v1/conversations/c/turns", k_int, NULL);
  EXPECT(r, 405);
  api_reply_free(&r);
}

static void test_assist(finch_db *db) {
  api_reply r = turn("a-1", "my card has not arrived");
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "stage"), "assist");
  CHECK_STR_EQ(jstr(r.json, "engine"), "rules");
  CHECK_STR_EQ(jstr(r.json, "intent"), "exchange_rate"); /* the test rules are wrong on purpose */
  json_t *sugg = json_object_get(r.json, "suggestion");
  CHECK_STR_EQ(jstr(sugg, "intent"), "card_arrival");
  CHECK(json_integer_value(json_object_get(r.json, "labeling_task")) > 0);
  CHECK_INT_EQ(json_integer_value(json_object_get(r.json, "turn")), 0);
  CHECK_STR_EQ(jstr(r.json, "model"), sha);
  api_reply_free(&r);
  r = turn("a-1", "where is my new card");
  EXPECT(r, 200);
  CHECK_INT_EQ(json_integer_value(json_object_get(r.json, "turn")), 1);
  api_reply_free(&r);
  r = api_http(port, "POST", "/v1/conversations/a-1/turns", k_int, "{\"text\": \"let me check\", \"speaker\": \"agent\"}");
  EXPECT(r, 200);
  CHECK_INT_EQ(json_integer_value(json_object_get(r.json, "turn")), 2);
  CHECK(json_object_get(r.json, "intent") == NULL);
  api_reply_free(&r);
  /* Personal data never reaches the tables. */
  r = turn("a-2", "my card 4111 1111 1111 1111 has not arrived");
  EXPECT(r, 200);
  api_reply_free(&r);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM conversation_turns WHERE text LIKE '%4111%'"), 0);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM labeling_tasks WHERE text LIKE '%4111%'"), 0);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM conversation_turns WHERE conversation_id = 'a-2'"
                          " AND text LIKE '%<CARD>%'"),
               1);
  /* No rule fires: confidence 0, a handoff. */
  r = turn("a-3", "hello there");
  EXPECT(r, 200);
  CHECK(json_is_true(json_object_get(r.json, "handoff")));
  CHECK(json_is_null(json_object_get(r.json, "intent")));
  api_reply_free(&r);
  /* Agreement with a confident model makes no task. */
  r = turn("a-4", "i want a refund");
  EXPECT(r, 200);
  if (json_number_value(json_object_get(json_object_get(r.json, "suggestion"), "confidence")) >= 0.5) {
    CHECK_STR_EQ(jstr(r.json, "intent"), "request_refund");
    CHECK(json_object_get(r.json, "labeling_task") == NULL);
  }
  api_reply_free(&r);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM conversation_turns WHERE speaker = 'user'"), 5);
  /* Events, written with the turns. */
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'intent.classified'"), 5);
  CHECK(scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'handoff.requested'") >= 1);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'labeling.task_created'"),
               scalar(db, "SELECT count(*) FROM labeling_tasks"));
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM webhook_outbox WHERE payload::text LIKE '%4111%'"), 0);
}

static const char *const card_texts[] = {
    "my card hasn't arrived yet",     "when will my card arrive",     "i am still waiting for my card",
    "card still not arrived",         "my card did not come in the mail", "has my card been sent",
    "how long until my card arrives", "the card i ordered has not arrived", "my new card is late",
    "i never received my card",       "card delivery is taking too long", "is my card on its way",
};

static void test_gate_and_labels(finch_db *db) {
  /* assist -> shadow needs no gate, but a reason. */
  api_reply r = rollout(k_admin, "{\"action\": \"promote\"}");
  EXPECT(r, 400);
  CHECK_CONTAINS(jstr(r.json, "error"), "reason");
  api_reply_free(&r);
  r = rollout(k_admin, "{\"action\": \"promote\", \"reason\": \"assist reviewed\"}");
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "from"), "assist");
  CHECK_STR_EQ(jstr(r.json, "to"), "shadow");
  api_reply_free(&r);
  r = turn("s-1", "my card has not arrived");
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "stage"), "shadow");
  CHECK_STR_EQ(jstr(r.json, "engine"), "rules");
  CHECK(json_object_get(r.json, "suggestion") == NULL);
  CHECK(json_integer_value(json_object_get(r.json, "labeling_task")) > 0); /* shadow keeps collecting */
  api_reply_free(&r);
  for (size_t i = 0; i < sizeof card_texts / sizeof card_texts[0]; i++) {
    char conv[32];
    snprintf(conv, sizeof conv, "l-%zu", i);
    r = turn(conv, card_texts[i]);
    EXPECT(r, 200);
    api_reply_free(&r);
  }
  /* shadow -> canary: refused while nothing is labelled; audited. */
  r = rollout(k_admin, "{\"action\": \"promote\", \"reason\": \"try canary\", \"canary_share\": 0.5}");
  EXPECT(r, 409);
  CHECK(json_is_false(json_object_get(json_object_get(r.json, "gate"), "pass")));
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(r.json, "gate"), "n")), 0);
  api_reply_free(&r);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'rollout.refused'"), 1);
  r = rollout(k_admin, "{\"action\": \"promote\", \"to\": \"primary\", \"reason\": \"skip\"}");
  EXPECT(r, 400);
  api_reply_free(&r);

  /* The queue, filtered. */
  r = api_http(port, "GET", "/v1/labeling/tasks?limit=500", k_lab1, NULL);
  EXPECT(r, 200);
  json_t *tasks = json_object_get(r.json, "tasks");
  size_t n_tasks = json_array_size(tasks);
  CHECK(n_tasks >= 14);
  CHECK_INT_EQ(n_tasks, scalar(db, "SELECT count(*) FROM labeling_tasks WHERE status = 'open'"));
  api_reply fr = api_http(port, "GET", "/v1/labeling/tasks?intent=card_arrival&min_confidence=0.5&stage=shadow", k_lab1, NULL);
  EXPECT(fr, 200);
  size_t k;
  json_t *t;
  json_array_foreach(json_object_get(fr.json, "tasks"), k, t) {
    CHECK_STR_EQ(jstr(t, "stage"), "shadow");
    CHECK(json_number_value(json_object_get(json_object_get(t, "suggestion"), "confidence")) >= 0.5);
  }
  CHECK(json_array_size(json_object_get(fr.json, "tasks")) >= 10);
  api_reply_free(&fr);
  fr = api_http(port, "GET", "/v1/labeling/tasks?min_confidence=abc", k_lab1, NULL);
  EXPECT(fr, 400);
  api_reply_free(&fr);

  /* lab1 labels everything: card suggestions accepted, the rest corrected. */
  long long corrected_id = 0, first_id = 0;
  json_array_foreach(tasks, k, t) {
    long long id = json_integer_value(json_object_get(t, "id"));
    json_t *s = json_object_get(t, "suggestion");
    CHECK_STR_EQ(jstr(s, "model"), sha);
    char path[64];
    snprintf(path, sizeof path, "/v1/labeling/tasks/%lld", id);
    int accept = jstr(s, "label") && strcmp(jstr(s, "label"), "card_arrival") == 0;
    api_reply a = api_http(port, "POST", path, k_lab1,
                   accept ? "{\"decision\": \"accept\"}" : "{\"decision\": \"correct\", \"label\": \"greeting\"}");
    EXPECT(a, 200);
    CHECK_STR_EQ(jstr(a.json, "status"), accept ? "accepted" : "corrected");
    CHECK_STR_EQ(jstr(a.json, "labeler"), "lab1");
    CHECK(json_integer_value(json_object_get(a.json, "utterance_id")) > 0);
    if (!accept) corrected_id = id;
    if (!first_id) first_id = id;
    api_reply_free(&a);
  }
  api_reply_free(&r);
  CHECK(corrected_id > 0);
  char path[64];
  snprintf(path, sizeof path, "/v1/labeling/tasks/%lld", first_id);
  r = api_http(port, "POST", path, k_lab1, "{\"decision\": \"accept\"}");
  EXPECT(r, 409); /* the same labeller twice */
  api_reply_free(&r);
  r = api_http(port, "POST", "/v1/labeling/tasks/99999999", k_lab1, "{\"decision\": \"accept\"}");
  EXPECT(r, 404);
  api_reply_free(&r);
  r = api_http(port, "POST", path, k_lab2, "{\"decision\": \"maybe\"}");
  EXPECT(r, 400);
  api_reply_free(&r);
  /* Labels flow back into utterances, dataset default_labels. */
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM labeling_tasks t JOIN utterances u ON u.id = t.utterance_id"
                          " JOIN datasets d ON d.id = u.dataset_id"
                          " WHERE d.name = 'default_labels' AND u.label = t.final_label"),
               (long long)n_tasks);
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM labeling_tasks t JOIN utterances u ON u.id = t.utterance_id"
           " WHERE t.id = %lld AND u.label = 'greeting' AND t.status = 'corrected'",
           corrected_id);
  CHECK_INT_EQ(scalar(db, sql), 1);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM utterances WHERE text LIKE '%4111%'"), 0);

  /* A second labeller on four tasks: three agree, one does not. */
  r = api_http(port, "GET", "/v1/labeling/tasks?status=needs_second&intent=card_arrival&limit=4", k_lab2, NULL);
  EXPECT(r, 200);
  CHECK_INT_EQ(json_array_size(json_object_get(r.json, "tasks")), 4);
  json_array_foreach(json_object_get(r.json, "tasks"), k, t) {
    snprintf(path, sizeof path, "/v1/labeling/tasks/%lld", (long long)json_integer_value(json_object_get(t, "id")));
    api_reply a = api_http(port, "POST", path, k_lab2,
                   k < 3 ? "{\"decision\": \"accept\"}" : "{\"decision\": \"correct\", \"label\": \"lost_card\"}");
    EXPECT(a, 200);
    CHECK_STR_EQ(jstr(a.json, "second_labeler"), "lab2");
    CHECK_STR_EQ(jstr(a.json, "final_label"), "card_arrival"); /* the first label stays final */
    api_reply_free(&a);
    if (k == 0) {
      a = api_http(port, "POST", path, k_admin, "{\"decision\": \"accept\"}");
      EXPECT(a, 409); /* two labels already */
      api_reply_free(&a);
    }
  }
  api_reply_free(&r);
  r = api_http(port, "GET", "/v1/labeling/stats", k_lab2, NULL);
  EXPECT(r, 200);
  json_t *ag = json_object_get(r.json, "agreement");
  CHECK_INT_EQ(json_integer_value(json_object_get(ag, "double_labelled")), 4);
  CHECK_INT_EQ(json_integer_value(json_object_get(ag, "agreeing")), 3);
  CHECK_NEAR(json_number_value(json_object_get(ag, "percent_agreement")), 75.0, 1e-9);
  CHECK(json_is_number(json_object_get(ag, "cohen_kappa")));
  long long acc = scalar(db, "SELECT count(*) FROM labeling_tasks WHERE status = 'accepted'");
  long long cor = scalar(db, "SELECT count(*) FROM labeling_tasks WHERE status = 'corrected'");
  CHECK_NEAR(json_number_value(json_object_get(r.json, "acceptance_rate")), (double)acc / (double)(acc + cor), 1e-6);
  api_reply_free(&r);

  /* One intent's own promotion is gated on that intent's tasks only. */
  r = rollout(k_admin, "{\"action\": \"promote\", \"intent\": \"exchange_rate\", \"reason\": \"rates first\"}");
  EXPECT(r, 409);
  CHECK(json_integer_value(json_object_get(json_object_get(r.json, "gate"), "n")) < 10);
  api_reply_free(&r);

  /* Now the gate holds. */
  r = rollout(k_admin, "{\"action\": \"promote\", \"reason\": \"labels are in\", \"canary_share\": 0.5}");
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "to"), "canary");
  json_t *g = json_object_get(r.json, "gate");
  CHECK(json_is_true(json_object_get(g, "pass")));
  CHECK(json_number_value(json_object_get(g, "lower_bound")) > 0.05);
  api_reply_free(&r);
}

static void test_canary_primary_rollback(finch_db *db) {
  int model = 0, rules = 0;
  for (int i = 0; i < 40; i++) {
    char conv[32];
    snprintf(conv, sizeof conv, "k-%d", i);
    api_reply r1 = turn(conv, "my card has not arrived");
    api_reply r2 = turn(conv, "where is my new card");
    EXPECT(r1, 200);
    CHECK_STR_EQ(jstr(r1.json, "stage"), "canary");
    const char *e1 = jstr(r1.json, "engine"), *e2 = jstr(r2.json, "engine");
    CHECK_STR_EQ(e1, e2); /* a conversation never flips engine */
    double b = finch_rollout_bucket("default", conv);
    if (e1 && strcmp(e1, "model") == 0) {
      model++;
      CHECK(b < 0.5);
      CHECK_STR_EQ(jstr(r1.json, "intent"), "card_arrival");
    } else {
      rules++;
      if (b >= 0.5) CHECK_STR_EQ(jstr(r1.json, "intent"), "exchange_rate");
    }
    api_reply_free(&r1);
    api_reply_free(&r2);
  }
  CHECK(model >= 8);
  CHECK(rules >= 8);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM conversation_turns WHERE stage = 'canary' AND in_canary IS NULL"), 0);

  api_reply r = rollout(k_admin, "{\"action\": \"promote\", \"reason\": \"canary clean for a week\"}");
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "to"), "primary");
  api_reply_free(&r);
  r = turn("p-1", "my card has not arrived");
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "stage"), "primary");
  CHECK_STR_EQ(jstr(r.json, "engine"), "model");
  CHECK_STR_EQ(jstr(r.json, "intent"), "card_arrival");
  api_reply_free(&r);
  /* request_refund is the test server's out-of-scope label: rules answer. */
  r = turn("p-2", "i want a refund");
  EXPECT(r, 200);
  if (strcmp(jstr(r.json, "intent") ? jstr(r.json, "intent") : "", "request_refund") == 0) {
    CHECK_STR_EQ(jstr(r.json, "engine"), "rules");
    CHECK(json_is_true(json_object_get(r.json, "fallback")));
  } else {
    TEST_FAIL_("primary refund turn: %s", r.raw);
  }
  api_reply_free(&r);

  r = api_http(port, "GET", "/v1/rollout", k_int, NULL);
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "stage"), "primary");
  CHECK_STR_EQ(jstr(r.json, "next_stage"), "retired");
  CHECK(json_array_size(json_object_get(r.json, "history")) >= 3);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(r.json, "turns_since_change"), "turns")), 2);
  api_reply_free(&r);

  /* Rollback restores the rules. */
  r = rollout(k_admin, "{\"action\": \"rollback\", \"to\": \"shadow\", \"reason\": \"incident 42\"}");
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "from"), "primary");
  CHECK_STR_EQ(jstr(r.json, "to"), "shadow");
  api_reply_free(&r);
  r = turn("p-1", "my card has not arrived");
  EXPECT(r, 200);
  CHECK_STR_EQ(jstr(r.json, "engine"), "rules");
  CHECK_STR_EQ(jstr(r.json, "intent"), "exchange_rate");
  api_reply_free(&r);
  r = rollout(k_admin, "{\"action\": \"rollback\", \"to\": \"canary\", \"reason\": \"no\"}");
  EXPECT(r, 400); /* not earlier */
  api_reply_free(&r);

  /* The history is append-only and every change is audited with figures. */
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM rollout_state"), 4);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'rollout.promote'"), 3);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'rollout.rollback'"), 1);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'rollout.refused'"), 2);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM audit_log WHERE action LIKE 'rollout.%'"
                          " AND actor LIKE 'key:root#%' AND details->>'reason' <> '' AND created_at IS NOT NULL"),
               6);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'rollout.promote'"
                          " AND details->'gate'->>'lower_bound' IS NOT NULL AND (details->'gate'->>'n')::int >= 10"),
               2);
  CHECK_INT_EQ(scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'rollout.changed'"), 4);
}

static void test_rate_limit(const char *model_path, const char *url, const char *rules) {
  finch_serve_opts o = {.model_path = model_path, .port = 0, .threads = 2, .conninfo = url, .rules_path = rules,
                        .rate_per_s = 0.5, .rate_burst = 2};
  finch_server *s;
  finch_err err;
  if (finch_server_start(&s, &o, &err)) { /* with a webhook worker this time */
    TEST_FAIL_("start: %s", err.msg);
    return;
  }
  unsigned p = finch_server_port(s);
  for (int i = 0; i < 2; i++) {
    api_reply r = api_http(p, "GET", "/v1/rollout", k_admin, NULL);
    EXPECT(r, 200);
    api_reply_free(&r);
  }
  api_reply r = api_http(p, "GET", "/v1/rollout", k_admin, NULL);
  EXPECT(r, 429);
  CHECK(atoi(r.retry_after) >= 1 && atoi(r.retry_after) <= 2);
  api_reply_free(&r);
  r = api_http(p, "GET", "/v1/rollout", k_lab1, NULL); /* another key is not limited */
  EXPECT(r, 200);
  api_reply_free(&r);
  finch_server_stop(s);
}

/* The CLI against the same database: keys create prints a working key once. */
static void test_cli(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || access(bin, X_OK) != 0) return;
  char cmd[1024], line[256] = "";
  snprintf(cmd, sizeof cmd, "'%s' keys create --role admin --name cli-admin 2>/dev/null", bin);
  FILE *p = popen(cmd, "r");
  if (!p || !fgets(line, sizeof line, p)) TEST_FAIL_("%s printed nothing", cmd);
  if (p) CHECK_INT_EQ(pclose(p), 0);
  line[strcspn(line, "\n")] = '\0';
  CHECK_INT_EQ(strlen(line), FINCH_API_KEY_LEN);
  api_reply r = api_http(port, "GET", "/v1/rollout", line, NULL);
  EXPECT(r, 200);
  api_reply_free(&r);
  snprintf(cmd, sizeof cmd, "'%s' rollout status --json", bin);
  p = popen(cmd, "r");
  char out[65536] = "";
  size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
  out[n] = '\0';
  if (p) CHECK_INT_EQ(pclose(p), 0);
  json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
  CHECK_STR_EQ(jstr(j, "stage"), "shadow");
  json_decref(j);
  snprintf(cmd, sizeof cmd, "'%s' rollout promote 2>/dev/null", bin);
  p = popen(cmd, "r");
  if (p) CHECK_INT_EQ(pclose(p) >> 8, 2); /* --reason is required */
}

int main(void) {
  finch_db *db = test_db_open();
  finch_err err;
  char url[4096];
  if (finch_db_resolve_url(url, sizeof url, 1, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  char model_path[4096], rules[4096], name[64];
  snprintf(name, sizeof name, "test_api.%ld.model", (long)getpid());
  if (!fixture_tmp_path(model_path, sizeof model_path, name)) TEST_SKIP("no temp folder");
  snprintf(name, sizeof name, "test_api.%ld.rules", (long)getpid());
  fixture_tmp_path(rules, sizeof rules, name);
  if (fixture_build_model(model_path, sha, &err)) {
    fprintf(stderr, "cannot build the test model: %s\n", err.msg);
    return 1;
  }
  /* Rules that send card questions to the wrong intent, so that the model
   * can beat them. */
  static const char rule_text[] = "exchange_rate 50 /\\bcard\\b/i\n"
                                  "exchange_rate 40 /\\brates?\\b/i\n"
                                  "request_refund 50 /\\brefund/i\n";
  test_write_file(rules, rule_text, sizeof rule_text - 1);

  PGconn *c = finch_db_conn(db);
  make_key(c, "root", FINCH_ROLE_ADMIN, k_admin);
  make_key(c, "contact-centre", FINCH_ROLE_INTEGRATION, k_int);
  make_key(c, "lab1", FINCH_ROLE_LABELER, k_lab1);
  make_key(c, "lab2", FINCH_ROLE_LABELER, k_lab2);
  /* A subscriber that never answers: events stay in the outbox to count. */
  if (finch_webhook_subscribe(c, "http://127.0.0.1:9/hook", "s3cret", "*", NULL, &err)) {
    fprintf(stderr, "subscribe: %s\n", err.msg);
    return 1;
  }

  test_no_database(model_path);

  finch_gate_opts gate = finch_gate_opts_default();
  gate.min_tasks = 10;
  gate.margin = 0.05;
  finch_serve_opts o = {.model_path = model_path, .port = 0, .threads = 2, .conninfo = url, .rules_path = rules,
                        .oos_label = "request_refund", .gate = gate, .rate_per_s = 1000, .rate_burst = 1000,
                        .no_webhook_worker = 1};
  finch_server *srv;
  if (finch_server_start(&srv, &o, &err)) {
    fprintf(stderr, "cannot start the server: %s\n", err.msg);
    return 1;
  }
  port = finch_server_port(srv);
  test_auth(db);
  test_assist(db);
  test_gate_and_labels(db);
  test_canary_primary_rollback(db);
  test_cli();
  test_rate_limit(model_path, url, rules);
  finch_server_stop(srv);

  remove(model_path);
  remove(rules);
  finch_db_close(db);
  curl_global_cleanup();
  TEST_DONE();
}
