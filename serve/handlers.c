/* The intent server's endpoints other than POST /v1/intent
 * (serve/server_internal.h): health, conversation turns, the labelling
 * queue, the rollout, /metrics and reloads. They parse and answer; the
 * transactions are in serve/turns.c, serve/labeling.c and serve/rollout.c. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/text.h"
#include "serve/labeling.h"
#include "serve/turns.h"
#include "serve/server_internal.h"

/* 1 when s is 1..max bytes of [A-Za-z0-9._:-]. */
int serve__id_ok(const char *s, size_t max) {
  size_t n = 0;
  for (; s[n]; n++) {
    char ch = s[n];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
          ch == '_' || ch == ':' || ch == '-'))
      return 0;
  }
  return n >= 1 && n <= max;
}

/* ?name= as a number: 0 absent (*v unchanged), 1 parsed, -1 malformed. */
static int serve_arg_double(struct MHD_Connection *conn, const char *name, double *v) {
  const char *s = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
  if (!s) return 0;
  char *end;
  errno = 0;
  double x = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(x)) return -1;
  *v = x;
  return 1;
}

/* Parses the body as a JSON object; NULL with msg set otherwise. */
static json_t *serve_body_object(const serve_request *req, char *msg, size_t n) {
  size_t bad;
  if (!finch_utf8_valid(req->body ? req->body : "", req->len, &bad)) {
    snprintf(msg, n, "request body is not valid UTF-8 (byte %zu)", bad);
    return NULL;
  }
  json_error_t jerr;
  json_t *root = json_loadb(req->body ? req->body : "", req->len, 0, &jerr);
  if (!root) {
    snprintf(msg, n, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
    return NULL;
  }
  if (!json_is_object(root)) {
    json_decref(root);
    snprintf(msg, n, "request body must be a JSON object");
    return NULL;
  }
  return root;
}

/* --- health, /metrics, reloads --------------------------------------------- */

enum MHD_Result serve__health(const serve_call *c) {
  return serve__reply_json(c->conn, MHD_HTTP_OK,
                           json_pack("{s:s, s:s, s:b}", "status", "ok", "model",
                                     serve__req_model(c->srv, c->req)->sha256, "database", c->srv->has_db),
                           NULL);
}

/* In database mode with the webhook backlog, which is queried at most once
 * a second however often Prometheus asks. */
enum MHD_Result serve__metrics_get(const serve_call *c) {
  finch_server *srv = c->srv;
  struct MHD_Connection *conn = c->conn;
  serve_slot *sl = c->sl;
  long long backlog = -1;
  if (sl) {
    pthread_mutex_lock(&srv->backlog_lock);
    double now = (double)finch_clock_ns() / 1e9;
    if (now - srv->backlog_at >= 1.0) {
      srv->backlog = (long long)finch_webhook_backlog(sl->conn);
      srv->backlog_at = now;
    }
    backlog = srv->backlog;
    pthread_mutex_unlock(&srv->backlog_lock);
  }
  serve_metrics_gauges g = {.queue_depth = atomic_load(&srv->queue_depth),
                            .webhook_backlog = backlog,
                            .model_sha256 = serve__req_model(srv, c->req)->sha256};
  char *text = serve__metrics_render(&srv->metrics, &g);
  if (!text) return serve__reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "out of memory");
  struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    free(text);
    return MHD_NO;
  }
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
  return serve__queue(conn, MHD_HTTP_OK, resp);
}

/* The file being served, read again. */
enum MHD_Result serve__reload_post(const serve_call *c) {
  struct MHD_Connection *conn = c->conn;
  char prev[FINCH_SHA256_HEX_LEN], now[FINCH_SHA256_HEX_LEN];
  finch_err err = {0};
  if (serve__reload(c->srv, NULL, prev, now, &err) != FINCH_OK)
    return serve__reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "reload failed, still serving %s: %s", prev,
                             err.msg);
  finch_info("serve: reload requested over HTTP");
  return serve__reply_json(conn, MHD_HTTP_OK, json_pack("{s:s, s:s}", "model", now, "previous", prev), NULL);
}

/* --- POST /v1/conversations/{id}/turns ------------------------------------- */

