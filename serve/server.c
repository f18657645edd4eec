/* The intent server (serve/serve.h) on libmicrohttpd: the request
 * lifecycle (MHD's callbacks, request ids, bodies, the replies), the
 * database pool and the daemon's life. The route table and the checks
 * before a handler, the handlers, the model reference and the access log
 * are in files of their own (serve/server_internal.h).
 *
 * Threads. MHD runs a pool of opts->threads polling threads; each calls
 * serve_access() for the connections it owns, so handlers run concurrently.
 * Classifier batcher threads (serve/batcher.h) run beside them when batching
 * is on. Shared state is read-only (settings), atomic (counters, the current
 * model) or behind a mutex (the database pool, the webhook backlog cache,
 * the log redactor).
 *
 * The model. A serve_model is a loaded model with its hash and a reference
 * count; the server holds one reference to the current one and every request
 * that uses it another, taken once and kept until the request completes, so
 * a request sees one model from its answer to its access log line. A reload
 * loads and verifies the new file first, then swaps the pointer; requests in
 * flight finish on the old model, which is freed with its last reference.
 *
 * Classification. Without batching, POST /v1/intent runs the model on the
 * handler's thread. With batching (batch_window_us > 0) the handler suspends
 * its connection (MHD_suspend_connection), queues the text and returns; the
 * batcher fills in the answer and resumes the connection, and MHD calls the
 * handler again to send it. Either way at most max_queue classifications are
 * in flight: one more is answered 503 with Retry-After at once.
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
 * Requests. Each gets an id (a valid X-Request-Id header's, else a fresh one),
 * returned in X-Request-Id and in JSON error bodies. serve_completed() runs
 * when the response has gone out: it counts the request (serve/metrics.h)
 * and writes its access log line; in database mode it also counts a POST
 * /v1/intent answer for monitoring (serve/monitor.h: in memory per minute,
 * written by the recorder's own thread, the rest when the server stops).
 *
 * Errors. A bad request is answered (400/404/405/413 with a JSON error body)
 * and never stops the server. Nothing derived from the request text is
 * logged unless log_text asks for it, and then only redacted: it is customer
 * data (core/log.h).
 *
 * Database mode. With opts->conninfo the server keeps one slot per MHD
 * thread, each a PostgreSQL connection and a redactor (neither may be shared
 * between threads); a handler borrows a slot for the whole request. Checks
 * run in a fixed order once the request is read: route (404/405), database
 * (503), key (401/403), rate (429), size (413), then the handler. Turns,
 * labels and rollout changes each commit in one transaction together with
 * the webhook rows that report them.
 *
 * Shutdown. finch_server_stop() stops accepting, answers requests arriving on
 * open connections with 503 (Connection: close), waits up to drain_ms for
 * the requests in flight, runs what the batcher still holds, and closes. */
#include "serve/serve.h"
#include "serve/server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/db.h"
#include "core/log.h"
#include "core/redact.h"
#include "core/text.h"
#include "nn/model.h"
#include "serve/auth.h"
#include "serve/batcher.h"
#include "serve/metrics.h"
#include "serve/rules.h"
#include "serve/webhook.h"

/* The request the calling MHD thread is answering: serve_access() sets it
 * around each handler call, so that the reply helpers, which see only the
 * connection, can stamp the request id and record the status. */
static _Thread_local serve_request *serve_cur;

/* --- responses ------------------------------------------------------------ */

/* Stamps the current request's id (and Connection: close while draining) on
 * resp and records status for the access log, then queues resp. The
 * request comes from serve_cur. */
enum MHD_Result serve__queue(struct MHD_Connection *conn, unsigned status, struct MHD_Response *resp) {
  serve_request *req = serve_cur;
  if (req) {
    MHD_add_response_header(resp, "X-Request-Id", req->rid);
    if (req->close) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
  }
  enum MHD_Result ret = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  if (req && ret == MHD_YES) req->status = status;
  return ret;
}

/* Queues obj (consumed) as the JSON response with the given status and
 * optional extra header hname: hval. Error bodies (status >= 400) carry the
 * request id. */
