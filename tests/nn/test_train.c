/* Training: a separable synthetic task is learnt, a run is bit-reproducible
 * for a seed, distillation lowers its loss, predict is safe from several
 * threads, and bad inputs are refused. */
#include <pthread.h>

#include "nn/model.h"
#include "tests/nn/synth.h"
#include "tests/test.h"

static double accuracy(const nn_model *m, const synth_set *s) {
  size_t ok = 0;
  for (size_t i = 0; i < s->n; i++) ok += nn_model_predict(m, s->texts[i], NULL, 1.0f) == s->labels[i];
  return (double)ok / (double)s->n;
}

static nn_model *train(const synth_set *s, const nn_train_config *cfg, const float *soft,
                       const nn_kd_config *kd, nn_epoch_cb cb, void *ctx) {
  finch_err err = {0};
  nn_dataset ds = {.texts = (const char *const *)s->texts, .labels = s->labels, .soft = soft, .n = s->n};
  nn_model *m = NULL;
  finch_status st = nn_model_train(&m, &ds, synth_labels, SYNTH_CLASSES, cfg, kd, NULL, cb, ctx, &err);
  if (st != FINCH_OK) TEST_FAIL_("train: %s", err.msg);
  return m;
}

typedef struct {
  float loss[64];
  uint32_t n;
} losses;

static void record(void *ctx, uint32_t epoch, float loss) {
  losses *l = ctx;
  if (l->n < 64) l->loss[l->n++] = loss;
  (void)epoch;
}

typedef struct {
  const nn_model *m;
  const synth_set *s;
  float *probs; /* (n, C) */
} job;

static void *predict_all(void *arg) {
  job *j = arg;
  for (size_t i = 0; i < j->s->n; i++) nn_model_predict(j->m, j->s->texts[i], j->probs + i * SYNTH_CLASSES, 1.0f);
  return NULL;
}

