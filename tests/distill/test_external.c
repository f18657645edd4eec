/* External teachers (distill/external.h) against a real PostgreSQL and a
 * loopback stub of an OpenAI-compatible completions server (tests/receiver.h):
 * JSONL import by id, by text (case, spacing and personal data as ingest
 * stores them) and from logits; malformed files name file:line and field and
 * store nothing; the endpoint is retried after a 503, batched, and its
 * outputs are cached (a second run sends no request); the soft labels handed
 * to distill are the stored distributions re-tempered. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/db.h"
#include "core/hash.h"
#include "distill/external.h"
#include "tests/dbtest.h"
#include "tests/receiver.h"
#include "tests/test.h"

#define DATASET "ext"
#define API_KEY "sk-test-0123456789"
#define C 3

static const char *const LABELS[C] = {"card_arrival", "exchange_rate", "request_refund"};
static long long g_id[5]; /* the utterances' ids, in insertion order */

/* --- helpers ------------------------------------------------------------------ */

/* The stored distribution of (model, utterance, temperature) into p (C); 0 when absent. */
static int stored(finch_db *db, long long model, long long utt, double temp, float p[C]) {
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT probs[1], probs[2], probs[3], array_length(probs, 1) FROM teacher_outputs"
                            " WHERE model_id = %lld AND utterance_id = %lld AND temperature = %g::real",
           model, utt, temp);
  finch_err err;
  PGresult *r = finch_db_query(db, sql, 0, NULL, &err);
  if (!r) {
    fprintf(stderr, "%s: %s\n", sql, err.msg);
    exit(1);
  }
  int ok = PQntuples(r) == 1 && atoi(PQgetvalue(r, 0, 3)) == C;
  for (int c = 0; ok && c < C; c++) p[c] = strtof(PQgetvalue(r, 0, c), NULL);
  PQclear(r);
  return ok;
}

static void write_text(const char *path, const char *text) { test_write_file(path, text, strlen(text)); }

static void tmp_path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/ext_%s", test_tmpdir(), name); }

/* Three intents; four labelled training rows (one with a card number as
 * ingest stores it) and a dev row. */
static void seed_dataset(finch_db *db) {
  test_exec(db, "INSERT INTO datasets (name, format) VALUES ('" DATASET "', 'csv')");
  static const char *const rows[5][3] = {
      {"Where is my card?", "card_arrival", "train"},
      {"What is the exchange rate for €", "exchange_rate", "train"},
      {"I want a refund", "request_refund", "train"},
      {"My card <CARD> has not arrived", "card_arrival", "train"},
      {"exchange rate please", "exchange_rate", "dev"},
  };
  finch_err err;
  for (int i = 0; i < 5; i++) {
    char hash[FINCH_SHA256_HEX_LEN];
    finch_sha256_hex(rows[i][0], strlen(rows[i][0]), hash);
    const char *p[] = {rows[i][0], rows[i][1], rows[i][2], hash};
    PGresult *r = finch_db_query(db, "INSERT INTO utterances (dataset_id, text, text_norm, label, split, content_hash)"
                                     " SELECT id, $1, lower($1), $2, $3, $4 FROM datasets WHERE name = '" DATASET "'"
                                     " RETURNING id", 4, p, &err);
    if (!r) {
      fprintf(stderr, "%s\n", err.msg);
      exit(1);
    }
    g_id[i] = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
  }
}

/* --- JSONL ---------------------------------------------------------------------- */

