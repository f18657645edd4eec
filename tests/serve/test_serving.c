/* Serving quality of the intent server (serve/serve.h), over real HTTP on
 * loopback: request ids, the Prometheus /metrics endpoint, the bounded
 * classification queue (503 + Retry-After), hot reload under concurrent
 * requests (with and without batching), draining on stop and on SIGTERM,
 * SIGHUP reloads of `finch serve`, access logs without raw text, and in
 * database mode the admin role on /metrics and POST /v1/admin/reload and the
 * webhook backlog gauge. */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nn/model.h"
#include "serve/auth.h"
#include "serve/serve.h"
#include "serve/webhook.h"
#include "tests/dbtest.h"
#include "tests/serve/api_fixture.h"
#include "tests/serve/fixture.h"

static char model_a[4096], model_b[4096], model_bad[4096], sha_a[65], sha_b[65];

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) { nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L}, NULL); }

/* --- a small HTTP client that keeps the headers the tests check ----------- */

typedef struct {
  long status; /* 0: no response */
  char *body;
  size_t len;
  char content_type[128], request_id[128], retry_after[32], connection[32];
} reply;

static size_t on_body(char *data, size_t size, size_t n, void *ctx) {
  reply *r = ctx;
  size_t add = size * n;
  char *p = realloc(r->body, r->len + add + 1);
  if (!p) return 0;
  memcpy(p + r->len, data, add);
  r->body = p;
  r->len += add;
  p[r->len] = '\0';
  return add;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t n) {
  size_t k = strlen(name);
  if (len <= k + 1 || strncasecmp(line, name, k) != 0 || line[k] != ':') return;
  const char *v = line + k + 1;
  while (*v == ' ') v++;
  size_t vl = len - (size_t)(v - line);
  while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n')) vl--;
  snprintf(out, n, "%.*s", (int)vl, v);
}

static size_t on_header(char *data, size_t size, size_t n, void *ctx) {
  reply *r = ctx;
  size_t len = size * n;
  header_value(data, len, "Content-Type", r->content_type, sizeof r->content_type);
  header_value(data, len, "X-Request-Id", r->request_id, sizeof r->request_id);
  header_value(data, len, "Retry-After", r->retry_after, sizeof r->retry_after);
  header_value(data, len, "Connection", r->connection, sizeof r->connection);
  return len;
}

/* One request; curl may be NULL (a fresh handle) or a handle to reuse (its
 * connection stays open between calls). extra: a header line or NULL. */
