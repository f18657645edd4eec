/* The bag-of-n-grams model's start from a teacher (nn/bow_prior.c):
 *   - word rows are the words' coordinates on the teacher vectors' principal
 *     axes: words with equal vectors get equal rows, rows keep their
 *     differences' geometry (the vectors here lie in a D-dimensional
 *     subspace, so all of their variance is kept), and the rows' mean squared
 *     norm is 1;
 *   - a character n-gram row that only one word has equals that word's row;
 *     untouched hashed rows keep their earlier values;
 *   - a width above the teacher's fills the first E columns and zeroes the rest;
 *   - the general stage lowers the unexplained variance of targets that are a
 *     linear function of the words, and the trained model then predicts;
 *   - refused: vectors of the wrong width for the general stage, targets
 *     missing, a failing callback's error passed on. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/bow.h"
#include "nn/rng.h"
#include "tests/test.h"

static const char *const texts[] = {"card lost today", "card stolen today", "refund pending", "refund declined",
                                    "top up failed", "top up pending"};
enum { N = 6, E = 6 };

/* Each word's teacher vector: a function of its first letter on E axes, so
 * "top" and "today" (both 't') are equal, and the vectors span 4 axes. */
static void word_vec(const char *w, float *v) {
  memset(v, 0, E * sizeof *v);
  int k = (w[0] - 'a') % 4;
  v[k] = 1.0f + (float)(w[0] - 'a') / 26.0f;
  v[(k + 1) % 4] = 0.5f;
}

static int calls;
static finch_status vectors_cb(void *ctx, const char *const *words, size_t n, uint32_t *dim, float **out,
                               finch_err *err) {
  (void)err;
  calls++;
  uint32_t w = ctx ? *(uint32_t *)ctx : E;
  float *v = calloc(n * w, sizeof *v);
  float tmp[E];
  for (size_t i = 0; i < n; i++) {
    word_vec(words[i], tmp);
    memcpy(v + i * w, tmp, (w < E ? w : E) * sizeof *v);
  }
  *dim = w;
  *out = v;
  return FINCH_OK;
}

static finch_status failing_cb(void *ctx, const char *const *words, size_t n, uint32_t *dim, float **out,
                               finch_err *err) {
  (void)ctx, (void)words, (void)n, (void)dim, (void)out;
  return finch_err_set(err, FINCH_EFORMAT, "teacher says no");
}

static nn_bow *make(uint32_t D) {
  nn_train_config cfg = nn_train_config_student();
  cfg.dim = D;
  cfg.buckets = 1u << 12;
  nn_feat_config fc = nn__feat_config(&cfg);
  nn_featurizer *f = NULL;
  finch_err err;
  CHECK(nn_featurizer_build(&f, texts, N, &fc, &err) == FINCH_OK);
  nn_bow *m = NULL;
  CHECK(nn_bow_create(&m, &cfg, f, 3, &err) == FINCH_OK);
  for (size_t i = 0; i < m->n_params; i++) m->params[i] = 0.25f; /* a marker for rows left alone */
  return m;
}

static const float *row_of(const nn_bow *m, const char *w) {
  int64_t r = nn_featurizer_lookup(m->feat, w, strlen(w));
  CHECK(r >= 0);
  return m->emb + (size_t)r * m->D;
}

static double dist(const float *a, const float *b, uint32_t D) {
  double s = 0;
  for (uint32_t d = 0; d < D; d++) s += ((double)a[d] - b[d]) * ((double)a[d] - b[d]);
  return sqrt(s);
}

