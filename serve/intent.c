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

/* The top_k most probable intents of probs (re-tempered), in descending
 * probability, ties in label order; NULL when out of memory. */
static json_t *serve_top(const finch_server *srv, const serve_model *m, const float *probs, size_t top_k) {
  size_t *idx = malloc(m->n_labels * sizeof *idx), n = 0;
  json_t *top = json_array();
  if (!idx || !top) goto fail;
  for (size_t c = 0; c < m->n_labels; c++)
    if (serve__in_scope(srv, m, c)) idx[n++] = c;
  if (top_k > n) top_k = n;
  /* A selection of the first top_k: stable for equal probabilities. */
  for (size_t i = 0; i < top_k; i++) {
    size_t best = i;
    for (size_t j = i + 1; j < n; j++)
      if (probs[idx[j]] > probs[idx[best]] || (probs[idx[j]] == probs[idx[best]] && idx[j] < idx[best])) best = j;
    size_t t = idx[i];
    idx[i] = idx[best];
    idx[best] = t;
    if (json_array_append_new(top, json_pack("{s:s, s:f}", "intent", nn_model_label(m->nn, idx[i]), "probability",
                                             (double)probs[idx[i]])))
      goto fail;
  }
  free(idx);
  return top;
fail:
  free(idx);
  json_decref(top);
  return NULL;
}

/* Answers a classified POST /v1/intent (req->pred, req->probs): the served
 * decision (serve__answer), out of scope with "intent": null. */
static enum MHD_Result serve_intent_answer(finch_server *srv, struct MHD_Connection *conn, serve_request *req) {
  const serve_model *m = req->model;
  int k = req->pred;
  if (k < 0 || (size_t)k >= m->n_labels || !isfinite(req->probs[k])) {
    finch_error("serve: prediction failed (label index %d of %zu)", k, m->n_labels);
    return serve__reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "the model produced no prediction");
  }
  serve_answer a;
  serve__answer(srv, m, req->probs, &a);
  if (!isfinite(a.confidence)) {
    finch_error("serve: prediction failed (confidence %g)", (double)a.confidence);
    return serve__reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "the model produced no prediction");
  }
  req->engine = "model";
  req->intent = a.label >= 0 ? nn_model_label(m->nn, (size_t)a.label) : NULL;
  req->confidence = a.confidence;
  serve__metrics_decision(&srv->metrics, SERVE_DECISION_MODEL);
  if (a.label < 0) serve__metrics_out_of_scope(&srv->metrics, SERVE_OOS_INTENT);
  json_t *obj = json_pack("{s:o, s:b, s:f, s:s, s:s}", "intent", req->intent ? json_string(req->intent) : json_null(),
                          "out_of_scope", a.label < 0, "confidence", req->confidence, "source", "model", "model",
                          m->sha256);
  json_t *top = req->top_k > 0 ? serve_top(srv, m, req->probs, (size_t)req->top_k) : NULL;
  if (!obj || (req->top_k > 0 && !top)) {
    json_decref(obj);
    json_decref(top);
    return serve__reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "out of memory");
  }
  if (top) json_object_set_new(obj, "top", top);
  return serve__reply_json(conn, MHD_HTTP_OK, obj, NULL);
}

/* The refusal of a "top_k", with the number of intents. */
#define SERVE_TOP_K_RANGE "field \"top_k\" must be an integer in 1..%zu (the model's intents)"

/* req->top_k from the body's optional "top_k": an integer in 1..the
 * model's intents. NULL when it is absent or good, else why not. */
static const char *serve_top_k(const finch_server *srv, const serve_model *m, json_t *root, serve_request *req,
                               char *why, size_t size) {
  json_t *v = json_object_get(root, "top_k");
  if (!v) return NULL;
  size_t n = serve__n_in_scope(srv, m);
  if (json_is_integer(v) && json_integer_value(v) >= 1 && (json_int_t)n >= json_integer_value(v)) {
    req->top_k = (long long)json_integer_value(v);
    return NULL;
  }
  snprintf(why, size, SERVE_TOP_K_RANGE, n);
  return why;
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
  if (!root) {
    /* An integer past 64 bits is a JSON number jansson cannot hold: when it
     * is "top_k", the answer names that field. */
    json_t *big = strstr(jerr.text, "too big") ? json_loadb(req->body, req->len, JSON_DECODE_INT_AS_REAL, NULL) : NULL;
    json_t *k = json_object_get(big, "top_k");
    int named = json_is_real(k) && !(fabs(json_real_value(k)) < 9.2e18);
    json_decref(big);
    if (named)
      return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, SERVE_TOP_K_RANGE,
                               serve__n_in_scope(srv, serve__req_model(srv, req)));
    return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                             jerr.text);
  }
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
  char why_k[128];
  if (serve_top_k(srv, m, root, req, why_k, sizeof why_k))
    return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", why_k);
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
