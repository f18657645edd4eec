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
 * logged: it is customer data (core/log.h).
 *
 * Database mode. With opts->conninfo the server keeps one slot per MHD
 * thread, each a PostgreSQL connection and a redactor (neither may be shared
 * between threads); a handler borrows a slot for the whole request. Checks
 * run in a fixed order once the request is read: route (404/405), database
 * (503), key (401/403), rate (429), size (413), then the handler. Turns,
 * labels and rollout changes each commit in one transaction together with
 * the webhook rows that report them. */
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
#include "core/redact.h"
#include "core/text.h"
#include "nn/model.h"
#include "serve/auth.h"
#include "serve/labeling.h"
#include "serve/pq.h"
#include "serve/rollout.h"
#include "serve/rules.h"
#include "serve/webhook.h"

enum {
  SERVE_DEFAULT_MAX_BODY = 64 * 1024,
  SERVE_DEFAULT_THREADS = 2,
  SERVE_CONNECTION_TIMEOUT_S = 30, /* idle or stalled clients are dropped */
  SERVE_STOP_GRACE_MS = 2000,      /* how long stop waits for open connections */
  SERVE_ID_MAX = 128,              /* conversation ids */
};

/* One thread's database connection and redactor (database mode). */
typedef struct {
  PGconn *conn;
  finch_redactor *redactor;
} serve_slot;

struct finch_server {
  struct MHD_Daemon *daemon;
  nn_model *model;
  size_t n_labels;
  char sha256[FINCH_SHA256_HEX_LEN];
  size_t max_body;
  unsigned port;

  /* Database mode (conninfo set); all NULL/0 otherwise. */
  int has_db;
  finch_rules *rules;
  char *deployment, *oos_label;
  double min_confidence, canary_share, handoff_below;
  finch_gate_opts gate;
  finch_ratelimit *rl;
  finch_webhook_worker *webhooks;
  serve_slot *slots;
  size_t n_slots;
  int *slot_free; /* stack of free slot indices */
  size_t n_free;
  pthread_mutex_t pool_lock;
  pthread_cond_t pool_cond;

  /* While the daemon starts, MHD's own error messages are kept here, so that
   * the start error can say why (bind failures and the like); afterwards they
   * go to the log. */
  pthread_mutex_t log_lock;
  int starting;
  char start_error[512];
};

typedef enum {
  SERVE_ROUTE_INTENT,     /* POST /v1/intent */
  SERVE_ROUTE_HEALTH,     /* GET or HEAD /healthz */
  SERVE_ROUTE_TURNS,      /* POST /v1/conversations/{id}/turns */
  SERVE_ROUTE_TASKS,      /* GET /v1/labeling/tasks */
  SERVE_ROUTE_TASK,       /* POST /v1/labeling/tasks/{id} */
  SERVE_ROUTE_STATS,      /* GET /v1/labeling/stats */
  SERVE_ROUTE_ROLLOUT,    /* GET or POST /v1/rollout */
  SERVE_ROUTE_METHOD,     /* a known path with another method: 405 */
  SERVE_ROUTE_NOT_FOUND,  /* 404 */
} serve_route;

enum { ROLE_I = FINCH_ROLE_INTEGRATION, ROLE_L = FINCH_ROLE_LABELER, ROLE_A = FINCH_ROLE_ADMIN };

/* Per-request state, allocated on the handler's first call and freed by
 * serve_completed(). Only POST requests to a known route keep their body. */
typedef struct {
  serve_route route;
  const char *path;     /* the route's name in messages ("/v1/intent") */
  const char *allow;    /* methods the path takes (405's Allow) */
  unsigned roles;       /* roles admitted; 0 = no key needed */
  int needs_db, post;
  char arg[SERVE_ID_MAX + 1]; /* {id} of the path */
  char *body; /* body bytes so far (not NUL-terminated) */
  size_t len, cap;
  int too_big; /* the body passed max_body; the rest is discarded */
} serve_request;

/* --- responses ------------------------------------------------------------ */

/* Queues obj (consumed) as the JSON response with the given status and
 * optional extra header hname: hval. */
