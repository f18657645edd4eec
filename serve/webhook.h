/* Outbound webhooks through a transactional outbox.
 *
 * Events
 *   intent.classified, handoff.requested, labeling.task_created, rollout.changed,
 *   job.succeeded, job.failed (the end of a pipeline run, cli/cmd_pipeline.c).
 *   finch_webhook_emit() writes one webhook_outbox row per active subscription
 *   that wants the event, inside the caller's transaction, so the event exists
 *   if and only if the state it reports was committed. Payloads hold what the
 *   caller gives: the caller redacts (no raw utterance text unless it put it
 *   there on purpose).
 *
 * Delivery (a worker thread, or finch_webhook_deliver_due() by hand)
 *   POST <endpoint> with body = the stored payload,
 *     {"id": "evt_…", "type": "<event>", "created_at": "<UTC ISO 8601>", "data": {…}}
 *   and headers
 *     Content-Type: application/json
 *     Idempotency-Key: <key>           the row's key, the same on every attempt
 *     Finch-Webhook-Id: <key>          the same value, for the signature
 *     Finch-Webhook-Timestamp: <unix seconds of this attempt>
 *     Finch-Webhook-Event: <event>
 *     Finch-Signature: v1=<hex HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>
 *   A receiver recomputes the signature with finch_webhook_sign() (or any
 *   HMAC-SHA256), compares in constant time, rejects old timestamps, and
 *   dedupes on Idempotency-Key: a delivery can arrive more than once (a worker
 *   that dies after the receiver answered, a manual redelivery).
 *
 * Outcomes
 *   2xx                          delivered
 *   4xx other than 408 and 429   dead at once (permanent), status recorded
 *   5xx, 408, 429, other codes,
 *   connection errors, timeouts  retried after a delay; dead after max_attempts
 *   The delay after the n-th failed attempt (n = 1, 2, …) is "full jitter":
 *   uniform in [0, min(max_backoff_ms, base_backoff_ms * 2^(n-1))]. A
 *   Retry-After header (seconds or HTTP date) is honoured as a lower bound, up
 *   to one day. The jitter generator is seeded from /dev/urandom, falling back
 *   to a hash of the worker id, the process id and the clock.
 *
 * Several processes may share one database: a row is claimed for one attempt
 * by setting a lease (locked_until, locked_by) in a short transaction with
 * FOR UPDATE SKIP LOCKED, delivered outside any transaction, and its result
 * recorded only while the claim still holds. A crashed worker's lease runs
 * out and another worker retries the row with the same idempotency key.
 * Tables: schemas/006_webhooks.sql. */
#ifndef FINCH_SERVE_WEBHOOK_H
#define FINCH_SERVE_WEBHOOK_H

#include <libpq-fe.h>
#include <stddef.h>

#include "core/status.h"

/* 1 when type is one of the event names above, else 0. */
int finch_webhook_event_known(const char *type);

/* Writes one outbox row per active subscription whose events include
 * event_type, inside the caller's open transaction on c (does not
 * BEGIN/COMMIT). payload_json is a JSON object (at most 1 MiB); the stored
 * body is {"id":..,"type":..,"created_at":..,"data":payload}. Returns the
 * number of rows queued in *n_queued (may be NULL). When rows were queued, a
 * NOTIFY finch_webhook wakes idle workers at commit. An unknown event type or
 * a payload that is not a JSON object is refused (FINCH_EINVAL /
 * FINCH_EFORMAT) before anything is sent to the server. */
finch_status finch_webhook_emit(PGconn *c, const char *event_type, const char *payload_json, int *n_queued,
                                finch_err *err);

/* The worker's defaults, which `finch serve` and `finch webhooks deliver`
 * show in their option tables (plain literals, for FINCH_OPT_DEF). */
#define FINCH_WEBHOOK_DEFAULT_POLL_MS 1000
#define FINCH_WEBHOOK_DEFAULT_MAX_ATTEMPTS 10
#define FINCH_WEBHOOK_DEFAULT_BASE_BACKOFF_MS 1000
#define FINCH_WEBHOOK_DEFAULT_MAX_BACKOFF_MS 600000

/* Zero and NULL fields take the defaults in brackets. */
typedef struct {
  const char *conninfo;     /* libpq conninfo for the worker's own connection [finch's database, core/db.h] */
  const char *worker_id;    /* recorded in locked_by [<hostname>:<pid>:<n>] */
  unsigned poll_ms;         /* idle wait between passes; NOTIFY wakes earlier [1000] */
  unsigned max_attempts;    /* attempts before a row is dead [10] */
  unsigned base_backoff_ms; /* first retry delay bound [1000] */
  unsigned max_backoff_ms;  /* retry delay bound [600000] */
  unsigned timeout_ms;      /* whole HTTP exchange, connect included [10000] */
  unsigned lease_s;         /* claim lease; raised to timeout + 10 s when shorter [60] */
} finch_webhook_opts;

typedef struct finch_webhook_worker finch_webhook_worker;

/* Connects (opts->conninfo) and starts a background thread that delivers due
 * rows until stopped. The caller owns *out and releases it with
 * finch_webhook_worker_stop(). opts (and its strings) may be released after
 * the call. A lost connection is re-established by the thread. */
finch_status finch_webhook_worker_start(finch_webhook_worker **out, const finch_webhook_opts *opts,
                                        finch_err *err);
/* Finishes the delivery in flight (at most timeout_ms), then stops the thread
 * and frees w. NULL is a no-op. */
void finch_webhook_worker_stop(finch_webhook_worker *w);

/* One pass: claims due rows one at a time, up to max, and delivers each;
 * *n_done (may be NULL) gets the number delivered or failed. c must not be
 * inside a transaction (claims and results commit on their own). For tests
 * and `finch webhooks deliver --once`. */
finch_status finch_webhook_deliver_due(PGconn *c, const finch_webhook_opts *opts, int max, int *n_done,
                                       finch_err *err);

/* A dead or delivered row becomes pending, due now, attempts reset, the same
 * idempotency key; writes an audit_log row (action webhook.redeliver, actor
 * the setting finch.actor when set, else the database role). A missing row is
 * FINCH_ENOTFOUND, a pending one FINCH_EINVAL. */
finch_status finch_webhook_redeliver(PGconn *c, long long outbox_id, finch_err *err);

/* Signature helper (also used by tests and receivers): the lower-case hex
 * HMAC-SHA256 of "<id>.<ts>.<body>" keyed by secret. out_hex is "" when
 * OpenSSL fails, which matches no signature. */
void finch_webhook_sign(const char *secret, const char *id, long long ts, const char *body, size_t body_len,
                        char out_hex[65]);

/* Pending rows (for /metrics); 0 when the query fails. */
size_t finch_webhook_backlog(PGconn *c);

/* Adds a subscription: url must be http(s)://host…, secret non-empty, events
 * a comma-separated list of event names or "*". *id (may be NULL) gets its id.
 * Malformed input is FINCH_EINVAL with a message naming the bad part. */
finch_status finch_webhook_subscribe(PGconn *c, const char *url, const char *secret, const char *events,
                                     long long *id, finch_err *err);

#endif