static enum MHD_Result serve_reply_json_h(struct MHD_Connection *conn, unsigned status, json_t *obj,
                                          const char *hname, const char *hval) {
  static const char fallback[] = "{\"error\":\"internal error: cannot build response\"}";
  if (status >= 400 && serve_cur && json_is_object(obj))
    json_object_set_new(obj, "request_id", json_string(serve_cur->rid));
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
  if (hname && hval) MHD_add_response_header(resp, hname, hval);
  return serve__queue(conn, status, resp);
}

enum MHD_Result serve__reply_json(struct MHD_Connection *conn, unsigned status, json_t *obj,
                                        const char *allow) {
  return serve_reply_json_h(conn, status, obj, allow ? MHD_HTTP_HEADER_ALLOW : NULL, allow);
}

static json_t *serve_error_obj(const char *fmt, va_list ap) {
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t bad;
  if (!finch_utf8_valid(msg, strlen(msg), &bad)) msg[bad] = '\0';
  json_t *s = json_string(msg);
  return s ? json_pack("{s:o}", "error", s) : NULL;
}

/* {"error": message}. Messages may quote the client (a method, a URL, the
 * JSON parser's view of the body): a string JSON cannot carry is cut at its
 * first bad byte (a character truncated by the buffer, in practice). */
enum MHD_Result serve__reply_error(struct MHD_Connection *conn, unsigned status,
                                         const char *allow, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  json_t *o = serve_error_obj(fmt, ap);
  va_end(ap);
  return serve__reply_json(conn, status, o, allow);
}

enum MHD_Result serve__reply_error_h(struct MHD_Connection *conn, unsigned status, const char *hname,
                                     const char *hval, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  json_t *o = serve_error_obj(fmt, ap);
  va_end(ap);
  return serve_reply_json_h(conn, status, o, hname, hval);
}

/* A database failure: the primary message goes to the log (never the detail
 * lines, which may quote values), the client gets 503. */
enum MHD_Result serve__db_failed(struct MHD_Connection *conn, const char *what, const finch_err *err) {
  char msg[300];
  snprintf(msg, sizeof msg, "%s", err->msg);
  char *nl = strchr(msg, '\n');
  if (nl) *nl = '\0';
  finch_error("serve: %s: %s", what, msg);
  return serve__reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "%s failed: the database is unavailable",
                           what);
}

/* --- the database pool ----------------------------------------------------- */

serve_slot *serve__slot_get(finch_server *srv) {
  pthread_mutex_lock(&srv->pool_lock);
  while (srv->n_free == 0) pthread_cond_wait(&srv->pool_cond, &srv->pool_lock);
  serve_slot *sl = &srv->slots[srv->slot_free[--srv->n_free]];
  pthread_mutex_unlock(&srv->pool_lock);
  if (PQstatus(sl->conn) != CONNECTION_OK) {
    PQreset(sl->conn);
    if (PQstatus(sl->conn) == CONNECTION_OK) PQclear(PQexec(sl->conn, "SET client_min_messages = warning"));
  }
  return sl;
}

void serve__slot_put(finch_server *srv, serve_slot *sl) {
  finch_db_rollback_on(sl->conn); /* a handler never leaves a transaction open; this is a safety net */
  pthread_mutex_lock(&srv->pool_lock);
  srv->slot_free[srv->n_free++] = (int)(sl - srv->slots);
  pthread_cond_signal(&srv->pool_cond);
  pthread_mutex_unlock(&srv->pool_lock);
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

/* 1 when s is 1..SERVE_RID_MAX characters of [A-Za-z0-9._-]. */
static int serve_rid_ok(const char *s) {
  size_t n = 0;
  for (; s[n] && n <= SERVE_RID_MAX; n++) {
    char ch = s[n];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
          ch == '_' || ch == '-'))
      return 0;
  }
  return n >= 1 && n <= SERVE_RID_MAX;
}

/* The client's X-Request-Id when valid, else a new id: a counter through
 * the splitmix64 finaliser (a bijection, so ids never repeat within a
 * process) from a random start. */
static void serve_rid(finch_server *s, struct MHD_Connection *conn, char out[SERVE_RID_MAX + 1]) {
  const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
  if (h && serve_rid_ok(h)) {
    memcpy(out, h, strlen(h) + 1);
    return;
  }
  uint64_t x = s->rid_seed + atomic_fetch_add_explicit(&s->rid_next, 1, memory_order_relaxed) * 0x9e3779b97f4a7c15u;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
  x ^= x >> 31;
  snprintf(out, SERVE_RID_MAX + 1, "%016llx", (unsigned long long)x);
}