static enum MHD_Result serve_reply_json_h(struct MHD_Connection *conn, unsigned status, json_t *obj,
                                          const char *hname, const char *hval) {
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
  if (hname && hval) MHD_add_response_header(resp, hname, hval);
  enum MHD_Result ret = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result serve_reply_json(struct MHD_Connection *conn, unsigned status, json_t *obj,
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

static enum MHD_Result serve_reply_error(struct MHD_Connection *conn, unsigned status,
                                         const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* {"error": message}. Messages may quote the client (a method, a URL, the
 * JSON parser's view of the body): a string JSON cannot carry is cut at its
 * first bad byte (a character truncated by the buffer, in practice). */
static enum MHD_Result serve_reply_error(struct MHD_Connection *conn, unsigned status,
                                         const char *allow, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  json_t *o = serve_error_obj(fmt, ap);
  va_end(ap);
  return serve_reply_json(conn, status, o, allow);
}

static enum MHD_Result serve_reply_error_h(struct MHD_Connection *conn, unsigned status, const char *hname,
                                           const char *hval, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum MHD_Result serve_reply_error_h(struct MHD_Connection *conn, unsigned status, const char *hname,
                                           const char *hval, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  json_t *o = serve_error_obj(fmt, ap);
  va_end(ap);
  return serve_reply_json_h(conn, status, o, hname, hval);
}

/* A database failure: the primary message goes to the log (never the detail
 * lines, which may quote values), the client gets 503. */
static enum MHD_Result serve_db_failed(struct MHD_Connection *conn, const char *what, const finch_err *err) {
  char msg[300];
  snprintf(msg, sizeof msg, "%s", err->msg);
  char *nl = strchr(msg, '\n');
  if (nl) *nl = '\0';
  finch_error("serve: %s: %s", what, msg);
  return serve_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, "%s failed: the database is unavailable",
                           what);
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
                          json_pack("{s:s, s:s, s:b}", "status", "ok", "model", srv->sha256, "database",
                                    srv->has_db),
                          NULL);
}

/* --- database-mode helpers ------------------------------------------------ */

static serve_slot *serve_slot_get(finch_server *srv) {
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

static void serve_slot_put(finch_server *srv, serve_slot *sl) {
  serve__pq_rollback(sl->conn); /* a handler never leaves a transaction open; this is a safety net */
  pthread_mutex_lock(&srv->pool_lock);
  srv->slot_free[srv->n_free++] = (int)(sl - srv->slots);
  pthread_cond_signal(&srv->pool_cond);
  pthread_mutex_unlock(&srv->pool_lock);
}

/* 1 when s is 1..max bytes of [A-Za-z0-9._:-]. */
static int serve_id_ok(const char *s, size_t max) {
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
static const char *serve_deployment(finch_server *srv, struct MHD_Connection *conn) {
  const char *d = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "deployment");
  if (!d) return srv->deployment;
  return serve_id_ok(d, 100) ? d : NULL;
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
                        user ? srv->sha256 : NULL,
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
                            .suggested_confidence = in->model_conf, .model_sha256 = srv->sha256,
                            .rule_label = in->rule_intent, .stage = finch_stage_name(o->stage),
                            .reason = finch_task_reason_name(o->d.task)};
    if ((st = finch_labeling_task_create(c, &t, &o->task_id, err))) goto fail;
    if ((st = serve_emit(c, "labeling.task_created",
                         json_pack("{s:I, s:s, s:s, s:i, s:s, s:s, s:{s:s, s:f, s:s}, s:o}", "task_id",
                                   (json_int_t)o->task_id, "deployment", in->deployment, "conversation_id",
                                   in->conversation, "turn", o->turn_index, "reason",
                                   finch_task_reason_name(o->d.task), "stage", finch_stage_name(o->stage),
                                   "suggestion", "intent", in->model_intent, "confidence", in->model_conf, "model",
                                   srv->sha256, "rule_intent",
                                   in->rule_intent ? json_string(in->rule_intent) : json_null()),
                         err)))
      goto fail;
  }
  if ((st = serve_emit(c, "intent.classified",
                       json_pack("{s:s, s:s, s:i, s:o, s:s, s:f, s:s, s:s}", "deployment", in->deployment,
                                 "conversation_id", in->conversation, "turn", o->turn_index, "intent",
                                 o->d.intent ? json_string(o->d.intent) : json_null(), "engine",
                                 finch_engine_name(o->d.engine), "confidence", o->d.confidence, "stage",
                                 finch_stage_name(o->stage), "model", srv->sha256),
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

static enum MHD_Result serve_turn(finch_server *srv, struct MHD_Connection *conn, const serve_request *req,
                                  serve_slot *sl, const finch_principal *who, const char *deployment) {
  if (!serve_id_ok(req->arg, SERVE_ID_MAX))
    return serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "conversation id must be 1 to %d characters of A-Z a-z 0-9 . _ : -", SERVE_ID_MAX);
  char msg[512];
  json_t *root = serve_body_object(req, msg, sizeof msg);
  if (!root) return serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", msg);
  json_t *jtext = json_object_get(root, "text"), *jspeaker = json_object_get(root, "speaker");
  const char *text = json_string_value(jtext);
  const char *speaker = jspeaker ? json_string_value(jspeaker) : "user";
  enum MHD_Result ret;
  char *norm = NULL, *red = NULL;
  float *probs = NULL;
  finch_err err = {0};
  if (!jtext) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "missing field \"text\"");
    goto out;
  }
  if (!text || strlen(text) != json_string_length(jtext)) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "field \"text\" must be a string of UTF-8 text");
    goto out;
  }
  if (!speaker || (strcmp(speaker, "user") != 0 && strcmp(speaker, "agent") != 0)) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "field \"speaker\" must be \"user\" or \"agent\"");
    goto out;
  }
  if (finch_text_normalize(text, strlen(text), 0, &norm, &err) != FINCH_OK) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "field \"text\" cannot be normalised");
    goto out;
  }
  if (!norm[0]) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "field \"text\" is empty");
    goto out;
  }
  /* Fails closed: without a redacted text nothing is stored or classified. */
  if (finch_redact(sl->redactor, norm, strlen(norm), &red, NULL, &err) != FINCH_OK) {
    finch_error("serve: redaction failed (%s)", finch_status_str(err.code));
    ret = serve_reply_error(conn, err.code == FINCH_EFORMAT ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_INTERNAL_SERVER_ERROR,
                            NULL, "the text could not be redacted, so it was not stored");
    goto out;
  }
  serve_turn_in in = {.deployment = deployment, .conversation = req->arg, .speaker = speaker, .text = red,
                      .key_id = who->id};
  int user = strcmp(speaker, "user") == 0;
  if (user) {
    probs = malloc(srv->n_labels * sizeof *probs);
    int k = probs ? nn_model_predict(srv->model, red, probs, 1.0f) : -1;
    if (k < 0 || (size_t)k >= srv->n_labels || !isfinite(probs[k])) {
      finch_error("serve: prediction failed (label index %d of %zu)", k, srv->n_labels);
      ret = serve_reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "the model produced no prediction");
      goto out;
    }
    in.model_intent = nn_model_label(srv->model, (size_t)k);
    in.model_conf = probs[k];
    in.rule_intent = srv->rules ? finch_rules_match(srv->rules, red, strlen(red), NULL, NULL) : NULL;
  }
  serve_turn_out o;
  if (serve_turn_tx(srv, sl->conn, &in, &o, &err) != FINCH_OK) {
    ret = serve_db_failed(conn, "turn", &err);
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
    json_object_set_new(res, "model", json_string(srv->sha256));
    if (o.d.fallback) json_object_set_new(res, "fallback", json_true());
    if (o.d.suggest)
      json_object_set_new(res, "suggestion",
                          json_pack("{s:s, s:f}", "intent", in.model_intent, "confidence", in.model_conf));
    if (o.task_id) json_object_set_new(res, "labeling_task", json_integer(o.task_id));
  }
  ret = serve_reply_json(conn, MHD_HTTP_OK, res, NULL);
