/* Out of scope at the server (nn/abstain.h): a model with a threshold
 * policy answers POST /v1/intent with the decision nn_abstain_decide makes
 * on the same text (computed here from nn_model_predict), inline and through
 * the batcher; "top_k" lists the intents in order within its bounds and
 * refuses anything else with 400; a model without a policy answers as
 * before; a malformed policy refuses the start and a reload, and the old
 * model keeps answering; in database mode an out-of-scope turn is handed to
 * the rules or a human in every stage, counted in /metrics, and its
 * labelling task records out_of_scope. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <unistd.h>

#include "nn/abstain.h"
#include "nn/model.h"
#include "serve/auth.h"
#include "serve/serve.h"
#include "serve/webhook.h"
#include "tests/dbtest.h"
#include "tests/serve/api_fixture.h"
#include "tests/serve/fixture.h"
#include "tests/serve/serving_fixture.h"

#define EXPECT(r, want)                                                                                                \
  do {                                                                                                                 \
    if ((r).status != (want)) TEST_FAIL_("status %ld, want %d: %s", (r).status, (int)(want), (r).raw);               \
  } while (0)

enum { N_TEXTS = 10, C = 3 };

/* In-scope texts and others the fixture's banking model never saw. */
static const char *const texts[N_TEXTS] = {
    "my card has not arrived",   "what is the exchange rate", "i want a refund",
    "what is the weather like tomorrow", "hello",              "tell me a joke",
    "play some music",           "how tall is everest",       "book a table for two",
    "where is my new card",
};

static const char *const labels[C] = {"card_arrival", "exchange_rate", "request_refund"};

static char plain_path[4096], th_path[4096], bad_path[4096], plain_sha[65], th_sha[65];
static nn_abstain policy;
/* Expected, per text: the decision (-1 out of scope), the re-tempered
 * probabilities and the in-scope score. */
static int want_k[N_TEXTS];
static float want_p[N_TEXTS][C], want_score[N_TEXTS], plain_p[N_TEXTS][C];

/* Builds the three model files: the fixture's model without a policy, with
 * a threshold policy that splits the texts (some on each side), and with a
 * policy that is not one. */
static void make_models(void) {
  char name[128];
  finch_err err;
  snprintf(name, sizeof name, "test_oos.%ld.plain.model", (long)getpid());
  if (!fixture_tmp_path(plain_path, sizeof plain_path, name)) TEST_SKIP("no temp folder");
  snprintf(name, sizeof name, "test_oos.%ld.th.model", (long)getpid());
  fixture_tmp_path(th_path, sizeof th_path, name);
  snprintf(name, sizeof name, "test_oos.%ld.bad.model", (long)getpid());
  fixture_tmp_path(bad_path, sizeof bad_path, name);
  if (fixture_build_model(plain_path, plain_sha, &err)) {
    fprintf(stderr, "cannot build the test model: %s\n", err.msg);
    exit(1);
  }
  nn_model *m = NULL;
  if (nn_model_load(&m, plain_path, &err)) {
    fprintf(stderr, "cannot load the test model: %s\n", err.msg);
    exit(1);
  }
  CHECK_INT_EQ(nn_model_n_labels(m), C);
  for (size_t c = 0; c < C; c++) CHECK_STR_EQ(nn_model_label(m, c), labels[c]);
  /* The threshold halfway between the middle scores at temperature 1.25. */
  policy = (nn_abstain){.methods = NN_ABSTAIN_THRESHOLD, .temperature = 1.25f, .oos_index = -1};
  float sorted[N_TEXTS];
  for (int i = 0; i < N_TEXTS; i++) {
    CHECK(nn_model_predict(m, texts[i], plain_p[i], 1.0f) >= 0);
    memcpy(want_p[i], plain_p[i], sizeof want_p[i]);
    nn_abstain tempered = policy; /* threshold 0: every text in scope, the score alone */
    nn_abstain_decide(&tempered, want_p[i], C, &sorted[i]);
  }
  for (int i = 1; i < N_TEXTS; i++)
    for (int j = i; j > 0 && sorted[j] < sorted[j - 1]; j--) {
      float t = sorted[j];
      sorted[j] = sorted[j - 1];
      sorted[j - 1] = t;
    }
  policy.threshold = (sorted[N_TEXTS / 2 - 1] + sorted[N_TEXTS / 2]) / 2;
  if (!(sorted[N_TEXTS / 2 - 1] < sorted[N_TEXTS / 2])) TEST_FAIL_("the texts' scores do not split");
  int below = 0;
  for (int i = 0; i < N_TEXTS; i++) {
    memcpy(want_p[i], plain_p[i], sizeof want_p[i]);
    want_k[i] = nn_abstain_decide(&policy, want_p[i], C, &want_score[i]);
    below += want_k[i] < 0;
  }
  CHECK_INT_EQ(below, N_TEXTS / 2);
  if (nn_abstain_write(m, &policy, "test_oos", "half the texts", &err) ||
      nn_model_save(m, th_path, NN_DTYPE_F32, th_sha, &err)) {
    fprintf(stderr, "cannot save the threshold model: %s\n", err.msg);
    exit(1);
  }
  if (nn_model_set_meta(m, "{\"abstain\": {\"method\": \"sometimes\", \"threshold\": 0.5}}", &err) ||
      nn_model_save(m, bad_path, NN_DTYPE_F32, NULL, &err)) {
    fprintf(stderr, "cannot save the malformed model: %s\n", err.msg);
    exit(1);
  }
  nn_model_free(m);
}