enum MHD_Result serve__turn(const serve_call *c) {
  finch_server *srv = c->srv;
  struct MHD_Connection *conn = c->conn;
  serve_request *req = c->req;
  const char *deployment = c->deployment;
  if (!serve__id_ok(req->arg, SERVE_ID_MAX))
    return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "conversation id must be 1 to %d characters of A-Z a-z 0-9 . _ : -", SERVE_ID_MAX);
  char msg[512];
  json_t *root = serve_body_object(req, msg, sizeof msg);
  if (!root) return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", msg);
  json_t *jtext = json_object_get(root, "text"), *jspeaker = json_object_get(root, "speaker");
  const char *text = json_string_value(jtext);
  const char *speaker = jspeaker ? json_string_value(jspeaker) : "user";
  enum MHD_Result ret;
  char *norm = NULL, *red = NULL;
  float *probs = NULL;
  finch_err err = {0};
  if (!jtext) {
    ret = serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "missing field \"text\"");
    goto out;
  }
  if (!text || strlen(text) != json_string_length(jtext)) {
    ret = serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "field \"text\" must be a string of UTF-8 text");
    goto out;
  }
  if (!speaker || (strcmp(speaker, "user") != 0 && strcmp(speaker, "agent") != 0)) {
    ret = serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "field \"speaker\" must be \"user\" or \"agent\"");
    goto out;
  }
  if (finch_text_normalize(text, strlen(text), 0, &norm, &err) != FINCH_OK) {
    ret = serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "field \"text\" cannot be normalised");
    goto out;
  }
  if (!norm[0]) {
    ret = serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "field \"text\" is empty");
    goto out;
  }
  /* Fails closed: without a redacted text nothing is stored or classified. */
  if (finch_redact(c->sl->redactor, norm, strlen(norm), &red, NULL, &err) != FINCH_OK) {
    finch_error("serve: redaction failed (%s)", finch_status_str(err.code));
    ret = serve__reply_error(conn, err.code == FINCH_EFORMAT ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_INTERNAL_SERVER_ERROR,
                            NULL, "the text could not be redacted, so it was not stored");
    goto out;
  }
  if (srv->log_text) req->log_text = strdup(red);
  const serve_model *m = serve__req_model(srv, req);
  finch_turn_in in = {.deployment = deployment, .conversation = req->arg, .speaker = speaker, .text = red,
                      .model_sha = m->sha256, .key_id = c->who->id, .t0_ns = req->t0_ns};
  int user = strcmp(speaker, "user") == 0;
  if (user) {
    probs = malloc(m->n_labels * sizeof *probs);
    int k = probs ? nn_model_predict(m->nn, red, probs, 1.0f) : -1;
    serve__metrics_batch(&srv->metrics, 1);
    req->batch = 1;
    if (k < 0 || (size_t)k >= m->n_labels || !isfinite(probs[k])) {
      finch_error("serve: prediction failed (label index %d of %zu)", k, m->n_labels);
      ret = serve__reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "the model produced no prediction");
      goto out;
    }
    /* The served decision, as POST /v1/intent makes it; out of scope, the
     * rollout gets the out-of-scope label it goes by (serve_answer). */
    serve_answer a;
    serve__answer(srv, m, probs, &a);
    in.model_intent = a.name;
    in.model_conf = a.name_prob;
    in.model_out_of_scope = a.label < 0;
    in.rule_intent = srv->rules ? finch_rules_match(srv->rules, red, strlen(red), NULL, NULL) : NULL;
  }
  finch_turn_policy pol = {.canary_share = srv->canary_share, .min_confidence = srv->min_confidence,
                           .handoff_below = srv->handoff_below, .oos_label = srv->oos_label};
  finch_turn_out o;
  if (finch_turn_record(c->sl->conn, &pol, &in, &o, &err) != FINCH_OK) {
    ret = serve__db_failed(conn, "turn", &err);
    goto out;
  }
  json_t *res = json_pack("{s:s, s:s, s:i, s:s}", "conversation_id", req->arg, "deployment", deployment, "turn",
                          o.turn_index, "speaker", speaker);
  if (res && user) {
    json_object_set_new(res, "intent", o.d.intent ? json_string(o.d.intent) : json_null());
    json_object_set_new(res, "engine", json_string(finch_engine_name(o.d.engine)));
    json_object_set_new(res, "confidence", json_real(o.d.confidence));
    json_object_set_new(res, "stage", json_string(finch_stage_name(o.stage)));
    json_object_set_new(res, "handoff", json_boolean(o.handoff));
    json_object_set_new(res, "out_of_scope", json_boolean(o.d.out_of_scope));
    json_object_set_new(res, "model", json_string(m->sha256));
    req->engine = finch_engine_name(o.d.engine);
    req->intent = o.d.intent; /* a model label or a rule's intent: both outlive the request */
    req->confidence = o.d.confidence;
    serve__metrics_decision(&srv->metrics, o.d.fallback                      ? SERVE_DECISION_FALLBACK
                                           : o.d.engine == FINCH_ENGINE_MODEL ? SERVE_DECISION_MODEL
                                                                              : SERVE_DECISION_RULES);
    if (o.d.out_of_scope) serve__metrics_out_of_scope(&srv->metrics, SERVE_OOS_TURNS);
    if (o.d.fallback) json_object_set_new(res, "fallback", json_true());
    if (o.d.suggest)
      json_object_set_new(res, "suggestion",
                          json_pack("{s:o, s:f, s:b}", "intent",
                                    o.d.out_of_scope ? json_null() : json_string(in.model_intent), "confidence",
                                    in.model_conf, "out_of_scope", o.d.out_of_scope));
    if (o.task_id) json_object_set_new(res, "labeling_task", json_integer(o.task_id));
  }
  ret = serve__reply_json(conn, MHD_HTTP_OK, res, NULL);
