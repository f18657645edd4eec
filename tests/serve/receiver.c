#include "tests/serve/receiver.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/webhook.h"

static int rx_body_ok(const char *body, size_t len, const char *event) {
  json_t *j = json_loadb(body, len, 0, NULL);
  const char *id = json_string_value(json_object_get(j, "id")), *type = json_string_value(json_object_get(j, "type"));
  int ok = json_is_object(j) && id && strncmp(id, "evt_", 4) == 0 && type && strcmp(type, event) == 0 &&
           json_is_string(json_object_get(j, "created_at")) && json_is_object(json_object_get(j, "data"));
  json_decref(j);
  return ok;
}

/* The status the mode gives path; *retry_after set for a 429. */
static unsigned rx_status(test_receiver *rx, const char *path, const char **retry_after) {
  unsigned main_route = atomic_load(&rx->down) ? 503 : 200;
  if (rx->mode == TEST_RX_ONE_ROUTE || strcmp(path, "/main") == 0) return main_route;
  if (strcmp(path, "/gone") == 0) return atomic_load(&rx->gone_ok) ? 200 : 410;
  if (strcmp(path, "/flaky") == 0) return 500;
  if (strcmp(path, "/busy") == 0) {
    *retry_after = "2";
    return 429;
  }
  return 404;
}

static void rx_handle(void *ctx, test_http_request *req, test_http_answer *ans) {
  test_receiver *rx = ctx;
  test_rx_req r = {0};
  r.answered = rx_status(rx, req->url, &ans->retry_after);
  snprintf(r.path, sizeof r.path, "%s", req->url);
  snprintf(r.key, sizeof r.key, "%s", test_http_header(req, "Idempotency-Key"));
  snprintf(r.id, sizeof r.id, "%s", test_http_header(req, "Finch-Webhook-Id"));
  snprintf(r.event, sizeof r.event, "%s", test_http_header(req, "Finch-Webhook-Event"));
  r.ts = atoll(test_http_header(req, "Finch-Webhook-Timestamp"));
  r.body = req->body;
  r.len = req->len;
  req->body = NULL;
  const char *sig = test_http_header(req, "Finch-Signature");
  char want[65];
  finch_webhook_sign(rx->secret, r.id, r.ts, r.body, r.len, want);
  r.sig_ok = strncmp(sig, "v1=", 3) == 0 && strlen(sig + 3) == 64 && CRYPTO_memcmp(sig + 3, want, 64) == 0;
  r.body_ok = rx_body_ok(r.body, r.len, r.event);
  r.ok = r.sig_ok && r.body_ok && strcmp(r.id, r.key) == 0;
  pthread_mutex_lock(&rx->lock);
  if (rx->n == rx->cap) {
    size_t cap = rx->cap ? 2 * rx->cap : 64;
    test_rx_req *p = realloc(rx->reqs, cap * sizeof *p);
    if (!p) abort();
    rx->reqs = p;
    rx->cap = cap;
  }
  rx->reqs[rx->n++] = r;
  pthread_mutex_unlock(&rx->lock);
  ans->status = r.answered;
  ans->body = "ok";
}

int test_receiver_start(test_receiver *rx, const char *secret, test_rx_mode mode) {
  memset(rx, 0, sizeof *rx);
  rx->mode = mode;
  snprintf(rx->secret, sizeof rx->secret, "%s", secret);
  pthread_mutex_init(&rx->lock, NULL);
  if (test_http_start(&rx->http, rx_handle, rx)) return -1;
  rx->port = rx->http.port;
  return 0;
}

void test_receiver_stop(test_receiver *rx) { test_http_stop(&rx->http); }

void test_receiver_free(test_receiver *rx) {
  test_receiver_stop(rx);
  for (size_t i = 0; i < rx->n; i++) free(rx->reqs[i].body);
  free(rx->reqs);
  rx->reqs = NULL;
  rx->n = rx->cap = 0;
  pthread_mutex_destroy(&rx->lock);
}

void test_receiver_count(test_receiver *rx, const char *key, int *total, int *ok, int *bad, int *after_ok) {
  *total = *ok = *bad = *after_ok = 0;
  pthread_mutex_lock(&rx->lock);
  for (size_t i = 0; i < rx->n; i++) {
    const test_rx_req *r = &rx->reqs[i];
    if (strcmp(r->key, key) != 0) continue;
    if (*ok) (*after_ok)++;
    (*total)++;
    if (r->answered >= 200 && r->answered < 300) (*ok)++;
    if (!r->ok) (*bad)++;
  }
  pthread_mutex_unlock(&rx->lock);
}

int test_receiver_distinct_ok(test_receiver *rx, const char *path) {
  int n = 0;
  pthread_mutex_lock(&rx->lock);
  for (size_t i = 0; i < rx->n; i++) {
    const test_rx_req *r = &rx->reqs[i];
    if (strcmp(r->path, path) != 0 || r->answered < 200 || r->answered >= 300) continue;
    int seen = 0;
    for (size_t k = 0; k < i && !seen; k++)
      seen = strcmp(rx->reqs[k].key, r->key) == 0 && rx->reqs[k].answered >= 200 && rx->reqs[k].answered < 300;
    n += !seen;
  }
  pthread_mutex_unlock(&rx->lock);
  return n;
}