static reply http(CURL *curl, unsigned port, const char *method, const char *path, const char *body,
                  const char *extra, const char *key) {
  reply r = {0};
  CURL *c = curl ? curl : curl_easy_init();
  if (!c) return r;
  curl_easy_reset(c);
  char url[512], auth[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
  struct curl_slist *h = NULL;
  if (body) h = curl_slist_append(h, "Content-Type: application/json");
  if (extra) h = curl_slist_append(h, extra);
  if (key) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    h = curl_slist_append(h, auth);
  }
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  if (strcmp(method, "POST") == 0 && !body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(h);
  if (!curl) curl_easy_cleanup(c);
  if (!r.body) r.body = calloc(1, 1);
  return r;
}

static void reply_free(reply *r) {
  free(r->body);
  r->body = NULL;
}

static reply intent(unsigned port, const char *text, const char *extra) {
  json_t *o = json_pack("{s:s}", "text", text);
  char *b = json_dumps(o, JSON_COMPACT);
  reply r = http(NULL, port, "POST", "/v1/intent", b, extra, NULL);
  free(b);
  json_decref(o);
  return r;
}

static int is_hex16(const char *s) {
  if (strlen(s) != 16) return 0;
  for (; *s; s++)
    if (!isxdigit((unsigned char)*s)) return 0;
  return 1;
}

static finch_server *start(finch_serve_opts o) {
  finch_server *s = NULL;
  finch_err err = {0};
  if (!o.model_path) o.model_path = model_a;
  if (!o.host) o.host = "127.0.0.1";
  if (!o.access_log) o.access_log = "off";
  if (finch_server_start(&s, &o, &err) != FINCH_OK) {
    TEST_FAIL_("finch_server_start: %s", err.msg);
    return NULL;
  }
  return s;
}

/* --- /metrics parsing ----------------------------------------------------- */

/* The value of the sample `series` (name with its labels exactly as
 * rendered, e.g. finch_requests_total{path="/v1/intent",status="200"}); -1
 * when absent. Also checks every line of the exposition is well formed. */
static double metric(const char *text, const char *series) {
  double found = -1;
  const char *line = text;
  while (*line) {
    const char *end = strchr(line, '\n');
    size_t n = end ? (size_t)(end - line) : strlen(line);
    if (n && line[0] == '#') {
      if (strncmp(line, "# HELP ", 7) != 0 && strncmp(line, "# TYPE ", 7) != 0)
        TEST_FAIL_("bad comment line: %.*s", (int)n, line);
    } else if (n) {
      const char *sp = memchr(line, ' ', n);
      char *vend;
      double v = sp ? strtod(sp + 1, &vend) : 0;
      if (!sp || vend != line + n) {
        TEST_FAIL_("bad sample line: %.*s", (int)n, line);
      } else if ((size_t)(sp - line) == strlen(series) && strncmp(line, series, strlen(series)) == 0) {
        found = v;
      }
    }
    if (!end) break;
    line = end + 1;
  }
  return found;
}

static char *scrape(unsigned port, const char *key) {
  reply r = http(NULL, port, "GET", "/metrics", NULL, NULL, key);
  if (r.status != 200) {
    TEST_FAIL_("GET /metrics: status %ld: %s", r.status, r.body);
    reply_free(&r);
    return NULL;
  }
  CHECK_STR_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  return r.body;
}

/* Waits (a request is counted once its response has gone out, which the
 * client may see first) until series reaches at least want; its value. */
static double metric_wait(unsigned port, const char *series, double want) {
  double v = -1;
  for (int i = 0; i < 200; i++) {
    char *t = scrape(port, NULL);
    v = t ? metric(t, series) : -1;
    free(t);
    if (v >= want) break;
    sleep_ms(10);
  }
  return v;
}

/* --- tests ---------------------------------------------------------------- */

static void test_request_ids(void) {
  finch_server *s = start((finch_serve_opts){0});
  if (!s) return;
  unsigned port = finch_server_port(s);
  reply r = intent(port, "my card has not arrived", "X-Request-Id: call-42.turn_7-A");
  CHECK_INT_EQ(r.status, 200);
  CHECK_STR_EQ(r.request_id, "call-42.turn_7-A");
  reply_free(&r);

  r = intent(port, "my card has not arrived", NULL);
  CHECK_INT_EQ(r.status, 200);
  CHECK(is_hex16(r.request_id));
  char first[128];
  snprintf(first, sizeof first, "%s", r.request_id);
  reply_free(&r);
  r = intent(port, "my card has not arrived", NULL);
  CHECK(is_hex16(r.request_id));
  if (strcmp(first, r.request_id) == 0) TEST_FAIL_("two generated request ids are equal: %s", first);
  reply_free(&r);

  /* Invalid ids are replaced, never echoed. */
  char longid[100];
  memset(longid, 'a', 65);
  longid[65] = '\0';
  char hdr[160];
  const char *bad[] = {"X-Request-Id: has space", "X-Request-Id: semi;colon", "X-Request-Id: quote\"d", hdr};
  snprintf(hdr, sizeof hdr, "X-Request-Id: %s", longid);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = intent(port, "what is the exchange rate", bad[i]);
    CHECK_INT_EQ(r.status, 200);
    if (!is_hex16(r.request_id)) TEST_FAIL_("%s: got id \"%s\", want a generated one", bad[i], r.request_id);
    reply_free(&r);
  }
  memset(longid, 'b', 64);
  longid[64] = '\0';
  snprintf(hdr, sizeof hdr, "X-Request-Id: %s", longid);
  r = intent(port, "what is the exchange rate", hdr);
  CHECK_STR_EQ(r.request_id, longid); /* 64 is allowed */
  reply_free(&r);

  /* Error bodies carry it too. */
  r = http(NULL, port, "POST", "/v1/intent", "{\"text\": 5}", "X-Request-Id: err-1", NULL);
  CHECK_INT_EQ(r.status, 400);
  CHECK_STR_EQ(r.request_id, "err-1");
  json_t *j = json_loads(r.body, 0, NULL);
  CHECK_STR_EQ(json_string_value(json_object_get(j, "request_id")), "err-1");
  json_decref(j);
  reply_free(&r);
  r = http(NULL, port, "GET", "/nowhere", NULL, NULL, NULL);
  CHECK_INT_EQ(r.status, 404);
  j = json_loads(r.body, 0, NULL);
  CHECK_STR_EQ(json_string_value(json_object_get(j, "request_id")), r.request_id);
  json_decref(j);
  reply_free(&r);
  finch_server_stop(s);
}

