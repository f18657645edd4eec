/* The intent server: HTTP over libmicrohttpd.
 *
 * Endpoints (roles: I integration, L labeler, A admin; admin may use all)
 *   POST /v1/intent  [I] body {"text": "...", "top_k"?: N} ->
 *        200 {"intent": "...", "out_of_scope": false, "confidence": 0.93, "source": "model",
 *             "model": "<sha256>"}
 *        200 {"intent": null, "out_of_scope": true, "confidence": <in-scope score>, ...}
 *            when the model's policy (nn/abstain.h) abstains, or its arg-max is
 *            oos_label. confidence is the chosen intent's probability at the
 *            policy's temperature; a model without a policy answers its arg-max
 *            at temperature 1, as before.
 *        "top_k" (an integer in 1..the number of intents, the labels but the
 *            out-of-scope ones) adds "top": [{"intent", "probability"}, ...],
 *            the N most probable intents, descending, ties in label order,
 *            out of scope too.
 *        400 {"error": "..."} for invalid JSON, a missing or non-string "text",
 *            text that is not valid UTF-8, or any other "top_k" (the error names
 *            the field and its range)
 *   GET  /healthz    200 {"status": "ok", "model": "<sha256>", "database": true|false}; no key needed
 *   POST /v1/conversations/{id}/turns  [I] {"text": "...", "speaker": "user"|"agent"} ->
 *        200 {"conversation_id", "turn", "intent", "engine": "rules"|"model",
 *             "confidence", "stage", "handoff", "out_of_scope", "model",
 *             ["suggestion": {"intent", "confidence", "out_of_scope"}] (assist),
 *             ["labeling_task": id]}
 *        The model out of scope gives no intent: a rule answers when one fires,
 *        else the turn is handed off (serve/rollout.h), in every stage.
 *        The turn is redacted before it is stored (conversation_turns); events
 *        intent.classified, handoff.requested (confidence under
 *        handoff_below) and labeling.task_created are queued in the same
 *        transaction (serve/webhook.h). {id}: 1-128 of [A-Za-z0-9._:-].
 *   GET  /v1/labeling/tasks  [L] ?status=open|resolved|needs_second|all
 *        &intent=&stage=&min_confidence=&max_confidence=&limit=&after=
 *   POST /v1/labeling/tasks/{id}  [L] {"decision": "accept"|"correct", "label": "..."}
 *        -> 200 the task; 404 unknown task; 409 already labelled by this key or
 *        twice already (serve/labeling.h)
 *   GET  /v1/labeling/stats  [L] acceptance rate and inter-labeller agreement
 *   GET  /metrics  Prometheus text (format 0.0.4; series in serve/metrics.h); no
 *        key without a database, the admin role with one (it tells request
 *        volumes and the webhook backlog, which are the bank's business)
 *   POST /v1/admin/reload  [A] reloads the model file (as SIGHUP does for
 *        `finch serve`) -> 200 {"model": new sha256, "previous": old}; 500
 *        when the file cannot be loaded or verified (the old model stays)
 *   GET  /v1/rollout  [I L A] the deployment's stage, history and gate figures
 *   POST /v1/rollout  [A] {"action": "promote"|"rollback", "to"?, "intent"?,
 *        "reason", "canary_share"?, "min_confidence"?} -> 200 applied; 409
 *        refused by the gate (figures in "gate"); 400 a move not allowed
 *   Every endpoint but /v1/intent and /healthz takes ?deployment= (default the
 *   server's).
 * Errors: 400 malformed, 401 missing or unknown key (WWW-Authenticate: Bearer),
 * 403 wrong role, 404 unknown path, 405 wrong method (with Allow), 413 body
 * over max_body, 429 over the key's rate (Retry-After, seconds), 503 no
 * database or database unavailable, more than max_queue classifications in
 * flight (Retry-After: 1) or shutting down (Connection: close); all with
 * {"error": "...", "request_id": "..."}.
 *
 * Request ids: an X-Request-Id header of 1-64 characters of [A-Za-z0-9._-] is
 * used as the request's id; without one, or with any other value, the server
 * makes one (16 hex digits). Every response carries it in X-Request-Id.
 *
 * Access log: one JSON line per request, written when its response has gone
 * out: {"ts" (UTC, ms), "request_id", "method", "path" (the route's template,
 * "other" for unknown paths), "status", "latency_ms", and when a text was
 * classified "engine", "intent", "confidence", "batch"}; "text" only with
 * log_text, and then normalised and redacted (core/redact.h).
 *
 * Without a database (conninfo NULL) the server keeps its first form: only
 * /v1/intent and /healthz work, without keys, and the other endpoints answer
 * 503. With one, every endpoint but /healthz needs a key (serve/auth.h).
 * A bad request never stops the server. */
#ifndef FINCH_SERVE_SERVE_H
#define FINCH_SERVE_SERVE_H

#include <signal.h>
#include <stddef.h>

#include "core/status.h"
#include "serve/rollout.h"

/* The defaults of finch_serve_opts: the server applies them to a zero
 * field, and `finch serve`'s option table shows and fills them (plain
 * literals, so that FINCH_OPT_DEF can spell them). */