out:
  free(probs);
  free(norm);
  free(red);
  json_decref(root);
  return ret;
}

/* --- labelling ------------------------------------------------------------ */

static enum MHD_Result serve_tasks(finch_server *srv, struct MHD_Connection *conn, serve_slot *sl,
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
    return serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "min_confidence, max_confidence, limit and after must be numbers");
  f.limit = (long)limit;
  f.after_id = (long long)after;
  json_t *o;
  finch_err err = {0};
  finch_status st = finch_labeling_list(sl->conn, &f, &o, &err);
  if (st == FINCH_EINVAL) return serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", err.msg);
  if (st) return serve_db_failed(conn, "listing tasks", &err);
  return serve_reply_json(conn, MHD_HTTP_OK, o, NULL);
}

static enum MHD_Result serve_task_label(finch_server *srv, struct MHD_Connection *conn, const serve_request *req,
                                        serve_slot *sl, const finch_principal *who, const char *deployment) {
  (void)srv;
  char *end;
  errno = 0;
  long long id = strtoll(req->arg, &end, 10);
  if (errno || end == req->arg || *end || id <= 0)
    return serve_reply_error(conn, MHD_HTTP_NOT_FOUND, NULL, "no labelling task %s", req->arg);
  char msg[512];
  json_t *root = serve_body_object(req, msg, sizeof msg);
  if (!root) return serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", msg);
  const char *decision = json_string_value(json_object_get(root, "decision"));
  const char *label = json_string_value(json_object_get(root, "label"));
  finch_labeling_outcome oc;
  json_t *o = NULL;
  finch_err err = {0};
  finch_status st = finch_labeling_submit(sl->conn, deployment, id, who->name, decision, label, &oc, &o, &err);
  enum MHD_Result ret;
  if (st == FINCH_OK)
    ret = serve_reply_json(conn, MHD_HTTP_OK, o, NULL);
  else if (st == FINCH_EINVAL)
    ret = serve_reply_error(conn,
                            oc == FINCH_LABELING_NOT_FOUND  ? MHD_HTTP_NOT_FOUND
                            : oc == FINCH_LABELING_CONFLICT ? MHD_HTTP_CONFLICT
                                                            : MHD_HTTP_BAD_REQUEST,
                            NULL, "%s", err.msg);
  else
    ret = serve_db_failed(conn, "labelling", &err);
  json_decref(root);
  return ret;
}