static void test_metrics(void) {
  finch_server *s = start((finch_serve_opts){0});
  if (!s) return;
  unsigned port = finch_server_port(s);
  static const char ok200[] = "finch_requests_total{path=\"/v1/intent\",status=\"200\"}";
  char *t = scrape(port, NULL);
  if (!t) {
    finch_server_stop(s);
    return;
  }
  CHECK_NEAR(metric(t, ok200), 0, 0);
  CHECK_NEAR(metric(t, "finch_queue_depth"), 0, 0);
  CHECK_NEAR(metric(t, "finch_batch_size_count"), 0, 0);
  char info[128];
  snprintf(info, sizeof info, "finch_model_info{sha256=\"%s\"}", sha_a);
  CHECK_NEAR(metric(t, info), 1, 0);
  if (strstr(t, "finch_webhook_backlog")) TEST_FAIL_("finch_webhook_backlog without a database");
  CHECK_CONTAINS(t, "# TYPE finch_request_duration_seconds histogram");
  free(t);

  for (int i = 0; i < 5; i++) {
    reply r = intent(port, i % 2 ? "i want a refund" : "my card has not arrived", NULL);
    CHECK_INT_EQ(r.status, 200);
    reply_free(&r);
  }
  reply r = intent(port, "", NULL);
  CHECK_INT_EQ(r.status, 400);
  reply_free(&r);
  CHECK_NEAR(metric_wait(port, ok200, 5), 5, 0);
  CHECK_NEAR(metric_wait(port, "finch_requests_total{path=\"/v1/intent\",status=\"400\"}", 1), 1, 0);
  t = scrape(port, NULL);
  if (t) {
    CHECK_NEAR(metric(t, "finch_batch_size_count"), 5, 0);
    CHECK_NEAR(metric(t, "finch_batch_size_bucket{le=\"1\"}"), 5, 0);
    CHECK_NEAR(metric(t, "finch_decisions_total{engine=\"model\"}"), 5, 0);
    CHECK_NEAR(metric(t, "finch_decisions_total{engine=\"rules\"}"), 0, 0);
    double n = metric(t, "finch_request_duration_seconds_count{path=\"/v1/intent\"}");
    CHECK_NEAR(n, 6, 0);
    CHECK_NEAR(metric(t, "finch_request_duration_seconds_bucket{path=\"/v1/intent\",le=\"+Inf\"}"), n, 0);
    double prev = 0;
    static const char *const les[] = {"0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
                                      "0.025",   "0.05",   "0.1",   "0.25",   "0.5",   "1"};
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
      char series[160];
      snprintf(series, sizeof series, "finch_request_duration_seconds_bucket{path=\"/v1/intent\",le=\"%s\"}", les[i]);
      double v = metric(t, series);
      if (v < prev) TEST_FAIL_("%s = %g after %g: buckets must be cumulative", series, v, prev);
      prev = v;
    }
    double sum = metric(t, "finch_request_duration_seconds_sum{path=\"/v1/intent\"}");
    if (!(sum > 0 && sum < 60)) TEST_FAIL_("duration sum %g", sum);
    /* The scrapes are counted as well. */
    if (metric(t, "finch_requests_total{path=\"/metrics\",status=\"200\"}") < 1)
      TEST_FAIL_("scrapes of /metrics are not counted");
    free(t);
  }
  r = http(NULL, port, "POST", "/metrics", "{}", NULL, NULL);
  CHECK_INT_EQ(r.status, 405);
  reply_free(&r);
  finch_server_stop(s);
}

typedef struct {
  unsigned port;
  const char *text;
  reply r;
  double took;
} bg_req;