static long long test_import_ids_and_text(finch_db *db) {
  char path[512], body[2048];
  tmp_path(path, sizeof path, "probs.jsonl");
  snprintf(body, sizeof body,
           "{\"utterance_id\": %lld, \"probs\": {\"card_arrival\": 0.8, \"exchange_rate\": 0.15, \"request_refund\": 0.05}}\n"
           "\n"
           "{\"text\": \"WHAT is the   exchange rate for \\u20ac\", \"probs\": {\"exchange_rate\": 0.6, \"card_arrival\": 0.2}}\n"
           "{\"text\": \"my card 4111 1111 1111 1111 has not arrived\", \"probs\": [0.7, 0.2, 0.1], \"x\": 1}\n"
           "{\"text\": \"a text that is not in the dataset\", \"probs\": {\"card_arrival\": 1}}\n"
           "{\"id\": \"%lld\", \"probs\": {\"exchange_rate\": 1.0}}\n",
           g_id[0], g_id[4]);
  write_text(path, body);
  finch_external_import_opts o = {.dataset = DATASET, .path = path, .name = "llm-dump"};
  finch_external_result r;
  finch_err err;
  /* An array needs the header line. */
  finch_status st = finch_external_import(db, &o, &r, &err);
  CHECK_INT_EQ(st, FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, ":4: field probs: an array needs a first line");
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM models"), 0);

  char body2[2200];
  snprintf(body2, sizeof body2, "{\"labels\": [\"card_arrival\", \"exchange_rate\", \"request_refund\"]}\n%s", body);
  write_text(path, body2);
  st = finch_external_import(db, &o, &r, &err);
  CHECK_INT_EQ(st, FINCH_OK);
  if (st) fprintf(stderr, "import: %s\n", err.msg);
  CHECK(r.model_id > 0);
  CHECK_INT_EQ(r.reused, 0);
  CHECK_INT_EQ(r.n_labels, C);
  CHECK_INT_EQ(r.n_train, 4);
  CHECK_INT_EQ(r.n_lines, 5);
  CHECK_INT_EQ(r.n_labelled, 3);
  CHECK_INT_EQ(r.n_unlabelled, 1);
  CHECK_INT_EQ(r.n_unmatched, 2); /* unknown text; the dev row */
  CHECK_INT_EQ(r.n_renormalised, 1);
  float p[C];
  CHECK(stored(db, r.model_id, g_id[0], 1, p));
  CHECK_NEAR(p[0], 0.8, 1e-6);
  CHECK_NEAR(p[1], 0.15, 1e-6);
  CHECK_NEAR(p[2], 0.05, 1e-6);
  CHECK(stored(db, r.model_id, g_id[1], 1, p)); /* case, spacing: matched; subset renormalised */
  CHECK_NEAR(p[0], 0.25, 1e-6);
  CHECK_NEAR(p[1], 0.75, 1e-6);
  CHECK_NEAR(p[2], 0, 1e-9);
  CHECK(stored(db, r.model_id, g_id[3], 1, p)); /* the card number redacted as ingest does */
  CHECK_NEAR(p[0], 0.7, 1e-6);
  CHECK_NEAR(p[2], 0.1, 1e-6);
  CHECK(!stored(db, r.model_id, g_id[2], 1, p));
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM teacher_outputs WHERE model_id = %lld", r.model_id), 3);
  /* The registration. */
  char sha[FINCH_SHA256_HEX_LEN], sql[512];
  CHECK_INT_EQ(finch_sha256_file(path, sha, &err), FINCH_OK);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM models m JOIN datasets d ON d.id = m.dataset_id WHERE m.id = %lld"
                            " AND kind = 'teacher' AND arch = 'external' AND stage = 'finance' AND d.name = '" DATASET
                            "' AND sha256 = '%s' AND config->'labels' = '[\"card_arrival\", \"exchange_rate\", "
                            "\"request_refund\"]'::jsonb AND config->>'source' = 'jsonl' AND config->>'name' = 'llm-dump'",
           r.model_id, sha);
  CHECK_INT_EQ(test_scalar(db, sql), 1);

  /* The same file again: the same teacher, nothing added. */
  finch_external_result r2;
  CHECK_INT_EQ(finch_external_import(db, &o, &r2, &err), FINCH_OK);
  CHECK_INT_EQ(r2.model_id, r.model_id);
  CHECK_INT_EQ(r2.reused, 1);
  CHECK_INT_EQ(r2.n_labelled, 3);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM models"), 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM teacher_outputs"), 3);
  return r.model_id;
}

