/* Internal to the intent server: its state, the per-request record and the
 * helpers its files share. serve/server.c holds the model, the replies,
 * routing, dispatch and the daemon's life; serve/server_model.c the model
 * handle and its reload; serve/handlers.c the database-mode
 * handlers (conversation turns, labelling, rollout); serve/access_log.c the
 * access log. The threading and request model is described at the top of
 * serve/server.c. */
#ifndef FINCH_SERVE_SERVER_INTERNAL_H
#define FINCH_SERVE_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/hash.h"
#include "core/redact.h"
#include "nn/model.h"
#include "serve/auth.h"
#include "serve/batcher.h"
#include "serve/metrics.h"
#include "serve/pq.h"
#include "serve/rollout.h"
#include "serve/rules.h"
#include "serve/serve.h"
#include "serve/webhook.h"

enum {
  SERVE_DEFAULT_MAX_BODY = 64 * 1024,
  SERVE_DEFAULT_THREADS = 2,
  SERVE_DEFAULT_MAX_QUEUE = 1024,
  SERVE_DEFAULT_MAX_BATCH = 32,
  SERVE_DEFAULT_DRAIN_MS = 5000,
  SERVE_CONNECTION_TIMEOUT_S = 30, /* idle or stalled clients are dropped */
  SERVE_ID_MAX = 128,              /* conversation ids */
  SERVE_RID_MAX = 64,              /* request ids */
};

/* One thread's database connection and redactor (database mode). */
typedef struct {
  PGconn *conn;
  finch_redactor *redactor;
} serve_slot;

/* A loaded model, shared by reference count (see the top of the file). */
typedef struct {
  nn_model *nn;
  size_t n_labels;
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

typedef enum {
  SERVE_ROUTE_INTENT,     /* POST /v1/intent */
  SERVE_ROUTE_HEALTH,     /* GET or HEAD /healthz */
  SERVE_ROUTE_TURNS,      /* POST /v1/conversations/{id}/turns */
  SERVE_ROUTE_TASKS,      /* GET /v1/labeling/tasks */
  SERVE_ROUTE_TASK,       /* POST /v1/labeling/tasks/{id} */
  SERVE_ROUTE_STATS,      /* GET /v1/labeling/stats */
  SERVE_ROUTE_ROLLOUT,    /* GET or POST /v1/rollout */
  SERVE_ROUTE_METRICS,    /* GET /metrics */
  SERVE_ROUTE_RELOAD,     /* POST /v1/admin/reload */
  SERVE_ROUTE_METHOD,     /* a known path with another method: 405 */
  SERVE_ROUTE_NOT_FOUND,  /* 404 */
} serve_route;

enum { ROLE_I = FINCH_ROLE_INTEGRATION, ROLE_L = FINCH_ROLE_LABELER, ROLE_A = FINCH_ROLE_ADMIN };

/* Where a POST /v1/intent stands: not classified yet, waiting for the
 * batcher (connection suspended), answer ready. */
typedef enum { SERVE_PHASE_NEW = 0, SERVE_PHASE_QUEUED, SERVE_PHASE_DONE } serve_phase;

/* Per-request state, allocated on the handler's first call and freed by
 * serve_completed(). Only POST requests to a known route keep their body. */
typedef struct {
  serve_route route;
  serve_path mpath;     /* the route as metrics and logs name it */
  const char *path;     /* the route's name in messages ("/v1/intent") */
  const char *allow;    /* methods the path takes (405's Allow) */
  unsigned roles;       /* roles admitted; 0 = no key needed */
  int needs_db, post;
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

/* The deployment a request addresses: its ?deployment= argument, else the server's. */
const char *serve__deployment(finch_server *srv, struct MHD_Connection *conn);

/* POST /v1/conversations/{id}/turns. */
enum MHD_Result serve__turn(finch_server *srv, struct MHD_Connection *conn, serve_request *req,
                                  serve_slot *sl, const finch_principal *who, const char *deployment);

/* GET /v1/labeling/tasks. */
enum MHD_Result serve__tasks(finch_server *srv, struct MHD_Connection *conn, serve_slot *sl,
                                   const char *deployment);

/* POST /v1/labeling/tasks/{id}. */
enum MHD_Result serve__task_label(finch_server *srv, struct MHD_Connection *conn, const serve_request *req,
                                        serve_slot *sl, const finch_principal *who, const char *deployment);

/* GET /v1/labeling/stats. */
enum MHD_Result serve__stats(struct MHD_Connection *conn, serve_slot *sl, const char *deployment);

/* GET /v1/rollout. */
enum MHD_Result serve__rollout_get(finch_server *srv, struct MHD_Connection *conn, serve_request *req,
                                         serve_slot *sl, const char *deployment);

/* POST /v1/rollout. */
enum MHD_Result serve__rollout_post(finch_server *srv, struct MHD_Connection *conn, serve_request *req,
                                          serve_slot *sl, const finch_principal *who, const char *deployment);

/* Writes req's access log line (ns: its duration), when the log is on. */
void serve__log_request(finch_server *srv, const serve_request *req, uint64_t ns);

#endif
