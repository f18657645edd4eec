/* serve/metrics.h: lock-free counters and their Prometheus text. */
#include "serve/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned metrics_status_codes[SERVE_N_STATUS - 1] = {200, 400, 401, 403, 404, 405,
                                                                  409, 413, 429, 500, 503};
/* Upper bounds in seconds; the last bucket is +Inf. */
static const double metrics_dur_le[SERVE_N_DUR_BUCKETS - 1] = {0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                               0.025,   0.05,   0.1,   0.25,   0.5,   1.0};
static const unsigned metrics_batch_le[SERVE_N_BATCH_BUCKETS - 1] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

static const char *const metrics_decision_names[SERVE_DECISION_COUNT] = {"model", "rules", "fallback"};
static const char *const metrics_oos_names[SERVE_OOS_COUNT] = {"intent", "turns"};

void serve__metrics_init(serve_metrics *m, const char *const *paths, size_t n) {
  /* Every counter is an atomic integer, for which all-bits-zero is 0. */
  memset(m, 0, sizeof *m);
  if (n > SERVE_N_PATHS_MAX) n = SERVE_N_PATHS_MAX;
  memcpy(m->paths, paths, n * sizeof *paths);
  m->n_paths = n;
}

const char *serve__metrics_path(const serve_metrics *m, size_t p) {
  return p < m->n_paths ? m->paths[p] : m->n_paths ? m->paths[m->n_paths - 1] : "other";
}

static void metrics_inc(atomic_ullong *c, unsigned long long by) { atomic_fetch_add_explicit(c, by, memory_order_relaxed); }

void serve__metrics_request(serve_metrics *m, size_t path, unsigned status, unsigned long long ns) {
  if (path >= m->n_paths) path = m->n_paths - 1;
  size_t si = SERVE_N_STATUS - 1;
  for (size_t i = 0; i < SERVE_N_STATUS - 1; i++)
    if (metrics_status_codes[i] == status) {
      si = i;
      break;
    }
  metrics_inc(&m->requests[path][si], 1);
  double s = (double)ns / 1e9;
  size_t b = 0;
  while (b < SERVE_N_DUR_BUCKETS - 1 && s > metrics_dur_le[b]) b++;
  metrics_inc(&m->dur[path][b], 1);
  metrics_inc(&m->dur_sum_ns[path], ns);
}

void serve__metrics_batch(serve_metrics *m, size_t n) {
  size_t b = 0;
  while (b < SERVE_N_BATCH_BUCKETS - 1 && n > metrics_batch_le[b]) b++;
  metrics_inc(&m->batch[b], 1);
  metrics_inc(&m->batch_sum, n);
}

void serve__metrics_decision(serve_metrics *m, serve_decision d) {
  if ((unsigned)d < SERVE_DECISION_COUNT) metrics_inc(&m->decisions[d], 1);
}

void serve__metrics_out_of_scope(serve_metrics *m, serve_oos_endpoint e) {
  if ((unsigned)e < SERVE_OOS_COUNT) metrics_inc(&m->out_of_scope[e], 1);
}

/* --- rendering ------------------------------------------------------------ */

typedef struct {
  char *buf;
  size_t len, cap;
  int oom;
} metrics_out;

static void out_printf(metrics_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(metrics_out *o, const char *fmt, ...) {
  if (o->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->oom = 1;
      return;
    }
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    size_t cap = o->cap * 2 + (size_t)n;
    char *p = realloc(o->buf, cap);
    if (!p) {
      o->oom = 1;
      return;
    }
    o->buf = p;
    o->cap = cap;
  }
}

static unsigned long long get(const atomic_ullong *c) { return atomic_load_explicit(c, memory_order_relaxed); }

/* Writes the buckets of one histogram series (le values from le_fmt), then
 * _sum and _count; labels is "" or `name="value",` pairs ending in a comma. */
static void out_histogram(metrics_out *o, const char *name, const char *labels, const atomic_ullong *buckets,
                          size_t n_buckets, const double *le, const unsigned *le_u, double sum) {
  unsigned long long cum = 0;
  for (size_t b = 0; b < n_buckets; b++) {
    cum += get(&buckets[b]);
    if (b + 1 == n_buckets)
      out_printf(o, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, cum);
    else if (le)
      out_printf(o, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, le[b], cum);
    else
      out_printf(o, "%s_bucket{%sle=\"%u\"} %llu\n", name, labels, le_u[b], cum);
  }
  /* Labels without the trailing comma, for _sum and _count. */
  size_t ln = strlen(labels);
  out_printf(o, "%s_sum%s%.*s%s %.9g\n", name, ln ? "{" : "", ln ? (int)ln - 1 : 0, labels, ln ? "}" : "", sum);
  out_printf(o, "%s_count%s%.*s%s %llu\n", name, ln ? "{" : "", ln ? (int)ln - 1 : 0, labels, ln ? "}" : "", cum);
}

