/* The "bow" architecture (nn/model.h): its state, training, prediction and
 * its entry in the model interface; its file sections are nn/bow_file.c. */
#include "nn/bow.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/loss.h"
#include "nn/model_impl.h"
#include "nn/optim.h"

/* Global-norm clipping threshold for one step's gradient. The mean-pooled
 * embedding gradients are small, so this mostly guards the first steps of a
 * deep hidden layer against a bad batch. */
#define NN_CLIP_NORM 5.0f

/* Defaults measured on a stratified 10% holdout of BANKING77's train split
 * (bench/bench_nn.c): accuracy was flat (90.5-91.5%) across lr 3e-3..1e-2,
 * dropout 0..0.4, 65k..262k buckets and hidden 256..512, so the smaller
 * settings win on memory and file size. */
nn_train_config nn_train_config_teacher(void) {
  return (nn_train_config){.dim = 128, .hidden = 256, .buckets = 1u << 16, .minn = 3, .maxn = 5,
                           .word_ngrams = 2, .min_count = 1, .epochs = 20, .batch = 32,
                           .lr = 6e-3f, .weight_decay = 1e-4f, .warmup = 0.05f,
                           .label_smoothing = 0.1f, .dropout = 0.2f, .seed = 1};
}

nn_train_config nn_train_config_student(void) {
  return (nn_train_config){.dim = 48, .hidden = 0, .buckets = 1u << 15, .minn = 3, .maxn = 5,
                           .word_ngrams = 2, .min_count = 1, .epochs = 15, .batch = 32,
                           .lr = 5e-3f, .weight_decay = 1e-4f, .warmup = 0.05f,
                           .label_smoothing = 0.1f, .dropout = 0.1f, .seed = 1};
}

nn_feat_config nn__feat_config(const nn_train_config *cfg) {
  return (nn_feat_config){.buckets = cfg->buckets, .minn = cfg->minn, .maxn = cfg->maxn,
                          .word_ngrams = cfg->word_ngrams, .min_count = cfg->min_count};
}

finch_status nn__config_check(const nn_train_config *cfg, finch_err *err) {
  if (cfg->dim < 1 || cfg->dim > 4096) return finch_err_set(err, FINCH_EINVAL, "dim %u is outside [1, 4096]", cfg->dim);
  if (cfg->hidden > 16384) return finch_err_set(err, FINCH_EINVAL, "hidden %u is above 16384", cfg->hidden);
  if (cfg->buckets > (1u << 26)) return finch_err_set(err, FINCH_EINVAL, "buckets %u is above 2^26", cfg->buckets);
  if (cfg->batch < 1 || cfg->batch > 65536) return finch_err_set(err, FINCH_EINVAL, "batch %u is outside [1, 65536]", cfg->batch);
  if (!(cfg->lr > 0.0f && cfg->lr < 10.0f)) return finch_err_set(err, FINCH_EINVAL, "lr %g is outside (0, 10)", (double)cfg->lr);
  if (!(cfg->weight_decay >= 0.0f && cfg->weight_decay < 1.0f))
    return finch_err_set(err, FINCH_EINVAL, "weight_decay %g is outside [0, 1)", (double)cfg->weight_decay);
  if (!(cfg->warmup >= 0.0f && cfg->warmup <= 1.0f))
    return finch_err_set(err, FINCH_EINVAL, "warmup %g is outside [0, 1]", (double)cfg->warmup);
  if (!(cfg->label_smoothing >= 0.0f && cfg->label_smoothing < 1.0f))
    return finch_err_set(err, FINCH_EINVAL, "label_smoothing %g is outside [0, 1)", (double)cfg->label_smoothing);
  if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
    return finch_err_set(err, FINCH_EINVAL, "dropout %g is outside [0, 1)", (double)cfg->dropout);
  if (cfg->word_ngrams < 1 || cfg->word_ngrams > 2)
    return finch_err_set(err, FINCH_EINVAL, "word_ngrams must be 1 or 2, not %u", cfg->word_ngrams);
  if (cfg->maxn > 0 && (cfg->minn < 1 || cfg->minn > cfg->maxn || cfg->maxn > 64))
    return finch_err_set(err, FINCH_EINVAL, "character n-grams need 1 <= minn <= maxn <= 64 (minn %u, maxn %u)",
                         cfg->minn, cfg->maxn);
  return FINCH_OK;
}

