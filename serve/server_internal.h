/* Internal to the intent server: its state, the per-request record, the
 * route table and the helpers its files share. serve/server.c holds the
 * request lifecycle (MHD's callbacks, replies, the database pool, start and
 * stop) and describes the threading and request model at its top;
 * serve/routes.c the route table, routing and the checks before a handler;
 * serve/intent.c POST /v1/intent; serve/handlers.c the other endpoints;
 * serve/server_model.c the model reference and its reload;
 * serve/access_log.c the access log. */
#ifndef FINCH_SERVE_SERVER_INTERNAL_H
#define FINCH_SERVE_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/hash.h"
#include "core/redact.h"
#include "nn/abstain.h"
#include "nn/model.h"
#include "serve/auth.h"
#include "serve/batcher.h"
#include "serve/metrics.h"
#include "serve/monitor.h"
#include "core/db.h"
#include "serve/rollout.h"
#include "serve/rules.h"
#include "serve/serve.h"
#include "serve/webhook.h"

enum {
  SERVE_CONNECTION_TIMEOUT_S = 30, /* idle or stalled clients are dropped */
  SERVE_ID_MAX = 128,              /* conversation ids */
  SERVE_RID_MAX = 64,              /* request ids */
};

/* One thread's database connection and redactor (database mode). */
typedef struct {
  PGconn *conn;
  finch_redactor *redactor;
} serve_slot;

/* A loaded model, shared by reference count (see the top of the file),
 * with its out-of-scope policy (nn/abstain.h), read when it loads. */
typedef struct {
  nn_model *nn;
  size_t n_labels;
  nn_abstain abstain;
  char sha256[FINCH_SHA256_HEX_LEN];
  atomic_uint refs;
} serve_model;

struct finch_server {
  struct MHD_Daemon *daemon;
  _Atomic(serve_model *) model;
  atomic_uint acquiring; /* requests between reading `model` and taking their reference */
  pthread_mutex_t reload_lock; /* one reload at a time; guards model_path */
  char *model_path;
  size_t max_body;
  unsigned port;

  /* Classification: batcher NULL classifies inline. */
  serve_batcher *batcher;
  long long max_queue;
  unsigned classify_delay_us; /* opts->classify_delay_us (tests) */
  atomic_llong queue_depth; /* classifications admitted and not finished */

  /* Requests and shutdown. */
  atomic_llong active; /* requests whose headers are in and that have not completed */
  atomic_int draining;
  unsigned drain_ms;
  uint64_t rid_seed;
  atomic_ullong rid_next;
  serve_metrics metrics;

  /* Access log: fd -1 = off. With log_text, texts are redacted by
   * log_redactor, one thread at a time. */
  int log_fd, log_fd_owned, log_text;
  finch_redactor *log_redactor;
  pthread_mutex_t log_redact_lock;

  /* Database mode (conninfo set); all NULL/0 otherwise. */
  int has_db;
  finch_rules *rules;
  char *deployment, *oos_label;
  double min_confidence, canary_share, handoff_below;
  finch_gate_opts gate;
  finch_ratelimit *rl;
  finch_webhook_worker *webhooks;
  serve_minutes *minutes; /* POST /v1/intent answers per minute (serve/monitor.h) */
  serve_slot *slots;
  size_t n_slots;
  int *slot_free; /* stack of free slot indices */
  size_t n_free;
  pthread_mutex_t pool_lock;
  pthread_cond_t pool_cond;
  pthread_mutex_t backlog_lock; /* the webhook backlog, queried at most once a second */
  long long backlog;
  double backlog_at;

  /* While the daemon starts, MHD's own error messages are kept here, so that
   * the start error can say why (bind failures and the like); afterwards they
   * go to the log. */
  pthread_mutex_t log_lock;
  int starting;
  char start_error[512];
};

/* Where a POST /v1/intent stands: not classified yet, waiting for the
 * batcher (connection suspended), answer ready. */
typedef enum { SERVE_PHASE_NEW = 0, SERVE_PHASE_QUEUED, SERVE_PHASE_DONE } serve_phase;

typedef struct serve_route serve_route;