char *serve__metrics_render(const serve_metrics *m, const serve_metrics_gauges *g) {
  metrics_out o = {.cap = 8192};
  o.buf = malloc(o.cap);
  if (!o.buf) return NULL;
  o.buf[0] = '\0';

  out_printf(&o, "# HELP finch_requests_total HTTP requests answered, by route and status.\n"
                 "# TYPE finch_requests_total counter\n");
  for (size_t p = 0; p < m->n_paths; p++)
    for (size_t s = 0; s < SERVE_N_STATUS; s++) {
      unsigned long long v = get(&m->requests[p][s]);
      if (!v && !(p == 0 && s == 0)) continue; /* the first path's 200 is always listed */
      if (s < SERVE_N_STATUS - 1)
        out_printf(&o, "finch_requests_total{path=\"%s\",status=\"%u\"} %llu\n", m->paths[p],
                   metrics_status_codes[s], v);
      else
        out_printf(&o, "finch_requests_total{path=\"%s\",status=\"other\"} %llu\n", m->paths[p], v);
    }

  out_printf(&o, "# HELP finch_request_duration_seconds Time from a request's headers to its response sent.\n"
                 "# TYPE finch_request_duration_seconds histogram\n");
  for (size_t p = 0; p < m->n_paths; p++) {
    unsigned long long n = 0;
    for (size_t b = 0; b < SERVE_N_DUR_BUCKETS; b++) n += get(&m->dur[p][b]);
    if (!n && p != 0) continue;
    char labels[96];
    snprintf(labels, sizeof labels, "path=\"%s\",", m->paths[p]);
    out_histogram(&o, "finch_request_duration_seconds", labels, m->dur[p], SERVE_N_DUR_BUCKETS, metrics_dur_le,
                  NULL, (double)get(&m->dur_sum_ns[p]) / 1e9);
  }

  out_printf(&o, "# HELP finch_batch_size Texts per classifier run.\n"
                 "# TYPE finch_batch_size histogram\n");
  out_histogram(&o, "finch_batch_size", "", m->batch, SERVE_N_BATCH_BUCKETS, NULL, metrics_batch_le,
                (double)get(&m->batch_sum));

  out_printf(&o, "# HELP finch_decisions_total Answers given, by the engine that gave them.\n"
                 "# TYPE finch_decisions_total counter\n");
  for (size_t d = 0; d < SERVE_DECISION_COUNT; d++)
    out_printf(&o, "finch_decisions_total{engine=\"%s\"} %llu\n", metrics_decision_names[d], get(&m->decisions[d]));

  out_printf(&o, "# HELP finch_out_of_scope_total Decisions that the text is out of scope, by endpoint.\n"
                 "# TYPE finch_out_of_scope_total counter\n");
  for (size_t e = 0; e < SERVE_OOS_COUNT; e++)
    out_printf(&o, "finch_out_of_scope_total{endpoint=\"%s\"} %llu\n", metrics_oos_names[e],
               get(&m->out_of_scope[e]));

  out_printf(&o, "# HELP finch_queue_depth Classifications waiting or running.\n"
                 "# TYPE finch_queue_depth gauge\n"
                 "finch_queue_depth %lld\n",
             g->queue_depth);
  if (g->webhook_backlog >= 0)
    out_printf(&o, "# HELP finch_webhook_backlog Webhook deliveries not yet done (refreshed at most once a second).\n"
                   "# TYPE finch_webhook_backlog gauge\n"
                   "finch_webhook_backlog %lld\n",
               g->webhook_backlog);
  out_printf(&o, "# HELP finch_model_info The model being served.\n"
                 "# TYPE finch_model_info gauge\n"
                 "finch_model_info{sha256=\"%s\"} 1\n",
             g->model_sha256 ? g->model_sha256 : "");
  out_printf(&o, "# HELP finch_model_reloads_total Model reloads, by result.\n"
                 "# TYPE finch_model_reloads_total counter\n"
                 "finch_model_reloads_total{result=\"ok\"} %llu\n"
                 "finch_model_reloads_total{result=\"failed\"} %llu\n",
             get(&m->reloads_ok), get(&m->reloads_failed));
  if (o.oom) {
    free(o.buf);
    return NULL;
  }
  return o.buf;
}
