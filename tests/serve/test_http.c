/* Black-box test of `finch serve`: start the real binary ($FINCH_BIN) on a
 * loopback port with a freshly trained model, speak HTTP to it, and check
 * that SIGTERM shuts it down cleanly. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/serve/api_fixture.h"
#include "tests/serve/fixture.h"
#include "tests/test.h"

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

static int is_sha256_hex(const char *s) {
  if (!s || strlen(s) != 64) return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
  return 1;
}

static void check_good_request(unsigned port, const char *what) {
  static const char body[] = "{\"text\":\"my card still hasn't arrived\"}";
  fixture_reply r;
  fixture_http(port, "POST", "/v1/intent", body, sizeof body - 1, 0, &r);
  json_t *j = reply_json(&r, 200, what);
  if (j) {
    CHECK_STR_EQ(json_string_value(json_object_get(j, "intent")), "card_arrival");
    json_t *conf = json_object_get(j, "confidence");
    double p = json_number_value(conf);
    if (!json_is_number(conf) || !(p > 0.0 && p <= 1.0))
      TEST_FAIL_("%s: confidence %g not in (0,1]", what, p);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "source")), "model");
    CHECK(is_sha256_hex(json_string_value(json_object_get(j, "model"))));
    json_decref(j);
  }
  fixture_reply_free(&r);
}

static void check_bad_request(unsigned port, const char *body, size_t len, long status,
                              const char *what) {
  fixture_reply r;
  fixture_http(port, "POST", "/v1/intent", body, len, 0, &r);
  json_t *j = reply_json(&r, status, what);
  if (j) {
    const char *msg = json_string_value(json_object_get(j, "error"));
    if (!msg || !*msg) TEST_FAIL_("%s: no \"error\" message in %s", what, r.body);
    json_decref(j);
  }
  fixture_reply_free(&r);
}

int main(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || !*bin) TEST_SKIP("FINCH_BIN is not set");
  if (access(bin, X_OK) != 0) TEST_SKIP("%s is not executable", bin);

  char model_path[4096], name[64], sha[65];
  snprintf(name, sizeof name, "test_http.%ld.model", (long)getpid());
  if (!fixture_tmp_path(model_path, sizeof model_path, name)) TEST_SKIP("no temp folder");
  finch_err err = {0};
  if (fixture_build_model(model_path, sha, &err) != FINCH_OK) {
    fprintf(stderr, "cannot build the test model: %s\n", err.msg);
    return 1;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);

  char *argv[] = {(char *)bin, "serve", "--model", model_path, "--port", "0",
                  "--host", "127.0.0.1", NULL};
  api_child c;
  if (api_child_start(&c, argv) != 0) {
    fprintf(stderr, "cannot start %s: %s\n", bin, strerror(errno));
    return 1;
  }
  char line[1024];
  if (api_child_wait_line(&c, "finch: serving ", line, sizeof line, 60) != 0) {
    TEST_FAIL_("%s serve did not report \"finch: serving ...\" within 60 s", bin);
    api_child_kill(&c);
    remove(model_path);
    curl_global_cleanup();
    TEST_DONE();
  }
  CHECK_CONTAINS(line, model_path);
  CHECK_CONTAINS(line, "http://127.0.0.1:");
  const char *colon = strrchr(line, ':');
  long port = colon ? strtol(colon + 1, NULL, 10) : 0;
  if (port <= 0 || port > 65535) {
    TEST_FAIL_("no port in \"%s\"", line);
    api_child_kill(&c);
    remove(model_path);
    curl_global_cleanup();
    TEST_DONE();
  }
  unsigned p = (unsigned)port;

  check_good_request(p, "first request");

  fixture_reply r;
  fixture_http(p, "GET", "/healthz", NULL, 0, 0, &r);
  json_t *j = reply_json(&r, 200, "GET /healthz");
  if (j) {
    CHECK_STR_EQ(json_string_value(json_object_get(j, "status")), "ok");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "model")), sha);
    json_decref(j);
  }
  fixture_reply_free(&r);

  static const char not_json[] = "{\"text\": \"my card\"";
  check_bad_request(p, not_json, sizeof not_json - 1, 400, "invalid JSON");
  check_bad_request(p, "{}", 2, 400, "{}");
  check_bad_request(p, "{\"text\": 5}", 11, 400, "{\"text\": 5}");
  check_bad_request(p, "{\"text\": \"\"}", 12, 400, "empty text");
  /* 1 MiB: well over the default 64 KiB limit. */
  size_t big_len = 1u << 20;
  char *big = malloc(big_len);
  memset(big, ' ', big_len);
  memcpy(big, "{\"text\": \"card\"}", 16);
  check_bad_request(p, big, big_len, 413, "1 MiB body");
  free(big);
  fixture_http(p, "GET", "/v1/intent", NULL, 0, 0, &r);
  CHECK_INT_EQ(r.status, 405);
  fixture_reply_free(&r);
  fixture_http(p, "GET", "/no/such/path", NULL, 0, 0, &r);
  CHECK_INT_EQ(r.status, 404);
  fixture_reply_free(&r);

  check_good_request(p, "request after the bad ones");

  /* SIGTERM: a clean exit with status 0 within a few seconds. */
  if (kill(c.pid, SIGTERM) != 0) TEST_FAIL_("kill: %s", strerror(errno));
  int status = api_child_wait_exit(&c, 10);
  if (status == -1) {
    TEST_FAIL_("finch serve did not exit within 10 s of SIGTERM");
  } else if (WIFSIGNALED(status)) {
    TEST_FAIL_("finch serve died of signal %d after SIGTERM", WTERMSIG(status));
  } else {
    CHECK_INT_EQ(WEXITSTATUS(status), 0);
  }
  api_child_kill(&c);

  curl_global_cleanup();
  remove(model_path);
  TEST_DONE();
}