/* ---- the model's state ------------------------------------------------- */

finch_status nn_bow_create(nn_bow **out, const nn_train_config *cfg, nn_featurizer *feat, size_t n_labels,
                           finch_err *err) {
  *out = NULL;
  finch_status st = nn__config_check(cfg, err);
  if (st != FINCH_OK) {
    nn_featurizer_free(feat);
    return st;
  }
  size_t rows = nn_featurizer_rows(feat);
  if (n_labels < 1 || n_labels > 1000000 || rows > UINT32_MAX) {
    nn_featurizer_free(feat);
    return finch_err_set(err, FINCH_EINVAL, "%zu labels and %zu feature rows: out of range", n_labels, rows);
  }
  nn_bow *m = calloc(1, sizeof *m);
  if (!m) {
    nn_featurizer_free(feat);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a model");
  }
  m->cfg = *cfg;
  m->feat = feat;
  m->R = (uint32_t)rows;
  m->D = cfg->dim;
  m->H = cfg->hidden;
  m->C = (uint32_t)n_labels;
  m->Din = m->H ? m->H : m->D;
  m->n_params = (size_t)m->R * m->D + (size_t)m->H * m->D + m->H + (size_t)m->C * m->Din + m->C;
  m->params = calloc(m->n_params, sizeof(float));
  if (!m->params) {
    size_t np = m->n_params;
    nn_bow_free(m);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a model of %zu parameters", np);
  }
  m->emb = m->params;
  m->W1 = m->emb + (size_t)m->R * m->D;
  m->b1 = m->W1 + (size_t)m->H * m->D;
  m->W2 = m->b1 + m->H;
  m->b2 = m->W2 + (size_t)m->C * m->Din;
  *out = m;
  return FINCH_OK;
}

void nn_bow_free(nn_bow *b) {
  if (!b) return;
  nn_featurizer_free(b->feat);
  free(b->params);
  free(b);
}

/* ---- training workspace ------------------------------------------------ */

void nn_bow_work_free(nn_bow_work *w) {
  if (!w) return;
  free(w->grads);
  free(w->acts);
  free(w->y);
  free(w->offs);
  free(w->rg.rows);
  free(w->rg.slot_of);
  memset(w, 0, sizeof *w);
}

finch_status nn_bow_work_init(nn_bow_work *w, const nn_bow *m, int Bmax, size_t max_ids,
                              finch_err *err) {
  memset(w, 0, sizeof *w);
  w->Bmax = Bmax;
  w->max_ids = max_ids;
  const size_t B = (size_t)Bmax, D = m->D, H = m->H, C = m->C, Din = m->Din;
  w->n_dense = H * D + H + C * Din + C;
  size_t cap = max_ids < m->R ? max_ids : m->R;
  w->grads = malloc((w->n_dense + cap * D + 1) * sizeof(float));
  w->acts = malloc((3 * B * D + 4 * B * H + 6 * B * C + B * Din + 3 * B + 1) * sizeof(float));
  w->y = malloc(B * sizeof(int32_t) + max_ids * sizeof(uint32_t) + 1);
  w->offs = malloc((B + 1) * sizeof(size_t));
  w->rg.rows = malloc((cap + 1) * sizeof(uint32_t));
  w->rg.slot_of = malloc((size_t)m->R * sizeof(int32_t) + 1);
  if (!w->grads || !w->acts || !w->y || !w->offs || !w->rg.rows || !w->rg.slot_of) {
    nn_bow_work_free(w);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a training workspace (batch %d, %zu ids)", Bmax, max_ids);
  }
  w->dW1 = w->grads;
  w->db1 = w->dW1 + H * D;
  w->dW2 = w->db1 + H;
  w->db2 = w->dW2 + C * Din;
  w->rg.g = w->db2 + C;
  w->rg.D = (int)D;
  w->rg.cap = cap;
  w->rg.n = 0;
  for (size_t r = 0; r < m->R; r++) w->rg.slot_of[r] = -1;
  float *a = w->acts;
  w->h0 = a, a += B * D;
  w->m0 = a, a += B * D;
  w->dh0 = a, a += B * D;
  w->a1 = a, a += B * H;
  w->h1 = a, a += B * H;
  w->m1 = a, a += B * H;
  w->da1 = a, a += B * H;
  w->z = a, a += B * C;
  w->p = a, a += B * C;
  w->q = a, a += B * C;
  w->dz = a, a += B * C;
  w->dz2 = a, a += B * C;
  w->soft = a, a += B * C;
  w->dhin = a, a += B * Din;
  w->loss = a, a += B;
  w->loss2 = a, a += B;
  w->alpha = a;
  w->ids = (uint32_t *)(w->y + B);
  return FINCH_OK;
}

