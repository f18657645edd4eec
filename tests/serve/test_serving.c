/* Serving quality of the intent server (serve/serve.h), over real HTTP on
 * loopback: request ids, the Prometheus /metrics endpoint, the bounded
 * classification queue (503 + Retry-After), hot reload under concurrent
 * requests (with and without batching) and draining on stop. Access logs,
 * `finch serve` signals and database mode are in test_serving_ops.c. */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/serve.h"
#include "serve/webhook.h"
#include "tests/serve/serving_fixture.h"
#include "tests/test.h"

static int is_hex16(const char *s) {
  if (strlen(s) != 16) return 0;
  for (; *s; s++)
    if (!isxdigit((unsigned char)*s)) return 0;
  return 1;
}

/* --- /metrics ------------------------------------------------------------- */

/* Waits (a request is counted once its response has gone out, which the
 * client may see first) until series reaches at least want; its value. */
static double metric_wait(unsigned port, const char *series, double want) {
  double v = -1;
  for (int i = 0; i < 200; i++) {
    char *t = sv_scrape(port, NULL);
    v = t ? sv_metric(t, series) : -1;
    free(t);
    if (v >= want) break;
    sv_sleep_ms(10);
  }
  return v;
}

/* --- tests ---------------------------------------------------------------- */

static void test_request_ids(void) {
  finch_server *s = sv_start((finch_serve_opts){0});
  if (!s) return;
  unsigned port = finch_server_port(s);
  sv_reply r = sv_intent(port, "my card has not arrived", "X-Request-Id: call-42.turn_7-A");
  CHECK_INT_EQ(r.status, 200);
  CHECK_STR_EQ(r.request_id, "call-42.turn_7-A");
  sv_reply_free(&r);

  r = sv_intent(port, "my card has not arrived", NULL);
  CHECK_INT_EQ(r.status, 200);
  CHECK(is_hex16(r.request_id));
  char first[128];
  snprintf(first, sizeof first, "%s", r.request_id);
  sv_reply_free(&r);
  r = sv_intent(port, "my card has not arrived", NULL);
  CHECK(is_hex16(r.request_id));
  if (strcmp(first, r.request_id) == 0) TEST_FAIL_("two generated request ids are equal: %s", first);
  sv_reply_free(&r);

  /* Invalid ids are replaced, never echoed. */
  char longid[100];
  memset(longid, 'a', 65);
  longid[65] = '\0';
  char hdr[160];
  const char *bad[] = {"X-Request-Id: has space", "X-Request-Id: semi;colon", "X-Request-Id: quote\"d", hdr};
  snprintf(hdr, sizeof hdr, "X-Request-Id: %s", longid);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = sv_intent(port, "what is the exchange rate", bad[i]);
    CHECK_INT_EQ(r.status, 200);
    if (!is_hex16(r.request_id)) TEST_FAIL_("%s: got id \"%s\", want a generated one", bad[i], r.request_id);
    sv_reply_free(&r);
  }
  memset(longid, 'b', 64);
  longid[64] = '\0';
  snprintf(hdr, sizeof hdr, "X-Request-Id: %s", longid);
  r = sv_intent(port, "what is the exchange rate", hdr);
  CHECK_STR_EQ(r.request_id, longid); /* 64 is allowed */
  sv_reply_free(&r);

  /* Error bodies carry it too. */
  r = sv_http(NULL, port, "POST", "/v1/intent", "{\"text\": 5}", "X-Request-Id: err-1", NULL);
  CHECK_INT_EQ(r.status, 400);
  CHECK_STR_EQ(r.request_id, "err-1");
  json_t *j = json_loads(r.body, 0, NULL);
  CHECK_STR_EQ(json_string_value(json_object_get(j, "request_id")), "err-1");
  json_decref(j);
  sv_reply_free(&r);
  r = sv_http(NULL, port, "GET", "/nowhere", NULL, NULL, NULL);
  CHECK_INT_EQ(r.status, 404);
  j = json_loads(r.body, 0, NULL);
  CHECK_STR_EQ(json_string_value(json_object_get(j, "request_id")), r.request_id);
  json_decref(j);
  sv_reply_free(&r);
  finch_server_stop(s);
}