static long long test_import_logits(finch_db *db) {
  char path[512], body[1024];
  tmp_path(path, sizeof path, "logits.jsonl");
  snprintf(body, sizeof body,
           "{\"labels\": [\"request_refund\", \"card_arrival\", \"exchange_rate\"]}\n"
           "{\"utterance_id\": %lld, \"logits\": [2.0, 0.0, -1.0]}\n"
           "{\"utterance_id\": %lld, \"logits\": {\"card_arrival\": 1.5, \"exchange_rate\": -0.5}}\n",
           g_id[2], g_id[0]);
  write_text(path, body);
  finch_external_import_opts o = {.dataset = DATASET, .path = path, .temperature = 2};
  finch_external_result r;
  finch_err err;
  finch_status st = finch_external_import(db, &o, &r, &err);
  CHECK_INT_EQ(st, FINCH_OK);
  if (st) fprintf(stderr, "import: %s\n", err.msg);
  CHECK_INT_EQ(r.n_labelled, 2);
  CHECK_INT_EQ(r.n_unlabelled, 2);
  float p[C];
  /* softmax(logits / 2) in the dataset's label order */
  double z0[C] = {0.0 / 2, -1.0 / 2, 2.0 / 2}, s = 0;
  for (int c = 0; c < C; c++) s += exp(z0[c]);
  CHECK(stored(db, r.model_id, g_id[2], 2, p));
  for (int c = 0; c < C; c++) CHECK_NEAR(p[c], exp(z0[c]) / s, 1e-6);
  CHECK(stored(db, r.model_id, g_id[0], 2, p));
  double a = exp(1.5 / 2), b = exp(-0.5 / 2);
  CHECK_NEAR(p[0], a / (a + b), 1e-6);
  CHECK_NEAR(p[1], b / (a + b), 1e-6);
  CHECK_NEAR(p[2], 0, 1e-9);
  CHECK(!stored(db, r.model_id, g_id[2], 1, p)); /* stored at temperature 2 only */
  return r.model_id;
}

/* Each bad line: an error naming file:line and the field, and nothing stored. */
static void test_import_malformed(finch_db *db) {
  static const struct {
    const char *line, *want;
  } cases[] = {
      {"{\"utterance_id\": 1, \"probs\": {", ":2: invalid JSON"},
      {"[1, 2, 3]", ":2: expected a JSON object"},
      {"{\"utterance_id\": %lld}", ":2: field probs: missing"},
      {"{\"probs\": {\"card_arrival\": 1}}", ":2: field utterance_id: missing"},
      {"{\"utterance_id\": -4, \"probs\": {\"card_arrival\": 1}}", ":2: field utterance_id: not an utterance id"},
      {"{\"utterance_id\": %lld, \"probs\": {\"card_arrival\": \"high\"}}", ":2: field probs.card_arrival: not a number"},
      {"{\"utterance_id\": %lld, \"probs\": {\"card_arrival\": 0.9, \"exchange_rate\": -0.2}}",
       ":2: field probs.exchange_rate: negative probability -0.2"},
      {"{\"utterance_id\": %lld, \"probs\": {\"card_arrival\": 0.5, \"exchange_rate\": 0.3, \"request_refund\": 0.1}}",
       ":2: field probs: sums to 0.9 over every label"},
      {"{\"utterance_id\": %lld, \"probs\": {\"card_arrival\": 0.7, \"exchange_rate\": 0.5}}",
       ":2: field probs: sums to 1.2, more than 1"},
      {"{\"utterance_id\": %lld, \"probs\": {\"card_arival\": 0.5, \"exchange_rate\": 0.5}}",
       "1 label not among the dataset's 3 training labels: card_arival (line 2)"},
      {"{\"utterance_id\": %lld, \"probs\": {\"card_arrival\": 0.5, \"card_arrival\": 0.5}}", ":2: invalid JSON"},
      {"{\"utterance_id\": %lld, \"probs\": {\"card_arrival\": 0.5}, \"logits\": {\"card_arrival\": 1}}",
       ":2: fields probs and logits: give one, not both"},
  };
  long long models0 = test_sqlf(db, "SELECT count(*) FROM models");
  long long outputs0 = test_sqlf(db, "SELECT count(*) FROM teacher_outputs");
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char path[512], name[32], bad[512], body[1024];
    snprintf(name, sizeof name, "bad%zu.jsonl", k);
    tmp_path(path, sizeof path, name);
    snprintf(bad, sizeof bad, cases[k].line, g_id[1]);
    snprintf(body, sizeof body,
             "{\"utterance_id\": %lld, \"probs\": {\"card_arrival\": 1.0}}\n%s\n"
             "{\"utterance_id\": %lld, \"probs\": {\"request_refund\": 1.0}}\n", g_id[0], bad, g_id[2]);
    write_text(path, body);
    finch_external_import_opts o = {.dataset = DATASET, .path = path};
    finch_external_result r;
    finch_err err = {0};
    finch_status st = finch_external_import(db, &o, &r, &err);
    CHECK(st != FINCH_OK);
    char want[600];
    snprintf(want, sizeof want, "%s%s", cases[k].want[0] == ':' ? path : "", cases[k].want);
    CHECK_CONTAINS(err.msg, want);
  }
  /* Unknown labels are gathered over the whole file. */
  {
    char path[512], body[512];
    tmp_path(path, sizeof path, "unknown.jsonl");
    snprintf(body, sizeof body,
             "{\"utterance_id\": %lld, \"probs\": {\"lost_card\": 0.5, \"card_arrival\": 0.5}}\n"
             "{\"utterance_id\": %lld, \"probs\": {\"top_up\": 1}}\n", g_id[0], g_id[1]);
    write_text(path, body);
    finch_external_import_opts o = {.dataset = DATASET, .path = path};
    finch_external_result r;
    finch_err err;
    CHECK_INT_EQ(finch_external_import(db, &o, &r, &err), FINCH_EFORMAT);
    CHECK_CONTAINS(err.msg, "2 labels not among the dataset's 3 training labels: lost_card (line 1), top_up (line 2)");
  }
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM models"), models0);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM teacher_outputs"), outputs0);
}

