/* POST /v1/intent (serve/server_internal.h): a text classified by the
 * served model, on the handler's thread or through the batcher, with at most
 * max_queue classifications in flight (see the top of serve/server.c). */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/text.h"
#include "serve/server_internal.h"

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

/* The text for the access log with log_text on: normalised and redacted
 * (NULL when either fails: nothing unredacted is ever logged). */
static char *serve_log_text_of(finch_server *srv, const char *text, size_t len) {
  char *norm = NULL, *red = NULL;
  finch_err err = {0};
  if (finch_text_normalize(text, len, 0, &norm, &err) != FINCH_OK) return NULL;
  pthread_mutex_lock(&srv->log_redact_lock);
  if (finch_redact(srv->log_redactor, norm, strlen(norm), &red, NULL, &err) != FINCH_OK) red = NULL;
  pthread_mutex_unlock(&srv->log_redact_lock);
  free(norm);
  return red;
}

/* Answers a classified POST /v1/intent (req->pred, req->probs). */
static enum MHD_Result serve_intent_answer(finch_server *srv, struct MHD_Connection *conn, serve_request *req) {
  const serve_model *m = req->model;
  int k = req->pred;
  if (k < 0 || (size_t)k >= m->n_labels || !isfinite(req->probs[k])) {
    finch_error("serve: prediction failed (label index %d of %zu)", k, m->n_labels);
    return serve__reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "the model produced no prediction");
  }
  req->engine = "model";
  req->intent = nn_model_label(m->nn, (size_t)k);
  req->confidence = req->probs[k];
  serve__metrics_decision(&srv->metrics, SERVE_DECISION_MODEL);
  json_t *obj = json_pack("{s:s, s:f, s:s, s:s}", "intent", req->intent, "confidence", req->confidence, "source",
                          "model", "model", m->sha256);
  return serve__reply_json(conn, MHD_HTTP_OK, obj, NULL);
}

/* The batcher's callback: the answer is in; wake the connection. The
 * request may be freed as soon as MHD_resume_connection() returns. */
static void serve_batch_done(serve_batch_item *it) {
  serve_request *req = it->ctx;
  atomic_fetch_sub(&req->srv->queue_depth, 1);
  req->pred = it->pred;
  req->batch = it->batch;
  req->phase = SERVE_PHASE_DONE; /* published to the MHD thread by resume's mutex */
  MHD_resume_connection(req->conn);
}

enum MHD_Result serve__intent(const serve_call *c) {
  finch_server *srv = c->srv;
  struct MHD_Connection *conn = c->conn;
  serve_request *req = c->req;
  if (req->phase == SERVE_PHASE_DONE) return serve_intent_answer(srv, conn, req);
  size_t bad;
  if (!finch_utf8_valid(req->body ? req->body : "", req->len, &bad))
    return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "request body is not valid UTF-8 (byte %zu)", bad);
  json_error_t jerr;
  json_t *root = json_loadb(req->body ? req->body : "", req->len, 0, &jerr);
  if (!root)
    return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                             jerr.text);
  json_t *jtext = json_is_object(root) ? json_object_get(root, "text") : NULL;
  const char *text = json_string_value(jtext);
  size_t len = json_string_length(jtext);
  /* jansson already refuses invalid UTF-8 and \u0000 in strings; checked
   * again because the tokenizer relies on it. */
  const char *why = !json_is_object(root) ? "request body must be a JSON object with a \"text\" field"
                    : !jtext                ? "missing field \"text\""
                    : !text                 ? "field \"text\" must be a string"
                    : !finch_utf8_valid(text, len, &bad) || strlen(text) != len ? "field \"text\" is not valid UTF-8 text"
                                                                                : NULL;
  int blank = why ? 0 : serve_is_blank(text, len);
  if (why || blank) {
    json_decref(root);
    return serve__reply_error(conn, blank < 0 ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_REQUEST, NULL, "%s",
                             why ? why : blank > 0 ? "field \"text\" is empty" : "out of memory");
  }
  req->root = root; /* freed by serve_completed(), with the text in it */
  serve_model *m = serve__req_model(srv, req);
  req->probs = malloc(m->n_labels * sizeof *req->probs);
  if (!req->probs) return serve__reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "out of memory");
  if (srv->log_text) req->log_text = serve_log_text_of(srv, text, len);

  /* Admission: the bound is on classifications in flight, checked before
   * anything is queued, so an overloaded server sheds at once. */
  if (atomic_fetch_add(&srv->queue_depth, 1) >= srv->max_queue) {
    atomic_fetch_sub(&srv->queue_depth, 1);
    return serve__reply_error_h(conn, MHD_HTTP_SERVICE_UNAVAILABLE, MHD_HTTP_HEADER_RETRY_AFTER, "1",
                               "the server is at capacity (%lld classifications in flight); retry after 1 s",
                               srv->max_queue);
  }
  if (!srv->batcher) {
    if (srv->classify_delay_us) /* tests: a slow model */
      nanosleep(&(struct timespec){.tv_sec = srv->classify_delay_us / 1000000,
                                   .tv_nsec = (long)(srv->classify_delay_us % 1000000) * 1000},
                NULL);
    req->pred = nn_model_predict(m->nn, text, req->probs, 1.0f);
    atomic_fetch_sub(&srv->queue_depth, 1);
    req->batch = 1;
    serve__metrics_batch(&srv->metrics, 1);
    return serve_intent_answer(srv, conn, req);
  }
  req->item = (serve_batch_item){.model = m->nn, .text = text, .probs = req->probs, .done = serve_batch_done,
                                 .ctx = req};
  req->phase = SERVE_PHASE_QUEUED;
  /* Suspended before it is queued, so that the resume cannot come first. */
  MHD_suspend_connection(conn);
  serve__batcher_submit(srv->batcher, &req->item);
  return MHD_YES;
}