static void test_metrics(void) {
  finch_server *s = sv_start((finch_serve_opts){0});
  if (!s) return;
  unsigned port = finch_server_port(s);
  static const char ok200[] = "finch_requests_total{path=\"/v1/intent\",status=\"200\"}";
  char *t = sv_scrape(port, NULL);
  if (!t) {
    finch_server_stop(s);
    return;
  }
  CHECK_NEAR(sv_metric(t, ok200), 0, 0);
  CHECK_NEAR(sv_metric(t, "finch_queue_depth"), 0, 0);
  CHECK_NEAR(sv_metric(t, "finch_batch_size_count"), 0, 0);
  char info[128];
  snprintf(info, sizeof info, "finch_model_info{sha256=\"%s\"}", sv_sha_a);
  CHECK_NEAR(sv_metric(t, info), 1, 0);
  if (strstr(t, "finch_webhook_backlog")) TEST_FAIL_("finch_webhook_backlog without a database");
  CHECK_CONTAINS(t, "# TYPE finch_request_duration_seconds histogram");
  free(t);

  for (int i = 0; i < 5; i++) {
    sv_reply r = sv_intent(port, i % 2 ? "i want a refund" : "my card has not arrived", NULL);
    CHECK_INT_EQ(r.status, 200);
    sv_reply_free(&r);
  }
  sv_reply r = sv_intent(port, "", NULL);
  CHECK_INT_EQ(r.status, 400);
  sv_reply_free(&r);
  CHECK_NEAR(metric_wait(port, ok200, 5), 5, 0);
  CHECK_NEAR(metric_wait(port, "finch_requests_total{path=\"/v1/intent\",status=\"400\"}", 1), 1, 0);
  t = sv_scrape(port, NULL);
  if (t) {
    CHECK_NEAR(sv_metric(t, "finch_batch_size_count"), 5, 0);
    CHECK_NEAR(sv_metric(t, "finch_batch_size_bucket{le=\"1\"}"), 5, 0);
    CHECK_NEAR(sv_metric(t, "finch_decisions_total{engine=\"model\"}"), 5, 0);
    CHECK_NEAR(sv_metric(t, "finch_decisions_total{engine=\"rules\"}"), 0, 0);
    double n = sv_metric(t, "finch_request_duration_seconds_count{path=\"/v1/intent\"}");
    CHECK_NEAR(n, 6, 0);
    CHECK_NEAR(sv_metric(t, "finch_request_duration_seconds_bucket{path=\"/v1/intent\",le=\"+Inf\"}"), n, 0);
    double prev = 0;
    static const char *const les[] = {"0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
                                      "0.025",   "0.05",   "0.1",   "0.25",   "0.5",   "1"};
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
      char series[160];
      snprintf(series, sizeof series, "finch_request_duration_seconds_bucket{path=\"/v1/intent\",le=\"%s\"}", les[i]);
      double v = sv_metric(t, series);
      if (v < prev) TEST_FAIL_("%s = %g after %g: buckets must be cumulative", series, v, prev);
      prev = v;
    }
    double sum = sv_metric(t, "finch_request_duration_seconds_sum{path=\"/v1/intent\"}");
    if (!(sum > 0 && sum < 60)) TEST_FAIL_("duration sum %g", sum);
    /* The scrapes are counted as well. */
    if (sv_metric(t, "finch_requests_total{path=\"/metrics\",status=\"200\"}") < 1)
      TEST_FAIL_("scrapes of /metrics are not counted");
    free(t);
  }
  r = sv_http(NULL, port, "POST", "/metrics", "{}", NULL, NULL);
  CHECK_INT_EQ(r.status, 405);
  sv_reply_free(&r);
  finch_server_stop(s);
}

typedef struct {
  unsigned port;
  const char *text;
  sv_reply r;
  double took;
} bg_req;

static void *bg_intent(void *arg) {
  bg_req *b = arg;
  double t0 = sv_now_s();
  b->r = sv_intent(b->port, b->text, NULL);
  b->took = sv_now_s() - t0;
  return NULL;
}

/* Gives a request sent in the background time to be read and admitted.
 * Without batching its MHD thread then sleeps in the classification and
 * accepts no connection, so the test's next connections go to the other
 * thread; one accepted just before would wait behind it. */
