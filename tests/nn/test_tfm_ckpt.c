/* The encoder's training loop, checkpoints and model file:
 *   - a run is reproducible bit for bit;
 *   - a run stopped (as if killed) and resumed from its checkpoint gives the
 *     same loss sequence as an uninterrupted run;
 *   - a corrupt checkpoint or one of another run is refused;
 *   - save -> load gives identical probabilities, F32 and Q8 close;
 *   - an ensemble of tfm + bow members round-trips and averages members. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/model_arch.h"
#include "nn/tfm_train.h"
#include "tests/test.h"

static const char *const texts[] = {
    "my card has not arrived yet",     "where is my new card",          "card still not delivered",
    "i want to cancel a transfer",     "please stop the transfer",      "cancel my payment to john",
    "what is the exchange rate",       "how much is euro to dollar",    "rate for converting pounds",
    "my top up failed",                "top-up did not go through",     "why was my top up declined",
    "the atm kept my card",            "cash machine swallowed my card", "atm did not return the card",
    "is there a fee for transfers",    "do transfers cost anything",    "fees on international transfer",
};
static const int32_t labels[] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5};
static const char *const names[] = {"card_arrival", "cancel_transfer", "exchange_rate",
                                    "top_up_failed", "card_swallowed", "transfer_fee"};
#define N_TEXTS (sizeof texts / sizeof texts[0])
#define MAX_STEPS 64

typedef struct {
  float loss[MAX_STEPS];
  int n;
} trace;

static void record(void *ctx, const nn_tfm_progress *p) {
  trace *t = ctx;
  if (t->n < MAX_STEPS) t->loss[t->n++] = p->loss;
}

static nn_tfm_config small_config(const nn_tokenizer *tok) {
  return (nn_tfm_config){.vocab = nn_tokenizer_size(tok), .buckets = 64, .max_len = 16, .dim = 16, .layers = 2,
                         .heads = 2, .ff = 32, .n_labels = 6, .pool = NN_POOL_MEAN, .dropout = 0.1f};
}

static nn_tfm_train_config train_config(const char *ckpt) {
  nn_tfm_train_config c = nn_tfm_train_defaults();
  c.epochs = 6;
  c.batch = 4;
  c.lr = 3e-3f;
  c.mlm_prob = 0.2f;
  c.mlm_weight = 0.5f;
  c.seed = 7;
  c.checkpoint = ckpt;
  c.checkpoint_every = 5;
  return c;
}

/* Trains from the seed; returns the loss trace. stop_after > 0 stops early. */
static void run(const nn_tokenizer *tok, const nn_tfm_corpus *x, const char *ckpt, int resume, uint64_t stop_after,
                trace *t, nn_tfm **keep) {
  nn_tfm_config mc = small_config(tok);
  nn_tfm *m = NULL;
  finch_err err;
  CHECK_INT_EQ(nn_tfm_create(&m, &mc, 3, &err), FINCH_OK);
  nn_tfm_train_config c = train_config(ckpt);
  c.resume = resume;
  c.stop_after = stop_after;
  nn_tfm_data d = {.x = x, .labels = labels};
  finch_status st = nn_tfm_train(m, NULL, &d, &c, record, t, &err);
  if (st) fprintf(stderr, "train: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  if (keep) *keep = m;
  else nn_tfm_free(m);
}

int main(void) {
  finch_err err;
  nn_tokenizer *tok = NULL;
  CHECK_INT_EQ(nn_tokenizer_train(&tok, texts, N_TEXTS, 400, 1, &err), FINCH_OK);
  if (!tok) return 1;
  nn_tfm_corpus x;
  CHECK_INT_EQ(nn_tfm_corpus_encode(&x, tok, texts, N_TEXTS, 16, 64, 3, 5, &err), FINCH_OK);
  CHECK(x.ng_offs != NULL);
  CHECK(x.len[0] > 2);

  /* Invalid UTF-8 names the text. */
  const char *bad[] = {"fine", "bad \xff byte"};
  nn_tfm_corpus y;
  CHECK_INT_EQ(nn_tfm_corpus_encode(&y, tok, bad, 2, 16, 64, 3, 5, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "text 1");

  const char *dir = getenv("FINCH_TEST_TMP") ? getenv("FINCH_TEST_TMP") : "/tmp";
  mkdir(dir, 0755); /* the first test of a fresh build may run before any other made it */
  char ckpt[512], ckpt2[512];
  snprintf(ckpt, sizeof ckpt, "%s/tfm-ckpt-%d.ck", dir, (int)getpid());
  snprintf(ckpt2, sizeof ckpt2, "%s/tfm-ckpt2-%d.ck", dir, (int)getpid());
  unlink(ckpt);
  unlink(ckpt2);

  /* Reference: uninterrupted, twice (bit-identical). */
  trace a = {0}, b = {0};
  nn_tfm *trained = NULL;
  run(tok, &x, NULL, 0, 0, &a, &trained);
  run(tok, &x, NULL, 0, 0, &b, NULL);
  CHECK_INT_EQ(a.n, 30); /* 18 rows / 4 = 5 steps an epoch, 6 epochs */
  CHECK_INT_EQ(a.n, b.n);
  CHECK(memcmp(a.loss, b.loss, sizeof(float) * (size_t)a.n) == 0);
  CHECK(a.loss[a.n - 1] < a.loss[0]);

  /* Interrupted after 13 steps (mid-epoch, after a checkpoint at 10), then
   * resumed: the resumed run restarts from step 13's checkpoint. */
  trace c1 = {0}, c2 = {0};
  run(tok, &x, ckpt, 0, 13, &c1, NULL);
  CHECK_INT_EQ(c1.n, 13);
  run(tok, &x, ckpt, 1, 0, &c2, NULL);
  CHECK_INT_EQ(c1.n + c2.n, a.n);
  for (int i = 0; i < c1.n; i++) CHECK(c1.loss[i] == a.loss[i]);
  for (int i = 0; i < c2.n && c1.n + i < a.n; i++)
    if (c2.loss[i] != a.loss[c1.n + i]) {
      TEST_FAIL_("resumed step %d: loss %.9g, uninterrupted %.9g", c1.n + i + 1, (double)c2.loss[i],
                 (double)a.loss[c1.n + i]);
      break;
    }

  /* A corrupt checkpoint is refused with a checksum error. */
  run(tok, &x, ckpt2, 0, 3, &c1, NULL);
  FILE *f = fopen(ckpt2, "r+b");
  CHECK(f != NULL);
  if (f) {
    fseek(f, 200, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
  }
  {
    nn_tfm_config mc = small_config(tok);
    nn_tfm *m = NULL;
    CHECK_INT_EQ(nn_tfm_create(&m, &mc, 3, &err), FINCH_OK);
    nn_tfm_train_config c = train_config(ckpt2);
    c.resume = 1;
    nn_tfm_data d = {.x = &x, .labels = labels};
    CHECK_INT_EQ(nn_tfm_train(m, NULL, &d, &c, NULL, NULL, &err), FINCH_ECHECKSUM);
    /* Another run's checkpoint (different learning rate) is refused. */
    c.checkpoint = ckpt;
    c.lr = 1e-2f;
    CHECK_INT_EQ(nn_tfm_train(m, NULL, &d, &c, NULL, NULL, &err), FINCH_EFORMAT);
    CHECK_CONTAINS(err.msg, "another run");
    nn_tfm_free(m);
  }

  /* Masked-token evaluation: finite, positive, reproducible with its seed. */
  {
    double l1 = 0, l2 = 0, acc = -1;
    CHECK_INT_EQ(nn_tfm_mlm_eval(trained, NULL, &x, 0.3f, 5, &l1, &acc, &err), FINCH_OK);
    CHECK_INT_EQ(nn_tfm_mlm_eval(trained, NULL, &x, 0.3f, 5, &l2, NULL, &err), FINCH_OK);
    CHECK(l1 > 0 && l1 < 20);
    CHECK(l1 == l2);
    CHECK(acc >= 0 && acc <= 1);
  }

  /* Model file round trip. */
  unsigned char *blob = NULL;
  size_t blen = 0;
  nn_tokenizer *tok2 = NULL;
  CHECK_INT_EQ(nn_tokenizer_save(tok, &blob, &blen, &err), FINCH_OK);
  CHECK_INT_EQ(nn_tokenizer_load(&tok2, blob, blen, &err), FINCH_OK);
  free(blob);
  nn_model *m = NULL;
  CHECK_INT_EQ(nn_model_from_tfm(&m, trained, tok2, 16, 3, 5, names, 6, &err), FINCH_OK);
  if (!m) return 1;
  CHECK_STR_EQ(nn_model_arch_name(m), "tfm");
  char path[512], path8[512], pathe[512];
  snprintf(path, sizeof path, "%s/tfm-model-%d.fnm", dir, (int)getpid());
  snprintf(path8, sizeof path8, "%s/tfm-model8-%d.fnm", dir, (int)getpid());
  snprintf(pathe, sizeof pathe, "%s/tfm-ens-%d.fnm", dir, (int)getpid());
  CHECK_INT_EQ(nn_model_save(m, path, NN_DTYPE_F32, NULL, &err), FINCH_OK);
  CHECK_INT_EQ(nn_model_save(m, path8, NN_DTYPE_Q8, NULL, &err), FINCH_OK);
  nn_model *l = NULL, *l8 = NULL;
  CHECK_INT_EQ(nn_model_load(&l, path, &err), FINCH_OK);
  CHECK_INT_EQ(nn_model_load(&l8, path8, &err), FINCH_OK);
  if (!l || !l8) return 1;
  CHECK_INT_EQ(nn_model_n_params(l), nn_model_n_params(m));
  CHECK_INT_EQ(nn_model_dtype(l8), NN_DTYPE_Q8);
  size_t ok = 0;
  for (size_t i = 0; i < N_TEXTS; i++) {
    float p[6], q[6], r[6];
    int k1 = nn_model_predict(m, texts[i], p, 1.0f);
    int k2 = nn_model_predict(l, texts[i], q, 1.0f);
    int k3 = nn_model_predict(l8, texts[i], r, 1.0f);
    CHECK_INT_EQ(k1, k2);
    CHECK(memcmp(p, q, sizeof p) == 0);
    for (int c = 0; c < 6; c++) CHECK_NEAR(p[c], r[c], 0.05);
    (void)k3;
    ok += k1 == labels[i];
  }
  CHECK(ok >= N_TEXTS * 2 / 3); /* it learned the training rows */
  /* The batched path agrees with the single one. */
  float many[N_TEXTS * 6];
  int32_t pred[N_TEXTS];
  CHECK_INT_EQ(nn_model_predict_many(l, texts, N_TEXTS, many, pred, 1.0f, &err), FINCH_OK);
  for (size_t i = 0; i < N_TEXTS; i++) {
    float p[6];
    CHECK_INT_EQ(nn_model_predict(l, texts[i], p, 1.0f), pred[i]);
    for (int c = 0; c < 6; c++) CHECK_NEAR(p[c], many[i * 6 + c], 1e-5);
  }
  CHECK_INT_EQ(nn_model_predict(l, "bad \xff", NULL, 1.0f), -1);

  /* A truncated file is refused. */
  FILE *t = fopen(path, "r+b");
  if (t) {
    fseek(t, 0, SEEK_END);
    long sz = ftell(t);
    fclose(t);
    CHECK(truncate(path, sz - 40) == 0);
    nn_model *z = NULL;
    CHECK(nn_model_load(&z, path, &err) != FINCH_OK);
    CHECK(z == NULL);
  }

  /* Ensemble of the encoder and a bow model. */
  nn_train_config bc = nn_train_config_student();
  bc.epochs = 30;
  nn_dataset ds = {.texts = texts, .labels = labels, .n = N_TEXTS};
  nn_model *bow = NULL;
  CHECK_INT_EQ(nn_model_train(&bow, &ds, names, 6, &bc, NULL, NULL, NULL, NULL, &err), FINCH_OK);
  nn_model *mem[2] = {l8, bow};
  float temps[2] = {1.5f, 0.8f}, weights[2] = {1, 1};
  nn_model *e = NULL;
  CHECK_INT_EQ(nn_model_ensemble(&e, mem, temps, weights, 2, &err), FINCH_OK);
  if (!e) return 1;
  CHECK_INT_EQ(nn_model_n_members(e), 2);
  CHECK_INT_EQ(nn_model_n_params(e), nn_model_n_params(l8) + nn_model_n_params(bow));
  {
    /* p = mean of the calibrated members. */
    float pe[6], p0[6], p1[6];
    nn_model_predict(e, texts[4], pe, 1.0f);
    nn_model_predict(nn_model_member(e, 0), texts[4], p0, 1.5f);
    nn_model_predict(nn_model_member(e, 1), texts[4], p1, 0.8f);
    for (int c = 0; c < 6; c++) CHECK_NEAR(pe[c], 0.5f * (p0[c] + p1[c]), 1e-5);
  }
  CHECK_INT_EQ(nn_model_save(e, pathe, NN_DTYPE_F32, NULL, &err), FINCH_OK);
  nn_model *le = NULL;
  if (nn_model_load(&le, pathe, &err) != FINCH_OK) TEST_FAIL_("ensemble load: %s", err.msg);
  if (le) {
    CHECK_STR_EQ(nn_model_arch_name(le), "ensemble");
    CHECK_INT_EQ(nn_model_n_members(le), 2);
    CHECK_NEAR(nn_model_member_temperature(le, 1), 0.8, 1e-6);
    for (size_t i = 0; i < N_TEXTS; i++) {
      float p[6], q[6];
      nn_model_predict(e, texts[i], p, 2.0f);
      nn_model_predict(le, texts[i], q, 2.0f);
      for (int c = 0; c < 6; c++) CHECK_NEAR(p[c], q[c], 1e-6);
    }
  }
  /* Members with different labels are refused. */
  {
    nn_model *b2 = NULL, *b3 = NULL;
    const char *other[] = {"a", "b", "c", "d", "e", "f"};
    CHECK_INT_EQ(nn_model_train(&b2, &ds, names, 6, &bc, NULL, NULL, NULL, NULL, &err), FINCH_OK);
    CHECK_INT_EQ(nn_model_train(&b3, &ds, other, 6, &bc, NULL, NULL, NULL, NULL, &err), FINCH_OK);
    nn_model *pair[2] = {b2, b3}, *bad_e = NULL;
    CHECK_INT_EQ(nn_model_ensemble(&bad_e, pair, temps, weights, 2, &err), FINCH_EINVAL);
    CHECK(bad_e == NULL);
  }
  /* Temperature fitting: over-confident wrong answers want T > 1. */
  {
    float pr[4 * 2] = {0.99f, 0.01f, 0.99f, 0.01f, 0.01f, 0.99f, 0.99f, 0.01f};
    int32_t yy[4] = {0, 1, 1, 0};
    CHECK(nn_fit_temperature(pr, yy, 4, 2) > 1.5f);
  }

  nn_model_free(le);
  nn_model_free(e);
  nn_model_free(l);
  nn_model_free(m);
  nn_tfm_corpus_free(&x);
  nn_tokenizer_free(tok);
  unlink(ckpt);
  unlink(ckpt2);
  unlink(path);
  unlink(path8);
  unlink(pathe);
  TEST_DONE();
}