static void test_words(void) {
  nn_bow *m = make(4);
  finch_err err;
  nn_bow_prior p = {.word_vectors = vectors_cb};
  calls = 0;
  CHECK(nn__bow_apply_prior(m, &p, NULL, &err) == FINCH_OK);
  CHECK_INT_EQ(calls, 1);
  const size_t nw = nn_featurizer_n_words(m->feat);
  CHECK_INT_EQ((long long)p.words_init, (long long)nw);
  CHECK(p.rows_init > 0);
  CHECK_NEAR(p.words_explained, 1.0, 1e-4); /* 4 axes hold all the variance */
  /* Equal vectors, equal rows; unequal vectors, rows apart in proportion. */
  CHECK(dist(row_of(m, "top"), row_of(m, "today"), 4) < 1e-5);
  double scale = -1;
  const char *ws[] = {"card", "lost", "refund", "pending", "up", "failed"};
  for (int i = 0; i < 6; i++)
    for (int j = i + 1; j < 6; j++) {
      float a[E], b[E];
      word_vec(ws[i], a);
      word_vec(ws[j], b);
      double dv = dist(a, b, E), dr = dist(row_of(m, ws[i]), row_of(m, ws[j]), 4);
      if (dv < 1e-6) continue;
      if (scale < 0) scale = dr / dv;
      CHECK_NEAR(dr / dv, scale, 1e-3 * scale);
    }
  double sq = 0;
  for (size_t i = 0; i < nw; i++)
    for (uint32_t d = 0; d < m->D; d++) sq += (double)m->emb[i * m->D + d] * m->emb[i * m->D + d];
  CHECK_NEAR(sq / (double)nw, 1.0, 1e-4);
  /* "<declined>" as a 5-gram: "decli" is in that word alone. */
  nn_ids ids = {0};
  CHECK(nn_featurize(m->feat, "declined", &ids, NULL, &err) == FINCH_OK);
  int found = 0;
  for (size_t k = 0; k < ids.n; k++) {
    if (ids.ids[k] < nw) continue;
    const float *r = m->emb + (size_t)ids.ids[k] * m->D;
    found += dist(r, row_of(m, "declined"), 4) < 1e-5;
  }
  CHECK(found >= 3); /* most of its n-grams are its alone ("dec", "ecl", "cli", "lin", "ine" ...) */
  nn_ids_free(&ids);
  /* A row no word touches keeps its value. */
  size_t untouched = 0;
  for (size_t r = nw; r < m->R; r++) untouched += m->emb[r * m->D] == 0.25f;
  CHECK(untouched + p.rows_init == m->R - nw);
  nn_bow_free(m);

  /* Wider than the teacher: the extra columns are 0. */
  m = make(8);
  p = (nn_bow_prior){.word_vectors = vectors_cb};
  CHECK(nn__bow_apply_prior(m, &p, NULL, &err) == FINCH_OK);
  for (size_t i = 0; i < nn_featurizer_n_words(m->feat); i++)
    for (uint32_t d = E; d < 8; d++) CHECK(m->emb[i * 8 + d] == 0.0f);
  nn_bow_free(m);
}

static void test_general(void) {
  /* Targets: the sum of the texts' word vectors, a function a bag of words can learn. */
  static float tg[N * E];
  const char *gen[N];
  for (int i = 0; i < N; i++) {
    gen[i] = texts[i];
    char buf[64];
    strcpy(buf, texts[i]);
    for (char *w = strtok(buf, " "); w; w = strtok(NULL, " ")) {
      float v[E];
      word_vec(w, v);
      for (int e = 0; e < E; e++) tg[i * E + e] += v[e];
    }
  }
  finch_err err;
  for (int with_words = 0; with_words < 2; with_words++) {
    nn_bow *m = make(8);
    m->cfg.lr = 0.02f;
    nn_rng r;
    nn_rng_seed(&r, 3, 0);
    for (size_t i = 0; i < (size_t)m->R * m->D; i++) m->emb[i] = 0.3f * nn_rng_normal(&r);
    nn_bow_prior p = {.word_vectors = with_words ? vectors_cb : NULL, .gen_texts = gen, .gen_targets = tg,
                      .n_gen = N, .gen_dim = E, .gen_epochs = 60};
    CHECK(nn__bow_apply_prior(m, &p, NULL, &err) == FINCH_OK);
    CHECK(p.gen_loss_last < p.gen_loss_first);
    CHECK(p.gen_loss_last < 0.5);
    nn_bow_free(m);
  }
  /* Refusals. */
  nn_bow *m = make(4);
  uint32_t three = 3;
  nn_bow_prior p = {.word_vectors = vectors_cb, .ctx = &three, .gen_texts = gen, .gen_targets = tg, .n_gen = N,
                    .gen_dim = E, .gen_epochs = 1};
  CHECK(nn__bow_apply_prior(m, &p, NULL, &err) == FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "3 wide");
  p = (nn_bow_prior){.gen_texts = gen, .n_gen = N, .gen_dim = E, .gen_epochs = 1};
  CHECK(nn__bow_apply_prior(m, &p, NULL, &err) == FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "without their target vectors");
  p = (nn_bow_prior){.word_vectors = failing_cb};
  CHECK(nn__bow_apply_prior(m, &p, NULL, &err) == FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "teacher says no");
  nn_bow_free(m);
}

/* Through the trainer: a prior-started model trains and predicts its rows. */
static void test_train(void) {
  const int32_t y[N] = {0, 0, 1, 1, 2, 2};
  const char *labels[] = {"card", "refund", "topup"};
  nn_dataset ds = {.texts = texts, .labels = y, .n = N};
  nn_train_config cfg = nn_train_config_student();
  cfg.epochs = 40;
  cfg.batch = 2;
  cfg.buckets = 1u << 12;
  nn_bow_prior p = {.word_vectors = vectors_cb};
  nn_model *mdl = NULL;
  finch_err err;
  CHECK(nn_model_train_prior(&mdl, &ds, labels, 3, &cfg, NULL, &p, NULL, NULL, NULL, &err) == FINCH_OK);
  CHECK(p.words_init > 0);
  int ok = 0;
  for (int i = 0; i < N; i++) ok += nn_model_predict(mdl, texts[i], NULL, 1.0f) == y[i];
  CHECK_INT_EQ(ok, N);
  nn_model_free(mdl);
}

int main(void) {
  test_words();
  test_general();
  test_train();
  TEST_DONE();
}