/* --- the stub completions server ---------------------------------------------- */

typedef struct {
  test_http_server http;
  atomic_int requests;     /* POSTs to /v1/completions, answered or not */
  atomic_int fail_next;    /* answer the next request 503 */
  atomic_int bad_requests; /* shape, model or key wrong */
  pthread_mutex_t lock;
  int prompts[64]; /* prompts per answered request */
  int n_answered;
} stub;

/* The intent the stub's "LLM" believes in. */
static const char *stub_wanted(const char *msg) {
  if (strstr(msg, "refund")) return "request_refund";
  if (strstr(msg, "exchange")) return "exchange_rate";
  return "card_arrival";
}

/* Logprob of piece k of a candidate label ("_"-separated pieces). */
static double stub_piece_lp(int wanted, int k) { return wanted ? -0.2 : k == 0 ? -2.0 : -0.3; }

/* The label log-likelihood the stub reports, for the test's expectations. */
static double stub_score(const char *label, const char *msg) {
  int wanted = strcmp(label, stub_wanted(msg)) == 0, pieces = 1;
  for (const char *p = label; *p; p++) pieces += *p == '_';
  double s = 0;
  for (int k = 0; k < pieces; k++) s += stub_piece_lp(wanted, k);
  return s;
}

static size_t cp_len(const char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
  return k;
}

static void stub_token(json_t *toks, json_t *lps, json_t *offs, const char *s, size_t n, size_t *cp, json_t *lp) {
  char *t = strndup(s, n);
  json_array_append_new(toks, json_string(t));
  json_array_append_new(lps, lp);
  json_array_append_new(offs, json_integer((json_int_t)*cp));
  *cp += cp_len(s, n);
  free(t);
}

/* One echoed choice: the prompt's lines as tokens (logprob -1, the first
 * null), a space token, the label in "_"-pieces, and one generated token. */