out:
  free(probs);
  free(norm);
  free(red);
  json_decref(root);
  return ret;
}

/* --- labelling ------------------------------------------------------------ */

enum MHD_Result serve__tasks(const serve_call *c) {
  struct MHD_Connection *conn = c->conn;
  const char *deployment = c->deployment;
  finch_labeling_filter f = {.deployment = deployment, .min_confidence = -1, .max_confidence = -1};
  f.status = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "status");
  f.intent = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "intent");
  f.stage = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "stage");
  double limit = 0, after = 0;
  if (serve_arg_double(conn, "min_confidence", &f.min_confidence) < 0 ||
      serve_arg_double(conn, "max_confidence", &f.max_confidence) < 0 || serve_arg_double(conn, "limit", &limit) < 0 ||
      serve_arg_double(conn, "after", &after) < 0 || after < 0 || after > 9e15 || limit < 0 || limit > 1e6)
    return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "min_confidence, max_confidence, limit and after must be numbers");
  f.limit = (long)limit;
  f.after_id = (long long)after;
  json_t *o;
  finch_err err = {0};
  finch_status st = finch_labeling_list(c->sl->conn, &f, &o, &err);
  if (st == FINCH_EINVAL) return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", err.msg);
  if (st) return serve__db_failed(conn, "listing tasks", &err);
  return serve__reply_json(conn, MHD_HTTP_OK, o, NULL);
}

enum MHD_Result serve__task_label(const serve_call *c) {
  struct MHD_Connection *conn = c->conn;
  const serve_request *req = c->req;
  char *end;
  errno = 0;
  long long id = strtoll(req->arg, &end, 10);
  if (errno || end == req->arg || *end || id <= 0)
    return serve__reply_error(conn, MHD_HTTP_NOT_FOUND, NULL, "no labelling task %s", req->arg);
  char msg[512];
  json_t *root = serve_body_object(req, msg, sizeof msg);
  if (!root) return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", msg);
  const char *decision = json_string_value(json_object_get(root, "decision"));
  const char *label = json_string_value(json_object_get(root, "label"));
  finch_labeling_outcome oc;
  json_t *o = NULL;
  finch_err err = {0};
  finch_status st = finch_labeling_submit(c->sl->conn, c->deployment, id, c->who->name, decision, label, &oc, &o, &err);
  enum MHD_Result ret;
  if (st == FINCH_OK)
    ret = serve__reply_json(conn, MHD_HTTP_OK, o, NULL);
  else if (st == FINCH_EINVAL)
    ret = serve__reply_error(conn,
                            oc == FINCH_LABELING_NOT_FOUND  ? MHD_HTTP_NOT_FOUND
                            : oc == FINCH_LABELING_CONFLICT ? MHD_HTTP_CONFLICT
                                                            : MHD_HTTP_BAD_REQUEST,
                            NULL, "%s", err.msg);
  else
    ret = serve__db_failed(conn, "labelling", &err);
  json_decref(root);
  return ret;
}

