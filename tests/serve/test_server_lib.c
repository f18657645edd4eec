/* serve/server: finch_server_start/stop in-process, and every answer the
 * endpoints give, spoken to over real HTTP on a loopback port. */
#include "serve/serve.h"

#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <unistd.h>

#include "tests/serve/fixture.h"
#include "tests/test.h"

static char model_path[4096];
static char model_sha[65];

static int is_sha256_hex(const char *s) {
  if (!s || strlen(s) != 64) return 0;
  for (int i = 0; i < 64; i++)
    if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return 0;
  return 1;
}

/* Checks the reply's status and JSON content type and returns its body
 * parsed (caller decrefs), or NULL after recording a failure. */
static json_t *reply_json(const fixture_reply *r, long status, const char *what) {
  if (r->status != status) {
    TEST_FAIL_("%s: status %ld, want %ld (%s) body: %s", what, r->status, status, r->error,
               r->body ? r->body : "");
    return NULL;
  }
  if (strncmp(r->content_type, "application/json", 16) != 0)
    TEST_FAIL_("%s: Content-Type \"%s\", want application/json", what, r->content_type);
  json_error_t jerr;
  json_t *j = json_loads(r->body ? r->body : "", 0, &jerr);
  if (!j) TEST_FAIL_("%s: response is not JSON (%s): %s", what, jerr.text, r->body);
  return j;
}

static finch_serve_opts default_opts(void) {
  finch_serve_opts o = {.model_path = model_path, .host = "127.0.0.1", .port = 0,
                        .max_body = 256, .threads = 2};
  return o;
}

/* POST /v1/intent with body and expect a 200 naming intent. */
static void expect_intent(unsigned port, const char *body, const char *intent) {
  fixture_reply r;
  fixture_http(port, "POST", "/v1/intent", body, strlen(body), FIXTURE_BODY_FIXED, &r);
  json_t *j = reply_json(&r, 200, body);
  if (j) {
    const char *got = json_string_value(json_object_get(j, "intent"));
    if (!got || strcmp(got, intent) != 0)
      TEST_FAIL_("%s: intent %s, want %s", body, got ? got : "(none)", intent);
    json_t *conf = json_object_get(j, "confidence");
    double p = json_number_value(conf);
    if (!json_is_number(conf) || !(p > 0.0 && p <= 1.0))
      TEST_FAIL_("%s: confidence %g not in (0,1]", body, p);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "source")), "model");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "model")), model_sha);
    json_decref(j);
  }
  fixture_reply_free(&r);
}

typedef struct {
  const char *method, *path;
  const char *body; /* NULL: none */
  size_t len;       /* 0: strlen(body) */
  int flags;
  long status;
  const char *error; /* substring of the "error" message */
} bad_case;

static void expect_error(unsigned port, const bad_case *c) {
  fixture_reply r;
  size_t len = c->body ? (c->len ? c->len : strlen(c->body)) : 0;
  char what[160];
  snprintf(what, sizeof what, "%s %s (%zu-byte body%s)", c->method, c->path, len,
           c->flags & FIXTURE_BODY_CHUNKED ? ", chunked" : "");
  fixture_http(port, c->method, c->path, c->body, len, c->flags, &r);
  json_t *j = reply_json(&r, c->status, what);
  if (j) {
    const char *msg = json_string_value(json_object_get(j, "error"));
    if (!msg || !strstr(msg, c->error))
      TEST_FAIL_("%s: error \"%s\" does not mention \"%s\"", what, msg ? msg : "(none)",
                 c->error);
    json_decref(j);
  }
  fixture_reply_free(&r);
}