/* The backward pass from w->dz (B,C), the loss gradient wrt the logits;
 * hin is the classifier's input (h1, or h0 without a hidden layer). Returns
 * loss unchanged, for the callers' convenience. */
static float nn_bow_batch_backward(nn_bow_work *w, const nn_bow *m, nn_backend *be, int B,
                                   const nn_bow_loss_config *lc, const float *hin, float loss) {
  const int D = (int)m->D, H = (int)m->H, C = (int)m->C, Din = (int)m->Din;
  const size_t BD = (size_t)B * D, BH = (size_t)B * H;
  nn_linear_backward(be, w->dz, hin, m->W2, B, Din, C, w->dhin, w->dW2, w->db2); /* dhin (B,Din) */
  float *dh0 = w->dhin;
  if (H) {
    if (lc->dropout > 0.0f) nn_dropout_backward(w->dhin, w->m1, BH);
    nn_gelu_backward(w->a1, w->dhin, w->da1, BH);                                /* da1 (B,H) */
    nn_linear_backward(be, w->da1, w->h0, m->W1, B, D, H, w->dh0, w->dW1, w->db1); /* dh0 (B,D) */
    dh0 = w->dh0;
  }
  if (lc->dropout > 0.0f) nn_dropout_backward(dh0, w->m0, BD);
  nn_embed_mean_backward(dh0, w->ids, w->offs, B, &w->rg);
  return loss;
}

float nn_bow_batch_grad(nn_bow_work *w, const nn_bow *m, nn_backend *be, int B,
                        const nn_bow_loss_config *lc, nn_rng *rng) {
  const int D = (int)m->D, H = (int)m->H, C = (int)m->C, Din = (int)m->Din;
  const size_t BD = (size_t)B * D, BH = (size_t)B * H;
  nn_row_grads_clear(&w->rg);

  /* forward */
  nn_embed_mean_forward(m->emb, D, w->ids, w->offs, B, w->h0); /* h0 (B,D) */
  if (lc->dropout > 0.0f) nn_dropout_forward(w->h0, w->m0, BD, lc->dropout, rng);
  const float *hin = w->h0;
  if (H) {
    nn_linear_forward(be, w->h0, m->W1, m->b1, B, D, H, w->a1); /* a1 (B,H) */
    nn_gelu_forward(w->a1, w->h1, BH);                          /* h1 (B,H) */
    if (lc->dropout > 0.0f) nn_dropout_forward(w->h1, w->m1, BH, lc->dropout, rng);
    hin = w->h1;
  }
  nn_linear_forward(be, hin, m->W2, m->b2, B, Din, C, w->z); /* z (B,C) */

  /* loss: mean over rows of (1-alpha) CE_ls + alpha tau^2 KL */
  const float alpha = lc->alpha;
  memset(w->dz, 0, (size_t)B * C * sizeof(float));
  if (lc->per_row_alpha) {
    /* Each row's own alpha: both gradients at weight 1/B, then mixed row by row. */
    memset(w->dz2, 0, (size_t)B * C * sizeof(float));
    nn_xent_ls_forward(w->z, w->y, B, C, lc->label_smoothing, w->p, w->loss);
    nn_xent_ls_backward(w->p, w->y, B, C, lc->label_smoothing, 1.0f / (float)B, w->dz);
    nn_kl_tau_forward(w->z, w->soft, B, C, lc->tau, w->q, w->loss2);
    nn_kl_tau_backward(w->q, w->soft, B, C, lc->tau, 1.0f / (float)B, w->dz2);
    double sum = 0.0;
    for (int b = 0; b < B; b++) {
      const float ab = w->alpha[b];
      sum += (1.0 - ab) * w->loss[b] + ab * w->loss2[b];
      for (int c = 0; c < C; c++)
        w->dz[(size_t)b * C + c] = (1.0f - ab) * w->dz[(size_t)b * C + c] + ab * w->dz2[(size_t)b * C + c];
    }
    return nn_bow_batch_backward(w, m, be, B, lc, hin, (float)(sum / B));
  }
  nn_xent_ls_forward(w->z, w->y, B, C, lc->label_smoothing, w->p, w->loss);
  double total = 0.0;
  for (int b = 0; b < B; b++) total += (1.0 - alpha) * w->loss[b];
  nn_xent_ls_backward(w->p, w->y, B, C, lc->label_smoothing, (1.0f - alpha) / (float)B, w->dz);
  if (alpha > 0.0f) {
    nn_kl_tau_forward(w->z, w->soft, B, C, lc->tau, w->q, w->loss);
    for (int b = 0; b < B; b++) total += alpha * w->loss[b];
    nn_kl_tau_backward(w->q, w->soft, B, C, lc->tau, alpha / (float)B, w->dz);
  }
  return nn_bow_batch_backward(w, m, be, B, lc, hin, (float)(total / B));
}

