/* bench_bert: pooled sentence vectors per second of the pretrained BERT
 * encoder (nn/bert.h, all-MiniLM-L6-v2) at batch 1 and batch 32, on the CPU
 * with 2 BLAS threads and, when a device is found, on CUDA. The texts are
 * BANKING77's (cut at 128 tokens), or one repeated sentence without the data.
 *
 *   bench_bert [--frozen] [--finetune EPOCHS | --finetune-speed STEPS] [--seq T] [--cuda]
 *
 * The checkpoint comes from $FINCH_PRETRAINED_DIR/all-minilm-l6-v2
 * (scripts/fetch-pretrained.sh); without it the bench says so and exits 0.
 * --frozen also measures the frozen baseline: the pooled vectors of
 * BANKING77's train split less the stratified, seeded 10% holdout of
 * bench_sparse_lr (seed 42, the same rows), a softmax regression fitted on
 * them (nn/bert_head.h's defaults: full-batch Adam, 400 steps, L2 1e-4), and
 * its holdout accuracy.
 * --finetune EPOCHS fine-tunes the encoder and a fresh head
 * (nn/bert_train.h, the trainer's defaults: batch 32, lr 1e-4, head 2e-3,
 * linear warm-up 10% and decay, clipping 1.0, the checkpoint's dropout,
 * length-bucketed batches) on the same train rows, cut at --seq tokens
 * (default 64), and reports examples/s and the holdout accuracy;
 * --finetune-speed STEPS stops after STEPS steps and reports examples/s
 * only. --cuda runs the fine-tuning on a CUDA device. A fine-tuning run skips
 * the inference rates. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_data.h"
#include "core/clock.h"
#include "nn/bert.h"
#include "nn/bert_head.h"
#include "nn/bert_tokenizer.h"
#include "nn/bert_train.h"
#include "nn/model.h"

/* Vectors per second of embedding n texts in batches of batch on be: one
 * call, so one work area (and, on a device, one upload of the weights). */
static double rate(const nn_model *m, nn_backend *be, const char *const *texts, size_t n, int batch, float *out) {
  finch_err err = {0};
  double t0 = finch_clock_s();
  if (nn_model_bert_embed(m, be, texts, n, batch, out, &err) != FINCH_OK) {
    fprintf(stderr, "embed: %s\n", err.msg);
    return 0;
  }
  return (double)n / (finch_clock_s() - t0);
}

