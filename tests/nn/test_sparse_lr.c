/* Sparse TF-IDF + logistic regression (nn/sparse_lr.h): the vocabulary and
 * idf follow the documented rules, a separable synthetic task is learnt to
 * 100%, training is deterministic, probabilities are a distribution, save ->
 * load gives identical answers, predict is safe from several threads, and
 * malformed blobs and bad inputs are refused without crashing. */
#include <pthread.h>

#include "nn/model.h" /* tests/nn/synth.h's synth_config returns an nn_train_config */
#include "nn/sparse_lr.h"
#include "tests/nn/synth.h"
#include "tests/test.h"

static uint32_t rd32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static float rdf(const unsigned char *p) {
  uint32_t v = rd32(p);
  float f;
  memcpy(&f, &v, 4);
  return f;
}

/* Offset of vocabulary entry j in a blob (entries are walked from the header). */
static size_t entry_off(const unsigned char *b, size_t j) {
  size_t off = NN_SPARSE_LR_HEADER;
  for (size_t k = 0; k < j; k++) off += 8 + rd32(b + off);
  return off;
}

static nn_sparse_lr *train(const char *const *texts, const int32_t *y, size_t n, size_t nl,
                           const nn_sparse_lr_config *cfg) {
  finch_err err = {0};
  nn_sparse_lr *m = NULL;
  if (nn_sparse_lr_train(&m, texts, y, n, nl, cfg, &err) != FINCH_OK) TEST_FAIL_("train: %s", err.msg);
  return m;
}

static unsigned char *save(const nn_sparse_lr *m, size_t *len) {
  finch_err err = {0};
  unsigned char *b = NULL;
  if (nn_sparse_lr_save(m, &b, len, &err) != FINCH_OK) TEST_FAIL_("save: %s", err.msg);
  return b;
}

static double accuracy(const nn_sparse_lr *m, const synth_set *s) {
  size_t ok = 0;
  for (size_t i = 0; i < s->n; i++) ok += nn_sparse_lr_predict(m, s->texts[i], NULL, 1.0f) == s->labels[i];
  return (double)ok / (double)s->n;
}

typedef struct {
  const nn_sparse_lr *m;
  const synth_set *s;
  float *probs; /* (n, C) */
} job;

static void *predict_all(void *arg) {
  job *j = arg;
  for (size_t i = 0; i < j->s->n; i++) nn_sparse_lr_predict(j->m, j->s->texts[i], j->probs + i * SYNTH_CLASSES, 1.0f);
  return NULL;
}

/* The vocabulary of a tiny corpus, read back from the blob: order (df
 * descending, then bytes), keys, smooth idf, char_wb n-grams. */