static void test_endpoints(void) {
  finch_serve_opts o = default_opts();
  finch_server *s = NULL;
  finch_err err = {0};
  finch_status st = finch_server_start(&s, &o, &err);
  if (st != FINCH_OK) {
    TEST_FAIL_("finch_server_start: %s", err.msg);
    return;
  }
  unsigned port = finch_server_port(s);
  CHECK(port > 0 && port <= 65535);
  CHECK(is_sha256_hex(finch_server_model_sha256(s)));
  CHECK_STR_EQ(finch_server_model_sha256(s), model_sha);

  fixture_reply r;
  fixture_http(port, "GET", "/healthz", NULL, 0, 0, &r);
  json_t *j = reply_json(&r, 200, "GET /healthz");
  if (j) {
    CHECK_STR_EQ(json_string_value(json_object_get(j, "status")), "ok");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "model")), model_sha);
    json_decref(j);
  }
  fixture_reply_free(&r);
  fixture_http(port, "HEAD", "/healthz", NULL, 0, 0, &r);
  CHECK_INT_EQ(r.status, 200);
  fixture_reply_free(&r);

  expect_intent(port, "{\"text\": \"my card still hasn't arrived\"}", "card_arrival");
  expect_intent(port, "{\"text\": \"What is the EXCHANGE rate?\", \"extra\": [1, 2]}",
                "exchange_rate");
  expect_intent(port, "{\"text\": \"i want a refund\"}", "request_refund");

  static char big[300], huge[10000];
  memset(big, ' ', sizeof big);
  memcpy(big, "{\"text\": \"my card\"}", 19);
  memset(huge, 'x', sizeof huge);
  const bad_case cases[] = {
      {"POST", "/v1/intent", "{not json", 0, 0, 400, "invalid JSON"},
      {"POST", "/v1/intent", "", 0, 0, 400, "invalid JSON"},
      {"POST", "/v1/intent", "{\"text\": \"a\"} trailing", 0, 0, 400, "invalid JSON"},
      {"POST", "/v1/intent", "[\"text\"]", 0, 0, 400, "JSON object"},
      {"POST", "/v1/intent", "{}", 0, 0, 400, "missing field \"text\""},
      {"POST", "/v1/intent", "{\"txt\": \"hello\"}", 0, 0, 400, "missing field \"text\""},
      {"POST", "/v1/intent", "{\"text\": 5}", 0, 0, 400, "must be a string"},
      {"POST", "/v1/intent", "{\"text\": null}", 0, 0, 400, "must be a string"},
      {"POST", "/v1/intent", "{\"text\": [\"a\"]}", 0, 0, 400, "must be a string"},
      {"POST", "/v1/intent", "{\"text\": \"\"}", 0, 0, 400, "empty"},
      {"POST", "/v1/intent", "{\"text\": \" \\t\\n \"}", 0, 0, 400, "empty"},
      {"POST", "/v1/intent", "{\"text\": \"\\u3000\\u200b\"}", 0, 0, 400, "empty"},
      {"POST", "/v1/intent", "{\"text\": \"\xff\xfe card\"}", 0, 0, 400, "not valid UTF-8"},
      {"POST", "/v1/intent", "{\"text\": \"\xc3\"}", 0, 0, 400, "not valid UTF-8"},
      {"POST", "/v1/intent", "{\"text\": \"a\\u0000b\"}", 0, 0, 400, "invalid JSON"},
      {"POST", "/v1/intent", "{\"text\": \"\\ud800\"}", 0, 0, 400, "invalid JSON"},
      {"GET", "/v1/intent", NULL, 0, 0, 405, "use POST"},
      {"PUT", "/v1/intent", "{\"text\": \"a\"}", 0, 0, 405, "use POST"},
      {"DELETE", "/healthz", NULL, 0, 0, 405, "use GET"},
      {"POST", "/healthz", "{}", 0, 0, 405, "use GET"},
      {"GET", "/nope", NULL, 0, 0, 404, "no such endpoint: /nope"},
      {"POST", "/v1/intent/extra", "{\"text\": \"a\"}", 0, 0, 404, "no such endpoint"},
      {"GET", "/", NULL, 0, 0, 404, "no such endpoint"},
      /* Over max_body (256): announced, with and without Expect, and chunked. */
      {"POST", "/v1/intent", big, sizeof big, 0, 413, "exceeds the limit of 256 bytes"},
      {"POST", "/v1/intent", big, sizeof big, FIXTURE_NO_EXPECT, 413, "limit of 256"},
      {"POST", "/v1/intent", big, sizeof big, FIXTURE_BODY_CHUNKED, 413, "limit of 256"},
      {"POST", "/v1/intent", huge, sizeof huge, 0, 413, "limit of 256"},
      {"POST", "/v1/intent", huge, sizeof huge, FIXTURE_BODY_CHUNKED, 413, "limit of 256"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_error(port, &cases[i]);

  /* Exactly max_body bytes is still accepted, whichever way it is sent. */
  fixture_http(port, "POST", "/v1/intent", big, 256, 0, &r);
  CHECK_INT_EQ(r.status, 200);
  fixture_reply_free(&r);
  fixture_http(port, "POST", "/v1/intent", big, 256, FIXTURE_BODY_CHUNKED, &r);
  CHECK_INT_EQ(r.status, 200);
  fixture_reply_free(&r);

  /* None of that hurt the server. */
  expect_intent(port, "{\"text\": \"my card still hasn't arrived\"}", "card_arrival");
  fixture_http(port, "GET", "/healthz", NULL, 0, 0, &r);
  CHECK_INT_EQ(r.status, 200);
  fixture_reply_free(&r);
  finch_server_stop(s);
}

typedef struct {
  unsigned port;
  int ok;
} load_arg;

static void *load_thread(void *p) {
  load_arg *a = p;
  static const char body[] = "{\"text\": \"when will my card arrive\"}";
  for (int i = 0; i < 25; i++) {
    fixture_reply r;
    fixture_http(a->port, "POST", "/v1/intent", body, sizeof body - 1, 0, &r);
    if (r.status == 200 && r.body && strstr(r.body, "\"card_arrival\"")) a->ok++;
    fixture_reply_free(&r);
  }
  return NULL;
}

/* Concurrent clients all get answers from the thread pool. */
static void test_concurrency(void) {
  finch_serve_opts o = default_opts();
  o.threads = 4;
  finch_server *s = NULL;
  finch_err err = {0};
  if (finch_server_start(&s, &o, &err) != FINCH_OK) {
    TEST_FAIL_("finch_server_start: %s", err.msg);
    return;
  }
  enum { T = 8 };
  pthread_t th[T];
  load_arg args[T];
  for (int i = 0; i < T; i++) {
    args[i] = (load_arg){finch_server_port(s), 0};
    pthread_create(&th[i], NULL, load_thread, &args[i]);
  }
  int ok = 0;
  for (int i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    ok += args[i].ok;
  }
  CHECK_INT_EQ(ok, T * 25);
  finch_server_stop(s);
}

/* Start and stop twice, the second time on the port the first one had; then
 * a third time on any port. Defaults (host, body limit, threads) apply. */
static void test_restart(void) {
  finch_serve_opts o = {.model_path = model_path};
  finch_server *s = NULL;
  finch_err err = {0};
  if (finch_server_start(&s, &o, &err) != FINCH_OK) {
    TEST_FAIL_("first start: %s", err.msg);
    return;
  }
  unsigned port = finch_server_port(s);
  fixture_reply r;
  fixture_http(port, "GET", "/healthz", NULL, 0, 0, &r);
  CHECK_INT_EQ(r.status, 200);
  fixture_reply_free(&r);
  finch_server_stop(s);

  o.port = port;
  s = NULL;
  if (finch_server_start(&s, &o, &err) != FINCH_OK) {
    TEST_FAIL_("second start on port %u: %s", port, err.msg);
    return;
  }
  CHECK_INT_EQ(finch_server_port(s), port);
  expect_intent(port, "{\"text\": \"my card still hasn't arrived\"}", "card_arrival");
  /* The default body limit is 64 KiB. */
  static char body[70000];
  memset(body, ' ', sizeof body);
  memcpy(body, "{\"text\": \"card\"}", 16);
  fixture_http(port, "POST", "/v1/intent", body, 65536, 0, &r);
  CHECK_INT_EQ(r.status, 200);
  fixture_reply_free(&r);
  fixture_http(port, "POST", "/v1/intent", body, 65537, 0, &r);
  CHECK_INT_EQ(r.status, 413);
  fixture_reply_free(&r);
  finch_server_stop(s);

  o.port = 0;
  s = NULL;
  if (finch_server_start(&s, &o, &err) != FINCH_OK) {
    TEST_FAIL_("third start: %s", err.msg);
    return;
  }
  finch_server_stop(s);
  finch_server_stop(NULL); /* a no-op */
}

static void test_start_errors(void) {
  finch_server *s = (finch_server *)&s;
  finch_err err = {0};

  /* A missing model file: a clear error naming it, and nothing to stop. */
  char missing[4200];
  snprintf(missing, sizeof missing, "%s.does-not-exist", model_path);
  finch_serve_opts o = default_opts();
  o.model_path = missing;
  CHECK(finch_server_start(&s, &o, &err) != FINCH_OK);
  CHECK(s == NULL);
  CHECK_CONTAINS(err.msg, missing);

  /* A file that is not a model. */
  char junk[4200];
  snprintf(junk, sizeof junk, "%s.junk", model_path);
  FILE *fp = fopen(junk, "wb");
  if (fp) {
    fputs("this is not a model file\n", fp);
    fclose(fp);
    err.msg[0] = '\0';
    o.model_path = junk;
    s = (finch_server *)&s;
    CHECK(finch_server_start(&s, &o, &err) != FINCH_OK);
    CHECK(s == NULL);
    CHECK(err.msg[0] != '\0');
    remove(junk);
  }

  o.model_path = NULL;
  CHECK_INT_EQ(finch_server_start(&s, &o, &err), FINCH_EINVAL);
  o.model_path = model_path;
  o.port = 70000;
  CHECK_INT_EQ(finch_server_start(&s, &o, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "70000");

  /* A port that is taken: the error says so, and the first server lives on. */
  finch_server *a = NULL;
  o = default_opts();
  if (finch_server_start(&a, &o, &err) != FINCH_OK) {
    TEST_FAIL_("finch_server_start: %s", err.msg);
    return;
  }
  o.port = finch_server_port(a);
  CHECK(finch_server_start(&s, &o, &err) != FINCH_OK);
  CHECK(s == NULL);
  CHECK_CONTAINS(err.msg, "cannot listen");
  fixture_reply r;
  fixture_http(finch_server_port(a), "GET", "/healthz", NULL, 0, 0, &r);
  CHECK_INT_EQ(r.status, 200);
  fixture_reply_free(&r);
  finch_server_stop(a);
}

int main(void) {
  char name[64];
  snprintf(name, sizeof name, "test_server_lib.%ld.model", (long)getpid());
  if (!fixture_tmp_path(model_path, sizeof model_path, name)) TEST_SKIP("no temp folder");
  finch_err err = {0};
  if (fixture_build_model(model_path, model_sha, &err) != FINCH_OK) {
    fprintf(stderr, "cannot build the test model: %s\n", err.msg);
    return 1;
  }
  CHECK(is_sha256_hex(model_sha));
  curl_global_init(CURL_GLOBAL_DEFAULT);

  test_endpoints();
  test_concurrency();
  test_restart();
  test_start_errors();

  curl_global_cleanup();
  remove(model_path);
  TEST_DONE();
}