/* Every request is answered on the handler's last call, after the whole
 * request has been read, so that the connection can be kept alive; the
 * exceptions are a body announced as too large and a request arriving while
 * the server drains, answered before it is read. */
static enum MHD_Result serve_access(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls) {
  (void)version;
  finch_server *srv = cls;
  serve_request *req = *con_cls;
  enum MHD_Result ret;

  if (!req) { /* first call: headers only */
    serve_cur = NULL;
    req = malloc(sizeof *req);
    if (!req) return serve__reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "out of memory");
    memset(req, 0, sizeof *req);
    serve__route(req, url, method);
    req->srv = srv;
    req->conn = conn;
    req->t0_ns = finch_clock_ns();
    req->confidence = -1;
    snprintf(req->method, sizeof req->method, "%s", method);
    serve_rid(srv, conn, req->rid);
    *con_cls = req;
    atomic_fetch_add(&srv->active, 1);
    unsigned long long announced = serve_content_length(conn);
    serve_cur = req;
    ret = MHD_YES;
    if (atomic_load(&srv->draining)) {
      req->close = 1;
      ret = serve__reply_error_h(conn, MHD_HTTP_SERVICE_UNAVAILABLE, MHD_HTTP_HEADER_RETRY_AFTER, "1",
                                "the server is shutting down");
    } else if (announced > srv->max_body) {
      if (!req->post)
        ret = serve__dispatch(srv, conn, req, url, method);
      else
        ret = serve__reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                                "request body of %llu bytes exceeds the limit of %zu bytes", announced,
                                srv->max_body);
    }
    serve_cur = NULL;
    return ret;
  }

  if (*upload_data_size > 0) { /* a piece of body; no response may be queued here */
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (!req->post || req->too_big) return MHD_YES; /* discarded */
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

  serve_cur = req; /* the request is complete (or back from the batcher) */
  ret = serve__dispatch(srv, conn, req, url, method);
  serve_cur = NULL;
  return ret;
}

/* The response has gone out (or the connection has gone): count, log,
 * release. */
static void serve_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe) {
  (void)conn;
  (void)toe;
  finch_server *srv = cls;
  serve_request *req = *con_cls;
  if (!req) return;
  uint64_t ns = finch_clock_ns() - req->t0_ns;
  if (req->status) serve__metrics_request(&srv->metrics, req->metric, req->status, ns);
  if (srv->log_fd >= 0) serve__log_request(srv, req, ns);
  /* A /v1/intent answer is counted for monitoring here (its turns
   * counterpart is the turn's row); an out-of-scope answer has no intent. */
  if (srv->minutes && req->status == MHD_HTTP_OK && req->route && req->route->handler == serve__intent && req->model)
    serve_minutes_add(srv->minutes, req->model->sha256, req->intent == NULL, (double)ns / 1e6, time(NULL));
  serve__model_put(req->model);
  json_decref(req->root);
  free(req->probs);
  free(req->log_text);
  free(req->body);
  free(req);
  *con_cls = NULL;
  atomic_fetch_sub(&srv->active, 1);
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
  finch_webhook_worker_stop(s->webhooks);
  serve_minutes_close(s->minutes);
  for (size_t i = 0; i < s->n_slots; i++) {
    PQfinish(s->slots[i].conn);
    finch_redactor_free(s->slots[i].redactor);
  }
  free(s->slots);
  free(s->slot_free);
  if (s->has_db) {
    pthread_mutex_destroy(&s->pool_lock);
    pthread_cond_destroy(&s->pool_cond);
  }
  finch_ratelimit_free(s->rl);
  finch_rules_free(s->rules);
  free(s->deployment);
  free(s->oos_label);
  serve__batcher_free(s->batcher);
  serve__model_put(atomic_load(&s->model));
  free(s->model_path);
  finch_redactor_free(s->log_redactor);
  if (s->log_fd_owned) close(s->log_fd);
  pthread_mutex_destroy(&s->backlog_lock);
  pthread_mutex_destroy(&s->reload_lock);
  pthread_mutex_destroy(&s->log_redact_lock);
  pthread_mutex_destroy(&s->log_lock);
  free(s);
}

