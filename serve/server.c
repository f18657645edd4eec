/* The intent server (serve/serve.h) on libmicrohttpd.
 *
 * Threads. MHD runs a pool of opts->threads polling threads; each calls
 * serve_access() for the connections it owns, so handlers run concurrently.
 * They share only read-only state: the loaded model (immutable, so
 * nn_model_predict() is safe from several threads) and its hash.
 *
 * Request bodies. MHD calls the handler once when the headers are in, once
 * per piece of body, and once more when the body is complete; a response may
 * be queued on the first and the last call only, and one queued on the first
 * call makes MHD close the connection afterwards. So requests are answered on
 * the last call, keeping the connection alive, except a body announced (by
 * Content-Length) as larger than max_body: that is refused with 413 on the
 * first call, before any of it is read. A body without a length (chunked)
 * that grows past the limit is discarded as it arrives and answered with 413
 * when complete, so memory never exceeds max_body per request either way.
 *
 * Errors. A bad request is answered (400/404/405/413 with a JSON error body)
 * and never stops the server. Nothing derived from the request text is
 * logged: it is customer data (core/log.h). */
#include "serve/serve.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/log.h"
#include "core/text.h"
#include "nn/model.h"

enum {
  SERVE_DEFAULT_MAX_BODY = 64 * 1024,
  SERVE_DEFAULT_THREADS = 2,
  SERVE_CONNECTION_TIMEOUT_S = 30, /* idle or stalled clients are dropped */
  SERVE_STOP_GRACE_MS = 2000,      /* how long stop waits for open connections */
};

struct finch_server {
  struct MHD_Daemon *daemon;
  nn_model *model;
  size_t n_labels;
  char sha256[FINCH_SHA256_HEX_LEN];
  size_t max_body;
  unsigned port;

  /* While the daemon starts, MHD's own error messages are kept here, so that
   * the start error can say why (bind failures and the like); afterwards they
   * go to the log. */
  pthread_mutex_t log_lock;
  int starting;
  char start_error[512];
};

typedef enum {
  SERVE_ROUTE_INTENT,        /* POST /v1/intent */
  SERVE_ROUTE_HEALTH,        /* GET or HEAD /healthz */
  SERVE_ROUTE_INTENT_METHOD, /* /v1/intent with another method: 405 */
  SERVE_ROUTE_HEALTH_METHOD, /* /healthz with another method: 405 */
  SERVE_ROUTE_NOT_FOUND,     /* 404 */
} serve_route;

/* Per-request state, allocated on the handler's first call and freed by
 * serve_completed(). Only SERVE_ROUTE_INTENT keeps its body. */
typedef struct {
  serve_route route;
  char *body; /* body bytes so far (not NUL-terminated) */
  size_t len, cap;
  int too_big; /* the body passed max_body; the rest is discarded */
} serve_request;

/* --- responses ------------------------------------------------------------ */