static void test_vocabulary(void) {
  const char *texts[] = {"A b", "a C!", "<card> a"};
  const int32_t y[] = {0, 1, 1};
  nn_sparse_lr_config cfg = nn_sparse_lr_defaults();
  cfg.word_ngrams = 2;
  cfg.char_max = cfg.char_min = 0;
  cfg.min_df = 1;
  cfg.epochs = 5;
  nn_sparse_lr *m = train(texts, y, 3, 2, &cfg);
  if (!m) return;
  size_t len;
  unsigned char *b = save(m, &len);
  /* wa (df 3), then df 1 in byte order: w<card>, w<card> a, wa b, wa c, wb, wc */
  const char *want[] = {"wa", "w<card>", "w<card> a", "wa b", "wa c", "wb", "wc"};
  const size_t nw = sizeof want / sizeof *want;
  CHECK_INT_EQ(nn_sparse_lr_n_features(m), nw);
  CHECK_INT_EQ(nn_sparse_lr_n_params(m), nw * 2 + 2);
  CHECK_INT_EQ(rd32(b + 44), 2);
  CHECK_INT_EQ(rd32(b + 48), nw);
  for (size_t j = 0; j < nw && b; j++) {
    size_t off = entry_off(b, j), kl = rd32(b + off);
    char key[64] = "";
    memcpy(key, b + off + 4, kl < 63 ? kl : 63);
    CHECK_STR_EQ(key, want[j]);
    double idf = j == 0 ? 1.0 : log(4.0 / 2.0) + 1.0; /* ln((1+n)/(1+df)) + 1 */
    CHECK_NEAR(rdf(b + off + 4 + kl), idf, 1e-6);
  }
  free(b);
  nn_sparse_lr_free(m);

  /* char_wb: " ab " gives 2-grams " a" "ab" "b " and 3-grams " ab" "ab "; a
   * padded word shorter than char_min gives itself once; min_df drops the
   * terms of one text only. */
  const char *t2[] = {"ab", "ab x"};
  cfg.word_ngrams = 1;
  cfg.char_min = 2;
  cfg.char_max = 3;
  cfg.min_df = 2;
  m = train(t2, y, 2, 2, &cfg);
  if (!m) return;
  b = save(m, &len);
  const char *want2[] = {"c a", "c ab", "cab", "cab ", "cb ", "wab"};
  CHECK_INT_EQ(nn_sparse_lr_n_features(m), 6);
  for (size_t j = 0; j < 6 && b; j++) {
    size_t off = entry_off(b, j), kl = rd32(b + off);
    char key[64] = "";
    memcpy(key, b + off + 4, kl < 63 ? kl : 63);
    CHECK_STR_EQ(key, want2[j]);
  }
  free(b);
  nn_sparse_lr_free(m);
  cfg.char_min = 4;
  cfg.char_max = 5;
  cfg.min_df = 1;
  const char *t3[] = {"x", "yz"};
  m = train(t3, y, 2, 2, &cfg);
  if (!m) return;
  b = save(m, &len);
  const char *want3[] = {"c x ", "c yz ", "wx", "wyz"}; /* " yz " is 4: its one 4-gram */
  CHECK_INT_EQ(nn_sparse_lr_n_features(m), 4);
  for (size_t j = 0; j < 4 && b; j++) {
    size_t off = entry_off(b, j), kl = rd32(b + off);
    char key[64] = "";
    memcpy(key, b + off + 4, kl < 63 ? kl : 63);
    CHECK_STR_EQ(key, want3[j]);
  }
  free(b);
  nn_sparse_lr_free(m);
}

static void check_bad(const unsigned char *b, size_t len, const char *what, const char *needle) {
  finch_err err = {0};
  nn_sparse_lr *m = NULL;
  finch_status st = nn_sparse_lr_load(&m, b, len, &err);
  if (st != FINCH_EFORMAT) TEST_FAIL_("%s: status %d, expected FINCH_EFORMAT", what, (int)st);
  if (needle) CHECK_CONTAINS(err.msg, needle);
  CHECK(m == NULL);
  nn_sparse_lr_free(m);
}

static void test_malformed(const nn_sparse_lr *m) {
  size_t len;
  unsigned char *b = save(m, &len);
  if (!b) return;
  unsigned char *c = malloc(len + 1);
  /* Truncated at every offset: each allocation is exact so ASan sees overreads. */
  for (size_t k = 0; k < len; k++) {
    unsigned char *t = malloc(k ? k : 1);
    memcpy(t, b, k);
    finch_err err = {0};
    nn_sparse_lr *x = NULL;
    if (nn_sparse_lr_load(&x, t, k, &err) != FINCH_EFORMAT) TEST_FAIL_("truncated to %zu of %zu loaded", k, len);
    nn_sparse_lr_free(x);
    free(t);
  }
  memcpy(c, b, len);
  c[0] = 'X';
  check_bad(c, len, "magic", "magic");
  memcpy(c, b, len);
  wr32(c + 4, 2);
  check_bad(c, len, "version", "version");
  memcpy(c, b, len);
  wr32(c + 8, 9);
  check_bad(c, len, "word_ngrams", "word_ngrams");
  memcpy(c, b, len);
  wr32(c + 28, 0x7fc00000u); /* C = NaN */
  check_bad(c, len, "C", "C must be");
  memcpy(c, b, len);
  wr32(c + 44, 0);
  check_bad(c, len, "no labels", "n_labels");
  memcpy(c, b, len);
  wr32(c + 44, 0x7fffffffu);
  check_bad(c, len, "labels past end", "need more");
  memcpy(c, b, len);
  wr32(c + 48, 0xffffffffu);
  check_bad(c, len, "features past end", "need more");
  memcpy(c, b, len);
  wr32(c + 48, rd32(b + 48) - 1); /* one entry fewer: the rest no longer fits the weights */
  check_bad(c, len, "feature count", NULL);
  memcpy(c, b, len);
  wr32(c + NN_SPARSE_LR_HEADER, 0xfffffff0u);
  check_bad(c, len, "key length past end", "key length");
  memcpy(c, b, len);
  wr32(c + NN_SPARSE_LR_HEADER, 1);
  check_bad(c, len, "key length 1", "key length");
  memcpy(c, b, len);
  c[NN_SPARSE_LR_HEADER + 4] = 'q';
  check_bad(c, len, "block tag", "block tag");
  /* A duplicate key: the first two entries of equal length, the second made
   * a copy of the first. */
  size_t F = rd32(b + 48), o0 = 0, o1 = 0;
  for (size_t j = 0; j + 1 < F && !o1; j++) {
    size_t a = entry_off(b, j), n = a + 8 + rd32(b + a);
    if (rd32(b + a) == rd32(b + n)) o0 = a, o1 = n;
  }
  CHECK(o1 != 0);
  if (o1) {
    memcpy(c, b, len);
    memcpy(c + o1 + 4, c + o0 + 4, rd32(b + o0));
    check_bad(c, len, "duplicate key", "duplicates");
  }
  memcpy(c, b, len);
  size_t e0 = NN_SPARSE_LR_HEADER, kl0 = rd32(b + e0);
  wr32(c + e0 + 4 + kl0, 0); /* idf 0 */
  check_bad(c, len, "idf", "idf");
  memcpy(c, b, len);
  wr32(c + len - 4, 0x7f800000u); /* last bias +inf */
  check_bad(c, len, "inf weight", "non-finite");
  memcpy(c, b, len);
  c[len] = 0;
  check_bad(c, len + 1, "trailing byte", "after the weights");
  /* The unmodified copy loads. */
  memcpy(c, b, len);
  finch_err err = {0};
  nn_sparse_lr *ok = NULL;
  CHECK_INT_EQ(nn_sparse_lr_load(&ok, c, len, &err), FINCH_OK);
  nn_sparse_lr_free(ok);
  free(c);
  free(b);
}