static void settle(void) { sv_sleep_ms(150); }

/* max_queue 1 and a classification held for 600 ms: the second request in
 * that time is refused at once, with Retry-After, and the first completes. */
static void test_queue_full(unsigned window_us) {
  finch_server *s = sv_start((finch_serve_opts){.max_queue = 1, .classify_delay_us = 600000,
                                             .batch_window_us = window_us});
  if (!s) return;
  unsigned port = finch_server_port(s);
  bg_req a = {.port = port, .text = "my card has not arrived"};
  pthread_t th;
  pthread_create(&th, NULL, bg_intent, &a);
  settle();
  CHECK_NEAR(metric_wait(port, "finch_queue_depth", 1), 1, 0);
  double t0 = sv_now_s();
  sv_reply r = sv_intent(port, "i want a refund", "X-Request-Id: shed-1");
  double took = sv_now_s() - t0;
  CHECK_INT_EQ(r.status, 503);
  CHECK_STR_EQ(r.retry_after, "1");
  CHECK_STR_EQ(r.request_id, "shed-1");
  json_t *j = json_loads(r.body, 0, NULL);
  CHECK_CONTAINS(json_string_value(json_object_get(j, "error")), "capacity");
  CHECK_STR_EQ(json_string_value(json_object_get(j, "request_id")), "shed-1");
  json_decref(j);
  if (took > 0.4) TEST_FAIL_("the refusal took %.3f s: it must not wait for the queue", took);
  sv_reply_free(&r);
  pthread_join(th, NULL);
  CHECK_INT_EQ(a.r.status, 200);
  sv_reply_free(&a.r);
  /* Room again. */
  r = sv_intent(port, "i want a refund", NULL);
  CHECK_INT_EQ(r.status, 200);
  sv_reply_free(&r);
  CHECK_NEAR(metric_wait(port, "finch_requests_total{path=\"/v1/intent\",status=\"503\"}", 1), 1, 0);
  CHECK_NEAR(metric_wait(port, "finch_queue_depth", 0), 0, 0);
  finch_server_stop(s);
}

/* --- hot reload under load ------------------------------------------------ */

typedef struct {
  unsigned port;
  atomic_int *stop;
  long ok, bad, saw_a, saw_b;
  char last_bad[256];
} hammer;

static void *hammer_main(void *arg) {
  hammer *h = arg;
  CURL *c = curl_easy_init();
  static const char *const texts[] = {"{\"text\":\"my card has not arrived\"}", "{\"text\":\"i want a refund\"}",
                                      "{\"text\":\"what is the exchange rate\"}"};
  for (long i = 0; !atomic_load(h->stop); i++) {
    sv_reply r = sv_http(c, h->port, "POST", "/v1/intent", texts[i % 3], NULL, NULL);
    json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    const char *m = json_string_value(json_object_get(j, "model"));
    if (r.status == 200 && m) {
      h->ok++;
      if (strcmp(m, sv_sha_a) == 0) h->saw_a++;
      if (strcmp(m, sv_sha_b) == 0) h->saw_b++;
    } else {
      h->bad++;
      snprintf(h->last_bad, sizeof h->last_bad, "status %ld: %.200s", r.status, r.body);
    }
    json_decref(j);
    sv_reply_free(&r);
  }
  curl_easy_cleanup(c);
  return NULL;
}