/* Queues obj (consumed) as the JSON response with the given status. */
static enum MHD_Result serve_reply_json(struct MHD_Connection *conn, unsigned status,
                                        json_t *obj, const char *allow) {
  static const char fallback[] = "{\"error\":\"internal error: cannot build response\"}";
  /* json_dumps allocates with malloc (jansson's default allocator, which
   * finch never replaces), so MHD may free() it. */
  char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
  json_decref(obj);
  struct MHD_Response *resp;
  if (text) {
    resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) free(text);
  } else {
    status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    resp = MHD_create_response_from_buffer(sizeof fallback - 1, (void *)fallback,
                                           MHD_RESPMEM_PERSISTENT);
  }
  if (!resp) return MHD_NO; /* out of memory: dropping the connection is all that is left */
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
  enum MHD_Result ret = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result serve_reply_error(struct MHD_Connection *conn, unsigned status,
                                         const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* {"error": message}. Messages may quote the client (a method, a URL, the
 * JSON parser's view of the body): a string JSON cannot carry is cut at its
 * first bad byte (a character truncated by the buffer, in practice). */
static enum MHD_Result serve_reply_error(struct MHD_Connection *conn, unsigned status,
                                         const char *allow, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  size_t bad;
  if (!finch_utf8_valid(msg, strlen(msg), &bad)) msg[bad] = '\0';
  json_t *s = json_string(msg);
  return serve_reply_json(conn, status, s ? json_pack("{s:o}", "error", s) : NULL, allow);
}

/* --- endpoints ------------------------------------------------------------ */

/* 1 when text holds nothing the model could read: empty, or only white
 * space and invisible characters once normalised (core/text.h). -1 when it
 * cannot be normalised (not UTF-8, or out of memory). */
static int serve_is_blank(const char *text, size_t len) {
  char *norm = NULL;
  if (finch_text_normalize(text, len, 0, &norm, NULL) != FINCH_OK) return -1;
  int blank = norm[0] == '\0';
  free(norm);
  return blank;
}

static enum MHD_Result serve_intent(finch_server *srv, struct MHD_Connection *conn,
                                    const serve_request *req) {
  size_t bad;
  if (!finch_utf8_valid(req->body ? req->body : "", req->len, &bad))
    return serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "request body is not valid UTF-8 (byte %zu)", bad);
  json_error_t jerr;
  json_t *root = json_loadb(req->body ? req->body : "", req->len, 0, &jerr);
  if (!root)
    return serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                             jerr.text);
  enum MHD_Result ret;
  int blank;
  json_t *jtext = json_is_object(root) ? json_object_get(root, "text") : NULL;
  const char *text = json_string_value(jtext);
  size_t len = json_string_length(jtext);
  if (!json_is_object(root)) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                            "request body must be a JSON object with a \"text\" field");
  } else if (!jtext) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "missing field \"text\"");
  } else if (!text) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "field \"text\" must be a string");
  } else if (!finch_utf8_valid(text, len, &bad) || strlen(text) != len) {
    /* jansson already refuses both (invalid UTF-8, \u0000); checked again
     * because the tokenizer relies on it. */
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                            "field \"text\" is not valid UTF-8 text");
  } else if ((blank = serve_is_blank(text, len)) != 0) {
    ret = serve_reply_error(conn, blank > 0 ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_SERVICE_UNAVAILABLE,
                            NULL, blank > 0 ? "field \"text\" is empty" : "out of memory");
  } else {
    float *probs = malloc(srv->n_labels * sizeof *probs);
    int k = probs ? nn_model_predict(srv->model, text, probs, 1.0f) : -1;
    if (k < 0 || (size_t)k >= srv->n_labels || !isfinite(probs[k])) {
      finch_error("serve: prediction failed (label index %d of %zu)", k, srv->n_labels);
      ret = serve_reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
                              probs ? "the model produced no prediction" : "out of memory");
    } else {
      json_t *obj = json_pack("{s:s, s:f, s:s, s:s}", "intent",
                              nn_model_label(srv->model, (size_t)k), "confidence",
                              (double)probs[k], "source", "model", "model", srv->sha256);
      ret = serve_reply_json(conn, MHD_HTTP_OK, obj, NULL);
    }
    free(probs);
  }
  json_decref(root);
  return ret;
}

static enum MHD_Result serve_health(finch_server *srv, struct MHD_Connection *conn) {
  return serve_reply_json(conn, MHD_HTTP_OK,
                          json_pack("{s:s, s:s}", "status", "ok", "model", srv->sha256), NULL);
}

/* The URL goes back to the client only when it is short, valid UTF-8. */
static enum MHD_Result serve_not_found(struct MHD_Connection *conn, const char *url) {
  size_t n = strlen(url);
  if (n <= 200 && finch_utf8_valid(url, n, NULL))
    return serve_reply_error(conn, MHD_HTTP_NOT_FOUND, NULL, "no such endpoint: %s", url);
  return serve_reply_error(conn, MHD_HTTP_NOT_FOUND, NULL, "no such endpoint");
}

/* Parses a Content-Length value; 0 when absent or unparsable (MHD itself
 * rejects malformed lengths before the handler runs). */
static unsigned long long serve_content_length(struct MHD_Connection *conn) {
  const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                              MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (!v) return 0;
  errno = 0;
  char *end;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno || end == v) return 0;
  return n;
}