#define FINCH_SERVE_DEFAULT_HOST "127.0.0.1"
#define FINCH_SERVE_DEFAULT_MAX_BODY 65536
#define FINCH_SERVE_DEFAULT_THREADS 2
#define FINCH_SERVE_DEFAULT_DEPLOYMENT "default"
#define FINCH_SERVE_DEFAULT_MIN_CONFIDENCE 0.5
#define FINCH_SERVE_DEFAULT_CANARY_SHARE 0.1
#define FINCH_SERVE_DEFAULT_HANDOFF_BELOW 0.5
#define FINCH_SERVE_DEFAULT_RATE 20
#define FINCH_SERVE_DEFAULT_BURST 40
#define FINCH_SERVE_DEFAULT_MAX_BATCH 32
#define FINCH_SERVE_DEFAULT_BATCH_THREADS 1
#define FINCH_SERVE_DEFAULT_MAX_QUEUE 1024
#define FINCH_SERVE_DEFAULT_DRAIN_MS 5000

typedef struct {
  const char *model_path; /* model file (nn/modelfile.h) */
  const char *host;       /* address to bind, default "127.0.0.1" */
  unsigned port;          /* 0 = any free port; finch_server_port() tells which */
  size_t max_body;        /* request body limit in bytes, default 64 KiB */
  unsigned threads;       /* worker threads, default 2 */

  /* Database mode: everything below is ignored without conninfo. */
  const char *conninfo;      /* libpq conninfo of finch's (migrated) database; NULL: none */
  const char *rules_path;    /* legacy rule file (serve/rules.h); NULL: no rule ever fires */
  const char *deployment;    /* default "default" */
  const char *oos_label;     /* the model's out-of-scope label, or NULL; it also holds at
                              * /v1/intent, with a database or without */
  double min_confidence;     /* model answers at or above it in canary/primary; 0 = 0.5 */
  double canary_share;       /* when the stage's params do not say; 0 = 0.1 (negative: 0) */
  double handoff_below;      /* handoff.requested under it; 0 = 0.5 */
  finch_gate_opts gate;      /* promotion gate; all zero = finch_gate_opts_default() */
  double rate_per_s;         /* per-key token bucket refill; 0 = 20 */
  double rate_burst;         /* bucket size; 0 = 40 */
  int no_webhook_worker;     /* 1: do not start a webhook delivery worker */
  unsigned webhook_poll_ms, webhook_max_attempts, webhook_backoff_ms, webhook_max_backoff_ms;
                             /* the worker's poll_ms, max_attempts, base_backoff_ms and max_backoff_ms
                              * (serve/webhook.h); 0 takes its default */
  const char *const *pii_rules; /* extra redaction rule files (core/redact.h); also for log_text */
  size_t n_pii_rules;

  /* Serving quality; zero gives the default in brackets. */
  unsigned batch_window_us; /* 0 [0]: POST /v1/intent runs the model on the request's thread; > 0:
                             * through batcher threads (serve/batcher.h), which wait up to this long
                             * for a batch to fill, and only while busy */
  unsigned max_batch;       /* texts per batch [32] */
  unsigned batch_threads;   /* batcher threads [1] */
  unsigned max_queue;       /* classifications in flight; one more gets 503 + Retry-After [1024] */
  unsigned drain_ms;        /* finch_server_stop() waits this long for requests in flight [5000] */
  const char *access_log;   /* NULL or "-": stderr; "off": none; else a file, appended to */
  int log_text;             /* 1: access log lines carry the text, normalised and redacted */
  unsigned classify_delay_us; /* tests only: POST /v1/intent sleeps this long before each classification
                               * (each batch, with batching), standing in for a slow model */
} finch_serve_opts;

typedef struct finch_server finch_server;

/* Loads and verifies the model, binds and starts serving in background
 * threads. The caller owns *out and releases it with finch_server_stop(). */
finch_status finch_server_start(finch_server **out, const finch_serve_opts *opts, finch_err *err);
unsigned finch_server_port(const finch_server *s);
/* The served model's SHA-256 (hex); valid until the next reload or stop. */
const char *finch_server_model_sha256(const finch_server *s);
/* Loads path (NULL: the file being served, read again), verifies it and
 * makes it the served model; requests in flight finish on the old one. On
 * failure the old model stays, the reason is logged and returned. Safe from
 * any thread, concurrently with requests. */
finch_status finch_server_reload(finch_server *s, const char *path, finch_err *err);
/* Stops accepting, answers 503 to new requests on open connections, waits
 * up to drain_ms for the requests in flight, frees everything. */
void finch_server_stop(finch_server *s);

/* For a daemon's main thread that waits with sigwait(set): blocks set in
 * the calling thread (and so in every thread it starts afterwards) and
 * hands each of these signals that reaches another thread on to it. Threads
 * started before the call, which sigwait() cannot cover (OpenBLAS starts its
 * pool when the library loads), would otherwise take the signal with its
 * default action and end the process. Call it once, before starting
 * threads; on failure errno is set and -1 returned. */
int finch_serve_signals_to_caller(const sigset_t *set);

#endif
