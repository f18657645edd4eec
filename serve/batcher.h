/* Dynamic batching of classifications for the intent server.
 *
 * Request handlers submit items (a model, a text, room for the answer) and
 * return; batcher threads take up to max_batch queued items at a time, run
 * nn_model_predict_many() once per model among them, fill in the answers and
 * call each item's done callback.
 *
 * Batches form naturally: a batcher that was idle takes what is queued at
 * once (a lone request waits for nothing), and items arriving while it runs
 * a batch queue up for the next one. Only a batcher that finds items already
 * queued when it finishes a batch (the server is busy) waits for more, at
 * most window_us after the oldest of them arrived, and never past max_batch.
 *
 * The queue itself is unbounded: the server bounds the work in flight
 * before submitting (serve/server.c answers 503 past max_queue). */
#ifndef FINCH_SERVE_BATCHER_H
#define FINCH_SERVE_BATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "nn/model.h"

typedef struct serve_batch_item serve_batch_item;

/* Called on a batcher thread once the item's answer is in. The item belongs
 * to the submitter: the callback is the batcher's last access to it. */
typedef void (*serve_batch_done_fn)(serve_batch_item *it);

struct serve_batch_item {
  /* In: set by the submitter. */
  const nn_model *model;
  const char *text;    /* valid UTF-8, NUL-terminated; kept alive by the submitter */
  float *probs;        /* nn_model_n_labels(model) floats */
  serve_batch_done_fn done;
  void *ctx;           /* the submitter's */
  /* Out: set before done is called. */
  int32_t pred;        /* arg-max label index; -1 when the model failed */
  unsigned batch;      /* size of the batch the item ran in */
  /* The batcher's. */
  serve_batch_item *next;
  uint64_t queued_ns;
};

typedef struct serve_batcher serve_batcher;

/* Optional observer of every batch run (metrics), called on the batcher
 * thread after the batch's answers are in and before any done callback. */
typedef void (*serve_batch_observe_fn)(void *ctx, size_t n);

typedef struct {
  unsigned threads;      /* batcher threads, >= 1 */
  size_t max_batch;      /* >= 1 */
  unsigned window_us;    /* the most a busy batcher waits for a batch to fill */
  unsigned delay_us;     /* sleep before each batch: a slower model, for tests */
  serve_batch_observe_fn observe;
  void *observe_ctx;
} serve_batcher_opts;

finch_status serve__batcher_start(serve_batcher **out, const serve_batcher_opts *opts, finch_err *err);
/* Queues it; never blocks on the model. After serve__batcher_stop() has
 * begun, runs it at once on the calling thread instead (done included). */
void serve__batcher_submit(serve_batcher *b, serve_batch_item *it);
/* Runs what is still queued and joins the threads; b stays valid (later
 * submissions run on their callers). Idempotent; NULL is a no-op. */
void serve__batcher_stop(serve_batcher *b);
/* Stops b if needed and frees it; no submission may follow or be under way. */
void serve__batcher_free(serve_batcher *b);

#endif
