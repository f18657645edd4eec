#include "tests/receiver.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The body read so far, per connection. */
typedef struct {
  char *body;
  size_t len;
} rx_conn;

const char *test_http_header(const test_http_request *req, const char *name) {
  const char *v = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
  return v ? v : "";
}

static enum MHD_Result rx_send(struct MHD_Connection *conn, const test_http_answer *ans) {
  const char *body = ans->body ? ans->body : "";
  struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!resp) return MHD_NO;
  if (ans->content_type) MHD_add_response_header(resp, "Content-Type", ans->content_type);
  if (ans->retry_after) MHD_add_response_header(resp, "Retry-After", ans->retry_after);
  enum MHD_Result ret = MHD_queue_response(conn, ans->status, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result rx_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
  (void)version;
  test_http_server *s = cls;
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
  if (!st->body && !(st->body = calloc(1, 1))) return MHD_NO;
  test_http_request req = {.method = method, .url = url, .body = st->body, .len = st->len, .conn = conn};
  test_http_answer ans = {.status = 200};
  s->handler(s->ctx, &req, &ans);
  if (!req.body) st->body = NULL, st->len = 0; /* the handler keeps it */
  enum MHD_Result ret = rx_send(conn, &ans);
  free(ans.body_free);
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

int test_http_start(test_http_server *s, test_http_handler handler, void *ctx) {
  memset(s, 0, sizeof *s);
  s->handler = handler;
  s->ctx = ctx;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, rx_access, s,
                          MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, rx_completed, s,
                          MHD_OPTION_END);
  if (!s->d) return -1;
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : 0;
  return s->port ? 0 : -1;
}

void test_http_stop(test_http_server *s) {
  if (s->d) MHD_stop_daemon(s->d);
  s->d = NULL;
}