static json_t *stub_choice(const char *prompt, size_t index) {
  const char *mark = NULL;
  for (const char *p = strstr(prompt, "\nIntent:"); p; p = strstr(p + 1, "\nIntent:")) mark = p;
  const char *msg = strstr(prompt, "\nMessage: ");
  if (!mark || !msg) return NULL;
  char message[512];
  snprintf(message, sizeof message, "%.*s", (int)(mark - msg - 10), msg + 10);
  const char *label = mark + strlen("\nIntent:");
  if (*label != ' ') return NULL;
  const char *name = label + 1;
  int wanted = strcmp(name, stub_wanted(message)) == 0;
  json_t *toks = json_array(), *lps = json_array(), *offs = json_array();
  size_t cp = 0;
  const char *p = prompt;
  while (p < label) { /* lines, up to and including "Intent:" */
    const char *nl = memchr(p, '\n', (size_t)(label - p));
    const char *e = nl ? nl + 1 : label;
    stub_token(toks, lps, offs, p, (size_t)(e - p), &cp, p == prompt ? json_null() : json_real(-1.0));
    p = e;
  }
  stub_token(toks, lps, offs, p, 1, &cp, json_real(-0.7)); /* " ": shared by every label */
  p++;
  int k = 0;
  while (*p) {
    const char *e = p + 1;
    while (*e && *e != '_') e++;
    if (k == 0 && e == p + 1) return NULL;
    stub_token(toks, lps, offs, p, (size_t)(e - p), &cp, json_real(stub_piece_lp(wanted, k++)));
    p = e;
  }
  /* The generated token: its logprob must not count. */
  stub_token(toks, lps, offs, "\n", 1, &cp, json_real(wanted ? -0.05 : -3.0));
  size_t tn = strlen(prompt) + 2;
  char *text = malloc(tn);
  snprintf(text, tn, "%s\n", prompt);
  json_t *c = json_pack("{s:i, s:s, s:{s:o, s:o, s:o, s:[]}, s:s}", "index", (int)index, "text", text, "logprobs",
                        "tokens", toks, "token_logprobs", lps, "text_offset", offs, "top_logprobs", "finish_reason",
                        "length");
  free(text);
  return c;
}

static void stub_reply(test_http_answer *ans, unsigned code, const char *body) {
  ans->status = code;
  ans->body = body;
  ans->content_type = "application/json";
}

static void stub_handle(void *ctx, test_http_request *req, test_http_answer *ans) {
  stub *s = ctx;
  if (strcmp(req->url, "/v1/completions") != 0 || strcmp(req->method, "POST") != 0) {
    stub_reply(ans, 404, "{\"error\": {\"message\": \"no such route\"}}");
    return;
  }
  atomic_fetch_add(&s->requests, 1);
  if (atomic_exchange(&s->fail_next, 0)) {
    stub_reply(ans, 503, "{\"error\": {\"message\": \"overloaded\"}}");
    return;
  }
  const char *auth = test_http_header(req, "Authorization");
  json_t *rq = json_loadb(req->body, req->len, 0, NULL);
  json_t *prompts = json_object_get(rq, "prompt");
  int ok = strcmp(auth, "Bearer " API_KEY) == 0 && json_is_array(prompts) &&
           json_is_true(json_object_get(rq, "echo")) && json_integer_value(json_object_get(rq, "logprobs")) >= 1 &&
           json_is_string(json_object_get(rq, "model")) &&
           strcmp(json_string_value(json_object_get(rq, "model")), "stub-llm") == 0;
  if (!ok) {
    atomic_fetch_add(&s->bad_requests, 1);
    json_decref(rq);
    stub_reply(ans, 400, "{\"error\": {\"message\": \"bad request\"}}");
    return;
  }
  /* Choices in reverse order: the client must go by "index". */
  size_t n = json_array_size(prompts);
  json_t *choices = json_array();
  for (size_t i = n; i-- > 0;) {
    json_t *c = stub_choice(json_string_value(json_array_get(prompts, i)), i);
    if (!c) atomic_fetch_add(&s->bad_requests, 1);
    else json_array_append_new(choices, c);
  }
  json_decref(rq);
  pthread_mutex_lock(&s->lock);
  if (s->n_answered < 64) s->prompts[s->n_answered] = (int)n;
  s->n_answered++;
  pthread_mutex_unlock(&s->lock);
  json_t *answer = json_pack("{s:s, s:s, s:s, s:o}", "id", "cmpl-stub", "object", "text_completion", "model",
                             "stub-llm", "choices", choices);
  char *body = json_dumps(answer, JSON_COMPACT);
  json_decref(answer);
  stub_reply(ans, 200, body ? body : "{}");
  ans->body_free = body;
}