/* ---- training ---------------------------------------------------------- */

/* Initial weights: embeddings U(-1/sqrt(D), 1/sqrt(D)) * sqrt(3) (unit
 * variance over D, shrunk by the mean over a text's rows), dense weights
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases 0. */
static void init_params(nn_bow *m, uint64_t seed) {
  nn_rng r;
  nn_rng_seed(&r, seed, 1);
  float a = sqrtf(3.0f / (float)m->D);
  for (size_t i = 0; i < (size_t)m->R * m->D; i++) m->emb[i] = a * (2.0f * nn_rng_uniform(&r) - 1.0f);
  float a1 = 1.0f / sqrtf((float)m->D);
  for (size_t i = 0; i < (size_t)m->H * m->D; i++) m->W1[i] = a1 * (2.0f * nn_rng_uniform(&r) - 1.0f);
  float a2 = 1.0f / sqrtf((float)m->Din);
  for (size_t i = 0; i < (size_t)m->C * m->Din; i++) m->W2[i] = a2 * (2.0f * nn_rng_uniform(&r) - 1.0f);
}

finch_status nn__bow_featurize_all(const nn_featurizer *f, const char *const *texts, size_t n_texts,
                                   nn_bow_features *t, finch_err *err) {
  memset(t, 0, sizeof *t);
  nn_ids one = {0};
  nn_tokens tok = {0};
  size_t cap = 0, n = 0;
  finch_status st = FINCH_OK;
  t->offs = malloc((n_texts + 1) * sizeof *t->offs);
  if (!t->offs) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory featurizing %zu texts", n_texts);
    goto out;
  }
  t->offs[0] = 0;
  for (size_t i = 0; i < n_texts; i++) {
    st = nn_featurize(f, texts[i], &one, &tok, err);
    if (st != FINCH_OK) {
      finch_err_prefix(err, "text %zu", i);
      goto out;
    }
    if (n + one.n > cap) {
      size_t nc = cap ? cap : 4096;
      while (nc < n + one.n) nc *= 2;
      uint32_t *p = realloc(t->ids, nc * sizeof *p);
      if (!p) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory featurizing %zu texts", n_texts);
        goto out;
      }
      t->ids = p;
      cap = nc;
    }
    if (one.n) memcpy(t->ids + n, one.ids, one.n * sizeof *one.ids);
    n += one.n;
    t->offs[i + 1] = n;
    if (one.n > t->max_row) t->max_row = one.n;
  }
out:
  nn_ids_free(&one);
  nn_tokens_free(&tok);
  if (st != FINCH_OK) {
    free(t->ids);
    free(t->offs);
    memset(t, 0, sizeof *t);
  }
  return st;
}