static void *bg_intent(void *arg) {
  bg_req *b = arg;
  double t0 = now_s();
  b->r = intent(b->port, b->text, NULL);
  b->took = now_s() - t0;
  return NULL;
}

/* Gives a request sent in the background time to be read and admitted.
 * Without batching its MHD thread then sleeps in the classification and
 * accepts no connection, so the test's next connections go to the other
 * thread; one accepted just before would wait behind it. */
static void settle(void) { sleep_ms(150); }

/* max_queue 1 and a classification held for 600 ms: the second request in
 * that time is refused at once, with Retry-After, and the first completes. */
static void test_queue_full(unsigned window_us) {
  finch_server *s = start((finch_serve_opts){.max_queue = 1, .classify_delay_us = 600000,
                                             .batch_window_us = window_us});
  if (!s) return;
  unsigned port = finch_server_port(s);
  bg_req a = {.port = port, .text = "my card has not arrived"};
  pthread_t th;
  pthread_create(&th, NULL, bg_intent, &a);
  settle();
  CHECK_NEAR(metric_wait(port, "finch_queue_depth", 1), 1, 0);
  double t0 = now_s();
  reply r = intent(port, "i want a refund", "X-Request-Id: shed-1");
  double took = now_s() - t0;
  CHECK_INT_EQ(r.status, 503);
  CHECK_STR_EQ(r.retry_after, "1");
  CHECK_STR_EQ(r.request_id, "shed-1");
  json_t *j = json_loads(r.body, 0, NULL);
  CHECK_CONTAINS(json_string_value(json_object_get(j, "error")), "capacity");
  CHECK_STR_EQ(json_string_value(json_object_get(j, "request_id")), "shed-1");
  json_decref(j);
  if (took > 0.4) TEST_FAIL_("the refusal took %.3f s: it must not wait for the queue", took);
  reply_free(&r);
  pthread_join(th, NULL);
  CHECK_INT_EQ(a.r.status, 200);
  reply_free(&a.r);
  /* Room again. */
  r = intent(port, "i want a refund", NULL);
  CHECK_INT_EQ(r.status, 200);
  reply_free(&r);
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
    reply r = http(c, h->port, "POST", "/v1/intent", texts[i % 3], NULL, NULL);
    json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    const char *m = json_string_value(json_object_get(j, "model"));
    if (r.status == 200 && m) {
      h->ok++;
      if (strcmp(m, sha_a) == 0) h->saw_a++;
      if (strcmp(m, sha_b) == 0) h->saw_b++;
    } else {
      h->bad++;
      snprintf(h->last_bad, sizeof h->last_bad, "status %ld: %.200s", r.status, r.body);
    }
    json_decref(j);
    reply_free(&r);
  }
  curl_easy_cleanup(c);
  return NULL;
}

static int copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  char buf[65536];
  size_t n;
  int ok = in && out;
  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
  if (in) fclose(in);
  if (out && fclose(out) != 0) ok = 0;
  return ok ? 0 : -1;
}

static void test_reload_under_load(unsigned window_us) {
  char served[4096], tmp[4096];
  snprintf(served, sizeof served, "%s.served", model_a);
  snprintf(tmp, sizeof tmp, "%s.tmp", model_a);
  if (copy_file(model_a, served) != 0) {
    TEST_FAIL_("cannot copy the model");
    return;
  }
  finch_server *s = start((finch_serve_opts){.model_path = served, .threads = 2, .batch_window_us = window_us});
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
  sleep_ms(150);
  /* 1: another file. */
  if (finch_server_reload(s, model_b, &err) != FINCH_OK) TEST_FAIL_("reload to B: %s", err.msg);
  CHECK_STR_EQ(finch_server_model_sha256(s), sha_b);
  sleep_ms(150);
  /* A file that is not a model: refused, B stays. */
  if (finch_server_reload(s, model_bad, &err) == FINCH_OK) TEST_FAIL_("a broken model file was accepted");
  CHECK_STR_EQ(finch_server_model_sha256(s), sha_b);
  sleep_ms(100);
  /* 2: the path now served (model_b), replaced by A's bytes, read again. */
  char b_path_copy[4096];
  snprintf(b_path_copy, sizeof b_path_copy, "%s.b", model_a);
  if (copy_file(model_b, b_path_copy) != 0 || copy_file(model_a, tmp) != 0) TEST_FAIL_("cannot copy models");
  if (finch_server_reload(s, b_path_copy, &err) != FINCH_OK) TEST_FAIL_("reload to B's copy: %s", err.msg);
  sleep_ms(100);
  if (rename(tmp, b_path_copy) != 0) TEST_FAIL_("rename: %s", strerror(errno));
  if (finch_server_reload(s, NULL, &err) != FINCH_OK) TEST_FAIL_("reload of the same path: %s", err.msg);
  CHECK_STR_EQ(finch_server_model_sha256(s), sha_a);
  sleep_ms(150);
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
  char *t = scrape(port, NULL);
  if (t) {
    CHECK_NEAR(metric(t, "finch_model_reloads_total{result=\"ok\"}"), 3, 0);
    CHECK_NEAR(metric(t, "finch_model_reloads_total{result=\"failed\"}"), 1, 0);
    if (window_us && metric(t, "finch_batch_size_sum") < ok)
      TEST_FAIL_("batched: %g texts in batches, %ld answers", metric(t, "finch_batch_size_sum"), ok);
    free(t);
  }
  finch_server_stop(s);
  remove(served);
  remove(b_path_copy);
}