static int stub_start(stub *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->lock, NULL);
  return test_http_start(&s->http, stub_handle, s);
}

static void stub_stop(stub *s) {
  test_http_stop(&s->http);
  pthread_mutex_destroy(&s->lock);
}

/* --- the endpoint ----------------------------------------------------------------- */

static void check_endpoint_probs(finch_db *db, long long model, long long utt, const char *msg) {
  float p[C];
  CHECK(stored(db, model, utt, 1, p));
  double z[C], mx = -INFINITY, s = 0;
  for (int c = 0; c < C; c++) z[c] = stub_score(LABELS[c], msg), mx = z[c] > mx ? z[c] : mx;
  for (int c = 0; c < C; c++) s += exp(z[c] - mx);
  for (int c = 0; c < C; c++) CHECK_NEAR(p[c], exp(z[c] - mx) / s, 1e-5);
}

static long long test_endpoint(finch_db *db, stub *s) {
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/", s->http.port);
  finch_external_query_opts o = {.dataset = DATASET, .url = url, .model = "stub-llm", .api_key = API_KEY,
                                 .batch = 2, .max_retries = 3, .backoff_ms = 10, .timeout_s = 20};
  finch_external_result r;
  finch_err err;
  atomic_store(&s->fail_next, 1);
  finch_status st = finch_external_query(db, &o, &r, &err);
  CHECK_INT_EQ(st, FINCH_OK);
  if (st) fprintf(stderr, "query: %s\n", err.msg);
  CHECK_INT_EQ(atomic_load(&s->bad_requests), 0);
  /* 4 rows in batches of 2: 2 answered requests and the 503 before them. */
  CHECK_INT_EQ(atomic_load(&s->requests), 3);
  CHECK_INT_EQ(r.n_requests, 3);
  CHECK_INT_EQ(s->n_answered, 2);
  CHECK_INT_EQ(s->prompts[0], 2 * C);
  CHECK_INT_EQ(s->prompts[1], 2 * C);
  CHECK_INT_EQ(r.n_scored, 4);
  CHECK_INT_EQ(r.n_cached, 0);
  CHECK_INT_EQ(r.n_labelled, 4);
  CHECK_INT_EQ(r.n_unlabelled, 0);
  CHECK_INT_EQ(r.reused, 0);
  check_endpoint_probs(db, r.model_id, g_id[0], "Where is my card?");
  check_endpoint_probs(db, r.model_id, g_id[1], "What is the exchange rate for €");
  check_endpoint_probs(db, r.model_id, g_id[2], "I want a refund");
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM models WHERE id = %lld AND arch = 'external' AND kind = 'teacher'"
                        " AND config->>'source' = 'endpoint' AND config->>'model' = 'stub-llm'"
                        " AND position('" API_KEY "' in path || config::text) = 0", r.model_id), 1);

  /* Again: everything is cached, no request is made. */
  finch_external_result r2;
  CHECK_INT_EQ(finch_external_query(db, &o, &r2, &err), FINCH_OK);
  CHECK_INT_EQ(r2.model_id, r.model_id);
  CHECK_INT_EQ(r2.reused, 1);
  CHECK_INT_EQ(r2.n_requests, 0);
  CHECK_INT_EQ(r2.n_cached, 4);
  CHECK_INT_EQ(r2.n_scored, 0);
  CHECK_INT_EQ(atomic_load(&s->requests), 3);

  /* A new training row: one request with its C prompts. */
  test_exec(db, "INSERT INTO utterances (dataset_id, text, text_norm, label, split, content_hash)"
              " SELECT id, 'refund my order', 'refund my order', 'request_refund', 'train', 'h-new' FROM datasets"
              " WHERE name = '" DATASET "'");
  finch_external_result r3;
  CHECK_INT_EQ(finch_external_query(db, &o, &r3, &err), FINCH_OK);
  CHECK_INT_EQ(r3.n_requests, 1);
  CHECK_INT_EQ(r3.n_scored, 1);
  CHECK_INT_EQ(r3.n_cached, 4);
  CHECK_INT_EQ(r3.n_labelled, 5);
  CHECK_INT_EQ(s->n_answered, 3);
  CHECK_INT_EQ(s->prompts[2], C);
  test_exec(db, "DELETE FROM utterances WHERE content_hash = 'h-new'");

  /* A 4xx is not retried; the message names the status, never the key. */
  snprintf(url, sizeof url, "http://127.0.0.1:%u/elsewhere", s->http.port);
  finch_external_result r4;
  int before = atomic_load(&s->requests);
  CHECK_INT_EQ(finch_external_query(db, &o, &r4, &err), FINCH_EIO);
  CHECK_CONTAINS(err.msg, "HTTP 404");
  CHECK(strstr(err.msg, API_KEY) == NULL);
  CHECK_INT_EQ(r4.n_requests, 1);
  CHECK_INT_EQ(atomic_load(&s->requests), before); /* the stub counts /v1/completions only */

  /* A server that keeps failing: the retries are spent, then a clear error. */
  snprintf(url, sizeof url, "http://127.0.0.1:%u", s->http.port);
  o.max_retries = 0;
  o.temperature = 3; /* nothing cached at this temperature */
  before = atomic_load(&s->requests);
  atomic_store(&s->fail_next, 1);
  finch_external_result r5;
  CHECK_INT_EQ(finch_external_query(db, &o, &r5, &err), FINCH_EIO);
  CHECK_CONTAINS(err.msg, "HTTP 503");
  CHECK_CONTAINS(err.msg, "(gave up after 1 attempt)");
  CHECK_INT_EQ(atomic_load(&s->requests) - before, 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM teacher_outputs WHERE model_id = %lld AND temperature = 3", r.model_id), 0);
  return r.model_id;
}