static void serve_observe_batch(void *ctx, size_t n) { serve__metrics_batch(ctx, n); }

/* Request ids, the access log, batching: everything of serving quality
 * that can fail. */
static finch_status serve_open_quality(finch_server *s, const finch_serve_opts *opts, finch_err *err) {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
    seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15u ^ (uint64_t)getpid() ^ finch_clock_ns();
  s->rid_seed = seed;
  const char *log = opts->access_log;
  if (!log || !*log || strcmp(log, "-") == 0) {
    s->log_fd = STDERR_FILENO;
  } else if (strcmp(log, "off") != 0) {
    s->log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (s->log_fd < 0)
      return finch_err_set(err, FINCH_EIO, "serve: cannot open the access log %s: %s", log, strerror(errno));
    s->log_fd_owned = 1;
  }
  if (opts->log_text && s->log_fd >= 0) {
    s->log_text = 1;
    finch_status st = finch_redactor_open(&s->log_redactor, opts->pii_rules, opts->n_pii_rules, err);
    if (st != FINCH_OK) {
      finch_err_prefix(err, "serve: cannot load the redaction rules for the access log");
      return st;
    }
  }
  s->max_queue = opts->max_queue ? opts->max_queue : FINCH_SERVE_DEFAULT_MAX_QUEUE;
  s->drain_ms = opts->drain_ms ? opts->drain_ms : FINCH_SERVE_DEFAULT_DRAIN_MS;
  s->classify_delay_us = opts->classify_delay_us;
  if (opts->batch_window_us > 0) {
    if (opts->batch_window_us > 1000000 || opts->max_batch > 65536 || opts->batch_threads > 64)
      return finch_err_set(err, FINCH_EINVAL,
                           "serve: batch window at most 1 s, batches of at most 65536, at most 64 batcher threads");
    serve_batcher_opts bo = {.threads = opts->batch_threads ? opts->batch_threads : FINCH_SERVE_DEFAULT_BATCH_THREADS,
                             .max_batch = opts->max_batch ? opts->max_batch : FINCH_SERVE_DEFAULT_MAX_BATCH,
                             .window_us = opts->batch_window_us,
                             .delay_us = opts->classify_delay_us,
                             .observe = serve_observe_batch,
                             .observe_ctx = &s->metrics};
    return serve__batcher_start(&s->batcher, &bo, err);
  }
  return FINCH_OK;
}

/* Database mode: rules, one connection and redactor per thread, the rate
 * limiter and the webhook worker. */
