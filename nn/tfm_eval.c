/* Inference over an encoded corpus (nn/tfm_train.h): class probabilities,
 * head-gate shares and the masked-token loss, batch by batch. */
#include <stdlib.h>
#include <string.h>

#include "nn/loss.h"
#include "nn/ops.h"
#include "nn/tfm_batch.h"

/* Runs fn on every batch of rows [0,n) of x in order: the batch is filled
 * (rows a .. a+B) into bb/nb, and fn does the forward and reads the
 * results. One work area for all. */
typedef finch_status (*batch_fn)(void *ctx, const nn_tfm *m, nn_backend *be, nn_tfm_work *w, nn__tfm_batch_buf *bb,
                                 const nn_tfm_batch *nb, size_t a, finch_err *err);

/* on_be = 1 puts the work area on be (fn then reads results through be's
 * ops); 0 keeps it on the CPU, for host code (gates, the MLM head). */
static finch_status for_each_batch(const nn_tfm *m, nn_backend *be, const nn_tfm_corpus *x, int batch, int on_be,
                                   batch_fn fn, void *ctx, finch_err *err) {
  const nn_tfm_config *mc = nn_tfm_get_config(m);
  if (batch < 1) batch = 64;
  if (!be) be = nn_backend_cpu();
  nn_tfm_work *w = NULL;
  nn__tfm_batch_buf bb;
  uint32_t *rows = malloc((size_t)batch * sizeof *rows);
  finch_status st = FINCH_OK;
  if (nn__tfm_batch_init(&bb, batch, x->T, (int)mc->n_labels) != 0 || !rows) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  if ((st = nn_tfm_work_init_on(&w, m, batch, on_be && !mc->head_gates ? be : nn_backend_cpu(), err)) != FINCH_OK)
    goto out;
  for (size_t a = 0; a < x->n && !st; a += (size_t)batch) {
    int B = (int)((x->n - a) < (size_t)batch ? (x->n - a) : (size_t)batch);
    for (int i = 0; i < B; i++) rows[i] = (uint32_t)(a + i);
    nn_tfm_batch nb;
    if (nn__tfm_batch_fill(&bb, x, rows, B, &nb) < 0) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    else st = fn(ctx, m, be, w, &bb, &nb, a, err);
  }
  if (!st) st = nn_backend_check(be, err);
out:
  nn_tfm_work_free(w);
  nn__tfm_batch_free(&bb);
  free(rows);
  return st;
}

typedef struct {
  float temperature;
  float *probs;
  int32_t *pred;
} predict_ctx;

static finch_status predict_batch(void *ctx, const nn_tfm *m, nn_backend *be, nn_tfm_work *w, nn__tfm_batch_buf *bb,
                                  const nn_tfm_batch *nb, size_t a, finch_err *err) {
  (void)err;
  const predict_ctx *c = ctx;
  const int C = (int)nn_tfm_get_config(m)->n_labels;
  nn_tfm_forward(m, w, nb, 0, NULL);
  const float *z = nn_tfm_logits(w);
  if (nn_tfm_work_params(w)) { /* on a device: the logits come back to the host, in the batch's (B,C) buffer */
    be->ops->download(be, bb->soft, z, (size_t)nb->B * C * sizeof *z);
    z = bb->soft;
  }
  for (int i = 0; i < nb->B; i++) {
    const float *zi = z + (size_t)i * C;
    int best = 0;
    for (int k = 1; k < C; k++)
      if (zi[k] > zi[best]) best = k;
    if (c->probs) nn_softmax(zi, c->probs + (a + i) * (size_t)C, C, c->temperature);
    if (c->pred) c->pred[a + i] = best;
  }
  return FINCH_OK;
}

finch_status nn_tfm_predict_corpus(const nn_tfm *m, nn_backend *be, const nn_tfm_corpus *x, int batch,
                                   float temperature, float *probs, int32_t *pred, finch_err *err) {
  if (nn_tfm_get_config(m)->n_labels == 0) return finch_err_set(err, FINCH_EINVAL, "the model has no classifier head");
  predict_ctx c = {temperature, probs, pred};
  return for_each_batch(m, be, x, batch, 1, predict_batch, &c, err);
}