/* Answers a request whose route was decided on its first call. */
static enum MHD_Result serve_finish(finch_server *srv, struct MHD_Connection *conn,
                                    const serve_request *req, const char *url,
                                    const char *method) {
  switch (req->route) {
  case SERVE_ROUTE_INTENT:
    if (req->too_big)
      return serve_reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                               "request body exceeds the limit of %zu bytes", srv->max_body);
    return serve_intent(srv, conn, req);
  case SERVE_ROUTE_HEALTH:
    return serve_health(srv, conn);
  case SERVE_ROUTE_INTENT_METHOD:
    return serve_reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "POST",
                             "method %s not allowed on /v1/intent; use POST", method);
  case SERVE_ROUTE_HEALTH_METHOD:
    return serve_reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "GET, HEAD",
                             "method %s not allowed on /healthz; use GET", method);
  case SERVE_ROUTE_NOT_FOUND:
    break;
  }
  return serve_not_found(conn, url);
}

static serve_route serve_route_of(const char *url, const char *method) {
  if (strcmp(url, "/v1/intent") == 0)
    return strcmp(method, MHD_HTTP_METHOD_POST) == 0 ? SERVE_ROUTE_INTENT
                                                      : SERVE_ROUTE_INTENT_METHOD;
  if (strcmp(url, "/healthz") == 0)
    return strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0
               ? SERVE_ROUTE_HEALTH
               : SERVE_ROUTE_HEALTH_METHOD;
  return SERVE_ROUTE_NOT_FOUND;
}

/* Every request is answered on the handler's last call, after the whole
 * request has been read, so that the connection can be kept alive; the one
 * exception is a body announced as too large, answered before it is read. */
static enum MHD_Result serve_access(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls) {
  (void)version;
  finch_server *srv = cls;
  serve_request *req = *con_cls;

  if (!req) { /* first call: headers only */
    serve_request first = {.route = serve_route_of(url, method)};
    unsigned long long announced = serve_content_length(conn);
    if (announced > srv->max_body) {
      if (first.route != SERVE_ROUTE_INTENT) return serve_finish(srv, conn, &first, url, method);
      return serve_reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                               "request body of %llu bytes exceeds the limit of %zu bytes",
                               announced, srv->max_body);
    }
    req = malloc(sizeof *req);
    if (!req) return serve_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "out of memory");
    *req = first;
    *con_cls = req;
    return MHD_YES;
  }

  if (*upload_data_size > 0) { /* a piece of body; no response may be queued here */
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (req->route != SERVE_ROUTE_INTENT || req->too_big) return MHD_YES; /* discarded */
    if (n > srv->max_body - req->len) {
      req->too_big = 1;
      free(req->body);
      req->body = NULL;
      req->len = req->cap = 0;
      return MHD_YES;
    }
    if (req->len + n > req->cap) {
      size_t cap = req->cap ? req->cap : 1024;
      while (cap < req->len + n) cap *= 2;
      if (cap > srv->max_body) cap = srv->max_body;
      char *p = realloc(req->body, cap);
      if (!p) return MHD_NO; /* cannot answer mid-upload; MHD closes the connection */
      req->body = p;
      req->cap = cap;
    }
    memcpy(req->body + req->len, upload_data, n);
    req->len += n;
    return MHD_YES;
  }

  return serve_finish(srv, conn, req, url, method); /* the request is complete */
}

static void serve_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)conn;
  (void)toe;
  serve_request *req = *con_cls;
  if (!req) return;
  free(req->body);
  free(req);
  *con_cls = NULL;
}

/* MHD's error log (MHD_USE_ERROR_LOG). */
static void serve_mhd_log(void *cls, const char *fmt, va_list ap) {
  finch_server *srv = cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  pthread_mutex_lock(&srv->log_lock);
  int starting = srv->starting;
  if (starting && !srv->start_error[0]) memcpy(srv->start_error, msg, n + 1); /* the cause */
  pthread_mutex_unlock(&srv->log_lock);
  if (!starting) finch_error("serve: %s", msg);
}

/* --- lifecycle ------------------------------------------------------------ */

static void serve_free(finch_server *s) {
  if (!s) return;
  nn_model_free(s->model);
  pthread_mutex_destroy(&s->log_lock);
  free(s);
}