finch_status nn_model_train(nn_model **out, const nn_dataset *train, const char *const *label_names,
                            size_t n_labels, const nn_train_config *cfg, const nn_kd_config *kd,
                            nn_backend *be, nn_epoch_cb cb, void *cb_ctx, finch_err *err) {
  return nn_model_train_prior(out, train, label_names, n_labels, cfg, kd, NULL, be, cb, cb_ctx, err);
}

/* An nn_epoch_cb seen as an nn_epoch_info_cb. */
typedef struct {
  nn_epoch_cb cb;
  void *ctx;
} plain_cb;
static void plain_epoch(void *ctx, const nn_epoch_info *e) {
  const plain_cb *p = ctx;
  p->cb(p->ctx, e->epoch, e->loss);
}

finch_status nn_model_train_prior(nn_model **out, const nn_dataset *train, const char *const *label_names,
                                  size_t n_labels, const nn_train_config *cfg, const nn_kd_config *kd,
                                  nn_bow_prior *prior, nn_backend *be, nn_epoch_cb cb, void *cb_ctx,
                                  finch_err *err) {
  plain_cb p = {cb, cb_ctx};
  return nn_model_train_watched(out, train, label_names, n_labels, cfg, kd, prior, be, cb ? plain_epoch : NULL, &p,
                                err);
}