/* Per-request state, allocated on the handler's first call and freed by
 * serve_completed(). Only POST requests to a known route keep their body. */
typedef struct {
  const serve_route *route; /* the route that answers; NULL: 405 when allow, else 404 */
  const char *path;         /* the route's template, for messages ("/v1/intent"); NULL: unknown path */
  unsigned allow;           /* SERVE_M_* the path takes */
  size_t metric;            /* the route's label in metrics and the access log (serve__metrics_path) */
  int post;                 /* POST to a route: the body is kept */
  char arg[SERVE_ID_MAX + 1]; /* {id} of the path */
  char *body; /* body bytes so far (not NUL-terminated) */
  size_t len, cap;
  int too_big; /* the body passed max_body; the rest is discarded */

  /* Set on the first call. */
  finch_server *srv;
  struct MHD_Connection *conn;
  uint64_t t0_ns; /* headers in (CLOCK_MONOTONIC) */
  char rid[SERVE_RID_MAX + 1];
  char method[16];
  int close; /* answer with Connection: close (draining) */

  /* The answer, for metrics and the access log. */
  unsigned status;    /* 0 until a response is queued */
  const char *engine; /* "model", "rules" or NULL */
  const char *intent; /* points into `model` (or the rules); NULL: none */
  double confidence;  /* < 0: none */
  unsigned batch;     /* texts in the classifier run; 0: none */
  char *log_text;     /* the text, redacted, with log_text on; malloc'd */

  /* Classification state of POST /v1/intent. */
  long long top_k;    /* "top_k" of the body; 0: no list */
  serve_phase phase;
  serve_model *model; /* a reference, released by serve_completed() */
  json_t *root;       /* the parsed body; its "text" is the item's text */
  float *probs;       /* model->n_labels */
  int pred;
  serve_batch_item item;
} serve_request;

/* Drops a reference to m (NULL: none); the last one frees it. */
void serve__model_put(serve_model *m);
/* Loads and verifies path: hashed before and after loading, so that a file
 * replaced while it was read is refused. The handle starts with one reference. */
finch_status serve__model_load(serve_model **out, const char *path, finch_err *err);
/* Loads path (NULL: model_path) and swaps it in; prev and now (may be NULL)
 * receive the hashes before and after. One reload at a time. */
finch_status serve__reload(finch_server *s, const char *path, char *prev, char *now, finch_err *err);

/* The request's model: a reference taken on first use and kept until it completes. */
serve_model *serve__req_model(finch_server *s, serve_request *req);

/* The served decision on one text, the same at every endpoint: the model's
 * policy (nn_abstain_decide) and the server's oos_label, which is out of
 * scope too when it is the arg-max. */
typedef struct {
  int label;        /* the intent's label index; -1: out of scope */
  int argmax;       /* the arg-max label of the re-tempered probabilities */
  float confidence; /* in scope: probs[label]; out of scope: the in-scope score */
  const char *name; /* the answer as a label for turns and labelling: the intent, or out of
                     * scope the arg-max when it is an out-of-scope label, else the policy's
                     * class, else the server's oos_label, else SERVE_OOS_NAME */
  float name_prob;  /* the probability of name: probs[argmax] when name is a label of the
                     * model, else the in-scope score */
} serve_answer;

/* What a threshold-only decision is called, for want of a class. */
#define SERVE_OOS_NAME "oos"

/* 1 when label c of m is an intent: neither the policy's out-of-scope
 * class nor the server's oos_label. */
int serve__in_scope(const finch_server *s, const serve_model *m, size_t c);
/* The labels that are intents (serve__in_scope). */
size_t serve__n_in_scope(const finch_server *s, const serve_model *m);
/* Decides on probs (m->n_labels: the model's probabilities at temperature 1,
 * re-tempered in place to the policy's temperature). */
void serve__answer(const finch_server *s, const serve_model *m, float *probs, serve_answer *out);

/* Queues obj (stolen) as a JSON response with the request id; allow, if set, is the Allow header. */
enum MHD_Result serve__reply_json(struct MHD_Connection *conn, unsigned status, json_t *obj,
                                        const char *allow);