finch_status finch_server_start(finch_server **out, const finch_serve_opts *opts, finch_err *err) {
  *out = NULL;
  if (!opts || !opts->model_path || !*opts->model_path)
    return finch_err_set(err, FINCH_EINVAL, "serve: no model file given");
  const char *host = opts->host && *opts->host ? opts->host : "127.0.0.1";
  if (opts->port > 65535)
    return finch_err_set(err, FINCH_EINVAL, "serve: port %u is out of range (0-65535)",
                         opts->port);
  unsigned threads = opts->threads ? opts->threads : SERVE_DEFAULT_THREADS;
  if (threads > 1024)
    return finch_err_set(err, FINCH_EINVAL, "serve: %u threads is too many (at most 1024)",
                         threads);

  finch_server *s = calloc(1, sizeof *s);
  if (!s) return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  pthread_mutex_init(&s->log_lock, NULL);
  s->max_body = opts->max_body ? opts->max_body : SERVE_DEFAULT_MAX_BODY;

  finch_status st = nn_model_load(&s->model, opts->model_path, err);
  if (st != FINCH_OK) {
    if (err && !strstr(err->msg, opts->model_path))
      finch_err_prefix(err, "serve: cannot load model %s", opts->model_path);
    else
      finch_err_prefix(err, "serve: cannot load model");
    serve_free(s);
    return st;
  }
  s->n_labels = nn_model_n_labels(s->model);
  if (s->n_labels == 0) {
    st = finch_err_set(err, FINCH_EFORMAT, "serve: model %s has no labels", opts->model_path);
    serve_free(s);
    return st;
  }
  st = finch_sha256_file(opts->model_path, s->sha256, err);
  if (st != FINCH_OK) {
    finch_err_prefix(err, "serve: cannot hash model");
    serve_free(s);
    return st;
  }

  /* Resolve the host to one address; a name resolves to its first one. */
  char port_str[16];
  snprintf(port_str, sizeof port_str, "%u", opts->port);
  struct addrinfo hints = {0}, *ai = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int gai = getaddrinfo(host, port_str, &hints, &ai);
  if (gai != 0 || !ai) {
    st = finch_err_set(err, FINCH_EINVAL, "serve: cannot resolve host \"%s\": %s", host,
                       gai ? gai_strerror(gai) : "no address");
    serve_free(s);
    return st;
  }

  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
  if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  s->starting = 1;
  s->daemon = MHD_start_daemon(
      flags, (uint16_t)opts->port, NULL, NULL, serve_access, s,
      MHD_OPTION_EXTERNAL_LOGGER, serve_mhd_log, s, /* first, or MHD complains */
      MHD_OPTION_SOCK_ADDR, ai->ai_addr,
      MHD_OPTION_THREAD_POOL_SIZE, threads,
      MHD_OPTION_NOTIFY_COMPLETED, serve_completed, s,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)SERVE_CONNECTION_TIMEOUT_S,
      MHD_OPTION_END);
  freeaddrinfo(ai);
  pthread_mutex_lock(&s->log_lock);
  s->starting = 0;
  pthread_mutex_unlock(&s->log_lock);
  if (!s->daemon) {
    int v6 = strchr(host, ':') != NULL;
    st = finch_err_set(err, FINCH_EIO, "serve: cannot listen on %s%s%s:%u: %s", v6 ? "[" : "",
                       host, v6 ? "]" : "", opts->port,
                       s->start_error[0] ? s->start_error : "the HTTP daemon did not start");
    serve_free(s);
    return st;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info && info->port ? info->port : opts->port;
  if (s->port == 0) {
    MHD_stop_daemon(s->daemon);
    serve_free(s);
    return finch_err_set(err, FINCH_EINTERNAL, "serve: cannot tell which port %s is bound to",
                         host);
  }
  *out = s;
  return FINCH_OK;
}

unsigned finch_server_port(const finch_server *s) { return s ? s->port : 0; }

const char *finch_server_model_sha256(const finch_server *s) { return s ? s->sha256 : NULL; }

void finch_server_stop(finch_server *s) {
  if (!s) return;
  /* Stop accepting, then give open connections a moment to finish their
   * requests; MHD_stop_daemon() closes whatever is left (idle keep-alive
   * connections, in practice). The listen socket is ours after quiescing and
   * must stay open until the daemon's threads are gone. */
  MHD_socket lfd = MHD_quiesce_daemon(s->daemon);
  for (int waited = 0; waited < SERVE_STOP_GRACE_MS; waited += 10) {
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (!info || info->num_connections == 0) break;
    nanosleep(&(struct timespec){.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000}, NULL);
  }
  MHD_stop_daemon(s->daemon);
  if (lfd != MHD_INVALID_SOCKET) close(lfd);
  serve_free(s);
}