static enum MHD_Result serve_stats(struct MHD_Connection *conn, serve_slot *sl, const char *deployment) {
  json_t *o;
  finch_err err = {0};
  if (finch_labeling_stats(sl->conn, deployment, &o, &err)) return serve_db_failed(conn, "labelling stats", &err);
  return serve_reply_json(conn, MHD_HTTP_OK, o, NULL);
}

/* --- rollout -------------------------------------------------------------- */

static enum MHD_Result serve_rollout_get(finch_server *srv, struct MHD_Connection *conn, serve_slot *sl,
                                         const char *deployment) {
  json_t *o;
  finch_err err = {0};
  if (finch_rollout_status_json(sl->conn, deployment, srv->sha256, &srv->gate, &o, &err))
    return serve_db_failed(conn, "rollout status", &err);
  json_object_set_new(o, "model", json_string(srv->sha256));
  return serve_reply_json(conn, MHD_HTTP_OK, o, NULL);
}

static enum MHD_Result serve_rollout_post(finch_server *srv, struct MHD_Connection *conn, const serve_request *req,
                                          serve_slot *sl, const finch_principal *who, const char *deployment) {
  char msg[512];
  json_t *root = serve_body_object(req, msg, sizeof msg);
  if (!root) return serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", msg);
  const char *action = json_string_value(json_object_get(root, "action"));
  json_t *jcs = json_object_get(root, "canary_share"), *jmc = json_object_get(root, "min_confidence");
  json_t *jint = json_object_get(root, "intent"), *jto = json_object_get(root, "to");
  enum MHD_Result ret;
  if (!action || (strcmp(action, "promote") != 0 && strcmp(action, "rollback") != 0)) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "\"action\" must be \"promote\" or \"rollback\"");
  } else if ((jcs && (!json_is_number(jcs) || json_number_value(jcs) < 0 || json_number_value(jcs) > 1)) ||
             (jmc && (!json_is_number(jmc) || json_number_value(jmc) < 0 || json_number_value(jmc) > 1))) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "canary_share and min_confidence must be numbers in [0, 1]");
  } else if ((jint && !json_is_null(jint) && !json_is_string(jint)) || (jto && !json_is_null(jto) && !json_is_string(jto))) {
    ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "\"intent\" and \"to\" must be strings");
  } else {
    char actor[160];
    snprintf(actor, sizeof actor, "key:%s#%lld", who->name, who->id);
    finch_rollout_change ch = {.deployment = deployment,
                               .intent = json_string_value(jint),
                               .action = strcmp(action, "promote") == 0 ? FINCH_ROLLOUT_PROMOTE : FINCH_ROLLOUT_ROLLBACK,
                               .to = json_string_value(jto),
                               .actor = actor,
                               .reason = json_string_value(json_object_get(root, "reason")),
                               .model_sha256 = srv->sha256,
                               .canary_share = jcs ? json_number_value(jcs) : -1,
                               .min_confidence = jmc ? json_number_value(jmc) : -1,
                               .gate = srv->gate};
    int applied = 0;
    json_t *res = NULL;
    finch_err err = {0};
    finch_status st = finch_rollout_apply(sl->conn, &ch, &applied, &res, &err);
    if (st == FINCH_EINVAL)
      ret = serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "%s", err.msg);
    else if (st)
      ret = serve_db_failed(conn, "rollout change", &err);
    else if (!applied) {
      json_object_set_new(res, "error", json_string("promotion refused by the gate"));
      ret = serve_reply_json(conn, MHD_HTTP_CONFLICT, res, NULL);
    } else {
      finch_info("serve: rollout %s %s: %s -> %s by %s", action, deployment,
                 json_string_value(json_object_get(res, "from")), json_string_value(json_object_get(res, "to")),
                 actor);
      ret = serve_reply_json(conn, MHD_HTTP_OK, res, NULL);
    }
  }
  json_decref(root);
  return ret;
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