static finch_status serve_open_db(finch_server *s, const finch_serve_opts *opts, unsigned threads, finch_err *err) {
  s->has_db = 1;
  pthread_mutex_init(&s->pool_lock, NULL);
  pthread_cond_init(&s->pool_cond, NULL);
  const char *dep = opts->deployment && *opts->deployment ? opts->deployment : FINCH_SERVE_DEFAULT_DEPLOYMENT;
  if (!serve__id_ok(dep, 100))
    return finch_err_set(err, FINCH_EINVAL, "serve: deployment \"%s\" is not 1 to 100 characters of A-Z a-z 0-9 . _ : -",
                         dep);
  s->deployment = strdup(dep);
  if (!s->deployment) return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  s->min_confidence = opts->min_confidence > 0 ? opts->min_confidence : FINCH_SERVE_DEFAULT_MIN_CONFIDENCE;
  s->canary_share = opts->canary_share > 0 ? opts->canary_share : opts->canary_share < 0 ? 0.0 : FINCH_SERVE_DEFAULT_CANARY_SHARE;
  s->handoff_below = opts->handoff_below > 0 ? opts->handoff_below : FINCH_SERVE_DEFAULT_HANDOFF_BELOW;
  s->gate = opts->gate.confidence > 0 ? opts->gate : finch_gate_opts_default();
  if (s->min_confidence > 1 || s->canary_share > 1 || s->handoff_below > 1)
    return finch_err_set(err, FINCH_EINVAL, "serve: min_confidence, canary_share and handoff_below must be in [0, 1]");
  finch_status st;
  if (opts->rules_path && *opts->rules_path && (st = finch_rules_load(&s->rules, opts->rules_path, err))) {
    finch_err_prefix(err, "serve: cannot load rules");
    return st;
  }
  s->rl = finch_ratelimit_new(opts->rate_per_s > 0 ? opts->rate_per_s : FINCH_SERVE_DEFAULT_RATE,
                              opts->rate_burst >= 1 ? opts->rate_burst : FINCH_SERVE_DEFAULT_BURST);
  s->slots = calloc(threads, sizeof *s->slots);
  s->slot_free = calloc(threads, sizeof *s->slot_free);
  if (!s->rl || !s->slots || !s->slot_free) return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  for (unsigned i = 0; i < threads; i++) {
    serve_slot *sl = &s->slots[i];
    sl->conn = PQconnectdb(opts->conninfo);
    s->n_slots++;
    if (PQstatus(sl->conn) != CONNECTION_OK) {
      char msg[512];
      snprintf(msg, sizeof msg, "%s", PQerrorMessage(sl->conn));
      size_t n = strlen(msg);
      while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = '\0';
      return finch_err_set(err, FINCH_EDB, "serve: cannot connect to PostgreSQL: %s", msg);
    }
    PQclear(PQexec(sl->conn, "SET client_min_messages = warning"));
    if ((st = finch_redactor_open(&sl->redactor, opts->pii_rules, opts->n_pii_rules, err))) {
      finch_err_prefix(err, "serve: cannot load the redaction rules");
      return st;
    }
    s->slot_free[s->n_free++] = (int)i;
  }
  /* The schema must be there: a server against an unmigrated database would
   * fail every request instead of failing now. */
  PGresult *r = finch_db_query_on(s->slots[0].conn, "SELECT count(*) FROM api_keys", 0, NULL, err);
  if (!r) {
    finch_err_prefix(err, "serve: the database lacks finch's tables (run finch db migrate)");
    return FINCH_EDB;
  }
  PQclear(r);
  if ((st = serve_minutes_open(&s->minutes, opts->conninfo, s->deployment, 0, err))) return st;
  if (!opts->no_webhook_worker) {
    finch_webhook_opts wo = {.conninfo = opts->conninfo, .poll_ms = opts->webhook_poll_ms,
                             .max_attempts = opts->webhook_max_attempts,
                             .base_backoff_ms = opts->webhook_backoff_ms,
                             .max_backoff_ms = opts->webhook_max_backoff_ms};
    if ((st = finch_webhook_worker_start(&s->webhooks, &wo, err))) {
      finch_err_prefix(err, "serve: cannot start the webhook worker");
      return st;
    }
  }
  return FINCH_OK;
}