finch_status nn_model_train_watched(nn_model **out, const nn_dataset *train, const char *const *label_names,
                                    size_t n_labels, const nn_train_config *cfg, const nn_kd_config *kd,
                                    nn_bow_prior *prior, nn_backend *be, nn_epoch_info_cb cb, void *cb_ctx,
                                    finch_err *err) {
  *out = NULL;
  if (!train || train->n == 0 || !train->texts || !train->labels)
    return finch_err_set(err, FINCH_EINVAL, "training set is empty");
  if (n_labels == 0 || !label_names) return finch_err_set(err, FINCH_EINVAL, "no labels");
  if (cfg->epochs < 1) return finch_err_set(err, FINCH_EINVAL, "epochs must be at least 1");
  finch_status st = nn__config_check(cfg, err);
  if (st != FINCH_OK) return st;
  for (size_t i = 0; i < train->n; i++)
    if (train->labels[i] < 0 || (size_t)train->labels[i] >= n_labels)
      return finch_err_set(err, FINCH_EINVAL, "text %zu: label %d is outside [0, %zu)", i,
                           (int)train->labels[i], n_labels);
  nn_bow_loss_config lc = {.alpha = 0.0f, .tau = 1.0f, .label_smoothing = cfg->label_smoothing,
                           .dropout = cfg->dropout};
  if (kd && train->soft) {
    if (!(kd->alpha >= 0.0f && kd->alpha <= 1.0f))
      return finch_err_set(err, FINCH_EINVAL, "distillation alpha %g is outside [0, 1]", (double)kd->alpha);
    if (!(kd->temperature > 0.0f))
      return finch_err_set(err, FINCH_EINVAL, "distillation temperature %g must be > 0", (double)kd->temperature);
    lc.alpha = kd->alpha;
    lc.tau = kd->temperature;
    if (train->alpha) {
      for (size_t i = 0; i < train->n; i++)
        if (!(train->alpha[i] >= 0.0f && train->alpha[i] <= 1.0f))
          return finch_err_set(err, FINCH_EINVAL, "example %zu: distillation alpha %g is outside [0, 1]", i,
                               (double)train->alpha[i]);
      lc.per_row_alpha = 1;
      if (lc.alpha <= 0.0f) lc.alpha = 1.0f; /* soft targets are copied only when alpha > 0 */
    }
  }
  if (!be) be = nn_backend_cpu();

  nn_bow *m = NULL;
  nn_featurizer *feat = NULL;
  nn_bow_features ft = {0};
  nn_bow_work w = {0};
  float *opt = NULL;
  size_t *perm = NULL;
  nn_feat_config fc = nn__feat_config(cfg);
  st = nn_featurizer_build(&feat, train->texts, train->n, &fc, err);
  if (st != FINCH_OK) goto fail;
  st = nn_bow_create(&m, cfg, feat, n_labels, err);
  if (st != FINCH_OK) goto fail;
  init_params(m, cfg->seed);
  if (prior && (st = nn__bow_apply_prior(m, prior, be, err)) != FINCH_OK) goto fail;
  st = nn__bow_featurize_all(m->feat, train->texts, train->n, &ft, err);
  if (st != FINCH_OK) goto fail;

  const int Bmax = (int)(cfg->batch < train->n ? cfg->batch : train->n);
  st = nn_bow_work_init(&w, m, Bmax, (size_t)Bmax * ft.max_row, err);
  if (st != FINCH_OK) goto fail;
  /* One allocation of optimiser state: first moments (n_params), then second. */
  opt = calloc(2 * m->n_params, sizeof(float));
  perm = malloc(train->n * sizeof *perm);
  if (!opt || !perm) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for optimiser state (%zu parameters)", m->n_params);
    goto fail;
  }
  for (size_t i = 0; i < train->n; i++) perm[i] = i;

  const size_t RD = (size_t)m->R * m->D, C = m->C;
  float *mom1 = opt, *mom2 = opt + m->n_params;
  /* The dense parameters follow emb in params; their moments sit at the same offsets. */
  float *dense = m->params + RD, *dm1 = mom1 + RD, *dm2 = mom2 + RD;
  const size_t nW1 = (size_t)m->H * m->D, nb1 = m->H, nW2 = (size_t)m->C * m->Din;
  const nn_adamw_config ac = nn_adamw_defaults();
  const uint64_t steps_per_epoch = (train->n + (size_t)Bmax - 1) / (size_t)Bmax;
  const uint64_t total = steps_per_epoch * cfg->epochs;
  const uint64_t warmup = (uint64_t)((double)cfg->warmup * (double)total + 0.5);
  nn_rng rng_drop, rng_shuf;
  nn_rng_seed(&rng_drop, cfg->seed, 2);
  nn_rng_seed(&rng_shuf, cfg->seed, 3);
  uint64_t t = 0;
  float last_lr = 0.0f;
  for (uint32_t epoch = 0; epoch < cfg->epochs; epoch++) {
    for (size_t i = train->n - 1; i > 0; i--) {
      size_t j = (size_t)nn_rng_below(&rng_shuf, i + 1);
      size_t tmp = perm[i];
      perm[i] = perm[j];
      perm[j] = tmp;
    }
    double epoch_loss = 0.0;
    for (size_t start = 0; start < train->n; start += (size_t)Bmax) {
      int B = (int)(train->n - start < (size_t)Bmax ? train->n - start : (size_t)Bmax);
      size_t nid = 0;
      w.offs[0] = 0;
      for (int b = 0; b < B; b++) {
        size_t ex = perm[start + (size_t)b];
        size_t len = ft.offs[ex + 1] - ft.offs[ex];
        memcpy(w.ids + nid, ft.ids + ft.offs[ex], len * sizeof *w.ids);
        nid += len;
        w.offs[b + 1] = nid;
        w.y[b] = train->labels[ex];
        if (lc.alpha > 0.0f) memcpy(w.soft + (size_t)b * C, train->soft + ex * C, C * sizeof(float));
        if (lc.per_row_alpha) w.alpha[b] = train->alpha[ex];
      }
      float loss = nn_bow_batch_grad(&w, m, be, B, &lc, &rng_drop);
      st = nn_backend_check(be, err);
      if (st != FINCH_OK) {
        finch_err_prefix(err, "training step %llu on %s", (unsigned long long)t, be->name);
        goto fail;
      }
      epoch_loss += (double)loss * B;
      double sq = nn_sum_sq(w.grads, w.n_dense) + nn_sum_sq(w.rg.g, w.rg.n * m->D);
      float gscale = nn_clip_scale(sq, NN_CLIP_NORM);
      float lr = nn_lr_schedule(cfg->lr, t, warmup, total);
      last_lr = lr;
      t++;
      float wd = cfg->weight_decay;
      nn_adamw_update(dense, w.dW1, dm1, dm2, nW1, lr, wd, gscale, t, &ac);
      nn_adamw_update(dense + nW1, w.db1, dm1 + nW1, dm2 + nW1, nb1, lr, 0.0f, gscale, t, &ac);
      nn_adamw_update(dense + nW1 + nb1, w.dW2, dm1 + nW1 + nb1, dm2 + nW1 + nb1, nW2, lr, wd, gscale, t, &ac);
      nn_adamw_update(dense + nW1 + nb1 + nW2, w.db2, dm1 + nW1 + nb1 + nW2, dm2 + nW1 + nb1 + nW2, C, lr,
                      0.0f, gscale, t, &ac);
      nn_adamw_update_rows(m->emb, w.rg.g, w.rg.rows, w.rg.n, (int)m->D, mom1, mom2, lr, wd, gscale, t, &ac);
    }
    if (cb) {
      /* A view of the model being trained, owning nothing. */
      nn_model view = {.vt = &nn__bow_vt, .impl = m, .dtype = NN_DTYPE_F32, .n_labels = n_labels,
                       .labels = (char **)label_names};
      nn_epoch_info e = {.epoch = epoch + 1, .epochs = cfg->epochs, .step = t,
                         .loss = (float)(epoch_loss / (double)train->n), .lr = last_lr, .model = &view};
      cb(cb_ctx, &e);
    }
  }
  st = nn__model_new(out, &nn__bow_vt, m, label_names, n_labels, err);
  if (st == FINCH_OK) m = NULL;
