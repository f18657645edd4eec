/* The /v1/intent recorder (serve/monitor.h): per-minute counts in memory,
 * written to serve_minutes by a thread of its own.
 *
 * The counts live in one array of minutes, at most SERVE_MINUTES_MAX, behind
 * one mutex. A flush takes the minutes it writes out of the array under the
 * mutex and inserts them without it, so requests never wait on the
 * database; a failed insert puts their counts back. The connection is made
 * on the first flush and reset after a failure. */
#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/log.h"
#include "serve/monitor.h"

typedef struct {
  time_t minute; /* seconds since the epoch, a multiple of 60 */
  char sha[FINCH_SHA256_HEX_LEN];
  long long requests, out_of_scope;
  long long hist[SERVE_MONITOR_BINS];
} minutes_row;

struct serve_minutes {
  char *conninfo, *deployment;
  unsigned flush_ms;
  PGconn *conn; /* the flushing thread's (or the caller's of serve_minutes_flush) */
  pthread_mutex_t flush_lock; /* one flush at a time: guards conn */
  pthread_mutex_t lock;       /* guards rows, n, stop */
  pthread_cond_t wake;
  minutes_row *rows; /* n of cap */
  size_t n, cap;
  int stop, started;
  pthread_t thread;
};

int serve_monitor_bin(double ms) {
  if (!(ms > 0.01)) return 0;
  double b = ceil((double)SERVE_MONITOR_BINS_PER_DOUBLING * log2(ms / 0.01));
  return b >= SERVE_MONITOR_BINS - 1 ? SERVE_MONITOR_BINS - 1 : b < 1 ? 1 : (int)b;
}

double serve_monitor_bin_ms(int bin) {
  if (bin >= SERVE_MONITOR_BINS - 1) bin = SERVE_MONITOR_BINS - 2;
  return 0.01 * exp2((double)(bin < 0 ? 0 : bin) / SERVE_MONITOR_BINS_PER_DOUBLING);
}

/* The row of (minute, sha), appended when new; NULL when out of memory.
 * Under lock. */
static minutes_row *minutes_row_of(serve_minutes *m, time_t minute, const char *sha) {
  for (size_t i = m->n; i-- > 0;)
    if (m->rows[i].minute == minute && strcmp(m->rows[i].sha, sha) == 0) return &m->rows[i];
  if (m->n == m->cap && m->cap < SERVE_MINUTES_MAX) {
    size_t cap = m->cap ? 2 * m->cap : 8;
    minutes_row *rows = realloc(m->rows, cap * sizeof *rows);
    if (!rows) return NULL;
    m->rows = rows;
    m->cap = cap;
  }
  if (m->n == m->cap) {
    finch_warn("serve: monitor: %d minutes held unwritten; the oldest is dropped", SERVE_MINUTES_MAX);
    size_t old = 0;
    for (size_t i = 1; i < m->n; i++)
      if (m->rows[i].minute < m->rows[old].minute) old = i;
    m->rows[old] = m->rows[--m->n];
  }
  minutes_row *r = &m->rows[m->n++];
  memset(r, 0, sizeof *r);
  r->minute = minute;
  snprintf(r->sha, sizeof r->sha, "%s", sha);
  return r;
}

void serve_minutes_add(serve_minutes *m, const char *model_sha256, int out_of_scope, double latency_ms, time_t at) {
  if (!m) return;
  int bin = serve_monitor_bin(latency_ms);
  pthread_mutex_lock(&m->lock);
  minutes_row *r = minutes_row_of(m, at - at % 60, model_sha256 ? model_sha256 : "");
  if (r) {
    r->requests++;
    r->out_of_scope += out_of_scope != 0;
    r->hist[bin]++;
  }
  pthread_mutex_unlock(&m->lock);
}

/* Puts rows back after a failed write, adding to what came in meanwhile. */
static void minutes_put_back(serve_minutes *m, const minutes_row *rows, size_t n) {
  pthread_mutex_lock(&m->lock);
  for (size_t i = 0; i < n; i++) {
    minutes_row *r = minutes_row_of(m, rows[i].minute, rows[i].sha);
    if (!r) break;
    r->requests += rows[i].requests;
    r->out_of_scope += rows[i].out_of_scope;
    for (int b = 0; b < SERVE_MONITOR_BINS; b++) r->hist[b] += rows[i].hist[b];
  }
  pthread_mutex_unlock(&m->lock);
}

