/* Fine-tuning the BERT encoder (nn/bert_train.h) on the tiny random BERT of
 * bert_tiny.h, with dropout on and length bucketing: on a learnable toy task
 * (the label is which of three key tokens a row holds, among random filler
 * tokens) the loss falls and the rows are learnt; two runs give the same
 * losses and weights bit for bit; a run stopped after 10 steps and resumed
 * from its checkpoint gives the losses and weights of the uninterrupted one;
 * a corrupted checkpoint and another run's are refused. */
#include "nn/bert_train.h"

#include <unistd.h>

#include "tests/nn/bert_tiny.h"
#include "tests/test.h"

enum { N = 96, T = 12, C = 3, MAX_STEPS = 160 };

typedef struct {
  float loss[MAX_STEPS];
  uint64_t steps[MAX_STEPS];
  int n;
} trace;

static void on_step(void *p, const nn_bert_progress *pr) {
  trace *t = p;
  if (t->n < MAX_STEPS) t->steps[t->n] = pr->step, t->loss[t->n++] = pr->loss;
}

static nn_bert_ids x;
static int32_t y[N];

static void make_data(void) {
  nn_rng r;
  nn_rng_seed(&r, 3, 9);
  x.T = T;
  x.n = N;
  x.ids = calloc((size_t)N * T, sizeof *x.ids);
  x.len = calloc(N, sizeof *x.len);
  for (int i = 0; i < N; i++) {
    const int len = 4 + (int)nn_rng_below(&r, T - 3); /* 4..12 */
    y[i] = (int32_t)nn_rng_below(&r, C);
    int32_t *row = x.ids + (size_t)i * T;
    row[0] = 2;
    for (int t = 1; t < len - 1; t++) row[t] = 13 + (int32_t)nn_rng_below(&r, TINY_V - 13);
    row[1 + (int)nn_rng_below(&r, (uint64_t)(len - 2))] = 10 + y[i];
    row[len - 1] = 3;
    x.len[i] = (uint16_t)len;
  }
}

static nn_bert_train_config config(void) {
  nn_bert_train_config c = nn_bert_train_defaults();
  c.epochs = 20;
  c.batch = 16;
  c.lr = 1e-2f;
  c.head_lr = 3e-2f;
  c.bucket = 2;
  c.seed = 5;
  return c;
}

/* One run from a fresh tiny model; its encoder and head come back. */
static nn_bert *run(const nn_bert_train_config *c, trace *t, float *hw, float *hb, finch_status want) {
  nn_bert *m = tiny_bert(11);
  finch_err err = {0};
  finch_status st = nn_bert_finetune(m, hw, hb, C, NULL, &x, y, c, on_step, t, &err);
  if (st != want) TEST_FAIL_("fine-tuning returned %d, wanted %d: %s", st, want, err.msg);
  return m;
}

int main(void) {
  make_data();
  char ck[256], ck2[256];
  snprintf(ck, sizeof ck, "/tmp/test_bert_train.%d.ck", (int)getpid());
  snprintf(ck2, sizeof ck2, "/tmp/test_bert_train.%d.ck2", (int)getpid());
  const nn_bert_train_config c = config();
  const int steps = 20 * (N / 16);

  /* Learns, and twice the same. */
  trace t1 = {0}, t2 = {0};
  float hw1[C * TINY_D], hb1[C], hw2[C * TINY_D], hb2[C];
  nn_bert *m1 = run(&c, &t1, hw1, hb1, FINCH_OK);
  nn_bert *m2 = run(&c, &t2, hw2, hb2, FINCH_OK);
  CHECK_INT_EQ(t1.n, steps);
  double first = 0, last = 0;
  for (int i = 0; i < N / 16; i++) first += t1.loss[i], last += t1.loss[steps - 1 - i];
  printf("mean loss, first epoch %.4f, last epoch %.4f\n", first / (N / 16), last / (N / 16));
  CHECK(last < 0.5 * first);
  int32_t pred[N];
  finch_err err = {0};
  CHECK_INT_EQ(nn_bert_predict_ids(m1, hw1, hb1, C, NULL, &x, 7, pred, &err), FINCH_OK);
  int right = 0;
  for (int i = 0; i < N; i++) right += pred[i] == y[i];
  printf("training accuracy %d / %d\n", right, N);
  CHECK(right >= N * 9 / 10);
  CHECK_INT_EQ(t2.n, t1.n);
  CHECK(memcmp(t1.loss, t2.loss, sizeof t1.loss) == 0);
  CHECK(memcmp(nn_bert_params(m1), nn_bert_params(m2), nn_bert_n_params(m1) * sizeof(float)) == 0);
  CHECK(memcmp(hw1, hw2, sizeof hw1) == 0 && memcmp(hb1, hb2, sizeof hb1) == 0);

  /* Stopped after 10 steps (checkpoints every 4 and at the stop), resumed. */
  nn_bert_train_config cs = c;
  cs.checkpoint = ck;
  cs.checkpoint_every = 4;
  cs.stop_after = 10;
  unlink(ck);
  trace ta = {0}, tb = {0};
  float hw3[C * TINY_D], hb3[C];
  nn_bert *m3 = run(&cs, &ta, hw3, hb3, FINCH_OK);
  CHECK_INT_EQ(ta.n, 10);
  nn_bert_free(m3);
  cs.stop_after = 0;
  cs.resume = 1;
  m3 = run(&cs, &tb, hw3, hb3, FINCH_OK);
  CHECK_INT_EQ(tb.n, steps - 10);
  CHECK_INT_EQ(tb.steps[0], 11);
  CHECK(memcmp(ta.loss, t1.loss, 10 * sizeof(float)) == 0);
  CHECK(memcmp(tb.loss, t1.loss + 10, (size_t)(steps - 10) * sizeof(float)) == 0);
  CHECK(memcmp(nn_bert_params(m3), nn_bert_params(m1), nn_bert_n_params(m1) * sizeof(float)) == 0);
  CHECK(memcmp(hw3, hw1, sizeof hw1) == 0 && memcmp(hb3, hb1, sizeof hb1) == 0);
  nn_bert_free(m3);

  /* A corrupted checkpoint, and another run's, are refused. */
  FILE *f = fopen(ck, "r+b");
  CHECK(f != NULL);
  if (f) {
    fseek(f, 200, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 200, SEEK_SET);
    fputc(ch ^ 0x55, f);
    fclose(f);
  }
  trace tc = {0};
  nn_bert_free(run(&cs, &tc, hw3, hb3, FINCH_ECHECKSUM));
  cs.checkpoint = ck2;
  cs.stop_after = 2;
  cs.resume = 0;
  nn_bert_free(run(&cs, &tc, hw3, hb3, FINCH_OK));
  cs.lr *= 2;
  cs.resume = 1;
  nn_bert_free(run(&cs, &tc, hw3, hb3, FINCH_EFORMAT));

  unlink(ck);
  unlink(ck2);
  nn_bert_free(m1);
  nn_bert_free(m2);
  nn_bert_ids_free(&x);
  TEST_DONE();
}
