#include "tests/serve/serving_fixture.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "nn/model.h"
#include "tests/serve/fixture.h"
#include "tests/test.h"

char sv_model_a[4096], sv_model_b[4096], sv_model_bad[4096], sv_sha_a[65], sv_sha_b[65];

void sv_models_make(const char *test) {
  char name[96];
  snprintf(name, sizeof name, "%s.%ld.a.model", test, (long)getpid());
  if (!fixture_tmp_path(sv_model_a, sizeof sv_model_a, name)) TEST_SKIP("no temp folder");
  snprintf(name, sizeof name, "%s.%ld.b.model", test, (long)getpid());
  fixture_tmp_path(sv_model_b, sizeof sv_model_b, name);
  snprintf(name, sizeof name, "%s.%ld.bad.model", test, (long)getpid());
  fixture_tmp_path(sv_model_bad, sizeof sv_model_bad, name);
  finch_err err = {0};
  if (fixture_build_model(sv_model_a, sv_sha_a, &err) != FINCH_OK) {
    fprintf(stderr, "cannot build the test model: %s\n", err.msg);
    exit(1);
  }
  /* B: the same model stored as int8, so another file with the same labels. */
  nn_model *m = NULL;
  if (nn_model_load(&m, sv_model_a, &err) != FINCH_OK ||
      nn_model_save(m, sv_model_b, NN_DTYPE_Q8, sv_sha_b, &err) != FINCH_OK) {
    fprintf(stderr, "cannot build the second model: %s\n", err.msg);
    exit(1);
  }
  nn_model_free(m);
  if (strcmp(sv_sha_a, sv_sha_b) == 0) TEST_FAIL_("the two models have the same hash");
  FILE *f = fopen(sv_model_bad, "wb");
  if (f) {
    fputs("not a model file\n", f);
    fclose(f);
  }
}

void sv_models_remove(void) {
  remove(sv_model_a);
  remove(sv_model_b);
  remove(sv_model_bad);
}

double sv_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void sv_sleep_ms(long ms) { nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L}, NULL); }

static size_t on_body(char *data, size_t size, size_t n, void *ctx) {
  sv_reply *r = ctx;
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
  sv_reply *r = ctx;
  size_t len = size * n;
  header_value(data, len, "Content-Type", r->content_type, sizeof r->content_type);
  header_value(data, len, "X-Request-Id", r->request_id, sizeof r->request_id);
  header_value(data, len, "Retry-After", r->retry_after, sizeof r->retry_after);
  header_value(data, len, "Connection", r->connection, sizeof r->connection);
  return len;
}

sv_reply sv_http(CURL *curl, unsigned port, const char *method, const char *path, const char *body,
                 const char *extra, const char *key) {
  sv_reply r = {0};
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

void sv_reply_free(sv_reply *r) {
  free(r->body);
  r->body = NULL;
}

sv_reply sv_intent(unsigned port, const char *text, const char *extra) {
  json_t *o = json_pack("{s:s}", "text", text);
  char *b = json_dumps(o, JSON_COMPACT);
  sv_reply r = sv_http(NULL, port, "POST", "/v1/intent", b, extra, NULL);
  free(b);
  json_decref(o);
  return r;
}

finch_server *sv_start(finch_serve_opts o) {
  finch_server *s = NULL;
  finch_err err = {0};
  if (!o.model_path) o.model_path = sv_model_a;
  if (!o.host) o.host = "127.0.0.1";
  if (!o.access_log) o.access_log = "off";
  if (finch_server_start(&s, &o, &err) != FINCH_OK) {
    TEST_FAIL_("finch_server_start: %s", err.msg);
    return NULL;
  }
  return s;
}

double sv_metric(const char *text, const char *series) {
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

char *sv_scrape(unsigned port, const char *key) {
  sv_reply r = sv_http(NULL, port, "GET", "/metrics", NULL, NULL, key);
  if (r.status != 200) {
    TEST_FAIL_("GET /metrics: status %ld: %s", r.status, r.body);
    sv_reply_free(&r);
    return NULL;
  }
  CHECK_STR_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  return r.body;
}

int sv_copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  char buf[65536];
  size_t n;
  int ok = in && out;
  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
  if (in) fclose(in);
  if (out && fclose(out) != 0) ok = 0;
  return ok ? 0 : -1;
}