finch_status finch_server_start(finch_server **out, const finch_serve_opts *opts, finch_err *err) {
  *out = NULL;
  if (!opts || !opts->model_path || !*opts->model_path)
    return finch_err_set(err, FINCH_EINVAL, "serve: no model file given");
  const char *host = opts->host && *opts->host ? opts->host : FINCH_SERVE_DEFAULT_HOST;
  if (opts->port > 65535)
    return finch_err_set(err, FINCH_EINVAL, "serve: port %u is out of range (0-65535)",
                         opts->port);
  unsigned threads = opts->threads ? opts->threads : FINCH_SERVE_DEFAULT_THREADS;
  if (threads > 1024)
    return finch_err_set(err, FINCH_EINVAL, "serve: %u threads is too many (at most 1024)",
                         threads);

  finch_server *s = calloc(1, sizeof *s);
  if (!s) return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  pthread_mutex_init(&s->log_lock, NULL);
  pthread_mutex_init(&s->reload_lock, NULL);
  pthread_mutex_init(&s->log_redact_lock, NULL);
  pthread_mutex_init(&s->backlog_lock, NULL);
  s->backlog_at = -1e9;
  s->log_fd = -1;
  const char *labels[SERVE_N_PATHS_MAX];
  serve__metrics_init(&s->metrics, labels, serve__route_labels(labels, SERVE_N_PATHS_MAX));
  atomic_init(&s->model, NULL);
  atomic_init(&s->acquiring, 0);
  atomic_init(&s->queue_depth, 0);
  atomic_init(&s->active, 0);
  atomic_init(&s->draining, 0);
  atomic_init(&s->rid_next, 0);
  s->max_body = opts->max_body ? opts->max_body : FINCH_SERVE_DEFAULT_MAX_BODY;

  serve_model *m = NULL;
  finch_status st = serve__model_load(&m, opts->model_path, err);
  if (st != FINCH_OK) {
    serve_free(s);
    return st;
  }
  atomic_store(&s->model, m);
  /* The out-of-scope label holds at /v1/intent too, database or not. */
  s->oos_label = opts->oos_label && *opts->oos_label ? strdup(opts->oos_label) : NULL;
  if (!(s->model_path = strdup(opts->model_path)) || (opts->oos_label && *opts->oos_label && !s->oos_label)) {
    serve_free(s);
    return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  }
  if ((st = serve_open_quality(s, opts, err)) != FINCH_OK) {
    serve_free(s);
    return st;
  }

  if (opts->conninfo && (st = serve_open_db(s, opts, threads, err)) != FINCH_OK) {
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

  /* A pool of `threads` polling threads (default 2, the cores of the target
   * machine), each with its own connections. poll(2): select, poll and epoll
   * measured alike at 8 and 64 connections (bench/bench_serve.sh; within the
   * noise), and poll has no FD_SETSIZE cap on open connections, which
   * matters under overload. Not epoll: with a thread pool, libmicrohttpd
   * (0.9.75 to 0.9.77 at least) removes the listen socket from a worker's
   * epoll set in MHD_quiesce_daemon() while that worker may be removing it
   * too, and aborts the process when it loses that race (an ENOENT it does
   * not expect); with poll, quiescing only signals the workers. */
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG | MHD_USE_ITC;
  if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  if (s->batcher) flags |= MHD_ALLOW_SUSPEND_RESUME;
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

const char *finch_server_model_sha256(const finch_server *s) {
  /* The server's own reference keeps the current model alive; the cast
   * drops const for the atomic load only. */
  return s ? atomic_load(&((finch_server *)s)->model)->sha256 : NULL;
}

finch_status finch_server_reload(finch_server *s, const char *path, finch_err *err) {
  if (!s) return finch_err_set(err, FINCH_EINVAL, "serve: no server");
  return serve__reload(s, path, NULL, NULL, err);
}

void finch_server_stop(finch_server *s) {
  if (!s) return;
  /* Stop accepting; requests that arrive on open connections from now on
   * are answered 503 with Connection: close. Then wait for the requests in
   * flight (their headers in, their responses not yet sent), at most
   * drain_ms; run whatever the batcher still holds, so that every suspended
   * connection is resumed; and only then stop MHD, which closes what is left
   * (idle keep-alive connections, in practice). The listen socket is ours
   * after quiescing and must stay open until the daemon's threads are gone. */
  atomic_store(&s->draining, 1);
  MHD_socket lfd = MHD_quiesce_daemon(s->daemon);
  uint64_t deadline = finch_clock_ns() + (uint64_t)s->drain_ms * 1000000u;
  while (atomic_load(&s->active) > 0 && finch_clock_ns() < deadline)
    nanosleep(&(struct timespec){.tv_sec = 0, .tv_nsec = 2 * 1000 * 1000}, NULL);
  if (atomic_load(&s->active) > 0)
    finch_warn("serve: %lld request(s) still in flight after %u ms; closing them", atomic_load(&s->active),
               s->drain_ms);
  serve__batcher_stop(s->batcher); /* a request still arriving is classified on its own thread */
  MHD_stop_daemon(s->daemon);
  if (lfd != MHD_INVALID_SOCKET) close(lfd);
  serve_free(s);
}

/* --- signals of the daemon's main thread ---------------------------------- */

static pthread_t serve_signal_target;

/* Runs on a thread that has the signal unblocked (never the target): the
 * signal becomes pending on the target, where sigwait() takes it.
 * pthread_kill() is async-signal-safe. */
static void serve_signal_forward(int sig) { pthread_kill(serve_signal_target, sig); }

int finch_serve_signals_to_caller(const sigset_t *set) {
  serve_signal_target = pthread_self();
  int rc = pthread_sigmask(SIG_BLOCK, set, NULL);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  struct sigaction sa = {.sa_handler = serve_signal_forward};
  sigfillset(&sa.sa_mask);
  for (int sig = 1; sig < NSIG; sig++)
    if (sigismember(set, sig) == 1 && sigaction(sig, &sa, NULL) != 0) return -1;
  return 0;
}
