/* The teacher's "bert" member: a pretrained encoder, a head fitted on its
 * pooled vectors, and when asked both fine-tuned (distill/teacher_bert.h).
 * The vectors live in memory for the member's training only; nothing of them
 * is written. */
#include "distill/teacher_bert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/paths.h"
#include "nn/bert.h"
#include "nn/bert_head.h"
#include "nn/bert_tokenizer.h"

/* Rows per call of the encoder: one progress update each. Within a chunk the
 * encoder groups texts of similar length into its batches. */
#define CHUNK 2048
#define BATCH 32

finch_status finch_teacher__bert_dir(char *buf, size_t n, finch_err *err) {
  return finch_pretrained_dir(FINCH_TEACHER_BERT_MODEL, buf, n, err);
}

finch_status finch_teacher__bert_identity(const char *dir, char out[FINCH_SHA256_HEX_LEN], finch_err *err) {
  static const char *const files[] = {"model.safetensors", "tokenizer.json"};
  char path[4200], hex[2][FINCH_SHA256_HEX_LEN];
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    finch_status st = finch_sha256_file(path, hex[i], err);
    if (st) return st;
  }
  char both[2 * FINCH_SHA256_HEX_LEN + 2];
  snprintf(both, sizeof both, "%s|%s", hex[0], hex[1]);
  finch_sha256_hex(both, strlen(both), out);
  return FINCH_OK;
}

static void progress(int tty, size_t done, size_t n, double t0, double *last) {
  double t = finch_clock_s(), rate = (double)done / (t - t0 > 1e-9 ? t - t0 : 1e-9);
  if (done != n && t - *last < (tty ? 0.2 : 15.0)) return;
  *last = t;
  int eta = (int)((double)(n - done) / (rate > 0 ? rate : 1));
  if (tty)
    fprintf(stderr, "\rbert embed: %zu/%zu rows %.0f rows/s ETA %d:%02d   %s", done, n, rate, eta / 60, eta % 60,
            done == n ? "\n" : "");
  else
    finch_info("bert embed: %zu/%zu rows %.0f rows/s ETA %d:%02d", done, n, rate, eta / 60, eta % 60);
}

/* Encoder enc (loaded from dir) and head (W, b: the fitted one in, the tuned
 * one out) fine-tuned on texts and y as t says. */
static finch_status tune_encoder(const char *dir, nn_backend *be, const char *const *texts, const int32_t *y, size_t n,
                                 size_t C, const finch_teacher__bert_tune *t, float *W, float *b, nn_bert **enc,
                                 finch_err *err) {
  char path[4200];
  nn_bert_tok_t *tok = NULL;
  nn_bert_ids x = {0};
  nn_bert_train_config tc = nn_bert_train_defaults();
  tc.epochs = t->epochs;
  tc.seed = t->seed;
  tc.init_head = 0;
  tc.checkpoint = t->checkpoint;
  tc.resume = t->resume;
  snprintf(path, sizeof path, "%s/config.json", dir);
  finch_status st = nn_bert_dropout_read(path, &tc.hidden_dropout, &tc.attn_dropout, err);
  if (!st) st = nn_bert_load_dir(enc, dir, err);
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  if (!st) st = nn_bert_tok_load(path, &tok, err);
  if (!st) st = nn_bert_ids_encode(&x, tok, texts, n, FINCH_TEACHER_BERT_SEQ_LEN, err);
  if (st) goto out;
  finch_info("bert: fine-tuning encoder and head on %zu rows, %u epochs, batch %u, lr %.0e (head %.0e), from the "
             "fitted head, seed %llu",
             n, tc.epochs, tc.batch, (double)tc.lr, (double)tc.head_lr, (unsigned long long)tc.seed);
  const double t0 = finch_clock_s();
  if ((st = nn_bert_finetune(*enc, W, b, (int)C, be, &x, y, &tc, t->cb, t->cb_ctx, err)) != FINCH_OK) {
    finch_err_prefix(err, "fine-tuning the bert member");
    goto out;
  }
  finch_info("bert: fine-tuned in %.1f s", finch_clock_s() - t0);
out:
  nn_bert_ids_free(&x);
  nn_bert_tok_free(tok);
  return st;
}

finch_status finch_teacher__bert_train(const char *dir, nn_backend *be, const char *const *texts, const int32_t *y,
                                       size_t n, const char *const *labels, size_t C,
                                       const finch_teacher__bert_tune *tune, int quiet, nn_model **out,
                                       finch_err *err) {
  *out = NULL;
  nn_model *enc = NULL;
  nn_bert *tuned = NULL;
  float *X = NULL, *W = NULL, *b = NULL;
  const char *one[1] = {"-"};
  /* An encoder with a placeholder head gives the vectors; the member is
   * built again from the directory once its head is known. */
  finch_status st = nn_model_bert_from_dir(&enc, dir, FINCH_TEACHER_BERT_SEQ_LEN, one, 1, NULL, NULL, err);
  if (st) return st;
  const size_t D = nn_bert_get_config(nn_model_bert(enc))->dim;
  X = malloc((n ? n : 1) * D * sizeof *X);
  W = malloc(C * D * sizeof *W);
  b = malloc(C * sizeof *b);
  if (!X || !W || !b) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for the pooled vectors of %zu rows", n);
    goto out;
  }
  const double t0 = finch_clock_s();
  double last = 0;
  const int tty = isatty(2);
  finch_info("bert: embedding %zu rows with %s (%zu parameters, frozen), %d tokens at most", n,
             FINCH_TEACHER_BERT_MODEL, nn_bert_n_params(nn_model_bert(enc)), FINCH_TEACHER_BERT_SEQ_LEN);
  for (size_t i = 0; i < n; i += CHUNK) {
    size_t k = n - i < CHUNK ? n - i : CHUNK;
    if ((st = nn_model_bert_embed(enc, be, texts + i, k, BATCH, X + i * D, err)) != FINCH_OK) {
      finch_err_prefix(err, "rows %zu..%zu", i, i + k - 1);
      goto out;
    }
    if (!quiet) progress(tty, i + k, n, t0, &last);
  }
  const double t1 = finch_clock_s();
  const nn_bert_head_config hc = nn_bert_head_defaults();
  if ((st = nn_bert_head_fit(X, y, n, D, C, &hc, W, b, err)) != FINCH_OK) goto out;
  finch_info("bert: %zu rows embedded in %.1f s, head (%zu x %zu) fitted in %.1f s, training loss %.4f", n, t1 - t0,
             C, D, finch_clock_s() - t1, nn_bert_head_loss(X, y, n, D, C, W, b, hc.l2, NULL, NULL));
  nn_model_free(enc), enc = NULL;
  free(X), X = NULL;
  if (tune && tune->epochs > 0 && (st = tune_encoder(dir, be, texts, y, n, C, tune, W, b, &tuned, err)) != FINCH_OK)
    goto out;
  st = nn_model_bert_from_dir(out, dir, FINCH_TEACHER_BERT_SEQ_LEN, labels, C, W, b, err);
  if (!st && tuned) {
    /* The model owns its encoder, which it allocated writable; nn_model_bert
     * gives it read-only for use, and the model's forward and file read its
     * parameter block, so the tuned block replaces the pretrained one here. */
    nn_bert *dst = (nn_bert *)nn_model_bert(*out);
    memcpy(nn_bert_params_mut(dst), nn_bert_params(tuned), nn_bert_n_params(tuned) * sizeof(float));
  }
out:
  nn_bert_free(tuned);
  nn_model_free(enc);
  free(X), free(W), free(b);
  return st;
}
