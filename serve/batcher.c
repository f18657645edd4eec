/* serve/batcher.h: one mutex-protected FIFO, drained by batcher threads. */
#include "serve/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "nn/model_arch.h"

struct serve_batcher {
  pthread_mutex_t lock;
  pthread_cond_t nonempty; /* signalled on submit and on stop */
  serve_batch_item *head, *tail;
  size_t n_queued;
  int stopping; /* no more waiting: threads exit once the queue is empty */
  int joined;   /* serve__batcher_stop() has run */
  size_t max_batch;
  uint64_t window_ns;
  unsigned delay_us;
  serve_batch_observe_fn observe;
  void *observe_ctx;
  pthread_t *threads;
  unsigned n_threads;
  /* Per-thread scratch for nn_model_predict_many, sized max_batch. */
  const char **texts;
  int32_t *preds;
};

/* Runs items (a list of n) grouped into runs of the same model, in queue
 * order; texts and preds are max_batch long. */
static void batcher_run(serve_batcher *b, serve_batch_item *items, size_t n, const char **texts, int32_t *preds) {
  if (b->delay_us)
    nanosleep(&(struct timespec){.tv_sec = b->delay_us / 1000000, .tv_nsec = (long)(b->delay_us % 1000000) * 1000},
              NULL);
  serve_batch_item *it = items;
  while (it) {
    const nn_model *m = it->model;
    size_t C = nn_model_n_labels(m), k = 0;
    serve_batch_item *run = it;
    for (serve_batch_item *p = it; p && p->model == m; p = p->next) texts[k++] = p->text;
    /* One run's probabilities are contiguous for predict_many: a scratch
     * block, copied out to the items. Small: k * C floats. */
    float *probs = malloc(k * C * sizeof *probs);
    finch_err err = {0};
    finch_status st = probs ? nn_model_predict_many(m, texts, k, probs, preds, 1.0f, &err) : FINCH_ENOMEM;
    if (st != FINCH_OK) finch_error("serve: batch of %zu failed: %s", k, probs ? err.msg : "out of memory");
    size_t i = 0;
    for (it = run; it && it->model == m; it = it->next, i++) {
      it->pred = st == FINCH_OK ? preds[i] : -1;
      if (st == FINCH_OK) memcpy(it->probs, probs + i * C, C * sizeof *probs);
      it->batch = (unsigned)n;
    }
    free(probs);
  }
  if (b->observe) b->observe(b->observe_ctx, n);
  /* The callbacks hand each item back to its submitter, who may free it at
   * once: read next first. */
  for (it = items; it;) {
    serve_batch_item *next = it->next;
    it->done(it);
    it = next;
  }
}

static void *batcher_main(void *arg) {
  serve_batcher *b = arg;
  pthread_mutex_lock(&b->lock);
  size_t idx = 0;
  for (unsigned i = 0; i < b->n_threads; i++)
    if (pthread_equal(b->threads[i], pthread_self())) idx = i;
  const char **texts = b->texts + idx * b->max_batch;
  int32_t *preds = b->preds + idx * b->max_batch;
  int busy = 0; /* items were queued when the last batch finished */
  for (;;) {
    while (!b->head && !b->stopping) pthread_cond_wait(&b->nonempty, &b->lock);
    if (!b->head) break; /* stopping, and nothing left */
    if (busy && b->window_ns && b->n_queued < b->max_batch && !b->stopping) {
      uint64_t deadline = b->head->queued_ns + b->window_ns;
      struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u), .tv_nsec = (long)(deadline % 1000000000u)};
      while (b->n_queued < b->max_batch && !b->stopping &&
             pthread_cond_timedwait(&b->nonempty, &b->lock, &ts) != ETIMEDOUT) {
      }
    }
    serve_batch_item *first = b->head, *last = first;
    size_t n = 1;
    while (n < b->max_batch && last->next) {
      last = last->next;
      n++;
    }
    b->head = last->next;
    if (!b->head) b->tail = NULL;
    b->n_queued -= n;
    last->next = NULL;
    pthread_mutex_unlock(&b->lock);
    batcher_run(b, first, n, texts, preds);
    pthread_mutex_lock(&b->lock);
    busy = b->head != NULL;
  }
  pthread_mutex_unlock(&b->lock);
  return NULL;
}

finch_status serve__batcher_start(serve_batcher **out, const serve_batcher_opts *opts, finch_err *err) {
  *out = NULL;
  unsigned threads = opts->threads;
  size_t max_batch = opts->max_batch;
  if (threads < 1 || max_batch < 1)
    return finch_err_set(err, FINCH_EINVAL, "serve: the batcher needs at least one thread and a batch of one");
  serve_batcher *b = calloc(1, sizeof *b);
  if (!b) return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  b->max_batch = max_batch;
  b->window_ns = (uint64_t)opts->window_us * 1000u;
  b->delay_us = opts->delay_us;
  b->observe = opts->observe;
  b->observe_ctx = opts->observe_ctx;
  b->threads = calloc(threads, sizeof *b->threads);
  b->texts = calloc((size_t)threads * max_batch, sizeof *b->texts);
  b->preds = calloc((size_t)threads * max_batch, sizeof *b->preds);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* queued_ns deadlines are monotonic */
  pthread_mutex_init(&b->lock, NULL);
  pthread_cond_init(&b->nonempty, &ca);
  pthread_condattr_destroy(&ca);
  if (!b->threads || !b->texts || !b->preds) {
    serve__batcher_free(b);
    return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  }
  /* The threads look their index up in b->threads, so they wait for the
   * whole array under the lock. */
  pthread_mutex_lock(&b->lock);
  for (unsigned i = 0; i < threads; i++) {
    int rc = pthread_create(&b->threads[i], NULL, batcher_main, b);
    if (rc) {
      pthread_mutex_unlock(&b->lock);
      serve__batcher_free(b);
      return finch_err_set(err, FINCH_EIO, "serve: cannot start a batcher thread: %s", strerror(rc));
    }
    b->n_threads++;
  }
  pthread_mutex_unlock(&b->lock);
  *out = b;
  return FINCH_OK;
}

void serve__batcher_submit(serve_batcher *b, serve_batch_item *it) {
  it->next = NULL;
  it->pred = -1;
  it->batch = 0;
  it->queued_ns = finch_clock_ns();
  pthread_mutex_lock(&b->lock);
  if (b->stopping) { /* no thread will take it: run it here, a batch of one */
    pthread_mutex_unlock(&b->lock);
    const char *text[1];
    int32_t pred[1];
    batcher_run(b, it, 1, text, pred);
    return;
  }
  if (b->tail)
    b->tail->next = it;
  else
    b->head = it;
  b->tail = it;
  b->n_queued++;
  pthread_cond_signal(&b->nonempty);
  pthread_mutex_unlock(&b->lock);
}

void serve__batcher_stop(serve_batcher *b) {
  if (!b) return;
  pthread_mutex_lock(&b->lock);
  int joined = b->joined;
  b->stopping = 1;
  b->joined = 1;
  pthread_cond_broadcast(&b->nonempty);
  pthread_mutex_unlock(&b->lock);
  if (joined) return;
  for (unsigned i = 0; i < b->n_threads; i++) pthread_join(b->threads[i], NULL);
}

void serve__batcher_free(serve_batcher *b) {
  if (!b) return;
  serve__batcher_stop(b);
  pthread_mutex_destroy(&b->lock);
  pthread_cond_destroy(&b->nonempty);
  free(b->threads);
  free(b->texts);
  free(b->preds);
  free(b);
}