/* --- soft labels for distill ------------------------------------------------------ */

static void test_soft_labels(finch_db *db, long long jsonl_teacher, long long logits_teacher) {
  /* The caller's label order differs from the teacher's, with one label the teacher lacks. */
  const char *labels[4] = {"request_refund", "card_arrival", "lost_card", "exchange_rate"};
  char ids_s[4][32];
  snprintf(ids_s[0], 32, "%lld", g_id[0]);
  snprintf(ids_s[1], 32, "%lld", g_id[2]); /* no output from the JSONL teacher */
  snprintf(ids_s[2], 32, "%lld", g_id[1]);
  snprintf(ids_s[3], 32, "%lld", g_id[0]); /* asked twice */
  const char *ids[4] = {ids_s[0], ids_s[1], ids_s[2], ids_s[3]};
  float probs[4 * 4];
  unsigned char have[4];
  finch_err err;
  CHECK_INT_EQ(finch_external_soft_labels(db, jsonl_teacher, ids, 4, labels, 4, 2.0f, probs, have, &err), FINCH_OK);
  CHECK_INT_EQ(have[0], 1);
  CHECK_INT_EQ(have[1], 0);
  CHECK_INT_EQ(have[2], 1);
  CHECK_INT_EQ(have[3], 1);
  /* Stored at T0 = 1 as (0.8, 0.15, 0.05): tau 2 gives p^(1/2) renormalised. */
  double a = sqrt(0.8), b = sqrt(0.15), c = sqrt(0.05), s = a + b + c;
  CHECK_NEAR(probs[0 * 4 + 0], c / s, 1e-6);
  CHECK_NEAR(probs[0 * 4 + 1], a / s, 1e-6);
  CHECK_NEAR(probs[0 * 4 + 2], 0, 1e-9);
  CHECK_NEAR(probs[0 * 4 + 3], b / s, 1e-6);
  for (int k = 0; k < 4; k++) CHECK_NEAR(probs[3 * 4 + k], probs[0 * 4 + k], 1e-9);
  for (int k = 0; k < 4; k++) CHECK_NEAR(probs[1 * 4 + k], 0, 1e-9);
  /* (0.25, 0.75, 0): zeros stay zero. */
  a = sqrt(0.25), b = sqrt(0.75);
  CHECK_NEAR(probs[2 * 4 + 0], 0, 1e-9);
  CHECK_NEAR(probs[2 * 4 + 1], a / (a + b), 1e-6);
  CHECK_NEAR(probs[2 * 4 + 3], b / (a + b), 1e-6);
  /* At tau 1 the stored distribution comes back as it is. */
  CHECK_INT_EQ(finch_external_soft_labels(db, jsonl_teacher, ids, 1, labels, 4, 1.0f, probs, have, &err), FINCH_OK);
  CHECK_NEAR(probs[1], 0.8, 1e-6);
  CHECK_NEAR(probs[3], 0.15, 1e-6);

  /* Stored at T0 = 2 from logits: tau 4 is softmax(logits / 4) exactly. */
  const char *one[1] = {ids_s[1]};
  CHECK_INT_EQ(finch_external_soft_labels(db, logits_teacher, one, 1, labels, 4, 4.0f, probs, have, &err), FINCH_OK);
  CHECK_INT_EQ(have[0], 1);
  double zr = exp(2.0 / 4), zc = exp(0.0 / 4), ze = exp(-1.0 / 4), zs = zr + zc + ze;
  CHECK_NEAR(probs[0], zr / zs, 1e-6);
  CHECK_NEAR(probs[1], zc / zs, 1e-6);
  CHECK_NEAR(probs[2], 0, 1e-9);
  CHECK_NEAR(probs[3], ze / zs, 1e-6);

  CHECK_INT_EQ(finch_external_soft_labels(db, 999999, ids, 1, labels, 4, 1.0f, probs, have, &err), FINCH_ENOTFOUND);
  CHECK_INT_EQ(finch_external_soft_labels(db, jsonl_teacher, ids, 1, labels, 4, 0.0f, probs, have, &err), FINCH_EINVAL);
}

