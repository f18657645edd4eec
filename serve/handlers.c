/* The database-mode handlers of the intent server (serve/server_internal.h):
 * conversation turns, the labelling queue and the rollout, each committing
 * in one transaction with the webhook rows that report it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/text.h"
#include "serve/labeling.h"
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

/* The ?deployment= of the request, else the server's; NULL when malformed. */
const char *serve__deployment(finch_server *srv, struct MHD_Connection *conn) {
  const char *d = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "deployment");
  if (!d) return srv->deployment;
  return serve__id_ok(d, 100) ? d : NULL;
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

/* Queues one webhook event in c's open transaction; payload is consumed. */
static finch_status serve_emit(PGconn *c, const char *type, json_t *payload, finch_err *err) {
  char *text = payload ? json_dumps(payload, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
  json_decref(payload);
  if (!text) return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  int queued = 0;
  finch_status st = finch_webhook_emit(c, type, text, &queued, err);
  free(text);
  return st;
}

static double serve_param(const json_t *params, const char *name, double dflt) {
  json_t *v = json_object_get(params, name);
  return json_is_number(v) ? json_number_value(v) : dflt;
}

/* --- POST /v1/conversations/{id}/turns ------------------------------------- */

typedef struct {
  const char *deployment, *conversation, *speaker, *text; /* text: normalised and redacted */
  const char *model_intent;
  double model_conf;
  const char *rule_intent;
  const char *model_sha; /* the model's SHA-256 (hex) */
  long long key_id;
} serve_turn_in;

typedef struct {
  finch_rollout_decision d;
  finch_stage stage;
  long long turn_id, task_id;
  int turn_index, handoff;
} serve_turn_out;

/* The turn's transaction: stage, decision, the turn row, a labelling task,
 * and the events, all committed together. */
static finch_status serve_turn_tx(finch_server *srv, PGconn *c, const serve_turn_in *in, serve_turn_out *o,
                                  finch_err *err) {
  memset(o, 0, sizeof *o);
  int user = strcmp(in->speaker, "user") == 0;
  finch_rollout_state state = {0};
  finch_status st = serve__pq_run(c, "BEGIN", 0, NULL, err);
  if (st) return st;
  const char *lp[2] = {in->deployment, in->conversation};
  if ((st = serve__pq_run(c, "SELECT pg_advisory_xact_lock(hashtextextended('finch.turn:' || $1 || '/' || $2, 0))",
                          2, lp, err)))
    goto fail;
  if (user) {
    if ((st = finch_rollout_get(c, in->deployment, in->model_intent, &state, err))) goto fail;
    finch_rollout_policy pol = {
        .stage = state.stage,
        .canary_share = serve_param(state.params, "canary_share", srv->canary_share),
        .min_confidence = serve_param(state.params, "min_confidence", srv->min_confidence),
        .oos_label = srv->oos_label,
    };
    finch_rollout_inputs fin = {.rule_intent = in->rule_intent, .model_intent = in->model_intent,
                                .model_confidence = in->model_conf,
                                .bucket = finch_rollout_bucket(in->deployment, in->conversation)};
    o->d = finch_rollout_decide(&pol, &fin);
    o->stage = state.stage;
    o->handoff = o->d.confidence < srv->handoff_below;
  }
  char conf[32], mconf[32], key[32];
  snprintf(conf, sizeof conf, "%.6f", o->d.confidence);
  snprintf(mconf, sizeof mconf, "%.6f", in->model_conf);
  snprintf(key, sizeof key, "%lld", in->key_id);
  const char *tp[15] = {in->deployment,
                        in->conversation,
                        in->speaker,
                        in->text,
                        user ? finch_stage_name(o->stage) : NULL,
                        user ? finch_engine_name(o->d.engine) : NULL,
                        user ? o->d.intent : NULL,
                        user ? conf : NULL,
                        user ? in->rule_intent : NULL,
                        user ? in->model_intent : NULL,
                        user ? mconf : NULL,
                        user ? in->model_sha : NULL,
                        user && o->stage == FINCH_STAGE_CANARY ? (o->d.in_canary ? "true" : "false") : NULL,
                        o->handoff ? "true" : "false",
                        in->key_id ? key : NULL};
  PGresult *r = serve__pq(c,
                          "INSERT INTO conversation_turns (deployment, conversation_id, turn_index, speaker, text, stage,"
                          " engine, intent, confidence, rule_intent, model_intent, model_confidence, model_sha256,"
                          " in_canary, handoff, api_key_id)"
                          " SELECT $1, $2, coalesce(max(turn_index) + 1, 0), $3, $4, $5, $6, $7, $8::real, $9, $10,"
                          " $11::real, $12, $13::boolean, $14::boolean, $15::bigint"
                          " FROM conversation_turns WHERE deployment = $1 AND conversation_id = $2"
                          " RETURNING id, turn_index",
                          15, tp, err);
  if (!r) {
    st = FINCH_EDB;
    goto fail;
  }
  o->turn_id = atoll(PQgetvalue(r, 0, 0));
  o->turn_index = atoi(PQgetvalue(r, 0, 1));
  PQclear(r);
  if (!user) goto commit;

  if (o->d.task != FINCH_TASK_NONE) {
    finch_labeling_new t = {.deployment = in->deployment, .conversation_id = in->conversation, .turn_id = o->turn_id,
                            .text = in->text, .suggested_label = in->model_intent,
                            .suggested_confidence = in->model_conf, .model_sha256 = in->model_sha,
                            .rule_label = in->rule_intent, .stage = finch_stage_name(o->stage),
                            .reason = finch_task_reason_name(o->d.task)};
    if ((st = finch_labeling_task_create(c, &t, &o->task_id, err))) goto fail;
    if ((st = serve_emit(c, "labeling.task_created",
                         json_pack("{s:I, s:s, s:s, s:i, s:s, s:s, s:{s:s, s:f, s:s}, s:o}", "task_id",
                                   (json_int_t)o->task_id, "deployment", in->deployment, "conversation_id",
                                   in->conversation, "turn", o->turn_index, "reason",
                                   finch_task_reason_name(o->d.task), "stage", finch_stage_name(o->stage),
                                   "suggestion", "intent", in->model_intent, "confidence", in->model_conf, "model",
                                   in->model_sha, "rule_intent",
                                   in->rule_intent ? json_string(in->rule_intent) : json_null()),
                         err)))
      goto fail;
  }
  if ((st = serve_emit(c, "intent.classified",
                       json_pack("{s:s, s:s, s:i, s:o, s:s, s:f, s:s, s:s}", "deployment", in->deployment,
                                 "conversation_id", in->conversation, "turn", o->turn_index, "intent",
                                 o->d.intent ? json_string(o->d.intent) : json_null(), "engine",
                                 finch_engine_name(o->d.engine), "confidence", o->d.confidence, "stage",
                                 finch_stage_name(o->stage), "model", in->model_sha),
                       err)))
    goto fail;
  if (o->handoff &&
      (st = serve_emit(c, "handoff.requested",
                       json_pack("{s:s, s:s, s:i, s:o, s:s, s:f, s:f, s:s}", "deployment", in->deployment,
                                 "conversation_id", in->conversation, "turn", o->turn_index, "intent",
                                 o->d.intent ? json_string(o->d.intent) : json_null(), "engine",
                                 finch_engine_name(o->d.engine), "confidence", o->d.confidence, "threshold",
                                 srv->handoff_below, "stage", finch_stage_name(o->stage)),
                       err)))
    goto fail;
commit:
  if ((st = serve__pq_run(c, "COMMIT", 0, NULL, err))) goto fail;
  finch_rollout_state_clear(&state);
  return FINCH_OK;
fail:
  serve__pq_rollback(c);
  finch_rollout_state_clear(&state);
  return st;
}

enum MHD_Result serve__turn(finch_server *srv, struct MHD_Connection *conn, serve_request *req,
                                  serve_slot *sl, const finch_principal *who, const char *deployment) {
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
  if (finch_redact(sl->redactor, norm, strlen(norm), &red, NULL, &err) != FINCH_OK) {
    finch_error("serve: redaction failed (%s)", finch_status_str(err.code));
    ret = serve__reply_error(conn, err.code == FINCH_EFORMAT ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_INTERNAL_SERVER_ERROR,
                            NULL, "the text could not be redacted, so it was not stored");
    goto out;
  }
  if (srv->log_text) req->log_text = strdup(red);
  const serve_model *m = serve__req_model(srv, req);
  serve_turn_in in = {.deployment = deployment, .conversation = req->arg, .speaker = speaker, .text = red,
                      .model_sha = m->sha256, .key_id = who->id};
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
    in.model_intent = nn_model_label(m->nn, (size_t)k);
    in.model_conf = probs[k];
    in.rule_intent = srv->rules ? finch_rules_match(srv->rules, red, strlen(red), NULL, NULL) : NULL;
  }
  serve_turn_out o;
  if (serve_turn_tx(srv, sl->conn, &in, &o, &err) != FINCH_OK) {
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
    json_object_set_new(res, "model", json_string(m->sha256));
    req->engine = finch_engine_name(o.d.engine);
    req->intent = o.d.intent; /* a model label or a rule's intent: both outlive the request */
    req->confidence = o.d.confidence;
    serve__metrics_decision(&srv->metrics, o.d.fallback                      ? SERVE_DECISION_FALLBACK
                                           : o.d.engine == FINCH_ENGINE_MODEL ? SERVE_DECISION_MODEL
                                                                              : SERVE_DECISION_RULES);
    if (o.d.fallback) json_object_set_new(res, "fallback", json_true());
    if (o.d.suggest)
      json_object_set_new(res, "suggestion",
                          json_pack("{s:s, s:f}", "intent", in.model_intent, "confidence", in.model_conf));
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

enum MHD_Result serve__tasks(finch_server *srv, struct MHD_Connection *conn, serve_slot *sl,
                                   const char *deployment) {
  (void)srv;
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
  finch_status st = finch_labeling_list(sl->conn, &f, &o, &err);
  if (st == FINCH_EINVAL) return serve__reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", err.msg);
  if (st) return serve__db_failed(conn, "listing tasks", &err);
  return serve__reply_json(conn, MHD_HTTP_OK, o, NULL);
}

enum MHD_Result serve__task_label(finch_server *srv, struct MHD_Connection *conn, const serve_request *req,
                                        serve_slot *sl, const finch_principal *who, const char *deployment) {
  (void)srv;
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
  finch_status st = finch_labeling_submit(sl->conn, deployment, id, who->name, decision, label, &oc, &o, &err);
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

enum MHD_Result serve__stats(struct MHD_Connection *conn, serve_slot *sl, const char *deployment) {
  json_t *o;
  finch_err err = {0};
  if (finch_labeling_stats(sl->conn, deployment, &o, &err)) return serve__db_failed(conn, "labelling stats", &err);
  return serve__reply_json(conn, MHD_HTTP_OK, o, NULL);
}

/* --- rollout -------------------------------------------------------------- */

enum MHD_Result serve__rollout_get(finch_server *srv, struct MHD_Connection *conn, serve_request *req,
                                         serve_slot *sl, const char *deployment) {
  json_t *o;
  finch_err err = {0};
  const char *sha = serve__req_model(srv, req)->sha256;
  if (finch_rollout_status_json(sl->conn, deployment, sha, &srv->gate, &o, &err))
    return serve__db_failed(conn, "rollout status", &err);
  json_object_set_new(o, "model", json_string(sha));
  return serve__reply_json(conn, MHD_HTTP_OK, o, NULL);
}

enum MHD_Result serve__rollout_post(finch_server *srv, struct MHD_Connection *conn, serve_request *req,
                                          serve_slot *sl, const finch_principal *who, const char *deployment) {
  char msg[512];
  json_t *root = serve_body_object(req, msg, sizeof msg);
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
    snprintf(actor, sizeof actor, "key:%s#%lld", who->name, who->id);
    finch_rollout_change ch = {.deployment = deployment,
                               .intent = json_string_value(jint),
                               .action = strcmp(action, "promote") == 0 ? FINCH_ROLLOUT_PROMOTE : FINCH_ROLLOUT_ROLLBACK,
                               .to = json_string_value(jto),
                               .actor = actor,
                               .reason = json_string_value(json_object_get(root, "reason")),
                               .model_sha256 = serve__req_model(srv, req)->sha256,
                               .canary_share = jcs ? json_number_value(jcs) : -1,
                               .min_confidence = jmc ? json_number_value(jmc) : -1,
                               .gate = srv->gate};
    int applied = 0;
    json_t *res = NULL;
    finch_err err = {0};
    finch_status st = finch_rollout_apply(sl->conn, &ch, &applied, &res, &err);
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

