/* Monitoring from the serving side: what a deployment answered, how well and
 * how fast, per hour or day, and the accuracy-latency front of the models
 * that served it.
 *
 * What is read. Requests are the deployment's user turns
 * (conversation_turns: engine, out_of_scope, handoff, model_sha256,
 * latency_ms) and its POST /v1/intent answers, which the server counts per
 * minute in memory and writes to serve_minutes (serve_minutes_* below; no
 * row per request). A /v1/intent answer is always the model's, never a
 * handoff. Labelled accuracy comes from the labelling tasks of the
 * deployment's turns whose first human label is known (status accepted or
 * corrected): the served answer was right when the engine that answered gave
 * the human's label (the model: its suggestion, the label an out-of-scope
 * decision goes by; the rules: rule_label, wrong when no rule fired), as the
 * rollout gate counts it (serve/rollout.h). Tasks exist only for turns the
 * rollout found doubtful (the engines disagreed, or the model was unsure),
 * so labelled accuracy is that of the hard turns, not of all traffic; the
 * counts say how many it rests on. A task is counted in the bucket of its
 * turn, not of its label.
 *
 * Latency. Both sources go into one histogram of SERVE_MONITOR_BINS
 * logarithmic bins, eight per doubling: bin 0 holds latencies up to 0.01 ms,
 * bin b (1..SERVE_MONITOR_BINS-2) those in (0.01 * 2^((b-1)/8),
 * 0.01 * 2^(b/8)] ms, the last bin everything above (about 280 s). p50 and
 * p99 are nearest-rank percentiles (the ceil(q*n)-th smallest latency),
 * given as the upper edge of the bin holding it: at most 9.1% above the
 * true value, never under it (the last bin gives its lower edge). A turn's
 * latency runs to just before its insert; an intent's to the response's end.
 *
 * The front. Per model (model_sha256, named through the models table when it
 * is registered there) the model's own labelled accuracy (its suggestion
 * against the human label, whichever engine answered) and its p50 latency
 * over the period. A model is on the front when no other model is at least
 * as accurate and at least as fast and better in one of the two; models
 * without labelled tasks have no accuracy and are never on it. */
#ifndef FINCH_SERVE_MONITOR_H
#define FINCH_SERVE_MONITOR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/db.h"
#include "core/status.h"

enum { SERVE_MONITOR_BINS = 200, SERVE_MONITOR_BINS_PER_DOUBLING = 8 };

/* The histogram bin of a latency in milliseconds (negative or NaN: bin 0). */
int serve_monitor_bin(double ms);
/* The latency a bin stands for: its upper edge, the last bin's lower edge. */
double serve_monitor_bin_ms(int bin);

typedef enum { SERVE_MONITOR_HOUR = 0, SERVE_MONITOR_DAY } serve_monitor_bucket;

typedef struct {
  const char *deployment;
  time_t since, until;         /* [since, until); 0: no bound */
  serve_monitor_bucket bucket; /* UTC hours or days */
} serve_monitor_opts;

/* Parses a time for --since/--until into *out (seconds since the epoch, UTC):
 * YYYY-MM-DD, YYYY-MM-DDTHH:MM, YYYY-MM-DDTHH:MM:SS (an optional trailing Z;
 * a space for T), or a span back from now: N followed by m, h or d ("90m",
 * "24h", "7d"). FINCH_EINVAL naming the text and the forms otherwise. */
finch_status serve_monitor_parse_time(const char *text, time_t now, time_t *out, finch_err *err);
/* "hour" or "day"; FINCH_EINVAL otherwise. */
finch_status serve_monitor_parse_bucket(const char *text, serve_monitor_bucket *out, finch_err *err);

/* The section as one object, keys in this order:
 *   deployment, bucket ("hour"|"day"), since, until (ISO-8601 UTC or null),
 *   latency_note, buckets: [{start, requests, turns, intents, out_of_scope,
 *     out_of_scope_rate, handoffs, handoff_rate, engine: {model, rules},
 *     model_share, labelled, labelled_correct, accuracy (the served answer's),
 *     model_accuracy (the model's own answer's on the same tasks), latency_ms:
 *     {n, p50, p99}}] in time order, only buckets with requests,
 *   total: the same figures over the period (without start),
 *   models: [{model_sha256, model_id, kind, arch, dtype, requests, labelled,
 *     labelled_correct, accuracy (the model's own answer's), latency_ms: {n,
 *     p50, p99}, on_front}] by model_sha256 (null: turns without one),
 *   front: [model_sha256, ...] by latency then accuracy descending.
 * Rates and accuracies are null where their denominator is 0, and so are
 * percentiles without latencies. FINCH_ENOTFOUND when the deployment has no
 * turn, labelling task, rollout state or served minute at all; FINCH_EINVAL
 * for since >= until. The caller owns *out. */
finch_status serve_monitor_json(finch_db *db, const serve_monitor_opts *o, json_t **out, finch_err *err);

/* Marks the non-dominated points of (acc[i], lat[i]), i < n: on[i] = 1 when
 * no j has acc[j] >= acc[i] and lat[j] <= lat[i] with one of them strict.
 * Points with a NaN are never on it and dominate nothing. Equal points are
 * on it together. */
void serve_monitor_front(const double *acc, const double *lat, size_t n, int *on);

/* --- the /v1/intent recorder (serve/monitor_record.c) ---------------------- */

/* Counts POST /v1/intent answers per (model, UTC minute) for one deployment
 * and writes them to serve_minutes on its own connection and thread: every
 * flush_ms the minutes that have ended (one insert per model and minute),
 * and on close everything still held. A failed write is logged and its
 * counts kept for the next try; at most SERVE_MINUTES_MAX minutes are held,
 * the oldest dropped with a warning past that. Adding takes a mutex and
 * touches no database: it is meant for the request's completion. */
typedef struct serve_minutes serve_minutes;
enum { SERVE_MINUTES_MAX = 4096 };

/* Starts the recorder (flush_ms 0: 10000). The caller owns *out. */
finch_status serve_minutes_open(serve_minutes **out, const char *conninfo, const char *deployment,
                                unsigned flush_ms, finch_err *err);
/* Counts one answer of model_sha256 (64 hex digits) at wall time at. */
void serve_minutes_add(serve_minutes *m, const char *model_sha256, int out_of_scope, double latency_ms, time_t at);
/* Writes the held minutes now: all of them, or (all 0) those before the
 * current minute. */
finch_status serve_minutes_flush(serve_minutes *m, int all, finch_err *err);
/* Stops the thread, writes everything held, closes. NULL is a no-op. */
void serve_minutes_close(serve_minutes *m);

#endif