/* {"error": message}, as serve__reply_json. */
enum MHD_Result serve__reply_error(struct MHD_Connection *conn, unsigned status, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* 503 for a failed database call what, logging err. */
enum MHD_Result serve__db_failed(struct MHD_Connection *conn, const char *what, const finch_err *err);

/* 1 when s is 1..max bytes of [A-Za-z0-9._:-]. */
int serve__id_ok(const char *s, size_t max);

/* --- routes (serve/routes.c) ------------------------------------------------ */

/* Methods, as bits. */
enum { SERVE_M_GET = 1, SERVE_M_HEAD = 2, SERVE_M_POST = 4 };

/* What a handler gets. In database mode the request holds a database slot
 * for its whole life, and who and deployment are set; without a database all
 * three are NULL. */
typedef struct {
  finch_server *srv;
  struct MHD_Connection *conn;
  serve_request *req;
  serve_slot *sl;
  const finch_principal *who;
  const char *deployment; /* ?deployment=, else the server's */
} serve_call;

typedef enum MHD_Result (*serve_handler)(const serve_call *c);

/* One route of the table in serve/routes.c: everything that is known about
 * an endpoint before its handler runs. */
struct serve_route {
  unsigned methods;   /* SERVE_M_* this row answers */
  const char *path;   /* template; "{id}" stands for one non-empty path segment */
  int id_digits;      /* 1: {id} is 1 to 20 digits, else the path is unknown */
  unsigned roles;     /* FINCH_ROLE_* bits admitted in database mode; 0: no key, database or not */
  int needs_db;       /* without a database: 503 */
  const char *metric; /* the label in /metrics and the access log; NULL: the template */
  serve_handler handler;
};

/* Fills req's route fields (route, path, allow, metric, post, arg) from the
 * URL and method. */
void serve__route(serve_request *req, const char *url, const char *method);

/* Answers a request whose route was decided on its first call: 404 or 405,
 * then, in this order, database (503), key (401), role (403), rate (429) and
 * size (413), then the route's handler. A request resumed after it was
 * suspended goes straight back to its handler. */
enum MHD_Result serve__dispatch(finch_server *srv, struct MHD_Connection *conn, serve_request *req, const char *url,
                                const char *method);

/* The route labels of /metrics, in table order, "other" last (static
 * strings); returns their count, at most max. */
size_t serve__route_labels(const char **names, size_t max);

/* --- the handlers (serve/intent.c, serve/handlers.c) --------------------------- */

enum MHD_Result serve__intent(const serve_call *c);      /* POST /v1/intent */
enum MHD_Result serve__health(const serve_call *c);      /* GET|HEAD /healthz */
enum MHD_Result serve__turn(const serve_call *c);        /* POST /v1/conversations/{id}/turns */
enum MHD_Result serve__tasks(const serve_call *c);       /* GET /v1/labeling/tasks */
enum MHD_Result serve__task_label(const serve_call *c);  /* POST /v1/labeling/tasks/{id} */
enum MHD_Result serve__stats(const serve_call *c);       /* GET /v1/labeling/stats */
enum MHD_Result serve__rollout_get(const serve_call *c); /* GET /v1/rollout */
enum MHD_Result serve__rollout_post(const serve_call *c); /* POST /v1/rollout */
enum MHD_Result serve__metrics_get(const serve_call *c); /* GET /metrics */
enum MHD_Result serve__reload_post(const serve_call *c); /* POST /v1/admin/reload */

/* --- the lifecycle (serve/server.c) --------------------------------------------- */


/* Queues resp (consumed) with the request id (and Connection: close while
 * draining) and records status for the access log. */
enum MHD_Result serve__queue(struct MHD_Connection *conn, unsigned status, struct MHD_Response *resp);

/* As serve__reply_error, with the extra header hname: hval. */
enum MHD_Result serve__reply_error_h(struct MHD_Connection *conn, unsigned status, const char *hname,
                                     const char *hval, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A database slot, waiting for one to be free; and its return. */
serve_slot *serve__slot_get(finch_server *srv);
void serve__slot_put(finch_server *srv, serve_slot *sl);

/* Writes req's access log line (ns: its duration), when the log is on. */
void serve__log_request(finch_server *srv, const serve_request *req, uint64_t ns);

#endif
