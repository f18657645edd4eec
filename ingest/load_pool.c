/* Parallel bulk load: the run's batches spread over several connections,
 * committed in order.
 *
 * One server backend parses, checks and indexes a COPY stream on one core;
 * with two connections the server works on two batches at once (on 2 cores,
 * 300,000 rows: 3.4 s on one connection, 2.0 s on two). Batch k goes to
 * whichever worker is free, its rows are staged (BEGIN, lookup, COPY) in
 * parallel with the others, but it commits only after batch k-1 has: the
 * run's progress stays a single watermark (rows_loaded), so a run killed at
 * any point has stored exactly the rows below it and resumes there.
 *
 * A worker waiting for its turn holds an open transaction whose rows no
 * other batch of the run touches (rows are deduplicated before loading), so
 * the workers cannot wait on one another inside the server. Two runs into
 * the same dataset could (each waiting on the other's uncommitted rows, out
 * of the server's sight), so finch_ingest_run serialises them with an
 * advisory lock per dataset. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "ingest/internal.h"

typedef struct {
  const ingest_table *t;
  const ingest_run *run;
  size_t batch, first, nbatches;
  volatile sig_atomic_t *stop;
  int progress;
  pthread_mutex_t mu;
  pthread_cond_t turn;
  size_t next_take;   /* next batch to claim */
  size_t next_commit; /* the batch whose turn it is to commit */
  int failed, stopped;
  finch_status st;
  finch_err err;
  long long inserted, dev;
} load_pool;

typedef struct {
  load_pool *pool;
  finch_db *db;
} load_worker;

static void pool_fail(load_pool *p, finch_status st, const finch_err *err) {
  pthread_mutex_lock(&p->mu);
  if (!p->failed) {
    p->failed = 1;
    p->st = st;
    p->err = *err;
  }
  pthread_cond_broadcast(&p->turn);
  pthread_mutex_unlock(&p->mu);
}

static void *worker_main(void *arg) {
  load_worker *w = arg;
  load_pool *p = w->pool;
  finch_err err;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    if (p->failed || p->next_take >= p->nbatches || (p->stop && *p->stop)) {
      if (p->stop && *p->stop && p->next_take < p->nbatches) p->stopped = 1;
      pthread_mutex_unlock(&p->mu);
      break;
    }
    /* The batch's ids are reserved as it is claimed, so batches hold
     * ascending ids in source order whichever worker stages them. */
    size_t k = p->next_take++;
    size_t from = p->first + k * p->batch, to = from + p->batch < p->t->n ? from + p->batch : p->t->n;
    long long *ids = NULL;
    finch_status st = ingest_reserve_ids(w->db, from, to, &ids, &err);
    pthread_mutex_unlock(&p->mu);
    long long ins = 0, dev = 0;
    if (!st) st = ingest_stage_batch(w->db, p->t, from, to, ids, p->run, &ins, &dev, &err);
    free(ids);
    if (st) {
      pool_fail(p, st, &err);
      break;
    }
    pthread_mutex_lock(&p->mu);
    while (p->next_commit != k && !p->failed) pthread_cond_wait(&p->turn, &p->mu);
    int failed = p->failed;
    pthread_mutex_unlock(&p->mu);
    if (failed) {
      /* An earlier batch failed: this one must not land above the gap. */
      finch_db_rollback(w->db);
      break;
    }
    st = ingest_commit_batch(w->db, p->run, to, ins, &err);
    if (st) {
      pool_fail(p, st, &err);
      break;
    }
    pthread_mutex_lock(&p->mu);
    p->next_commit++;
    p->inserted += ins;
    p->dev += dev;
    if (p->progress) fprintf(stderr, "\rloading: %zu / %zu rows   %s", to, p->t->n, to == p->t->n ? "\n" : "");
    pthread_cond_broadcast(&p->turn);
    pthread_mutex_unlock(&p->mu);
  }
  return NULL;
}

finch_status ingest_load_rows(finch_db *db, const ingest_table *t, const ingest_run *run, size_t batch, int jobs,
                              volatile sig_atomic_t *stop, int progress, long long *inserted, long long *dev,
                              int *stopped, finch_err *err) {
  load_pool p = {.t = t, .run = run, .batch = batch ? batch : 5000, .first = (size_t)run->rows_loaded,
                 .stop = stop, .progress = progress};
  *stopped = 0;
  if (p.first >= t->n) return FINCH_OK;
  p.nbatches = (t->n - p.first + p.batch - 1) / p.batch;
  if (jobs < 1) jobs = 2;
  if ((size_t)jobs > p.nbatches) jobs = (int)p.nbatches;
  pthread_mutex_init(&p.mu, NULL);
  pthread_cond_init(&p.turn, NULL);
  load_worker *w = calloc((size_t)jobs, sizeof *w);
  pthread_t *th = calloc((size_t)jobs, sizeof *th);
  if (!w || !th) {
    free(w);
    free(th);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  /* Worker 0 runs on the caller's connection and thread; the others each
   * get a connection of their own. One that cannot connect is left out. */
  int n = 1;
  w[0] = (load_worker){&p, db};
  for (int i = 1; i < jobs; i++) {
    finch_err cerr;
    finch_db *extra = NULL;
    if (finch_db_connect(&extra, &cerr)) {
      finch_warn("loading on %d connection(s): %s", n, cerr.msg);
      break;
    }
    w[n] = (load_worker){&p, extra};
    if (pthread_create(&th[n], NULL, worker_main, &w[n]) != 0) {
      finch_warn("loading on %d connection(s): cannot start a thread", n);
      finch_db_close(extra);
      break;
    }
    n++;
  }
  finch_debug("loading %zu batches of %zu rows on %d connection(s)", p.nbatches, p.batch, n);
  worker_main(&w[0]);
  for (int i = 1; i < n; i++) {
    pthread_join(th[i], NULL);
    finch_db_close(w[i].db);
  }
  free(w);
  free(th);
  pthread_mutex_destroy(&p.mu);
  pthread_cond_destroy(&p.turn);
  *inserted += p.inserted;
  *dev += p.dev;
  *stopped = p.stopped && !p.failed;
  if (p.failed) {
    *err = p.err;
    return p.st;
  }
  return FINCH_OK;
}