/* --- the CLI ------------------------------------------------------------------------ */

static void test_cli(finch_db *db) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || !*bin) return;
  char path[512], body[256], cmd[2048];
  tmp_path(path, sizeof path, "cli.jsonl");
  snprintf(body, sizeof body, "{\"utterance_id\": %lld, \"probs\": {\"request_refund\": 1}}\n", g_id[2]);
  write_text(path, body);
  snprintf(cmd, sizeof cmd, "'%s' soft-labels import --dataset " DATASET " --jsonl '%s' --json > '%s.out' 2>&1", bin,
           path, path);
  int rc = system(cmd);
  CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
  char out[600];
  snprintf(out, sizeof out, "%s.out", path);
  FILE *fp = fopen(out, "r");
  char line[1024] = "";
  while (fp && fgets(line, sizeof line, fp) && line[0] != '{') {
  }
  if (fp) fclose(fp);
  CHECK_CONTAINS(line, "\"mode\":\"import\"");
  CHECK_CONTAINS(line, "\"labelled\":1");
  CHECK_CONTAINS(line, "\"unlabelled\":3");
  /* A malformed file: exit 1, the place in the message. */
  snprintf(body, sizeof body, "{\"utterance_id\": %lld}\n", g_id[2]);
  write_text(path, body);
  rc = system(cmd);
  CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
  fp = fopen(out, "r");
  char all[4096] = "";
  size_t n = fp ? fread(all, 1, sizeof all - 1, fp) : 0;
  all[n] = '\0';
  if (fp) fclose(fp);
  CHECK_CONTAINS(all, "cli.jsonl:1: field probs: missing");
  (void)db;
}

int main(void) {
  finch_db *db = test_db_open();
  seed_dataset(db);
  long long jsonl_teacher = test_import_ids_and_text(db);
  long long logits_teacher = test_import_logits(db);
  test_import_malformed(db);
  stub s;
  if (stub_start(&s)) {
    fprintf(stderr, "cannot start the stub server\n");
    return 1;
  }
  test_endpoint(db, &s);
  stub_stop(&s);
  test_soft_labels(db, jsonl_teacher, logits_teacher);
  test_cli(db);
  finch_db_close(db);
  TEST_DONE();
}
