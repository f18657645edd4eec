#include "tests/serve/receiver.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "serve/webhook.h"

typedef struct {
  char *body;
  size_t len;
} rx_conn;

static const char *rx_header(struct MHD_Connection *conn, const char *name) {
  const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
  return v ? v : "";
}

static int rx_body_ok(const char *body, size_t len, const char *event) {
  json_t *j = json_loadb(body, len, 0, NULL);
  const char *id = json_string_value(json_object_get(j, "id")), *type = json_string_value(json_object_get(j, "type"));
  int ok = json_is_object(j) && id && strncmp(id, "evt_", 4) == 0 && type && strcmp(type, event) == 0 &&
           json_is_string(json_object_get(j, "created_at")) && json_is_object(json_object_get(j, "data"));
  json_decref(j);
  return ok;
}

static enum MHD_Result rx_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
  (void)url, (void)method, (void)version;
  test_receiver *rx = cls;
  rx_conn *st = *con_cls;
  if (!st) {
    if (!(st = calloc(1, sizeof *st))) return MHD_NO;
    *con_cls = st;
    return MHD_YES;
  }
  if (*upload_data_size) {
    char *p = realloc(st->body, st->len + *upload_data_size + 1);
    if (!p) return MHD_NO;
    memcpy(p + st->len, upload_data, *upload_data_size);
    st->body = p;
    st->len += *upload_data_size;
    st->body[st->len] = '\0';
    *upload_data_size = 0;
    return MHD_YES;
  }
  test_rx_req r = {.answered = atomic_load(&rx->down) ? 503 : 200};
  snprintf(r.key, sizeof r.key, "%s", rx_header(conn, "Idempotency-Key"));
  snprintf(r.event, sizeof r.event, "%s", rx_header(conn, "Finch-Webhook-Event"));
  r.body = st->body ? st->body : calloc(1, 1);
  if (!r.body) return MHD_NO;
  r.len = st->len;
  st->body = NULL;
  const char *id = rx_header(conn, "Finch-Webhook-Id"), *sig = rx_header(conn, "Finch-Signature");
  char want[65];
  finch_webhook_sign(rx->secret, id, atoll(rx_header(conn, "Finch-Webhook-Timestamp")), r.body, r.len, want);
  r.ok = strncmp(sig, "v1=", 3) == 0 && strlen(sig + 3) == 64 && CRYPTO_memcmp(sig + 3, want, 64) == 0 &&
         strcmp(id, r.key) == 0 && rx_body_ok(r.body, r.len, r.event);
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

  static const char ok[] = "ok";
  struct MHD_Response *resp = MHD_create_response_from_buffer(sizeof ok - 1, (void *)ok, MHD_RESPMEM_PERSISTENT);
  if (!resp) return MHD_NO;
  enum MHD_Result ret = MHD_queue_response(conn, r.answered, resp);
  MHD_destroy_response(resp);
  return ret;
}

static void rx_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)cls, (void)conn, (void)toe;
  rx_conn *st = *con_cls;
  if (st) free(st->body);
  free(st);
  *con_cls = NULL;
}

int test_receiver_start(test_receiver *rx, const char *secret) {
  memset(rx, 0, sizeof *rx);
  snprintf(rx->secret, sizeof rx->secret, "%s", secret);
  pthread_mutex_init(&rx->lock, NULL);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  rx->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, rx_access, rx,
                           MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED,
                           rx_completed, rx, MHD_OPTION_END);
  if (!rx->d) return -1;
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(rx->d, MHD_DAEMON_INFO_BIND_PORT);
  rx->port = info ? info->port : 0;
  return rx->port ? 0 : -1;
}

void test_receiver_stop(test_receiver *rx) {
  if (rx->d) MHD_stop_daemon(rx->d);
  rx->d = NULL;
}

void test_receiver_free(test_receiver *rx) {
  test_receiver_stop(rx);
  for (size_t i = 0; i < rx->n; i++) free(rx->reqs[i].body);
  free(rx->reqs);
  rx->reqs = NULL;
  rx->n = rx->cap = 0;
  pthread_mutex_destroy(&rx->lock);
}
