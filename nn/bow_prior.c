/* A bag-of-n-grams model's start from a teacher's encoder: word rows from
 * the principal components of the teacher's word vectors, then the general
 * stage that maps the mean embedding to the teacher's sentence vectors
 * (nn/model.h, nn_bow_prior). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "nn/bow.h"
#include "nn/optim.h"

/* LAPACK's symmetric eigensolver, from OpenBLAS (which exports LAPACK). */
void ssyev_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda, float *w, float *work,
            const int *lwork, int *info);

/* The top k eigenvectors of the symmetric (E,E) matrix cov, as the first k
 * columns of U (E,ld), largest first; share receives their eigenvalues'
 * share of the trace. cov is overwritten. */
static finch_status top_eigen(float *cov, int E, int k, int ld, float *U, double *share, finch_err *err) {
  float *w = malloc((size_t)E * sizeof *w), q;
  int lwork = -1, info = 0;
  if (!w) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  ssyev_("V", "U", &E, cov, &E, w, &q, &lwork, &info);
  lwork = info == 0 ? (int)q : 3 * E;
  float *work = malloc((size_t)lwork * sizeof *work);
  if (!work) {
    free(w);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  ssyev_("V", "U", &E, cov, &E, w, work, &lwork, &info);
  free(work);
  if (info != 0) {
    free(w);
    return finch_err_set(err, FINCH_EINVAL, "the word vectors' covariance has no eigen-decomposition (ssyev info %d)",
                         info);
  }
  /* Eigenvalues ascend; column j of cov (column-major, symmetric) is vector j. */
  double tot = 0, top = 0;
  for (int j = 0; j < E; j++) tot += w[j] > 0 ? w[j] : 0;
  for (int c = 0; c < k; c++) {
    int j = E - 1 - c;
    top += w[j] > 0 ? w[j] : 0;
    for (int e = 0; e < E; e++) U[(size_t)e * ld + c] = cov[(size_t)j * E + e];
  }
  *share = tot > 0 ? top / tot : 0;
  free(w);
  return FINCH_OK;
}

/* Word rows from the teacher's word vectors; fills P (E,D) and c (E), the
 * general stage's starting map. */
static finch_status init_words(nn_bow *m, nn_bow_prior *pr, float **Pout, float **cout, uint32_t *Eio, int general,
                               finch_err *err) {
  const size_t nw = nn_featurizer_n_words(m->feat);
  const uint32_t D = m->D;
  const char **words = malloc((nw + 1) * sizeof *words);
  if (!words) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; i < nw; i++) words[i] = nn_featurizer_word(m->feat, i);
  float *V = NULL, *P = NULL, *c = NULL;
  uint32_t E = 0;
  finch_status st = pr->word_vectors(pr->ctx, words, nw, &E, &V, err);
  if (!st && general && E != *Eio)
    st = finch_err_set(err, FINCH_EINVAL, "word vectors are %u wide, the general stage's targets %u", E, *Eio);
  float *cov = NULL, *U = NULL, *acc = NULL;
  uint32_t *cnt = NULL;
  if (st) goto out;
  cov = calloc((size_t)E * E, sizeof *cov);
  U = calloc((size_t)E * D, sizeof *U); /* columns past E (when D > E) stay 0 */
  P = malloc((size_t)E * D * sizeof *P);
  c = malloc((size_t)E * sizeof *c);
  acc = calloc((size_t)m->R * D, sizeof *acc);
  cnt = calloc(m->R, sizeof *cnt);
  if (!cov || !U || !acc || !cnt || !P || !c) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for %zu word vectors", nw);
    goto out;
  }
  /* Centre, covariance (upper triangle suffices for ssyev "U"; fill both). */
  double *mu = calloc(E, sizeof *mu);
  if (!mu) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < nw; i++)
    for (uint32_t e = 0; e < E; e++) mu[e] += V[i * E + e];
  for (uint32_t e = 0; e < E; e++) c[e] = (float)(mu[e] /= (double)(nw ? nw : 1));
  free(mu);
  for (size_t i = 0; i < nw; i++) {
    float *v = V + i * E;
    for (uint32_t e = 0; e < E; e++) v[e] -= c[e];
    for (uint32_t a = 0; a < E; a++)
      for (uint32_t b = a; b < E; b++) cov[(size_t)a * E + b] += v[a] * v[b];
  }
  for (uint32_t a = 0; a < E; a++)
    for (uint32_t b = a; b < E; b++) cov[(size_t)b * E + a] = cov[(size_t)a * E + b];
  const uint32_t K = D < E ? D : E;
  if ((st = top_eigen(cov, (int)E, (int)K, (int)D, U, &pr->words_explained, err)) != FINCH_OK) goto out;
  /* Coordinates on the axes, scaled to unit mean squared norm (the random
   * start's, nn/bow.c init_params). */
  double sq = 0;
  for (size_t i = 0; i < nw; i++) {
    float *row = m->emb + i * D;
    for (uint32_t d = 0; d < D; d++) {
      double s = 0;
      for (uint32_t e = 0; e < E; e++) s += (double)V[i * E + e] * U[(size_t)e * D + d];
      row[d] = (float)s;
      sq += s * s;
    }
  }
  float scale = sq > 0 ? (float)sqrt((double)nw / sq) : 1.0f;
  for (size_t i = 0; i < nw * D; i++) m->emb[i] *= scale;
  /* P maps a row back to the teacher's space: U / scale. */
  for (uint32_t e = 0; e < E; e++)
    for (uint32_t d = 0; d < D; d++) P[(size_t)e * D + d] = U[(size_t)e * D + d] / scale;
  /* Hashed n-gram rows: the mean of the words that contain them. */
  nn_ids ids = {0};
  nn_tokens tok = {0};
  for (size_t i = 0; i < nw && !st; i++) {
    if ((st = nn_featurize(m->feat, words[i], &ids, &tok, err)) != FINCH_OK) break;
    for (size_t k = 0; k < ids.n; k++) {
      uint32_t r = ids.ids[k];
      if (r < nw) continue;
      cnt[r]++;
      for (uint32_t d = 0; d < D; d++) acc[(size_t)r * D + d] += m->emb[i * D + d];
    }
  }
  nn_ids_free(&ids);
  nn_tokens_free(&tok);
  if (st) goto out;
  pr->words_init = nw;
  pr->rows_init = 0;
  for (size_t r = nw; r < m->R; r++) {
    if (!cnt[r]) continue;
    pr->rows_init++;
    for (uint32_t d = 0; d < D; d++) m->emb[r * D + d] = acc[r * D + d] / (float)cnt[r];
  }