int main(void) {
  synth_set tr, te;
  synth_make(&tr, 400, 1);
  synth_make(&te, 200, 2);

  /* Learns, with and without a hidden layer. */
  nn_train_config cfg = synth_config(16);
  losses lt = {0};
  nn_model *a = train(&tr, &cfg, NULL, NULL, record, &lt);
  CHECK(a != NULL);
  if (!a) TEST_DONE();
  CHECK(accuracy(a, &te) >= 0.95);
  CHECK_INT_EQ(lt.n, cfg.epochs);
  CHECK(lt.loss[lt.n - 1] < lt.loss[0]);
  nn_train_config lin = synth_config(0);
  nn_model *l = train(&tr, &lin, NULL, NULL, NULL, NULL);
  CHECK(l && accuracy(l, &te) >= 0.95);
  nn_model_free(l);

  /* Accessors. */
  CHECK_INT_EQ(nn_model_n_labels(a), SYNTH_CLASSES);
  CHECK_STR_EQ(nn_model_label(a, 2), "top_up");
  CHECK_INT_EQ(nn_model_label_index(a, "exchange_rate"), 3);
  CHECK_INT_EQ(nn_model_label_index(a, "nope"), -1);
  CHECK_INT_EQ(nn_model_config(a)->dim, 16);
  CHECK_INT_EQ(nn_model_dtype(a), NN_DTYPE_F32);
  CHECK_STR_EQ(nn_model_meta(a), "{}");
  finch_err err = {0};
  CHECK_INT_EQ(nn_model_set_meta(a, "{\"kind\":\"teacher\"}", &err), FINCH_OK);
  CHECK_STR_EQ(nn_model_meta(a), "{\"kind\":\"teacher\"}");
  CHECK_INT_EQ(nn_model_set_meta(a, "{broken", &err), FINCH_EINVAL);
  CHECK_INT_EQ(nn_model_set_meta(a, "[1]", &err), FINCH_EINVAL);
  CHECK_STR_EQ(nn_model_meta(a), "{\"kind\":\"teacher\"}");
  CHECK_INT_EQ(nn_model_set_meta(a, NULL, &err), FINCH_OK);
  CHECK_STR_EQ(nn_model_meta(a), "{}");

  /* Probabilities sum to 1; a higher temperature flattens them. */
  float p1[SYNTH_CLASSES], p4[SYNTH_CLASSES];
  int top = nn_model_predict(a, "my pin is blocked", p1, 1.0f);
  CHECK_INT_EQ(top, 1);
  CHECK(nn_model_predict(a, "my pin is blocked", p4, 4.0f) == top);
  CHECK(p4[top] < p1[top]);
  CHECK_NEAR(p1[0] + p1[1] + p1[2] + p1[3], 1.0, 1e-5);
  CHECK(nn_model_predict(a, "", p1, 1.0f) >= 0);             /* no features: the biases decide */
  CHECK_INT_EQ(nn_model_predict(a, "bad \xff", p1, 1.0f), -1); /* invalid UTF-8 */
  CHECK_NEAR(p1[0], 0.25, 1e-6);

  /* Bit-reproducible: the same seed gives identical probabilities. */
  nn_model *b = train(&tr, &cfg, NULL, NULL, NULL, NULL);
  CHECK(b != NULL);
  size_t np = te.n * SYNTH_CLASSES;
  float *pa = malloc(np * sizeof(float)), *pb = malloc(np * sizeof(float));
  job ja = {a, &te, pa}, jb = {b, &te, pb};
  predict_all(&ja);
  predict_all(&jb);
  CHECK(memcmp(pa, pb, np * sizeof(float)) == 0);
  nn_model_free(b);
  nn_train_config other = cfg;
  other.seed = 6;
  b = train(&tr, &other, NULL, NULL, NULL, NULL);
  jb.m = b;
  predict_all(&jb);
  CHECK(memcmp(pa, pb, np * sizeof(float)) != 0);
  nn_model_free(b);

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

  /* Distillation: soft targets at tau 2 from the teacher; the loss falls and
   * the student learns the task. */
  nn_kd_config kd = {.alpha = 0.7f, .temperature = 2.0f};
  float *soft = malloc(tr.n * SYNTH_CLASSES * sizeof(float));
  for (size_t i = 0; i < tr.n; i++) nn_model_predict(a, tr.texts[i], soft + i * SYNTH_CLASSES, kd.temperature);
  losses ls = {0};
  nn_model *s = train(&tr, &lin, soft, &kd, record, &ls);
  CHECK(s && accuracy(s, &te) >= 0.95);
  CHECK_INT_EQ(ls.n, lin.epochs);
  CHECK(ls.loss[ls.n - 1] < 0.5f * ls.loss[0]);
  nn_model_free(s);

  /* Refusals. */
  nn_model *bad = NULL;
  int32_t saved = tr.labels[3];
  tr.labels[3] = SYNTH_CLASSES;
  nn_dataset ds = {.texts = (const char *const *)tr.texts, .labels = tr.labels, .soft = NULL, .n = tr.n};
  CHECK_INT_EQ(nn_model_train(&bad, &ds, synth_labels, SYNTH_CLASSES, &cfg, NULL, NULL, NULL, NULL, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "text 3");
  tr.labels[3] = saved;
  ds.n = 0;
  CHECK_INT_EQ(nn_model_train(&bad, &ds, synth_labels, SYNTH_CLASSES, &cfg, NULL, NULL, NULL, NULL, &err), FINCH_EINVAL);
  ds.n = tr.n;
  nn_train_config z = cfg;
  z.dropout = 1.0f;
  CHECK_INT_EQ(nn_model_train(&bad, &ds, synth_labels, SYNTH_CLASSES, &z, NULL, NULL, NULL, NULL, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "dropout");
  kd.temperature = 0.0f;
  ds.soft = soft;
  CHECK_INT_EQ(nn_model_train(&bad, &ds, synth_labels, SYNTH_CLASSES, &cfg, &kd, NULL, NULL, NULL, &err), FINCH_EINVAL);
  CHECK(bad == NULL);

  free(soft);
  free(pa);
  free(pb);
  nn_model_free(a);
  synth_free(&tr);
  synth_free(&te);
  TEST_DONE();
}