/* --- draining ------------------------------------------------------------- */

static void test_stop_drains(unsigned window_us) {
  finch_server *s = start((finch_serve_opts){.classify_delay_us = 600000, .batch_window_us = window_us});
  if (!s) return;
  unsigned port = finch_server_port(s);
  bg_req a = {.port = port, .text = "my card has not arrived"};
  pthread_t th;
  pthread_create(&th, NULL, bg_intent, &a);
  settle();
  CHECK_NEAR(metric_wait(port, "finch_queue_depth", 1), 1, 0);
  double t0 = now_s();
  finch_server_stop(s); /* the request is classifying: stop waits for it */
  double took = now_s() - t0;
  pthread_join(th, NULL);
  CHECK_INT_EQ(a.r.status, 200);
  reply_free(&a.r);
  if (took > 4.0) TEST_FAIL_("stop took %.2f s for one 0.6 s request", took);
}

/* --- access logs ---------------------------------------------------------- */

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  size_t got = b ? fread(b, 1, (size_t)n, f) : 0;
  if (b) b[got] = '\0';
  fclose(f);
  return b;
}

static const char secret_text[] = "Zebrafinch secret my card 4111 1111 1111 1111 has not arrived";

/* Checks each line of a log is a JSON object with the fields; returns the
 * number of /v1/intent lines. */
static int check_log_lines(const char *log, int want_text) {
  int n = 0;
  char *copy = strdup(log), *save = NULL;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    if (!j) {
      TEST_FAIL_("log line is not JSON (%s): %s", je.text, line);
      continue;
    }
    const char *path = json_string_value(json_object_get(j, "path"));
    if (!json_string_value(json_object_get(j, "ts")) || !json_string_value(json_object_get(j, "request_id")) ||
        !json_is_integer(json_object_get(j, "status")) || !json_is_number(json_object_get(j, "latency_ms")) ||
        !path)
      TEST_FAIL_("log line lacks a field: %s", line);
    if (path && strcmp(path, "/v1/intent") == 0 && json_integer_value(json_object_get(j, "status")) == 200) {
      n++;
      CHECK_STR_EQ(json_string_value(json_object_get(j, "engine")), "model");
      CHECK_STR_EQ(json_string_value(json_object_get(j, "intent")), "card_arrival");
      CHECK(json_is_number(json_object_get(j, "confidence")));
      CHECK_INT_EQ(json_integer_value(json_object_get(j, "batch")), 1);
      const char *text = json_string_value(json_object_get(j, "text"));
      if (want_text) {
        CHECK_CONTAINS(text, "secret my card");
        if (text && strstr(text, "4111")) TEST_FAIL_("the card number is in the log: %s", text);
      } else if (text) {
        TEST_FAIL_("a text in the log without log_text: %s", line);
      }
    }
    json_decref(j);
  }
  free(copy);
  return n;
}