static int frozen(const nn_model *m, const bench_rows *r) {
  const size_t D = nn_bert_get_config(nn_model_bert(m))->dim;
  char **labels = malloc(r->n * sizeof(char *));
  int32_t *y = malloc(r->n * sizeof(int32_t));
  const size_t nl = bench_label_ids(r, labels, y);
  char *held = bench_holdout(r, y, nl);
  float *X = malloc(r->n * D * sizeof *X);
  finch_err err = {0};
  double t0 = finch_clock_s();
  if (nn_model_bert_embed(m, NULL, (const char *const *)r->text, r->n, 32, X, &err) != FINCH_OK) {
    fprintf(stderr, "embed: %s\n", err.msg);
    return 1;
  }
  double emb_s = finch_clock_s() - t0;
  size_t ntr = 0, nho = 0;
  float *Xtr = malloc(r->n * D * sizeof *Xtr), *Xho = malloc(r->n * D * sizeof *Xho);
  int32_t *ytr = malloc(r->n * sizeof *ytr), *yho = malloc(r->n * sizeof *yho);
  for (size_t i = 0; i < r->n; i++) {
    if (held[i]) memcpy(Xho + nho * D, X + i * D, D * sizeof *X), yho[nho++] = y[i];
    else memcpy(Xtr + ntr * D, X + i * D, D * sizeof *X), ytr[ntr++] = y[i];
  }
  float *W = malloc(nl * D * sizeof *W), *b = malloc(nl * sizeof *b);
  t0 = finch_clock_s();
  const nn_bert_head_config hc = nn_bert_head_defaults();
  if (nn_bert_head_fit(Xtr, ytr, ntr, D, nl, &hc, W, b, &err) != FINCH_OK) {
    fprintf(stderr, "head: %s\n", err.msg);
    return 1;
  }
  double fit_s = finch_clock_s() - t0;
  size_t right = 0, right_tr = 0;
  for (int pass = 0; pass < 2; pass++) {
    const float *Xs = pass ? Xho : Xtr;
    const int32_t *ys = pass ? yho : ytr;
    size_t n = pass ? nho : ntr, *ok = pass ? &right : &right_tr;
    for (size_t i = 0; i < n; i++) {
      size_t best = 0;
      float bz = -INFINITY;
      for (size_t k = 0; k < nl; k++) {
        float z = b[k];
        for (size_t d = 0; d < D; d++) z += W[k * D + d] * Xs[i * D + d];
        if (z > bz) bz = z, best = k;
      }
      *ok += (int32_t)best == ys[i];
    }
  }
  printf("frozen baseline: %zu train / %zu holdout rows, %zu labels; embedding %.1f s, fit %.1f s\n", ntr, nho, nl,
         emb_s, fit_s);
  printf("  train accuracy %.2f%%  holdout accuracy %.2f%%\n", 100.0 * right_tr / ntr, 100.0 * right / nho);
  free(labels), free(y), free(held), free(X), free(Xtr), free(Xho), free(ytr), free(yho), free(W), free(b);
  return 0;
}

typedef struct {
  double t0, t_first; /* start, end of the first step */
  uint64_t first_step;
  int every;
} ft_log;

static void ft_step(void *p, const nn_bert_progress *pr) {
  ft_log *l = p;
  if (!l->first_step) l->first_step = pr->step, l->t_first = finch_clock_s();
  if (pr->step % (uint64_t)l->every == 0 || pr->step == pr->total)
    printf("  step %5llu/%llu  epoch %u  loss %.4f  lr %.2e  |g| %.3f  %.1f examples/s\n",
           (unsigned long long)pr->step, (unsigned long long)pr->total, pr->epoch, pr->loss, pr->lr, pr->grad_norm,
           pr->ex_per_s);
  fflush(stdout);
}

/* Fine-tunes the encoder and a fresh head on the train rows less the
 * holdout (frozen's split), rows cut at T tokens, with the trainer's
 * defaults but epochs; steps > 0 stops after that many (a speed run: the
 * examples/s past the first step are reported, and no accuracy). */