enum MHD_Result serve__stats(const serve_call *c) {
  json_t *o;
  finch_err err = {0};
  if (finch_labeling_stats(c->sl->conn, c->deployment, &o, &err))
    return serve__db_failed(c->conn, "labelling stats", &err);
  return serve__reply_json(c->conn, MHD_HTTP_OK, o, NULL);
}

/* --- rollout -------------------------------------------------------------- */

enum MHD_Result serve__rollout_get(const serve_call *c) {
  json_t *o;
  finch_err err = {0};
  const char *sha = serve__req_model(c->srv, c->req)->sha256;
  if (finch_rollout_status_json(c->sl->conn, c->deployment, sha, &c->srv->gate, &o, &err))
    return serve__db_failed(c->conn, "rollout status", &err);
  json_object_set_new(o, "model", json_string(sha));
  return serve__reply_json(c->conn, MHD_HTTP_OK, o, NULL);
}

enum MHD_Result serve__rollout_post(const serve_call *c) {
  finch_server *srv = c->srv;
  struct MHD_Connection *conn = c->conn;
  const char *deployment = c->deployment;
  char msg[512];
  json_t *root = serve_body_object(c->req, msg, sizeof msg);
  if (!root) return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", msg);
  const char *action = json_string_value(json_object_get(root, "action"));
  json_t *jcs = json_object_get(root, "canary_share"), *jmc = json_object_get(root, "min_confidence");
  json_t *jint = json_object_get(root, "intent"), *jto = json_object_get(root, "to");
  enum MHD_Result ret;
  if (!action || (strcmp(action, "promote") != 0 && strcmp(action, "rollback") != 0)) {
    ret = serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "\"action\" must be \"promote\" or \"rollback\"");
  } else if ((jcs && (!json_is_number(jcs) || json_number_value(jcs) < 0 || json_number_value(jcs) > 1)) ||
             (jmc && (!json_is_number(jmc) || json_number_value(jmc) < 0 || json_number_value(jmc) > 1))) {
    ret = serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "canary_share and min_confidence must be numbers in [0, 1]");
  } else if ((jint && !json_is_null(jint) && !json_is_string(jint)) || (jto && !json_is_null(jto) && !json_is_string(jto))) {
    ret = serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "\"intent\" and \"to\" must be strings");
  } else {
    char actor[160];
    snprintf(actor, sizeof actor, "key:%s#%lld", c->who->name, c->who->id);
    finch_rollout_change ch = {.deployment = deployment,
                               .intent = json_string_value(jint),
                               .action = strcmp(action, "promote") == 0 ? FINCH_ROLLOUT_PROMOTE : FINCH_ROLLOUT_ROLLBACK,
                               .to = json_string_value(jto),
                               .actor = actor,
                               .reason = json_string_value(json_object_get(root, "reason")),
                               .model_sha256 = serve__req_model(srv, c->req)->sha256,
                               .canary_share = jcs ? json_number_value(jcs) : -1,
                               .min_confidence = jmc ? json_number_value(jmc) : -1,
                               .gate = srv->gate};
    int applied = 0;
    json_t *res = NULL;
    finch_err err = {0};
    finch_status st = finch_rollout_apply(c->sl->conn, &ch, &applied, &res, &err);
    if (st == FINCH_EINVAL)
      ret = serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", err.msg);
    else if (st)
      ret = serve__db_failed(conn, "rollout change", &err);
    else if (!applied) {
      json_object_set_new(res, "error", json_string("promotion refused by the gate"));
      ret = serve__reply_json(conn, MHD_HTTP_CONFLICT, res, NULL);
    } else {
      finch_info("serve: rollout %s %s: %s -> %s by %s", action, deployment,
                 json_string_value(json_object_get(res, "from")), json_string_value(json_object_get(res, "to")),
                 actor);
      ret = serve__reply_json(conn, MHD_HTTP_OK, res, NULL);
    }
  }
  json_decref(root);
  return ret;
}