static finch_status gate_batch(void *ctx, const nn_tfm *m, nn_backend *be, nn_tfm_work *w, nn__tfm_batch_buf *bb,
                               const nn_tfm_batch *nb, size_t a, finch_err *err) {
  (void)bb, (void)err;
  float *share = ctx;
  const nn_tfm_config *mc = nn_tfm_get_config(m);
  const int L = (int)mc->layers, H = (int)mc->heads;
  nn_tfm_forward(m, w, nb, 0, NULL);
  for (int i = 0; i < nb->B; i++) {
    int open = 0;
    for (int l = 0; l < L; l++)
      for (int h = 0; h < H; h++) open += nn_tfm_gates(w, l)[i * H + h] > 0.5f;
    share[a + i] = (float)open / (float)(L * H);
  }
  return FINCH_OK;
}

finch_status nn_tfm_gate_share(const nn_tfm *m, nn_backend *be, const nn_tfm_corpus *x, float *share, finch_err *err) {
  if (!nn_tfm_get_config(m)->head_gates) return finch_err_set(err, FINCH_EINVAL, "the encoder has no head gates");
  return for_each_batch(m, be, x, 64, 0, gate_batch, share, err);
}

typedef struct {
  float p;
  nn_rng rng;
  int mcap;
  float *mp, *rl;
  double loss;
  size_t n, hit;
} mlm_ctx;

static finch_status mlm_batch(void *ctx, const nn_tfm *m, nn_backend *be, nn_tfm_work *w, nn__tfm_batch_buf *bb,
                              const nn_tfm_batch *nb, size_t a, finch_err *err) {
  (void)a;
  mlm_ctx *c = ctx;
  const uint32_t V = nn_tfm_get_config(m)->vocab;
  int P = nn__tfm_batch_mask(bb, nb, c->p, V, c->mcap, &c->rng);
  if (!P) return FINCH_OK;
  nn_tfm_forward(m, w, nb, 0, NULL);
  const float *ml = nn_tfm_mlm_forward(m, w, bb->mpos, P);
  if (!ml) return finch_err_set(err, FINCH_ENOMEM, "out of memory for the masked-token head (%d positions)", P);
  nn_xent_ls_forward(ml, bb->mtgt, P, (int)V, 0.0f, c->mp, c->rl);
  for (int p = 0; p < P; p++) {
    c->loss += c->rl[p];
    const float *z = ml + (size_t)p * V;
    uint32_t best = 0;
    for (uint32_t k = 1; k < V; k++)
      if (z[k] > z[best]) best = k;
    c->hit += (int32_t)best == bb->mtgt[p];
  }
  c->n += (size_t)P;
  return FINCH_OK;
}

finch_status nn_tfm_mlm_eval(const nn_tfm *m, nn_backend *be, const nn_tfm_corpus *x, float mlm_prob,
                             uint64_t seed, double *loss, double *acc, finch_err *err) {
  const int batch = 64;
  mlm_ctx c = {.p = mlm_prob, .mcap = batch * x->T / 4 + 16};
  nn_rng_seed(&c.rng, seed, NN__TFM_RNG_MASK);
  const size_t V = nn_tfm_get_config(m)->vocab;
  c.mp = malloc((size_t)c.mcap * V * sizeof *c.mp);
  c.rl = malloc((size_t)c.mcap * sizeof *c.rl);
  finch_status st = c.mp && c.rl ? for_each_batch(m, be, x, batch, 0, mlm_batch, &c, err)
                                 : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  free(c.mp);
  free(c.rl);
  if (st) return st;
  *loss = c.n ? c.loss / (double)c.n : 0;
  if (acc) *acc = c.n ? (double)c.hit / (double)c.n : 0;
  return FINCH_OK;
}