static int finetune(const char *mdir, const bench_rows *r, int T, uint32_t epochs, uint64_t steps, nn_backend *be) {
  char path[4200];
  finch_err err = {0};
  nn_bert *enc = NULL;
  nn_bert_tok_t *tok = NULL;
  float ph = 0.1f, pa = 0.1f;
  snprintf(path, sizeof path, "%s/tokenizer.json", mdir);
  if (nn_bert_load_dir(&enc, mdir, &err) != FINCH_OK || nn_bert_tok_load(path, &tok, &err) != FINCH_OK) {
    fprintf(stderr, "fine-tune: %s\n", err.msg);
    return 1;
  }
  snprintf(path, sizeof path, "%s/config.json", mdir);
  if (nn_bert_dropout_read(path, &ph, &pa, &err) != FINCH_OK) fprintf(stderr, "fine-tune: %s\n", err.msg);
  char **labels = malloc(r->n * sizeof(char *));
  int32_t *y = malloc(r->n * sizeof(int32_t)), *ytr = malloc(r->n * sizeof *ytr), *yho = malloc(r->n * sizeof *yho);
  const size_t nl = bench_label_ids(r, labels, y), D = nn_bert_get_config(enc)->dim;
  char *held = bench_holdout(r, y, nl);
  const char **ttr = malloc(r->n * sizeof(char *)), **tho = malloc(r->n * sizeof(char *));
  size_t ntr = 0, nho = 0;
  for (size_t i = 0; i < r->n; i++) {
    if (held[i]) tho[nho] = r->text[i], yho[nho++] = y[i];
    else ttr[ntr] = r->text[i], ytr[ntr++] = y[i];
  }
  nn_bert_ids xtr = {0}, xho = {0};
  float *hw = malloc(nl * D * sizeof *hw), *hb = malloc(nl * sizeof *hb);
  int32_t *pred = malloc(r->n * sizeof *pred);
  int rc = 1;
  if (nn_bert_ids_encode(&xtr, tok, ttr, ntr, T, &err) != FINCH_OK ||
      nn_bert_ids_encode(&xho, tok, tho, nho, T, &err) != FINCH_OK) {
    fprintf(stderr, "fine-tune: %s\n", err.msg);
    goto out;
  }
  double mean_len = 0;
  for (size_t i = 0; i < ntr; i++) mean_len += xtr.len[i];
  nn_bert_train_config c = nn_bert_train_defaults();
  c.epochs = epochs;
  c.hidden_dropout = ph;
  c.attn_dropout = pa;
  c.stop_after = steps;
  printf("fine-tuning on %s: %zu train / %zu holdout rows, %zu labels, %d tokens at most (mean %.1f), batch %u, "
         "%u epochs, lr %.0e (head %.0e), warm-up %.0f%%, dropout %.2f/%.2f, bucket %u%s\n",
         be ? be->name : "cpu (2 threads)", ntr, nho, nl, T, mean_len / (double)ntr, c.batch, c.epochs,
         (double)c.lr, (double)c.head_lr, 100.0 * c.warmup, (double)ph, (double)pa, c.bucket,
         steps ? " (speed run)" : "");
  ft_log lg = {.t0 = finch_clock_s(), .every = steps ? 1 : 25};
  if (nn_bert_finetune(enc, hw, hb, (int)nl, be, &xtr, ytr, &c, ft_step, &lg, &err) != FINCH_OK) {
    fprintf(stderr, "fine-tune: %s\n", err.msg);
    goto out;
  }
  const double t_end = finch_clock_s();
  const uint64_t done = steps ? steps : (uint64_t)((ntr + c.batch - 1) / c.batch) * epochs;
  if (done > 1)
    printf("  %.1f examples/s past the first step (%.1f s in all)\n",
           (double)(done - 1) * c.batch / (t_end - lg.t_first), t_end - lg.t0);
  if (!steps) {
    double t1 = finch_clock_s();
    if (nn_bert_predict_ids(enc, hw, hb, (int)nl, be, &xho, 64, pred, &err) != FINCH_OK) {
      fprintf(stderr, "fine-tune: %s\n", err.msg);
      goto out;
    }
    size_t right = 0;
    for (size_t i = 0; i < nho; i++) right += pred[i] == yho[i];
    printf("  holdout accuracy %.2f%% (%zu / %zu; prediction %.1f s)\n", 100.0 * right / nho, right, nho,
           finch_clock_s() - t1);
  }
  rc = 0;
out:
  nn_bert_ids_free(&xtr);
  nn_bert_ids_free(&xho);
  nn_bert_free(enc);
  nn_bert_tok_free(tok);
  free(labels), free(y), free(ytr), free(yho), free(held), free(ttr), free(tho), free(hw), free(hb), free(pred);
  return rc;
}

