/* Internal to nn/: batches gathered from an encoded corpus, shared by the
 * trainer (nn/tfm_train.c) and inference over a corpus (nn/tfm_eval.c);
 * implemented in nn/tfm_corpus.c. */
#ifndef FINCH_NN_TFM_BATCH_H
#define FINCH_NN_TFM_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "nn/rng.h"
#include "nn/tfm.h"
#include "nn/tfm_train.h"

/* The rng stream of MLM masking, in training and in nn_tfm_mlm_eval. */
#define NN__TFM_RNG_MASK 13

typedef struct {
  int Bmax, T;
  int32_t *ids;    /* (Bmax,T) */
  uint8_t *mask;   /* (Bmax,T) */
  size_t *ng_offs; /* (Bmax*T+1) */
  uint32_t *ng_ids;
  size_t ng_cap;
  int32_t *y;      /* (Bmax) */
  float *soft;     /* (Bmax,C) */
  float *alpha;    /* (Bmax) */
  int32_t *mpos, *mtgt; /* (Bmax*T) masked positions and their true ids */
} nn__tfm_batch_buf;

void nn__tfm_batch_free(nn__tfm_batch_buf *b);
/* Buffers for up to Bmax rows of T positions and C labels; 0, or -1 when out of memory. */
int nn__tfm_batch_init(nn__tfm_batch_buf *b, int Bmax, int T, int C);
/* Gathers rows rows[0..B) of x into b, trimmed to the longest row: the
 * batch's T. Returns T, or -1 when out of memory. */
int nn__tfm_batch_fill(nn__tfm_batch_buf *b, const nn_tfm_corpus *x, const uint32_t *rows, int B, nn_tfm_batch *out);
/* BERT's masking on a filled batch: each real token but [CLS] is chosen with
 * probability p; a chosen token becomes [MASK] (80%), a random piece (10%)
 * or stays (10%). Positions and true ids go to b->mpos / b->mtgt; returns P.
 * At most cap positions. */
int nn__tfm_batch_mask(nn__tfm_batch_buf *b, const nn_tfm_batch *nb, float p, uint32_t V, int cap, nn_rng *rng);

#endif