/* POST /v1/intent with body; the reply (caller frees). */
static api_reply intent(unsigned port, const char *body) { return api_http(port, "POST", "/v1/intent", NULL, body); }

static api_reply intent_text(unsigned port, const char *text, int top_k) {
  json_t *b = json_pack("{s:s}", "text", text);
  if (top_k) json_object_set_new(b, "top_k", json_integer(top_k));
  char *s = json_dumps(b, JSON_COMPACT);
  api_reply r = intent(port, s);
  free(s);
  json_decref(b);
  return r;
}

static double num(json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

/* The threshold model's answers are nn_abstain_decide's, and top_k lists
 * the re-tempered probabilities in order. */
static void check_policy_answers(unsigned port) {
  for (int i = 0; i < N_TEXTS; i++) {
    api_reply r = intent_text(port, texts[i], 0);
    EXPECT(r, 200);
    json_t *j = r.json;
    if (want_k[i] < 0) {
      CHECK(json_is_true(json_object_get(j, "out_of_scope")));
      CHECK(json_is_null(json_object_get(j, "intent")));
      CHECK_NEAR(num(j, "confidence"), want_score[i], 1e-4);
      CHECK(num(j, "confidence") < policy.threshold + 1e-4);
    } else {
      CHECK(json_is_false(json_object_get(j, "out_of_scope")));
      CHECK_STR_EQ(api_str(j, "intent"), labels[want_k[i]]);
      CHECK_NEAR(num(j, "confidence"), want_p[i][want_k[i]], 1e-4);
    }
    CHECK_STR_EQ(api_str(j, "source"), "model");
    CHECK_STR_EQ(api_str(j, "model"), th_sha);
    CHECK(json_object_get(j, "top") == NULL);
    api_reply_free(&r);
    for (int k = 1; k <= C; k++) {
      r = intent_text(port, texts[i], k);
      EXPECT(r, 200);
      json_t *top = json_object_get(r.json, "top");
      CHECK_INT_EQ(json_array_size(top), k);
      /* Expected order: probability descending, ties in label order. */
      int order[C] = {0, 1, 2};
      for (int a = 0; a < C; a++)
        for (int b = a + 1; b < C; b++)
          if (want_p[i][order[b]] > want_p[i][order[a]]) {
            int t = order[a];
            order[a] = order[b];
            order[b] = t;
          }
      for (size_t e = 0; e < json_array_size(top); e++) {
        json_t *it = json_array_get(top, e);
        CHECK_STR_EQ(api_str(it, "intent"), labels[order[e]]);
        CHECK_NEAR(num(it, "probability"), want_p[i][order[e]], 1e-4);
        if (e) CHECK(num(it, "probability") <= num(json_array_get(top, e - 1), "probability"));
      }
      CHECK_INT_EQ(json_is_true(json_object_get(r.json, "out_of_scope")), want_k[i] < 0);
      api_reply_free(&r);
    }
  }
}

static void check_top_k_refused(unsigned port) {
  static const char *const bad[] = {"0", "-1", "4", "2.5", "2.0", "\"2\"", "true", "null", "[1]", "{}",
                                    "1e3", "1000000000000", "99999999999999999999", "-99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char body[256];
    snprintf(body, sizeof body, "{\"text\": \"my card has not arrived\", \"top_k\": %s}", bad[i]);
    api_reply r = intent(port, body);
    if (r.status != 400) TEST_FAIL_("top_k %s: status %ld, want 400: %s", bad[i], r.status, r.raw);
    CHECK_CONTAINS(api_str(r.json, "error"), "\"top_k\" must be an integer in 1..3");
    CHECK(api_str(r.json, "request_id") != NULL);
    api_reply_free(&r);
  }
  /* A huge integer elsewhere is invalid JSON, as it always was. */
  api_reply r = intent(port, "{\"text\": \"card\", \"other\": 99999999999999999999}");
  EXPECT(r, 400);
  CHECK_CONTAINS(api_str(r.json, "error"), "invalid JSON");
  api_reply_free(&r);
}

/* The model without a policy: today's answer, plus out_of_scope false. */
static void check_plain_answers(unsigned port) {
  for (int i = 0; i < N_TEXTS; i++) {
    api_reply r = intent_text(port, texts[i], 0);
    EXPECT(r, 200);
    int k = 0;
    for (int c = 1; c < C; c++)
      if (plain_p[i][c] > plain_p[i][k]) k = c;
    CHECK_STR_EQ(api_str(r.json, "intent"), labels[k]);
    CHECK_NEAR(num(r.json, "confidence"), plain_p[i][k], 1e-4);
    CHECK(json_is_false(json_object_get(r.json, "out_of_scope")));
    CHECK_STR_EQ(api_str(r.json, "model"), plain_sha);
    CHECK_INT_EQ(json_object_size(r.json), 5); /* intent, out_of_scope, confidence, source, model */
    api_reply_free(&r);
  }
  api_reply r = intent_text(port, texts[0], 2);
  EXPECT(r, 200);
  CHECK_INT_EQ(json_array_size(json_object_get(r.json, "top")), 2);
  api_reply_free(&r);
}

static void test_intent(unsigned window_us) {
  finch_err err;
  /* A malformed policy is refused like any bad model file. */
  finch_server *s = NULL;
  finch_serve_opts o = {.model_path = bad_path, .port = 0, .threads = 2, .access_log = "off"};
  if (finch_server_start(&s, &o, &err) == FINCH_OK) {
    TEST_FAIL_("a malformed policy was served");
    finch_server_stop(s);
  } else {
    CHECK_CONTAINS(err.msg, "abstain.method");
  }

  s = sv_start((finch_serve_opts){.model_path = th_path, .batch_window_us = window_us});
  if (!s) return;
  unsigned port = finch_server_port(s);
  check_policy_answers(port);
  check_top_k_refused(port);
  int n_oos = 0;
  for (int i = 0; i < N_TEXTS; i++) n_oos += want_k[i] < 0;
  char *t = sv_scrape(port, NULL);
  if (t) CHECK_NEAR(sv_metric(t, "finch_out_of_scope_total{endpoint=\"intent\"}"), n_oos * (1 + C), 0);
  free(t);

  /* A reload to the malformed policy is refused; the old model answers on. */
  CHECK(finch_server_reload(s, bad_path, &err) != FINCH_OK);
  CHECK_CONTAINS(err.msg, "abstain.method");
  CHECK_STR_EQ(finch_server_model_sha256(s), th_sha);
  check_policy_answers(port);
  /* To the model without a policy and back. */
  if (finch_server_reload(s, plain_path, &err) != FINCH_OK) TEST_FAIL_("reload to the plain model: %s", err.msg);
  check_plain_answers(port);
  if (finch_server_reload(s, th_path, &err) != FINCH_OK) TEST_FAIL_("reload to the policy: %s", err.msg);
  check_policy_answers(port);
  t = sv_scrape(port, NULL);
  if (t) CHECK_NEAR(sv_metric(t, "finch_model_reloads_total{result=\"failed\"}"), 1, 0);
  free(t);
  finch_server_stop(s);
}

/* The server's oos_label without a database: that label as the arg-max is
 * out of scope, and it is never one of the intents top_k lists. */
static void test_oos_label(void) {
  finch_server *s = sv_start((finch_serve_opts){.model_path = plain_path, .oos_label = "request_refund"});
  if (!s) return;
  unsigned port = finch_server_port(s);
  int seen = 0;
  for (int i = 0; i < N_TEXTS; i++) {
    int k = 0;
    for (int c = 1; c < C; c++)
      if (plain_p[i][c] > plain_p[i][k]) k = c;
    api_reply r = intent_text(port, texts[i], 2);
    EXPECT(r, 200);
    json_t *top = json_object_get(r.json, "top");
    CHECK_INT_EQ(json_array_size(top), 2);
    for (size_t e = 0; e < json_array_size(top); e++)
      CHECK(strcmp(api_str(json_array_get(top, e), "intent"), "request_refund") != 0);
    if (k == 2) {
      seen++;
      CHECK(json_is_true(json_object_get(r.json, "out_of_scope")));
      CHECK(json_is_null(json_object_get(r.json, "intent")));
      CHECK_NEAR(num(r.json, "confidence"), plain_p[i][0] > plain_p[i][1] ? plain_p[i][0] : plain_p[i][1], 1e-4);
    } else {
      CHECK(json_is_false(json_object_get(r.json, "out_of_scope")));
      CHECK_STR_EQ(api_str(r.json, "intent"), labels[k]);
    }
    api_reply_free(&r);
  }
  CHECK(seen > 0); /* "i want a refund" */
  api_reply r = intent_text(port, texts[0], 3);
  EXPECT(r, 400);
  CHECK_CONTAINS(api_str(r.json, "error"), "1..2");
  api_reply_free(&r);
  finch_server_stop(s);
}

/* --- conversation turns (database mode) ------------------------------------ */

static char k_admin[64], k_int[64], k_lab[64];

static void make_key(PGconn *c, const char *name, finch_role role, char *out) {
  finch_err err;
  char key[FINCH_API_KEY_LEN + 1];
  if (finch_auth_key_create(c, name, role, "test", key, NULL, &err)) {
    fprintf(stderr, "cannot create key: %s\n", err.msg);
    exit(1);
  }
  strcpy(out, key);
}

static api_reply turn(unsigned port, const char *dep, const char *conv, const char *text) {
  char path[256], body[512];
  snprintf(path, sizeof path, "/v1/conversations/%s/turns?deployment=%s", conv, dep);
  snprintf(body, sizeof body, "{\"text\": \"%s\", \"speaker\": \"user\"}", text);
  return api_http(port, "POST", path, k_int, body);
}

static void test_turns(finch_db *db, const char *url) {
  int oos = -1, in = -1;
  for (int i = 0; i < N_TEXTS; i++) {
    if (want_k[i] < 0 && oos < 0) oos = i;
    if (want_k[i] >= 0 && want_p[i][want_k[i]] >= 0.5f && in < 0) in = i;
  }
  if (oos < 0 || in < 0) {
    TEST_FAIL_("no out-of-scope text (%d) or no confident in-scope one (%d)", oos, in);
    return;
  }
  char rules[4096], name[64];
  snprintf(name, sizeof name, "test_oos.%ld.rules", (long)getpid());
  fixture_tmp_path(rules, sizeof rules, name);
  static const char every[] = "exchange_rate 50 /./\n"; /* a rule fires on every text */
  test_write_file(rules, every, sizeof every - 1);
  test_exec(db, "INSERT INTO rollout_state (deployment, stage, changed_by) VALUES"
                " ('t-primary', 'primary', 'test'), ('t-retired', 'retired', 'test'),"
                " ('r-primary', 'primary', 'test'), ('r-shadow', 'shadow', 'test')");
  finch_err err;
  finch_server *a = NULL, *b = NULL;
  finch_serve_opts o = {.model_path = th_path, .port = 0, .threads = 2, .conninfo = url, .no_webhook_worker = 1,
                        .rate_per_s = 1000, .rate_burst = 1000, .access_log = "off"};
  if (finch_server_start(&a, &o, &err)) {
    TEST_FAIL_("start without rules: %s", err.msg);
    return;
  }
  o.rules_path = rules;
  if (finch_server_start(&b, &o, &err)) {
    TEST_FAIL_("start with rules: %s", err.msg);
    finch_server_stop(a);
    return;
  }
  unsigned pa = finch_server_port(a), pb = finch_server_port(b);

  /* No rule: the model's out of scope is a handoff in every stage. */
  static const char *const stages[] = {"t-assist", "t-primary", "t-retired"};
  for (int s = 0; s < 3; s++) {
    api_reply r = turn(pa, stages[s], "c1", texts[oos]);
    EXPECT(r, 200);
    CHECK(json_is_true(json_object_get(r.json, "handoff")));
    CHECK(json_is_true(json_object_get(r.json, "out_of_scope")));
    CHECK(json_is_null(json_object_get(r.json, "intent")));
    api_reply_free(&r);
    r = turn(pa, stages[s], "c2", texts[in]);
    EXPECT(r, 200);
    CHECK(json_is_false(json_object_get(r.json, "out_of_scope")));
    if (s > 0) {
      CHECK_STR_EQ(api_str(r.json, "engine"), "model");
      CHECK_STR_EQ(api_str(r.json, "intent"), labels[want_k[in]]);
      CHECK(json_is_false(json_object_get(r.json, "handoff")));
    }
    api_reply_free(&r);
  }
  /* Four handoffs: the three out of scope, and assist's in-scope turn that no rule answers. */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'handoff.requested'"), 4);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'handoff.requested'"
                               " AND payload->'data'->>'out_of_scope' = 'true'"),
               3);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'intent.classified'"
                               " AND payload->'data'->>'out_of_scope' = 'true'"),
               3);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM conversation_turns WHERE out_of_scope"), 3);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM conversation_turns WHERE deployment = 't-primary'"
                               " AND engine = 'model' AND out_of_scope AND handoff AND intent IS NULL"),
               1);

  /* A rule fires: the rules answer for the model out of scope. */
  api_reply r = turn(pb, "r-primary", "c1", texts[oos]);
  EXPECT(r, 200);
  CHECK_STR_EQ(api_str(r.json, "engine"), "rules");
  CHECK_STR_EQ(api_str(r.json, "intent"), "exchange_rate");
  CHECK(json_is_true(json_object_get(r.json, "fallback")));
  CHECK(json_is_true(json_object_get(r.json, "out_of_scope")));
  CHECK(json_is_false(json_object_get(r.json, "handoff")));
  api_reply_free(&r);

  /* Labelling: the out-of-scope answer is a suggestion like any other. */
  r = turn(pb, "r-shadow", "c1", texts[oos]);
  EXPECT(r, 200);
  json_int_t task = json_integer_value(json_object_get(r.json, "labeling_task"));
  CHECK(task > 0);
  api_reply_free(&r);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM labeling_tasks WHERE deployment = 'r-shadow' AND out_of_scope"
                               " AND suggested_label = 'oos' AND reason = 'disagree' AND rule_label = 'exchange_rate'"),
               1);
  r = api_http(pb, "GET", "/v1/labeling/tasks?deployment=r-shadow", k_lab, NULL);
  EXPECT(r, 200);
  json_t *sugg = json_object_get(json_array_get(json_object_get(r.json, "tasks"), 0), "suggestion");
  CHECK_STR_EQ(api_str(sugg, "label"), "oos");
  CHECK(json_is_true(json_object_get(sugg, "out_of_scope")));
  api_reply_free(&r);
  char path[128];
  snprintf(path, sizeof path, "/v1/labeling/tasks/%lld?deployment=r-shadow", (long long)task);
  r = api_http(pb, "POST", path, k_lab, "{\"decision\": \"accept\"}");
  EXPECT(r, 200);
  CHECK_STR_EQ(api_str(r.json, "final_label"), "oos");
  api_reply_free(&r);

  /* Counted, per server. */
  char *t = sv_scrape(pa, k_admin);
  if (t) {
    CHECK_NEAR(sv_metric(t, "finch_out_of_scope_total{endpoint=\"turns\"}"), 3, 0);
    CHECK_NEAR(sv_metric(t, "finch_out_of_scope_total{endpoint=\"intent\"}"), 0, 0);
  }
  free(t);
  t = sv_scrape(pb, k_admin);
  if (t) CHECK_NEAR(sv_metric(t, "finch_out_of_scope_total{endpoint=\"turns\"}"), 2, 0);
  free(t);
  finch_server_stop(b);
  finch_server_stop(a);
  remove(rules);
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
  make_models();
  test_intent(0);
  test_intent(200);
  test_oos_label();
  PGconn *c = finch_db_conn(db);
  make_key(c, "root", FINCH_ROLE_ADMIN, k_admin);
  make_key(c, "contact-centre", FINCH_ROLE_INTEGRATION, k_int);
  make_key(c, "lab", FINCH_ROLE_LABELER, k_lab);
  /* A subscriber that never answers: events stay in the outbox to count. */
  if (finch_webhook_subscribe(c, "http://127.0.0.1:9/hook", "s3cret", "*", NULL, &err)) {
    fprintf(stderr, "subscribe: %s\n", err.msg);
    return 1;
  }
  test_turns(db, url);
  remove(plain_path);
  remove(th_path);
  remove(bad_path);
  finch_db_close(db);
  curl_global_cleanup();
  TEST_DONE();
}