int main(int argc, char **argv) {
  int do_frozen = 0, ft_T = 64, ft_cuda = 0;
  uint32_t ft_epochs = 0;
  uint64_t ft_steps = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--frozen")) do_frozen = 1;
    else if (!strcmp(argv[i], "--finetune") && i + 1 < argc) ft_epochs = (uint32_t)atoi(argv[++i]);
    else if (!strcmp(argv[i], "--finetune-speed") && i + 1 < argc) ft_steps = (uint64_t)atoll(argv[++i]), ft_epochs = 1;
    else if (!strcmp(argv[i], "--seq") && i + 1 < argc) ft_T = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--cuda")) ft_cuda = 1;
    else {
      fprintf(stderr, "usage: bench_bert [--frozen] [--finetune EPOCHS | --finetune-speed STEPS] [--seq T] [--cuda]\n");
      return 2;
    }
  }
  const char *root = getenv("FINCH_PRETRAINED_DIR");
  char mdir[4096];
  snprintf(mdir, sizeof mdir, "%s/all-minilm-l6-v2", root ? root : "");
  openblas_set_num_threads(2);
  finch_err err = {0};
  nn_model *m = NULL;
  const char *one_label[1] = {"x"};
  if (!root || nn_model_bert_from_dir(&m, mdir, 128, one_label, 1, NULL, NULL, &err) != FINCH_OK) {
    printf("SKIP: %s\n", root ? err.msg : "FINCH_PRETRAINED_DIR is not set; run scripts/fetch-pretrained.sh");
    return 0;
  }
  const char *data = getenv("FINCH_DATA_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/banking77/train.csv", data ? data : FINCH_SOURCE_DIR "/../shared/data");
  bench_rows r = {0};
  if (bench_read_rows(path, &r) != 0 || r.n == 0) {
    printf("no BANKING77 at %s: one repeated sentence instead\n", path);
    r.cap = r.n = 2048;
    r.text = malloc(r.n * sizeof(char *));
    r.label = malloc(r.n * sizeof(char *));
    for (size_t i = 0; i < r.n; i++) r.text[i] = strdup("Why is my card payment still pending after two days?"), r.label[i] = strdup("x");
  }
  const size_t D = nn_bert_get_config(nn_model_bert(m))->dim, n1 = r.n < 200 ? r.n : 200,
               n32 = r.n < 2048 ? r.n : 2048;
  float *out = malloc(n32 * D * sizeof *out);
  printf("all-MiniLM-L6-v2 (%zu parameters), BANKING77 texts, 128 tokens at most\n", nn_bert_n_params(nn_model_bert(m)));
  if (!ft_epochs) { /* the inference rates; a fine-tuning run skips them */
    rate(m, NULL, (const char *const *)r.text, 8, 1, out); /* warm-up */
    printf("  cpu (2 threads)  batch 1: %7.1f vectors/s  batch 32: %7.1f vectors/s\n",
           rate(m, NULL, (const char *const *)r.text, n1, 1, out), rate(m, NULL, (const char *const *)r.text, n32, 32, out));
    nn_backend *cu = NULL;
    if (nn_backend_open(&cu, NN_DEVICE_CUDA, &err) == FINCH_OK) {
      rate(m, cu, (const char *const *)r.text, 64, 32, out); /* warm-up */
      printf("  cuda             batch 1: %7.1f vectors/s  batch 32: %7.1f vectors/s\n",
             rate(m, cu, (const char *const *)r.text, n1, 1, out), rate(m, cu, (const char *const *)r.text, n32, 32, out));
      nn_backend_free(cu);
    } else {
      printf("  cuda: not run: %s\n", err.msg);
    }
  }
  int rc = do_frozen ? frozen(m, &r) : 0;
  if (!rc && ft_epochs) {
    nn_backend *be = NULL;
    if (ft_cuda && nn_backend_open(&be, NN_DEVICE_CUDA, &err) != FINCH_OK) {
      printf("  cuda fine-tuning: not run: %s\n", err.msg);
    } else {
      rc = finetune(mdir, &r, ft_T, ft_epochs, ft_steps, be);
      nn_backend_free(be);
    }
  }
  free(out);
  for (size_t i = 0; i < r.n; i++) free(r.text[i]), free(r.label[i]);
  free(r.text), free(r.label);
  nn_model_free(m);
  return rc;
}
