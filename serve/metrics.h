/* Counters of the intent server, rendered for Prometheus (GET /metrics,
 * text exposition format 0.0.4).
 *
 * Series
 *   finch_requests_total{path,status}            counter; path is the route's
 *                                                label, its template
 *                                                ("/v1/conversations/{id}/turns"),
 *                                                "other" for unknown paths
 *   finch_request_duration_seconds{path}         histogram, from the request's
 *                                                headers to its response sent;
 *                                                buckets 0.25 ms .. 1 s
 *   finch_batch_size                             histogram of classifier batches
 *                                                (1 per request without batching)
 *   finch_decisions_total{engine}                counter; engine model, rules,
 *                                                fallback (rules answering for an
 *                                                unsure model in canary/primary)
 *   finch_out_of_scope_total{endpoint}           counter; endpoint intent, turns:
 *                                                answers where the model's decision
 *                                                was out of scope (serve/intent.c)
 *   finch_queue_depth                            gauge, classifications in flight
 *   finch_webhook_backlog                        gauge, undelivered webhook rows
 *                                                (database mode only)
 *   finch_model_info{sha256}                     1 for the model being served
 *   finch_model_reloads_total{result}            counter; ok, failed
 *
 * Updates are relaxed atomic increments: no lock, and a scrape may see one
 * series a request ahead of another. Histogram buckets are stored
 * per bucket and summed when rendered, so each rendered histogram is
 * consistent with its own _count. */
#ifndef FINCH_SERVE_METRICS_H
#define FINCH_SERVE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

typedef enum { SERVE_DECISION_MODEL = 0, SERVE_DECISION_RULES, SERVE_DECISION_FALLBACK, SERVE_DECISION_COUNT } serve_decision;

/* The endpoints that count out-of-scope decisions. */
typedef enum { SERVE_OOS_INTENT = 0, SERVE_OOS_TURNS, SERVE_OOS_COUNT } serve_oos_endpoint;

enum {
  SERVE_N_PATHS_MAX = 16,   /* path labels, "other" included */
  SERVE_N_STATUS = 12,      /* 200 400 401 403 404 405 409 413 429 500 503, other */
  SERVE_N_DUR_BUCKETS = 13, /* 12 bounds and +Inf */
  SERVE_N_BATCH_BUCKETS = 10,
};

/* The path labels are the caller's (the route table's, serve/routes.c):
 * paths[0] is always listed, paths[n_paths - 1] stands for every other
 * path. */
typedef struct {
  const char *paths[SERVE_N_PATHS_MAX];
  size_t n_paths;
  atomic_ullong requests[SERVE_N_PATHS_MAX][SERVE_N_STATUS];
  atomic_ullong dur[SERVE_N_PATHS_MAX][SERVE_N_DUR_BUCKETS];
  atomic_ullong dur_sum_ns[SERVE_N_PATHS_MAX];
  atomic_ullong batch[SERVE_N_BATCH_BUCKETS];
  atomic_ullong batch_sum;
  atomic_ullong decisions[SERVE_DECISION_COUNT];
  atomic_ullong out_of_scope[SERVE_OOS_COUNT];
  atomic_ullong reloads_ok, reloads_failed;
} serve_metrics;

/* Zeroes every counter and takes the path labels (n of them, 2 to
 * SERVE_N_PATHS_MAX, the last one for other paths; static strings). */
void serve__metrics_init(serve_metrics *m, const char *const *paths, size_t n);
/* The label of path index p; the last one ("other") when out of range. */
const char *serve__metrics_path(const serve_metrics *m, size_t p);
/* One answered request: its path index, HTTP status and duration in nanoseconds. */
void serve__metrics_request(serve_metrics *m, size_t path, unsigned status, unsigned long long ns);
/* One classifier batch of n texts. */
void serve__metrics_batch(serve_metrics *m, size_t n);
void serve__metrics_decision(serve_metrics *m, serve_decision d);
/* One out-of-scope decision answered by endpoint e. */
void serve__metrics_out_of_scope(serve_metrics *m, serve_oos_endpoint e);

typedef struct {
  long long queue_depth;
  long long webhook_backlog; /* negative: not reported (no database) */
  const char *model_sha256;
} serve_metrics_gauges;

/* The exposition text (malloc'd, caller frees), NULL when out of memory. */
char *serve__metrics_render(const serve_metrics *m, const serve_metrics_gauges *g);

#endif