int main(void) {
  (void)synth_config; /* the shared synthetic task's bow settings; labels here are indices */
  (void)synth_labels;
  test_vocabulary();

  synth_set tr, te;
  synth_make(&tr, 400, 1);
  synth_make(&te, 200, 2);
  const char *const *trt = (const char *const *)tr.texts;
  nn_sparse_lr_config cfg = nn_sparse_lr_defaults();

  /* Learns the separable task perfectly. */
  nn_sparse_lr *a = train(trt, tr.labels, tr.n, SYNTH_CLASSES, &cfg);
  CHECK(a != NULL);
  if (!a) TEST_DONE();
  CHECK_NEAR(accuracy(a, &tr), 1.0, 0.0);
  CHECK_NEAR(accuracy(a, &te), 1.0, 0.0);
  CHECK_INT_EQ(nn_sparse_lr_n_labels(a), SYNTH_CLASSES);
  CHECK_INT_EQ(nn_sparse_lr_n_params(a), (nn_sparse_lr_n_features(a) + 1) * SYNTH_CLASSES);
  CHECK_INT_EQ(nn_sparse_lr_config_of(a)->char_max, cfg.char_max);

  /* Probabilities sum to 1; a higher temperature flattens them; bad input
   * gives -1 and the uniform distribution. */
  float p1[SYNTH_CLASSES], p4[SYNTH_CLASSES];
  int top = nn_sparse_lr_predict(a, "my pin is blocked", p1, 1.0f);
  CHECK_INT_EQ(top, 1);
  CHECK_NEAR(p1[0] + p1[1] + p1[2] + p1[3], 1.0, 1e-5);
  CHECK(p1[top] > 0.5f);
  CHECK_INT_EQ(nn_sparse_lr_predict(a, "my pin is blocked", p4, 4.0f), top);
  CHECK(p4[top] < p1[top]);
  CHECK_NEAR(p4[0] + p4[1] + p4[2] + p4[3], 1.0, 1e-5);
  CHECK(nn_sparse_lr_predict(a, "", p1, 1.0f) >= 0);          /* no terms: the biases decide */
  CHECK(nn_sparse_lr_predict(a, "zzz qqq", p1, 1.0f) >= 0);   /* unknown terms only */
  CHECK_NEAR(p1[0] + p1[1] + p1[2] + p1[3], 1.0, 1e-5);
  CHECK_INT_EQ(nn_sparse_lr_predict(a, "bad \xff pin", p1, 1.0f), -1);
  for (int c = 0; c < SYNTH_CLASSES; c++) CHECK_NEAR(p1[c], 0.25, 1e-7);
  CHECK_INT_EQ(nn_sparse_lr_predict(a, "pin", p1, 0.0f), -1);
  CHECK_NEAR(p1[1], 0.25, 1e-7);

  /* Deterministic: a second run gives the same blob byte for byte. */
  size_t la, lb;
  unsigned char *ba = save(a, &la);
  nn_sparse_lr *b = train(trt, tr.labels, tr.n, SYNTH_CLASSES, &cfg);
  unsigned char *bb = b ? save(b, &lb) : NULL;
  CHECK(ba && bb && la == lb && memcmp(ba, bb, la) == 0);
  free(bb);
  nn_sparse_lr_free(b);

  /* save -> load: identical probabilities and an identical re-saved blob. */
  finch_err err = {0};
  nn_sparse_lr *l = NULL;
  CHECK_INT_EQ(nn_sparse_lr_load(&l, ba, la, &err), FINCH_OK);
  size_t np = te.n * SYNTH_CLASSES;
  float *pa = malloc(np * sizeof(float)), *pl = malloc(np * sizeof(float));
  job ja = {a, &te, pa}, jl = {l, &te, pl};
  predict_all(&ja);
  if (l) {
    predict_all(&jl);
    CHECK(memcmp(pa, pl, np * sizeof(float)) == 0);
    size_t lr;
    unsigned char *br = save(l, &lr);
    CHECK(br && lr == la && memcmp(br, ba, la) == 0);
    free(br);
    CHECK_INT_EQ(nn_sparse_lr_config_of(l)->epochs, cfg.epochs);
    CHECK_NEAR(nn_sparse_lr_config_of(l)->C, cfg.C, 0.0);
  }
  nn_sparse_lr_free(l);
  free(ba);

  /* predict from 4 threads at once matches the serial answers bitwise. */
  pthread_t th[4];
  float *pt[4];
  job jt[4];
  for (int i = 0; i < 4; i++) {
    pt[i] = malloc(np * sizeof(float));
    jt[i] = (job){a, &te, pt[i]};
    pthread_create(&th[i], NULL, predict_all, &jt[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK(memcmp(pt[i], pa, np * sizeof(float)) == 0);
    free(pt[i]);
  }
  free(pa);
  free(pl);

  /* Malformed blobs, on the full model and on a word-unigram one. */
  test_malformed(a);
  nn_sparse_lr_config small = cfg;
  small.word_ngrams = 1;
  small.char_min = small.char_max = 0;
  nn_sparse_lr *s = train(trt, tr.labels, tr.n, SYNTH_CLASSES, &small);
  if (s) {
    CHECK_NEAR(accuracy(s, &te), 1.0, 0.0);
    test_malformed(s);
  }
  nn_sparse_lr_free(s);

  /* Refusals name the field or the text. */
  nn_sparse_lr *bad = NULL;
  int32_t saved = tr.labels[3];
  tr.labels[3] = SYNTH_CLASSES;
  CHECK_INT_EQ(nn_sparse_lr_train(&bad, trt, tr.labels, tr.n, SYNTH_CLASSES, &cfg, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "text 3");
  tr.labels[3] = saved;
  char *saved_text = tr.texts[2];
  tr.texts[2] = "bad \xc3";
  CHECK_INT_EQ(nn_sparse_lr_train(&bad, trt, tr.labels, tr.n, SYNTH_CLASSES, &cfg, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "text 2");
  tr.texts[2] = saved_text;
  CHECK_INT_EQ(nn_sparse_lr_train(&bad, trt, tr.labels, 0, SYNTH_CLASSES, &cfg, &err), FINCH_EINVAL);
  nn_sparse_lr_config bc = cfg;
  bc.C = 0.0f;
  CHECK_INT_EQ(nn_sparse_lr_train(&bad, trt, tr.labels, tr.n, SYNTH_CLASSES, &bc, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "C must be");
  bc = cfg;
  bc.word_ngrams = 0;
  CHECK_INT_EQ(nn_sparse_lr_train(&bad, trt, tr.labels, tr.n, SYNTH_CLASSES, &bc, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "word_ngrams");
  bc = cfg;
  bc.char_min = 6;
  CHECK_INT_EQ(nn_sparse_lr_train(&bad, trt, tr.labels, tr.n, SYNTH_CLASSES, &bc, &err), FINCH_EINVAL);
  CHECK(bad == NULL);

  nn_sparse_lr_free(a);
  synth_free(&tr);
  synth_free(&te);
  TEST_DONE();
}