static void test_reload_under_load(unsigned window_us) {
  char served[4096], tmp[4096];
  snprintf(served, sizeof served, "%s.served", sv_model_a);
  snprintf(tmp, sizeof tmp, "%s.tmp", sv_model_a);
  if (sv_copy_file(sv_model_a, served) != 0) {
    TEST_FAIL_("cannot copy the model");
    return;
  }
  finch_server *s = sv_start((finch_serve_opts){.model_path = served, .threads = 2, .batch_window_us = window_us});
  if (!s) return;
  unsigned port = finch_server_port(s);
  enum { N = 4 };
  atomic_int stop = 0;
  hammer h[N];
  pthread_t th[N];
  for (int i = 0; i < N; i++) {
    h[i] = (hammer){.port = port, .stop = &stop};
    pthread_create(&th[i], NULL, hammer_main, &h[i]);
  }
  finch_err err = {0};
  sv_sleep_ms(150);
  /* 1: another file. */
  if (finch_server_reload(s, sv_model_b, &err) != FINCH_OK) TEST_FAIL_("reload to B: %s", err.msg);
  CHECK_STR_EQ(finch_server_model_sha256(s), sv_sha_b);
  sv_sleep_ms(150);
  /* A file that is not a model: refused, B stays. */
  if (finch_server_reload(s, sv_model_bad, &err) == FINCH_OK) TEST_FAIL_("a broken model file was accepted");
  CHECK_STR_EQ(finch_server_model_sha256(s), sv_sha_b);
  sv_sleep_ms(100);
  /* 2: the path now served (sv_model_b), replaced by A's bytes, read again. */
  char b_path_copy[4096];
  snprintf(b_path_copy, sizeof b_path_copy, "%s.b", sv_model_a);
  if (sv_copy_file(sv_model_b, b_path_copy) != 0 || sv_copy_file(sv_model_a, tmp) != 0) TEST_FAIL_("cannot copy models");
  if (finch_server_reload(s, b_path_copy, &err) != FINCH_OK) TEST_FAIL_("reload to B's copy: %s", err.msg);
  sv_sleep_ms(100);
  if (rename(tmp, b_path_copy) != 0) TEST_FAIL_("rename: %s", strerror(errno));
  if (finch_server_reload(s, NULL, &err) != FINCH_OK) TEST_FAIL_("reload of the same path: %s", err.msg);
  CHECK_STR_EQ(finch_server_model_sha256(s), sv_sha_a);
  sv_sleep_ms(150);
  atomic_store(&stop, 1);
  long ok = 0, bad = 0, saw_a = 0, saw_b = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    ok += h[i].ok;
    bad += h[i].bad;
    saw_a += h[i].saw_a;
    saw_b += h[i].saw_b;
    if (h[i].bad) TEST_FAIL_("window %u: thread %d: %ld failed requests, last %s", window_us, i, h[i].bad, h[i].last_bad);
  }
  CHECK_INT_EQ(bad, 0);
  if (ok < 20 || !saw_a || !saw_b)
    TEST_FAIL_("window %u: %ld answers, %ld from A, %ld from B: both models must have answered", window_us, ok,
               saw_a, saw_b);
  char *t = sv_scrape(port, NULL);
  if (t) {
    CHECK_NEAR(sv_metric(t, "finch_model_reloads_total{result=\"ok\"}"), 3, 0);
    CHECK_NEAR(sv_metric(t, "finch_model_reloads_total{result=\"failed\"}"), 1, 0);
    if (window_us && sv_metric(t, "finch_batch_size_sum") < ok)
      TEST_FAIL_("batched: %g texts in batches, %ld answers", sv_metric(t, "finch_batch_size_sum"), ok);
    free(t);
  }
  finch_server_stop(s);
  remove(served);
  remove(b_path_copy);
}

/* --- draining ------------------------------------------------------------- */

static void test_stop_drains(unsigned window_us) {
  finch_server *s = sv_start((finch_serve_opts){.classify_delay_us = 600000, .batch_window_us = window_us});
  if (!s) return;
  unsigned port = finch_server_port(s);
  bg_req a = {.port = port, .text = "my card has not arrived"};
  pthread_t th;
  pthread_create(&th, NULL, bg_intent, &a);
  settle();
  CHECK_NEAR(metric_wait(port, "finch_queue_depth", 1), 1, 0);
  double t0 = sv_now_s();
  finch_server_stop(s); /* the request is classifying: stop waits for it */
  double took = sv_now_s() - t0;
  pthread_join(th, NULL);
  CHECK_INT_EQ(a.r.status, 200);
  sv_reply_free(&a.r);
  if (took > 4.0) TEST_FAIL_("stop took %.2f s for one 0.6 s request", took);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  sv_models_make("test_serving");
  curl_global_init(CURL_GLOBAL_DEFAULT);

  test_request_ids();
  test_metrics();
  test_queue_full(0);
  test_queue_full(200);
  test_reload_under_load(0);
  test_reload_under_load(200);
  test_stop_drains(0);
  test_stop_drains(200);

  curl_global_cleanup();
  sv_models_remove();
  TEST_DONE();
}