static void test_access_log(int log_text) {
  char path[4096], name[64];
  snprintf(name, sizeof name, "test_serving.%ld.%d.log", (long)getpid(), log_text);
  fixture_tmp_path(path, sizeof path, name);
  remove(path);
  finch_server *s = start((finch_serve_opts){.access_log = path, .log_text = log_text});
  if (!s) return;
  unsigned port = finch_server_port(s);
  reply r = intent(port, secret_text, "X-Request-Id: logged-1");
  CHECK_INT_EQ(r.status, 200);
  reply_free(&r);
  r = http(NULL, port, "GET", "/healthz", NULL, NULL, NULL);
  reply_free(&r);
  finch_server_stop(s); /* every line is written once stop returns */
  char *log = slurp(path);
  if (!log) {
    TEST_FAIL_("no access log at %s", path);
    return;
  }
  CHECK_CONTAINS(log, "\"request_id\":\"logged-1\"");
  CHECK_CONTAINS(log, "\"path\":\"/healthz\"");
  if (strstr(log, "Zebrafinch") || strstr(log, "zebrafinch")) {
    if (!log_text) TEST_FAIL_("the raw text is in the access log: %s", log);
  }
  if (strstr(log, "4111")) TEST_FAIL_("the card number is in the access log: %s", log);
  CHECK_INT_EQ(check_log_lines(log, log_text), 1);
  free(log);
  remove(path);
}

/* --- `finch serve`: SIGHUP reloads, SIGTERM drains ------------------------ */

/* Connects to 127.0.0.1:port; -1 on failure. */
static int tcp_connect(unsigned port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

static void test_cli_signals(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || access(bin, X_OK) != 0) {
    fprintf(stderr, "FINCH_BIN not set: skipping the finch serve part\n");
    return;
  }
  char served[4096], tmp[4096], log[4096], name[64];
  snprintf(served, sizeof served, "%s.cli", model_a);
  snprintf(tmp, sizeof tmp, "%s.cli.tmp", model_a);
  snprintf(name, sizeof name, "test_serving.%ld.cli.log", (long)getpid());
  fixture_tmp_path(log, sizeof log, name);
  remove(log);
  if (copy_file(model_a, served) != 0) {
    TEST_FAIL_("cannot copy the model");
    return;
  }
  char *argv[] = {(char *)bin, "serve", "--model", served, "--port", "0", "--no-database", "--access-log", log, NULL};
  api_child c;
  if (api_child_start(&c, argv) != 0) {
    TEST_FAIL_("cannot start %s", bin);
    return;
  }
  char line[1024];
  if (api_child_wait_line(&c, "finch: serving ", line, sizeof line, 60) != 0) {
    TEST_FAIL_("finch serve did not start");
    api_child_kill(&c);
    return;
  }
  const char *colon = strrchr(line, ':');
  unsigned port = colon ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
  reply r = intent(port, secret_text, NULL);
  CHECK_INT_EQ(r.status, 200);
  CHECK_CONTAINS(r.body, sha_a);
  reply_free(&r);

  /* SIGHUP: the same path, now holding B. */
  if (copy_file(model_b, tmp) != 0 || rename(tmp, served) != 0) TEST_FAIL_("cannot replace the model");
  kill(c.pid, SIGHUP);
  int reloaded = 0;
  for (int i = 0; i < 500 && !reloaded; i++) {
    r = http(NULL, port, "GET", "/healthz", NULL, NULL, NULL);
    reloaded = r.status == 200 && strstr(r.body, sha_b) != NULL;
    reply_free(&r);
    if (!reloaded) sleep_ms(10);
  }
  if (!reloaded) TEST_FAIL_("SIGHUP did not reload the model");

  /* SIGTERM while a request is in flight: its headers and half its body are
   * in; the rest comes after the signal, and the answer must still come. */
  static const char body[] = "{\"text\": \"my card has not arrived\"}";
  char head[256];
  int hn = snprintf(head, sizeof head,
                    "POST /v1/intent HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n%.10s",
                    sizeof body - 1, body);
  int fd = tcp_connect(port);
  if (fd < 0 || write(fd, head, (size_t)hn) != hn) {
    TEST_FAIL_("cannot send the slow request");
  } else {
    sleep_ms(300); /* the server has the headers */
    kill(c.pid, SIGTERM);
    sleep_ms(300); /* the server drains: it accepts no new connection, and waits for this request */
    size_t rest = sizeof body - 1 - 10;
    if (write(fd, body + 10, rest) != (ssize_t)rest) TEST_FAIL_("cannot finish the slow request");
    char resp[2048] = {0};
    size_t got = 0;
    double deadline = now_s() + 10;
    while (got < sizeof resp - 1 && now_s() < deadline) {
      struct pollfd p = {.fd = fd, .events = POLLIN};
      if (poll(&p, 1, 100) <= 0) continue;
      ssize_t k = read(fd, resp + got, sizeof resp - 1 - got);
      if (k <= 0) break;
      got += (size_t)k;
      if (strstr(resp, "\r\n\r\n") && strstr(resp, "}")) break;
    }
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0) TEST_FAIL_("the request in flight at SIGTERM got: %.200s", resp);
    CHECK_CONTAINS(resp, sha_b);
  }
  if (fd >= 0) close(fd);
  int status = api_child_wait_exit(&c, 15);
  if (status == -1)
    TEST_FAIL_("finch serve did not exit after SIGTERM");
  else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    TEST_FAIL_("finch serve exited with status %d", status);
  api_child_kill(&c);

  char *text = slurp(log);
  if (!text) {
    TEST_FAIL_("no access log at %s", log);
  } else {
    if (strstr(text, "Zebrafinch") || strstr(text, "zebrafinch") || strstr(text, "4111"))
      TEST_FAIL_("the raw text is in the access log: %s", text);
    CHECK_CONTAINS(text, "\"path\":\"/v1/intent\",\"status\":200");
    free(text);
  }
  remove(log);
  remove(served);
}