out:
  if (!st) {
    *Pout = P, *cout = c, *Eio = E;
  } else {
    free(P);
    free(c);
  }
  free(words);
  free(V);
  free(cov);
  free(U);
  free(acc);
  free(cnt);
  return st;
}

/* The general stage: the mean embedding learns the targets through P, c. */
static finch_status general_stage(nn_bow *m, nn_bow_prior *pr, nn_backend *be, float *P, float *c, uint32_t E,
                                  finch_err *err) {
  const uint32_t D = m->D;
  const size_t n = pr->n_gen;
  nn_bow_features ft = {0};
  finch_status st = nn__bow_featurize_all(m->feat, pr->gen_texts, n, &ft, err);
  if (st) return st;
  /* The targets' variance per dimension, summed over dimensions. */
  double var = 0;
  {
    double *mu = calloc(E, sizeof *mu);
    if (!mu) {
      free(ft.ids), free(ft.offs);
      return finch_err_set(err, FINCH_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
      for (uint32_t e = 0; e < E; e++) mu[e] += pr->gen_targets[i * E + e];
    for (uint32_t e = 0; e < E; e++) mu[e] /= (double)n;
    for (size_t i = 0; i < n; i++)
      for (uint32_t e = 0; e < E; e++) {
        double d = pr->gen_targets[i * E + e] - mu[e];
        var += d * d;
      }
    var /= (double)n;
    free(mu);
  }
  if (!(var > 0)) var = 1;
  const int Bmax = 64;
  const size_t max_ids = (size_t)Bmax * (ft.max_row ? ft.max_row : 1);
  const size_t cap = max_ids < m->R ? max_ids : m->R;
  nn_row_grads rg = {.D = (int)D};
  rg.g = malloc((cap * D + 1) * sizeof *rg.g);
  rg.rows = malloc((cap + 1) * sizeof *rg.rows);
  rg.slot_of = malloc((size_t)m->R * sizeof *rg.slot_of);
  rg.cap = cap;
  const size_t nP = (size_t)E * D;
  /* P then c, contiguous, so that one AdamW call updates both; their
   * gradients and moments alike. */
  float *Pc = malloc((nP + E) * sizeof *Pc), *dP = malloc((nP + E) * sizeof *dP);
  float *dense_m = calloc(2 * (nP + E), sizeof *dense_m);
  float *h0 = malloc((size_t)Bmax * D * sizeof *h0), *dh0 = malloc((size_t)Bmax * D * sizeof *dh0);
  float *z = malloc((size_t)Bmax * E * sizeof *z), *dz = malloc((size_t)Bmax * E * sizeof *dz);
  float *emb_m = calloc(2 * (size_t)m->R * D, sizeof *emb_m);
  uint32_t *bids = malloc((max_ids + 1) * sizeof *bids);
  size_t *boffs = malloc((Bmax + 1) * sizeof *boffs), *perm = malloc((n + 1) * sizeof *perm);
  if (!rg.g || !rg.rows || !rg.slot_of || !Pc || !dP || !dense_m || !h0 || !dh0 || !z || !dz || !emb_m || !bids ||
      !boffs || !perm) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for the general stage (%zu texts)", n);
    goto out;
  }
  for (size_t r = 0; r < m->R; r++) rg.slot_of[r] = -1;
  float *dc = dP + nP;
  memcpy(Pc, P, nP * sizeof *P);
  memcpy(Pc + nP, c, E * sizeof *c);
  for (size_t i = 0; i < n; i++) perm[i] = i;
  nn_rng rng;
  nn_rng_seed(&rng, m->cfg.seed, 4);
  const nn_adamw_config ac = nn_adamw_defaults();
  const uint64_t steps = (uint64_t)((n + Bmax - 1) / Bmax) * pr->gen_epochs;
  const uint64_t warm = steps / 20;
  uint64_t t = 0;
  float last_lr = 0.0f;
  for (uint32_t ep = 0; ep < pr->gen_epochs; ep++) {
    for (size_t i = n - 1; i > 0; i--) {
      size_t j = (size_t)nn_rng_below(&rng, i + 1), tmp = perm[i];
      perm[i] = perm[j];
      perm[j] = tmp;
    }
    double tot = 0;
    for (size_t s = 0; s < n; s += Bmax) {
      int B = (int)(n - s < (size_t)Bmax ? n - s : (size_t)Bmax);
      size_t k = 0;
      boffs[0] = 0;
      for (int b = 0; b < B; b++) {
        size_t ex = perm[s + (size_t)b], len = ft.offs[ex + 1] - ft.offs[ex];
        memcpy(bids + k, ft.ids + ft.offs[ex], len * sizeof *bids);
        k += len;
        boffs[b + 1] = k;
      }
      nn_embed_mean_forward(m->emb, (int)D, bids, boffs, B, h0);
      nn_linear_forward(be, h0, Pc, Pc + nP, B, (int)D, (int)E, z);
      double loss = 0;
      const float g = (float)(2.0 / (var * B));
      for (int b = 0; b < B; b++) {
        const float *tg = pr->gen_targets + perm[s + (size_t)b] * E;
        for (uint32_t e = 0; e < E; e++) {
          float d = z[(size_t)b * E + e] - tg[e];
          loss += (double)d * d;
          dz[(size_t)b * E + e] = g * d;
        }
      }
      tot += loss / var;
      nn_linear_backward(be, dz, h0, Pc, B, (int)D, (int)E, dh0, dP, dc);
      nn_embed_mean_backward(dh0, bids, boffs, B, &rg);
      float lr = nn_lr_schedule(m->cfg.lr, t, warm, steps);
      last_lr = lr;
      t++;
      double sq = nn_sum_sq(dP, nP + E) + nn_sum_sq(rg.g, rg.n * D);
      float gs = nn_clip_scale(sq, 5.0f);
      nn_adamw_update(Pc, dP, dense_m, dense_m + nP + E, nP + E, lr, 0.0f, gs, t, &ac);
      nn_adamw_update_rows(m->emb, rg.g, rg.rows, rg.n, (int)D, emb_m, emb_m + (size_t)m->R * D, lr, 0.0f, gs, t,
                           &ac);
      nn_row_grads_clear(&rg);
    }
    double mean = tot / (double)n;
    if (ep == 0) pr->gen_loss_first = mean;
    pr->gen_loss_last = mean;
    finch_debug("bow general stage epoch %u: unexplained variance %.4f", ep + 1, mean);
    if (pr->gen_cb) {
      nn_epoch_info e = {.epoch = ep + 1, .epochs = pr->gen_epochs, .step = t, .loss = (float)mean, .lr = last_lr};
      pr->gen_cb(pr->gen_ctx, &e);
    }
  }
  if ((st = nn_backend_check(be, err)) != FINCH_OK) finch_err_prefix(err, "the bow general stage");
out:
  free(ft.ids);
  free(ft.offs);
  free(rg.g);
  free(rg.rows);
  free(rg.slot_of);
  free(Pc);
  free(dP);
  free(dense_m);
  free(h0);
  free(dh0);
  free(z);
  free(dz);
  free(emb_m);
  free(bids);
  free(boffs);
  free(perm);
  return st;
}

finch_status nn__bow_apply_prior(nn_bow *m, nn_bow_prior *pr, nn_backend *be, finch_err *err) {
  const int general = pr->n_gen > 0 && pr->gen_epochs > 0;
  uint32_t E = pr->gen_dim;
  if (!be) be = nn_backend_cpu();
  if (general && (!pr->gen_texts || !pr->gen_targets || !E))
    return finch_err_set(err, FINCH_EINVAL, "general stage: %zu texts without their target vectors", pr->n_gen);
  float *P = NULL, *c = NULL;
  finch_status st = FINCH_OK;
  if (pr->word_vectors) {
    st = init_words(m, pr, &P, &c, &E, general, err);
  } else if (general) {
    /* No principal axes: the map starts small and random. */
    P = malloc((size_t)E * m->D * sizeof *P);
    c = calloc(E, sizeof *c);
    if (!P || !c) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    } else {
      nn_rng r;
      nn_rng_seed(&r, m->cfg.seed, 5);
      float a = 1.0f / sqrtf((float)m->D);
      for (size_t i = 0; i < (size_t)E * m->D; i++) P[i] = a * (2.0f * nn_rng_uniform(&r) - 1.0f);
    }
  }
  if (!st && general) st = general_stage(m, pr, be, P, c, E, err);
  free(P);
  free(c);
  return st;
}