static double serve_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Database mode, after routing: key, role, rate, size, then the handler. */
static enum MHD_Result serve_dispatch_db(finch_server *srv, struct MHD_Connection *conn, const serve_request *req,
                                         const char *method) {
  const char *deployment = serve_deployment(srv, conn);
  if (!deployment)
    return serve_reply_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
                             "deployment must be 1 to 100 characters of A-Z a-z 0-9 . _ : -");
  serve_slot *sl = serve_slot_get(srv);
  enum MHD_Result ret;
  finch_principal who;
  finch_err err = {0};
  size_t klen = 0;
  const char *key =
      finch_auth_bearer(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), &klen);
  finch_status st = key ? finch_auth_lookup(sl->conn, key, klen, &who, &err) : FINCH_ENOTFOUND;
  double retry = 0;
  if (!key) {
    ret = serve_reply_error_h(conn, MHD_HTTP_UNAUTHORIZED, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer",
                              "missing API key: send \"Authorization: Bearer <key>\"");
  } else if (st == FINCH_ENOTFOUND) {
    ret = serve_reply_error_h(conn, MHD_HTTP_UNAUTHORIZED, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer",
                              "unknown or revoked API key");
  } else if (st) {
    ret = serve_db_failed(conn, "key lookup", &err);
  } else if (!finch_role_allows(who.role, req->roles)) {
    ret = serve_reply_error(conn, MHD_HTTP_FORBIDDEN, NULL, "a key of role %s may not use %s %s",
                            finch_role_name(who.role), method, req->path);
  } else if (srv->rl && !finch_ratelimit_take(srv->rl, who.id, serve_now_s(), &retry)) {
    char after[32];
    snprintf(after, sizeof after, "%.0f", ceil(retry));
    ret = serve_reply_error_h(conn, MHD_HTTP_TOO_MANY_REQUESTS, MHD_HTTP_HEADER_RETRY_AFTER, after,
                              "rate limit exceeded for this key; retry after %s s", after);
  } else if (req->too_big) {
    ret = serve_reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL, "request body exceeds the limit of %zu bytes",
                            srv->max_body);
  } else {
    switch (req->route) {
    case SERVE_ROUTE_INTENT:
      ret = serve_intent(srv, conn, req);
      break;
    case SERVE_ROUTE_TURNS:
      ret = serve_turn(srv, conn, req, sl, &who, deployment);
      break;
    case SERVE_ROUTE_TASKS:
      ret = serve_tasks(srv, conn, sl, deployment);
      break;
    case SERVE_ROUTE_TASK:
      ret = serve_task_label(srv, conn, req, sl, &who, deployment);
      break;
    case SERVE_ROUTE_STATS:
      ret = serve_stats(conn, sl, deployment);
      break;
    case SERVE_ROUTE_ROLLOUT:
      if (strcmp(method, MHD_HTTP_METHOD_POST) == 0) {
        if (!finch_role_allows(who.role, ROLE_A))
          ret = serve_reply_error(conn, MHD_HTTP_FORBIDDEN, NULL, "a key of role %s may not use POST /v1/rollout",
                                  finch_role_name(who.role));
        else
          ret = serve_rollout_post(srv, conn, req, sl, &who, deployment);
      } else {
        ret = serve_rollout_get(srv, conn, sl, deployment);
      }
      break;
    default:
      ret = serve_reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "internal error: unrouted request");
      break;
    }
  }
  serve_slot_put(srv, sl);
  return ret;
}