/* --- database mode: keys on /metrics and reload, webhook backlog --------- */

static void make_key(PGconn *c, const char *name, finch_role role, char *out) {
  finch_err err;
  char key[FINCH_API_KEY_LEN + 1];
  if (finch_auth_key_create(c, name, role, "test", key, NULL, &err)) {
    TEST_FAIL_("cannot create key: %s", err.msg);
    out[0] = '\0';
    return;
  }
  strcpy(out, key);
}

static void test_database_mode(void) {
  finch_db *db = test_db_open();
  finch_err err;
  char url[4096];
  if (finch_db_resolve_url(url, sizeof url, 1, &err)) {
    TEST_FAIL_("%s", err.msg);
    finch_db_close(db);
    return;
  }
  PGconn *c = finch_db_conn(db);
  char k_admin[64], k_int[64];
  make_key(c, "ops", FINCH_ROLE_ADMIN, k_admin);
  make_key(c, "ivr", FINCH_ROLE_INTEGRATION, k_int);
  /* A subscriber that never answers, and two events for it. */
  if (finch_webhook_subscribe(c, "http://127.0.0.1:9/hook", "s3cret", "*", NULL, &err))
    TEST_FAIL_("subscribe: %s", err.msg);
  int queued = 0;
  for (int i = 0; i < 2; i++)
    if (finch_webhook_emit(c, "intent.classified", "{\"n\": 1}", &queued, &err)) TEST_FAIL_("emit: %s", err.msg);

  char served[4096];
  snprintf(served, sizeof served, "%s.db", model_a);
  copy_file(model_a, served);
  finch_server *s = start((finch_serve_opts){.model_path = served, .conninfo = url, .no_webhook_worker = 1,
                                             .rate_per_s = 1000, .rate_burst = 1000});
  if (!s) {
    finch_db_close(db);
    return;
  }
  unsigned port = finch_server_port(s);
  reply r = http(NULL, port, "GET", "/metrics", NULL, NULL, NULL);
  CHECK_INT_EQ(r.status, 401);
  reply_free(&r);
  r = http(NULL, port, "GET", "/metrics", NULL, NULL, k_int);
  CHECK_INT_EQ(r.status, 403);
  reply_free(&r);
  char *t = scrape(port, k_admin);
  if (t) {
    CHECK_NEAR(metric(t, "finch_webhook_backlog"), 2, 0);
    CHECK(strstr(t, "finch_requests_total{path=\"/metrics\",status=\"401\"}") != NULL);
    free(t);
  }
  r = http(NULL, port, "POST", "/v1/intent", "{\"text\": \"my card has not arrived\"}", NULL, k_int);
  CHECK_INT_EQ(r.status, 200);
  reply_free(&r);

  r = http(NULL, port, "POST", "/v1/admin/reload", NULL, NULL, k_int);
  CHECK_INT_EQ(r.status, 403);
  reply_free(&r);
  if (copy_file(model_b, served) != 0) TEST_FAIL_("cannot replace the model");
  r = http(NULL, port, "POST", "/v1/admin/reload", NULL, NULL, k_admin);
  CHECK_INT_EQ(r.status, 200);
  json_t *j = json_loads(r.body, 0, NULL);
  CHECK_STR_EQ(json_string_value(json_object_get(j, "model")), sha_b);
  CHECK_STR_EQ(json_string_value(json_object_get(j, "previous")), sha_a);
  json_decref(j);
  reply_free(&r);
  r = http(NULL, port, "GET", "/v1/admin/reload", NULL, NULL, k_admin);
  CHECK_INT_EQ(r.status, 405);
  reply_free(&r);
  /* A broken file: 500, B stays. */
  copy_file(model_bad, served);
  r = http(NULL, port, "POST", "/v1/admin/reload", NULL, NULL, k_admin);
  CHECK_INT_EQ(r.status, 500);
  CHECK_CONTAINS(r.body, sha_b);
  reply_free(&r);
  CHECK_STR_EQ(finch_server_model_sha256(s), sha_b);
  finch_server_stop(s);

  /* Without a database the endpoint cannot check keys: 503. */
  s = start((finch_serve_opts){0});
  if (s) {
    r = http(NULL, finch_server_port(s), "POST", "/v1/admin/reload", NULL, NULL, NULL);
    CHECK_INT_EQ(r.status, 503);
    reply_free(&r);
    finch_server_stop(s);
  }
  remove(served);
  finch_db_close(db);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  char name[64];
  snprintf(name, sizeof name, "test_serving.%ld.a.model", (long)getpid());
  if (!fixture_tmp_path(model_a, sizeof model_a, name)) TEST_SKIP("no temp folder");
  snprintf(name, sizeof name, "test_serving.%ld.b.model", (long)getpid());
  fixture_tmp_path(model_b, sizeof model_b, name);
  snprintf(name, sizeof name, "test_serving.%ld.bad.model", (long)getpid());
  fixture_tmp_path(model_bad, sizeof model_bad, name);
  finch_err err = {0};
  if (fixture_build_model(model_a, sha_a, &err) != FINCH_OK) {
    fprintf(stderr, "cannot build the test model: %s\n", err.msg);
    return 1;
  }
  /* B: the same model stored as int8, so another file with the same labels. */
  nn_model *m = NULL;
  if (nn_model_load(&m, model_a, &err) != FINCH_OK || nn_model_save(m, model_b, NN_DTYPE_Q8, sha_b, &err) != FINCH_OK) {
    fprintf(stderr, "cannot build the second model: %s\n", err.msg);
    return 1;
  }
  nn_model_free(m);
  if (strcmp(sha_a, sha_b) == 0) TEST_FAIL_("the two models have the same hash");
  FILE *f = fopen(model_bad, "wb");
  if (f) {
    fputs("not a model file\n", f);
    fclose(f);
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);

  test_request_ids();
  test_metrics();
  test_queue_full(0);
  test_queue_full(200);
  test_reload_under_load(0);
  test_reload_under_load(200);
  test_stop_drains(0);
  test_stop_drains(200);
  test_access_log(0);
  test_access_log(1);
  test_cli_signals();
  /* The database part resets its database (tests/dbtest.h); on a database
   * named by FINCH_DATABASE_URL only when allowed. */
  const char *allow = getenv("FINCH_TEST_ALLOW_RESET");
  if (finch_config_load_env(&err) != FINCH_OK)
    TEST_FAIL_("%s", err.msg);
  else if (*finch_config_get("database_url") && !(allow && strcmp(allow, "1") == 0))
    fprintf(stderr, "FINCH_DATABASE_URL is set and FINCH_TEST_ALLOW_RESET is not 1: skipping the database part\n");
  else
    test_database_mode();

  curl_global_cleanup();
  remove(model_a);
  remove(model_b);
  remove(model_bad);
  TEST_DONE();
}
