/* The teacher's "bert" member (distill/teacher.h): a pretrained encoder
 * (all-MiniLM-L6-v2, nn/bert.h) with a softmax-regression head fitted on its
 * pooled vectors of the training rows (nn/bert_head.h), then, when asked,
 * encoder and head fine-tuned together from there (nn/bert_train.h).
 * Internal to distill/. */
#ifndef FINCH_DISTILL_TEACHER_BERT_H
#define FINCH_DISTILL_TEACHER_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "core/hash.h"
#include "core/status.h"
#include "nn/backend.h"
#include "nn/bert_train.h"
#include "nn/model.h"

/* The checkpoint the member is built from, under the pretrained_dir setting. */
#define FINCH_TEACHER_BERT_MODEL "all-minilm-l6-v2"
/* Tokens per text, [CLS] and [SEP] included (BANKING77's longest is ~80). */
#define FINCH_TEACHER_BERT_SEQ_LEN 128

/* The checkpoint directory into buf; finch_pretrained_dir's one-line
 * FINCH_ENOTFOUND (naming scripts/fetch-pretrained.sh) when it is not
 * installed. */
finch_status finch_teacher__bert_dir(char *buf, size_t n, finch_err *err);

/* What the member cache keys the weights by: the SHA-256 of the directory's
 * model.safetensors (about 0.3 s for 90 MB) and of its tokenizer.json. */
finch_status finch_teacher__bert_identity(const char *dir, char out[FINCH_SHA256_HEX_LEN], finch_err *err);

/* Fine-tuning after the head's fit. epochs 0 = none: the encoder stays
 * frozen. Otherwise nn_bert_train_defaults' recipe (batch 32, lr 1e-4, head
 * lr 2e-3, warm-up 10 %, linear decay, weight decay 0.01, clipping 1.0, the
 * checkpoint's dropout) for epochs, starting from the fitted head rather
 * than a fresh one (a linear probe, then fine-tuning: the encoder's first
 * steps follow a head that already separates the labels), every random
 * choice from seed. checkpoint (NULL = none) is written every 200 steps and
 * read when resume; cb (may be NULL) is called after every step. */
typedef struct {
  uint32_t epochs;
  uint64_t seed;
  const char *checkpoint;
  int resume;
  nn_bert_step_cb cb;
  void *cb_ctx;
} finch_teacher__bert_tune;

/* The member: pooled vectors of texts (n) on be (NULL = the CPU) in chunks
 * with a progress line (none when quiet), the head fitted on them and y
 * (n, in [0,C)), fine-tuning as tune says (NULL = none), and a "bert" model
 * of labels (C) holding the encoder and the head. */
finch_status finch_teacher__bert_train(const char *dir, nn_backend *be, const char *const *texts, const int32_t *y,
                                       size_t n, const char *const *labels, size_t C,
                                       const finch_teacher__bert_tune *tune, int quiet, nn_model **out,
                                       finch_err *err);

#endif