/* Answers a request whose route was decided on its first call. */
static enum MHD_Result serve_finish(finch_server *srv, struct MHD_Connection *conn,
                                    const serve_request *req, const char *url,
                                    const char *method) {
  switch (req->route) {
  case SERVE_ROUTE_NOT_FOUND:
    return serve_not_found(conn, url);
  case SERVE_ROUTE_METHOD:
    return serve_reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, req->allow, "method %s not allowed on %s; use %s",
                             method, req->path, req->allow);
  case SERVE_ROUTE_HEALTH:
    return serve_health(srv, conn);
  default:
    break;
  }
  if (!srv->has_db) {
    if (req->needs_db)
      return serve_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                               "%s needs finch's database, and this server runs without one (start finch serve "
                               "with --database-url or an embedded cluster under FINCH_HOME)",
                               req->path);
    if (req->too_big)
      return serve_reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                               "request body exceeds the limit of %zu bytes", srv->max_body);
    return serve_intent(srv, conn, req);
  }
  return serve_dispatch_db(srv, conn, req, method);
}

/* Decides the route from the path and the method. */
static serve_request serve_route_of(const char *url, const char *method) {
  serve_request r = {.route = SERVE_ROUTE_NOT_FOUND};
  int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0, post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
  int head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  static const char conv[] = "/v1/conversations/", tasks[] = "/v1/labeling/tasks";
  if (strcmp(url, "/v1/intent") == 0) {
    r = (serve_request){.route = SERVE_ROUTE_INTENT, .path = "/v1/intent", .allow = "POST", .roles = ROLE_I,
                        .post = 1};
    if (!post) r.route = SERVE_ROUTE_METHOD;
  } else if (strcmp(url, "/healthz") == 0) {
    r = (serve_request){.route = SERVE_ROUTE_HEALTH, .path = "/healthz", .allow = "GET, HEAD"};
    if (!get && !head) r.route = SERVE_ROUTE_METHOD;
  } else if (strncmp(url, conv, sizeof conv - 1) == 0) {
    const char *id = url + sizeof conv - 1, *slash = strchr(id, '/');
    if (!slash || slash == id || strcmp(slash, "/turns") != 0) return r;
    r = (serve_request){.route = SERVE_ROUTE_TURNS, .path = "/v1/conversations/{id}/turns", .allow = "POST",
                        .roles = ROLE_I, .needs_db = 1, .post = 1};
    size_t n = (size_t)(slash - id);
    if (n > SERVE_ID_MAX) n = 0; /* refused as malformed by the handler */
    memcpy(r.arg, id, n);
    r.arg[n] = '\0';
    if (!post) r.route = SERVE_ROUTE_METHOD;
  } else if (strcmp(url, tasks) == 0) {
    r = (serve_request){.route = SERVE_ROUTE_TASKS, .path = tasks, .allow = "GET", .roles = ROLE_L, .needs_db = 1};
    if (!get) r.route = SERVE_ROUTE_METHOD;
  } else if (strncmp(url, tasks, sizeof tasks - 1) == 0 && url[sizeof tasks - 1] == '/') {
    const char *id = url + sizeof tasks;
    size_t n = strlen(id);
    if (n == 0 || n > 20 || strspn(id, "0123456789") != n) return r;
    r = (serve_request){.route = SERVE_ROUTE_TASK, .path = "/v1/labeling/tasks/{id}", .allow = "POST",
                        .roles = ROLE_L, .needs_db = 1, .post = 1};
    memcpy(r.arg, id, n + 1);
    if (!post) r.route = SERVE_ROUTE_METHOD;
  } else if (strcmp(url, "/v1/labeling/stats") == 0) {
    r = (serve_request){.route = SERVE_ROUTE_STATS, .path = "/v1/labeling/stats", .allow = "GET", .roles = ROLE_L,
                        .needs_db = 1};
    if (!get) r.route = SERVE_ROUTE_METHOD;
  } else if (strcmp(url, "/v1/rollout") == 0) {
    r = (serve_request){.route = SERVE_ROUTE_ROLLOUT, .path = "/v1/rollout", .allow = "GET, POST",
                        .roles = ROLE_I | ROLE_L | ROLE_A, .needs_db = 1, .post = post};
    if (!get && !post) r.route = SERVE_ROUTE_METHOD;
  }
  if (r.route == SERVE_ROUTE_METHOD) r.post = 0;
  return r;
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
    serve_request first = serve_route_of(url, method);
    unsigned long long announced = serve_content_length(conn);
    if (announced > srv->max_body) {
      if (!first.post) return serve_finish(srv, conn, &first, url, method);
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
  finch_webhook_worker_stop(s->webhooks);
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
  nn_model_free(s->model);
  pthread_mutex_destroy(&s->log_lock);
  free(s);
}

/* Database mode: rules, one connection and redactor per thread, the rate
 * limiter and the webhook worker. */
static finch_status serve_open_db(finch_server *s, const finch_serve_opts *opts, unsigned threads, finch_err *err) {
  s->has_db = 1;
  pthread_mutex_init(&s->pool_lock, NULL);
  pthread_cond_init(&s->pool_cond, NULL);
  const char *dep = opts->deployment && *opts->deployment ? opts->deployment : "default";
  if (!serve_id_ok(dep, 100))
    return finch_err_set(err, FINCH_EINVAL, "serve: deployment \"%s\" is not 1 to 100 characters of A-Z a-z 0-9 . _ : -",
                         dep);
  s->deployment = strdup(dep);
  s->oos_label = opts->oos_label && *opts->oos_label ? strdup(opts->oos_label) : NULL;
  if (!s->deployment || (opts->oos_label && *opts->oos_label && !s->oos_label))
    return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  s->min_confidence = opts->min_confidence > 0 ? opts->min_confidence : 0.5;
  s->canary_share = opts->canary_share > 0 ? opts->canary_share : opts->canary_share < 0 ? 0.0 : 0.1;
  s->handoff_below = opts->handoff_below > 0 ? opts->handoff_below : 0.5;
  s->gate = opts->gate.confidence > 0 ? opts->gate : finch_gate_opts_default();
  if (s->min_confidence > 1 || s->canary_share > 1 || s->handoff_below > 1)
    return finch_err_set(err, FINCH_EINVAL, "serve: min_confidence, canary_share and handoff_below must be in [0, 1]");
  finch_status st;
  if (opts->rules_path && *opts->rules_path && (st = finch_rules_load(&s->rules, opts->rules_path, err))) {
    finch_err_prefix(err, "serve: cannot load rules");
    return st;
  }
  s->rl = finch_ratelimit_new(opts->rate_per_s > 0 ? opts->rate_per_s : 20.0,
                              opts->rate_burst >= 1 ? opts->rate_burst : 40.0);
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
  PGresult *r = serve__pq(s->slots[0].conn, "SELECT count(*) FROM api_keys", 0, NULL, err);
  if (!r) {
    finch_err_prefix(err, "serve: the database lacks finch's tables (run finch db migrate)");
    return FINCH_EDB;
  }
  PQclear(r);
  if (!opts->no_webhook_worker) {
    finch_webhook_opts wo = {.conninfo = opts->conninfo};
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