/* Inserts one row on m->conn. */
static finch_status minutes_insert(serve_minutes *m, const minutes_row *r, finch_err *err) {
  char when[32], req[32], oos[32], bins[SERVE_MONITOR_BINS * 5 + 3], counts[SERVE_MONITOR_BINS * 21 + 3];
  snprintf(when, sizeof when, "%lld", (long long)r->minute);
  snprintf(req, sizeof req, "%lld", r->requests);
  snprintf(oos, sizeof oos, "%lld", r->out_of_scope);
  size_t nb = 0, nc = 0;
  bins[nb++] = '{';
  counts[nc++] = '{';
  for (int b = 0; b < SERVE_MONITOR_BINS; b++) {
    if (!r->hist[b]) continue;
    int first = nb == 1;
    nb += (size_t)snprintf(bins + nb, sizeof bins - nb, "%s%d", first ? "" : ",", b);
    nc += (size_t)snprintf(counts + nc, sizeof counts - nc, "%s%lld", first ? "" : ",", r->hist[b]);
  }
  snprintf(bins + nb, sizeof bins - nb, "}");
  snprintf(counts + nc, sizeof counts - nc, "}");
  const char *p[7] = {m->deployment, r->sha, when, req, oos, bins, counts};
  return finch_db_run_on(m->conn,
                         "INSERT INTO serve_minutes (deployment, model_sha256, minute, requests, out_of_scope,"
                         " latency_bins, latency_counts) VALUES ($1, $2, to_timestamp($3::bigint), $4::bigint,"
                         " $5::bigint, $6::smallint[], $7::bigint[])",
                         7, p, err);
}

finch_status serve_minutes_flush(serve_minutes *m, int all, finch_err *err) {
  if (!m) return FINCH_OK;
  time_t now = time(NULL), cur = now - now % 60;
  pthread_mutex_lock(&m->flush_lock);
  pthread_mutex_lock(&m->lock);
  size_t n = 0;
  minutes_row *out = malloc((m->n ? m->n : 1) * sizeof *out);
  if (!out) {
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_unlock(&m->flush_lock);
    return finch_err_set(err, FINCH_ENOMEM, "serve: monitor: out of memory");
  }
  for (size_t i = 0; i < m->n;) {
    if (all || m->rows[i].minute < cur) {
      out[n++] = m->rows[i];
      m->rows[i] = m->rows[--m->n];
    } else {
      i++;
    }
  }
  pthread_mutex_unlock(&m->lock);
  finch_status st = FINCH_OK;
  size_t done = 0;
  if (n) {
    if (!m->conn) m->conn = PQconnectdb(m->conninfo);
    else if (PQstatus(m->conn) != CONNECTION_OK) PQreset(m->conn);
    if (PQstatus(m->conn) != CONNECTION_OK) {
      char msg[512];
      snprintf(msg, sizeof msg, "%s", PQerrorMessage(m->conn));
      msg[strcspn(msg, "\n")] = '\0';
      st = finch_err_set(err, FINCH_EDB, "serve: monitor: cannot connect to PostgreSQL: %s", msg);
    } else {
      PQclear(PQexec(m->conn, "SET client_min_messages = warning"));
      while (done < n && !(st = minutes_insert(m, &out[done], err))) done++;
    }
  }
  if (done < n) minutes_put_back(m, out + done, n - done);
  free(out);
  pthread_mutex_unlock(&m->flush_lock);
  return st;
}

static void *minutes_main(void *arg) {
  serve_minutes *m = arg;
  pthread_mutex_lock(&m->lock);
  while (!m->stop) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += m->flush_ms / 1000;
    t.tv_nsec += (long)(m->flush_ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
      t.tv_sec++;
      t.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&m->wake, &m->lock, &t);
    if (m->stop) break;
    pthread_mutex_unlock(&m->lock);
    finch_err err = {0};
    if (serve_minutes_flush(m, 0, &err)) finch_warn("%s", err.msg);
    pthread_mutex_lock(&m->lock);
  }
  pthread_mutex_unlock(&m->lock);
  return NULL;
}

static void minutes_free(serve_minutes *m) {
  PQfinish(m->conn);
  pthread_cond_destroy(&m->wake);
  pthread_mutex_destroy(&m->lock);
  pthread_mutex_destroy(&m->flush_lock);
  free(m->rows);
  free(m->conninfo);
  free(m->deployment);
  free(m);
}

finch_status serve_minutes_open(serve_minutes **out, const char *conninfo, const char *deployment,
                                unsigned flush_ms, finch_err *err) {
  *out = NULL;
  serve_minutes *m = calloc(1, sizeof *m);
  if (!m) return finch_err_set(err, FINCH_ENOMEM, "serve: monitor: out of memory");
  pthread_mutex_init(&m->lock, NULL);
  pthread_mutex_init(&m->flush_lock, NULL);
  pthread_cond_init(&m->wake, NULL);
  m->flush_ms = flush_ms ? flush_ms : 10000;
  m->conninfo = strdup(conninfo ? conninfo : "");
  m->deployment = strdup(deployment ? deployment : "");
  if (!m->conninfo || !m->deployment) {
    minutes_free(m);
    return finch_err_set(err, FINCH_ENOMEM, "serve: monitor: out of memory");
  }
  if (pthread_create(&m->thread, NULL, minutes_main, m) != 0) {
    minutes_free(m);
    return finch_err_set(err, FINCH_EINTERNAL, "serve: monitor: cannot start the recorder's thread");
  }
  m->started = 1;
  *out = m;
  return FINCH_OK;
}

void serve_minutes_close(serve_minutes *m) {
  if (!m) return;
  if (m->started) {
    pthread_mutex_lock(&m->lock);
    m->stop = 1;
    pthread_cond_signal(&m->wake);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->thread, NULL);
  }
  finch_err err = {0};
  if (serve_minutes_flush(m, 1, &err)) finch_warn("%s (these minutes' /v1/intent counts are lost)", err.msg);
  minutes_free(m);
}