fail:
  free(perm);
  free(opt);
  nn_bow_work_free(&w);
  free(ft.ids);
  free(ft.offs);
  nn_bow_free(m);
  return st;
}

/* ---- prediction -------------------------------------------------------- */

/* out (O) = W (O,I) x (I) + b (O); the plain loop keeps predict free of BLAS
 * threading and of any shared state. */
static void matvec(const float *W, const float *x, const float *b, int O, int I, float *out) {
  for (int o = 0; o < O; o++) {
    const float *w = W + (size_t)o * I;
    float acc = b[o];
    for (int i = 0; i < I; i++) acc += w[i] * x[i];
    out[o] = acc;
  }
}

static int bow_predict(const nn_model *model, const char *text, float *probs, float temperature) {
  const nn_bow *m = model->impl;
  nn_ids ids = {0};
  float *buf = NULL;
  int best = -1;
  if (nn_featurize(m->feat, text, &ids, NULL, NULL) != FINCH_OK) goto out;
  const int D = (int)m->D, H = (int)m->H, C = (int)m->C;
  /* Per call, so concurrent calls share nothing but the read-only model. */
  buf = malloc(((size_t)D + 2 * (size_t)H + (size_t)C) * sizeof *buf);
  if (!buf) goto out;
  float *h0 = buf, *a1 = h0 + D, *h1 = a1 + H, *z = h1 + H;
  size_t offs[2] = {0, ids.n};
  nn_embed_mean_forward(m->emb, D, ids.ids, offs, 1, h0); /* h0 (D) */
  const float *hin = h0;
  if (H) {
    matvec(m->W1, h0, m->b1, H, D, a1);
    nn_gelu_forward(a1, h1, (size_t)H);
    hin = h1;
  }
  matvec(m->W2, hin, m->b2, C, (int)m->Din, z); /* z (C) */
  best = 0;
  for (int c = 1; c < C; c++)
    if (z[c] > z[best]) best = c;
  if (probs) nn_softmax(z, probs, C, temperature);
out:
  if (best < 0 && probs) nn__uniform(probs, model->n_labels);
  nn_ids_free(&ids);
  free(buf);
  return best;
}

/* ---- the model interface ----------------------------------------------- */

static size_t bow_n_params(const nn_model *m) { return ((const nn_bow *)m->impl)->n_params; }
static const nn_train_config *bow_config(const nn_model *m) { return &((const nn_bow *)m->impl)->cfg; }
static finch_status bow_write(const nn_model *m, nn_dtype dtype, nn_file_writer *w, finch_err *err) {
  return nn__bow_write(m, m->impl, dtype, w, err);
}
static void bow_free(void *impl) { nn_bow_free(impl); }

const nn_model_vt nn__bow_vt = {
    .id = NN_ARCH_BOW, .name = "bow", .predict = bow_predict, .predict_many = NULL, .n_params = bow_n_params,
    .config = bow_config, .write = bow_write, .load = nn__bow_load, .free_impl = bow_free,
};
