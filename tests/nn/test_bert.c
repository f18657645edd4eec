/* The pretrained BERT encoder (nn/bert.h) and its "bert" model architecture.
 *
 * Always on: a tiny random BERT (2 layers, width 8, 2 heads) that the test
 * writes itself as config.json + model.safetensors + tokenizer.json, whose
 * pooled vectors are held to a naive scalar forward in double written here
 * from the BERT equations (plain loops, separate q/k/v, the token-type row
 * added explicitly, exact erf) within 1e-4; padding that changes nothing;
 * malformed config.json files refused naming the file and the field; a
 * missing checkpoint naming scripts/fetch-pretrained.sh; the "bert" model's
 * predictions identical after save and load. With a CUDA device the tiny
 * forward is also run there and held to the CPU within 1e-4.
 *
 * Run as `test_bert pretrained`, it loads all-MiniLM-L6-v2 from
 * $FINCH_PRETRAINED_DIR/all-minilm-l6-v2/ and requires, for every sentence of
 * tests/nn/golden/bert_vectors.jsonl (scripts/golden/bert_vectors.py, an
 * independent numpy forward), the reference tokenizer's ids and pooled
 * vectors within 1e-4 (max abs difference); it skips when the model is
 * absent. */
#include "nn/bert.h"

#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/bert_tokenizer.h"
#include "nn/model.h"
#include "nn/model_arch.h"
#include "nn/modelfile.h"
#include "nn/rng.h"
#include "tests/test.h"

static char dir[512];
static nn_rng rng;

/* ---- the tiny checkpoint ---------------------------------------------------- */

enum { V = 25, P = 16, TV = 2, D = 8, L = 2, H = 2, F = 12 };
static const double EPS = 1e-12;

static const char *tiny_vocab =
    "{\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,\"[SEP]\":3,\"[MASK]\":4,\"my\":5,\"card\":6,\"is\":7,\"lost\":8,"
    "\"where\":9,\"the\":10,\"money\":11,\"refund\":12,\"please\":13,\"help\":14,\"##s\":15,\"##ing\":16,"
    "\"transfer\":17,\"a\":18,\"?\":19,\"!\":20,\".\":21,\",\":22,\"hello\":23,\"world\":24}";

/* The host copies of the tiny weights, by Hugging Face name. */
typedef struct {
  char name[64];
  int rows, cols; /* cols 0 = a vector */
  float *x;
} tiny_tensor;
static tiny_tensor tiny[5 + 16 * L];
static int n_tiny;

static float *tw(const char *name) {
  for (int i = 0; i < n_tiny; i++)
    if (!strcmp(tiny[i].name, name)) return tiny[i].x;
  fprintf(stderr, "no tiny tensor %s\n", name);
  abort();
}

static void add_tiny(const char *name, int rows, int cols, float scale, float shift) {
  tiny_tensor *t = &tiny[n_tiny++];
  snprintf(t->name, sizeof t->name, "%s", name);
  t->rows = rows, t->cols = cols;
  size_t n = (size_t)rows * (cols ? cols : 1);
  t->x = malloc(n * sizeof *t->x);
  for (size_t i = 0; i < n; i++) t->x[i] = shift + scale * nn_rng_normal(&rng);
}

static void write_text(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  CHECK(fp != NULL);
  if (fp) fputs(text, fp), fclose(fp);
}

/* The tensors in a safetensors file at path, in order, with an I64 tensor
 * (position_ids, as real checkpoints have) in the middle. */
static void write_safetensors(const char *path) {
  json_t *hdr = json_object();
  size_t off = 0;
  for (int i = 0; i < n_tiny; i++) {
    size_t bytes = (size_t)tiny[i].rows * (tiny[i].cols ? tiny[i].cols : 1) * 4;
    json_t *shape = tiny[i].cols ? json_pack("[ii]", tiny[i].rows, tiny[i].cols) : json_pack("[i]", tiny[i].rows);
    json_object_set_new(hdr, tiny[i].name,
                        json_pack("{s:s,s:o,s:[II]}", "dtype", "F32", "shape", shape, "data_offsets", (json_int_t)off,
                                  (json_int_t)(off + bytes)));
    off += bytes;
    if (i == 2) {
      json_object_set_new(hdr, "embeddings.position_ids",
                          json_pack("{s:s,s:[ii],s:[II]}", "dtype", "I64", "shape", 1, P, "data_offsets",
                                    (json_int_t)off, (json_int_t)(off + 8 * P)));
      off += 8 * P;
    }
  }
  char *text = json_dumps(hdr, JSON_COMPACT);
  size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
  FILE *fp = fopen(path, "wb");
  uint64_t n64 = padded;
  fwrite(&n64, 8, 1, fp);
  fwrite(text, 1, n, fp);
  for (size_t i = n; i < padded; i++) fputc(' ', fp);
  for (int i = 0; i < n_tiny; i++) {
    fwrite(tiny[i].x, 4, (size_t)tiny[i].rows * (tiny[i].cols ? tiny[i].cols : 1), fp);
    if (i == 2)
      for (int64_t p = 0; p < P; p++) fwrite(&p, 8, 1, fp);
  }
  fclose(fp);
  free(text);
  json_decref(hdr);
}

static const char *config_fmt =
    "{\"architectures\":[\"BertModel\"],\"hidden_act\":%s,\"hidden_size\":%s,\"intermediate_size\":%d,"
    "\"layer_norm_eps\":%s,\"max_position_embeddings\":%d,\"model_type\":\"bert\",\"num_attention_heads\":%s,"
    "\"num_hidden_layers\":%d,\"type_vocab_size\":%d,\"vocab_size\":%d}";

static void write_config(const char *path, const char *act, const char *dim, const char *eps, const char *heads) {
  char text[1024];
  snprintf(text, sizeof text, config_fmt, act, dim, F, eps, P, heads, L, TV, V);
  write_text(path, text);
}

static void make_tiny(const char *d) {
  nn_rng_seed(&rng, 20261207, 0);
  n_tiny = 0;
  add_tiny("embeddings.word_embeddings.weight", V, D, 1.0f, 0);
  add_tiny("embeddings.position_embeddings.weight", P, D, 0.5f, 0);
  add_tiny("embeddings.token_type_embeddings.weight", TV, D, 0.5f, 0);
  add_tiny("embeddings.LayerNorm.weight", D, 0, 0.1f, 1);
  add_tiny("embeddings.LayerNorm.bias", D, 0, 0.1f, 0);
  static const char *const lin[6] = {"attention.self.query", "attention.self.key", "attention.self.value",
                                     "attention.output.dense", "intermediate.dense", "output.dense"};
  char name[128];
  for (int l = 0; l < L; l++) {
    for (int k = 0; k < 6; k++) {
      int rows = k == 4 ? F : D, cols = k == 5 ? F : D;
      snprintf(name, sizeof name, "encoder.layer.%d.%s.weight", l, lin[k]);
      add_tiny(name, rows, cols, 0.4f, 0);
      snprintf(name, sizeof name, "encoder.layer.%d.%s.bias", l, lin[k]);
      add_tiny(name, rows, 0, 0.1f, 0);
    }
    static const char *const lns[2] = {"attention.output.LayerNorm", "output.LayerNorm"};
    for (int k = 0; k < 2; k++) {
      snprintf(name, sizeof name, "encoder.layer.%d.%s.weight", l, lns[k]);
      add_tiny(name, D, 0, 0.1f, 1);
      snprintf(name, sizeof name, "encoder.layer.%d.%s.bias", l, lns[k]);
      add_tiny(name, D, 0, 0.1f, 0);
    }
  }
  char path[700];
  mkdir(d, 0755);
  snprintf(path, sizeof path, "%s/model.safetensors", d);
  write_safetensors(path);
  snprintf(path, sizeof path, "%s/config.json", d);
  write_config(path, "\"gelu\"", "8", "1e-12", "2");
  char tok[4096];
  snprintf(tok, sizeof tok,
           "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[],"
           "\"normalizer\":{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":true,"
           "\"strip_accents\":null,\"lowercase\":true},\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},"
           "\"post_processor\":null,\"decoder\":null,\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\","
           "\"continuing_subword_prefix\":\"##\",\"max_input_chars_per_word\":100,\"vocab\":%s}}",
           tiny_vocab);
  snprintf(path, sizeof path, "%s/tokenizer.json", d);
  write_text(path, tok);
}

/* ---- the naive reference ---------------------------------------------------- */

static void ref_ln(double *x, const float *g, const float *b) {
  double mu = 0, var = 0;
  for (int d = 0; d < D; d++) mu += x[d];
  mu /= D;
  for (int d = 0; d < D; d++) var += (x[d] - mu) * (x[d] - mu);
  var /= D;
  for (int d = 0; d < D; d++) x[d] = (x[d] - mu) / sqrt(var + EPS) * g[d] + b[d];
}

/* y (O) = W (O,I) x (I) + b */
static void ref_lin(const char *name, int l, const double *x, int I, int O, double *y) {
  char wn[128], bn[128];
  snprintf(wn, sizeof wn, "encoder.layer.%d.%s.weight", l, name);
  snprintf(bn, sizeof bn, "encoder.layer.%d.%s.bias", l, name);
  const float *W = tw(wn), *b = tw(bn);
  for (int o = 0; o < O; o++) {
    double s = b[o];
    for (int i = 0; i < I; i++) s += (double)W[o * I + i] * x[i];
    y[o] = s;
  }
}

/* The pooled vector (D) of one unpadded sequence of n ids. */
static void ref_forward(const int32_t *ids, int n, double *pooled) {
  double h[P][D], q[P][D], k[P][D], v[P][D], ctx[P][D], t1[P][D], f[F];
  const int Dh = D / H;
  for (int t = 0; t < n; t++) {
    for (int d = 0; d < D; d++)
      h[t][d] = (double)tw("embeddings.word_embeddings.weight")[ids[t] * D + d] +
                tw("embeddings.position_embeddings.weight")[t * D + d] +
                tw("embeddings.token_type_embeddings.weight")[d];
    ref_ln(h[t], tw("embeddings.LayerNorm.weight"), tw("embeddings.LayerNorm.bias"));
  }
  char gn[128], bn[128];
  for (int l = 0; l < L; l++) {
    for (int t = 0; t < n; t++) {
      ref_lin("attention.self.query", l, h[t], D, D, q[t]);
      ref_lin("attention.self.key", l, h[t], D, D, k[t]);
      ref_lin("attention.self.value", l, h[t], D, D, v[t]);
    }
    for (int hh = 0; hh < H; hh++)
      for (int i = 0; i < n; i++) {
        double s[P], mx = -1e300, z = 0;
        for (int j = 0; j < n; j++) {
          s[j] = 0;
          for (int e = 0; e < Dh; e++) s[j] += q[i][hh * Dh + e] * k[j][hh * Dh + e];
          s[j] /= sqrt((double)Dh);
          if (s[j] > mx) mx = s[j];
        }
        for (int j = 0; j < n; j++) z += (s[j] = exp(s[j] - mx));
        for (int e = 0; e < Dh; e++) {
          double c = 0;
          for (int j = 0; j < n; j++) c += s[j] / z * v[j][hh * Dh + e];
          ctx[i][hh * Dh + e] = c;
        }
      }
    for (int t = 0; t < n; t++) {
      ref_lin("attention.output.dense", l, ctx[t], D, D, t1[t]);
      for (int d = 0; d < D; d++) h[t][d] += t1[t][d];
      snprintf(gn, sizeof gn, "encoder.layer.%d.attention.output.LayerNorm.weight", l);
      snprintf(bn, sizeof bn, "encoder.layer.%d.attention.output.LayerNorm.bias", l);
      ref_ln(h[t], tw(gn), tw(bn));
      ref_lin("intermediate.dense", l, h[t], D, F, f);
      for (int i = 0; i < F; i++) f[i] = 0.5 * f[i] * (1.0 + erf(f[i] / sqrt(2.0)));
      ref_lin("output.dense", l, f, F, D, t1[t]);
      for (int d = 0; d < D; d++) h[t][d] += t1[t][d];
      snprintf(gn, sizeof gn, "encoder.layer.%d.output.LayerNorm.weight", l);
      snprintf(bn, sizeof bn, "encoder.layer.%d.output.LayerNorm.bias", l);
      ref_ln(h[t], tw(gn), tw(bn));
    }
  }
  for (int d = 0; d < D; d++) {
    pooled[d] = 0;
    for (int t = 0; t < n; t++) pooled[d] += h[t][d] / n;
  }
}

/* ---- the tests -------------------------------------------------------------- */

/* Three rows: 9 real ids, 5 real then padding, 2 real then padding. */
enum { TB = 3, TT = 9 };
static const int lens[TB] = {9, 5, 2};
static int32_t tids[TB * TT];
static uint8_t tmask[TB * TT];

static void make_batch(void) {
  for (int b = 0; b < TB; b++)
    for (int t = 0; t < TT; t++) {
      tids[b * TT + t] = t < lens[b] ? (t == 0 ? 2 : 5 + (int32_t)nn_rng_below(&rng, V - 5)) : 0;
      tmask[b * TT + t] = t < lens[b];
    }
}

static double tiny_forward_diff(nn_bert *m, nn_backend *be, const char *what) {
  finch_err err = {0};
  nn_bert_work *w = NULL;
  float got[TB * D];
  double worst = 0, want[D];
  CHECK_INT_EQ(nn_bert_work_init(&w, m, TB, TT, be, &err), FINCH_OK);
  if (!w) return 1e9;
  CHECK_INT_EQ(nn_bert_forward(m, w, tids, tmask, TB, TT, &err), FINCH_OK);
  nn_bert_pooled_host(w, got);
  for (int b = 0; b < TB; b++) {
    ref_forward(tids + b * TT, lens[b], want);
    for (int d = 0; d < D; d++) worst = fmax(worst, fabs(got[b * D + d] - want[d]));
  }
  printf("tiny BERT on %s: max abs diff from the scalar reference %.3g\n", what, worst);
  /* Row 1 alone, unpadded, gives the same vector as within the padded batch. */
  float alone[D];
  CHECK_INT_EQ(nn_bert_forward(m, w, tids + TT, tmask + TT, 1, lens[1], &err), FINCH_OK);
  nn_bert_pooled_host(w, alone);
  for (int d = 0; d < D; d++) CHECK_NEAR(alone[d], got[D + d], 1e-5);
  /* Bad input is refused before anything runs. */
  int32_t bad[TT];
  memcpy(bad, tids, sizeof bad);
  bad[3] = V;
  CHECK_INT_EQ(nn_bert_forward(m, w, bad, tmask, 1, TT, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "position 3");
  CHECK_INT_EQ(nn_bert_forward(m, w, tids, tmask, TB, TT + 1, &err), FINCH_EINVAL);
  nn_bert_work_free(w);
  return worst;
}

static void test_tiny(void) {
  char d[640];
  snprintf(d, sizeof d, "%s/tiny", dir);
  make_tiny(d);
  make_batch();
  finch_err err = {0};
  nn_bert *m = NULL;
  CHECK_INT_EQ(nn_bert_load_dir(&m, d, &err), FINCH_OK);
  if (!m) {
    fprintf(stderr, "%s\n", err.msg);
    return;
  }
  const nn_bert_config *c = nn_bert_get_config(m);
  CHECK_INT_EQ(c->layers, L);
  CHECK_INT_EQ(c->dim, D);
  CHECK(c->ln_eps == 1e-12f);
  CHECK_INT_EQ(nn_bert_n_params(m), (size_t)V * D + (size_t)P * D + 2 * D + L * (4 * D * D + 4 * D + 2 * D * F + F + D + 4 * D));
  CHECK(tiny_forward_diff(m, NULL, "cpu") <= 1e-4);

  nn_backend *cu = NULL;
  if (nn_backend_open(&cu, NN_DEVICE_CUDA, &err) == FINCH_OK) {
    CHECK(tiny_forward_diff(m, cu, "cuda") <= 1e-4);
    nn_backend_free(cu);
  } else {
    printf("tiny BERT on CUDA: not run, no device: %s\n", err.msg);
  }
  nn_bert_free(m);
}

/* A config.json with one field changed is refused, naming the file and the field. */
static void test_bad_config(void) {
  char d[640], path[700];
  snprintf(d, sizeof d, "%s/bad", dir);
  mkdir(d, 0755);
  snprintf(path, sizeof path, "%s/config.json", d);
  static const struct {
    const char *act, *dim, *eps, *heads, *want;
  } cases[] = {
      {"\"relu\"", "8", "1e-12", "2", "field hidden_act: \"relu\""},
      {"null", "8", "1e-12", "2", "field hidden_act: not a string"},
      {"\"gelu\"", "8.5", "1e-12", "2", "field hidden_size: not an integer"},
      {"\"gelu\"", "-8", "1e-12", "2", "field hidden_size: out of range"},
      {"\"gelu\"", "8", "\"small\"", "2", "field layer_norm_eps: not a number"},
      {"\"gelu\"", "8", "0", "2", "layer_norm_eps 0 is outside"},
      {"\"gelu\"", "8", "1e-12", "3", "num_attention_heads 3 must be >= 1 and divide hidden_size 8"},
  };
  finch_err err;
  nn_bert_config c;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    write_config(path, cases[i].act, cases[i].dim, cases[i].eps, cases[i].heads);
    memset(&err, 0, sizeof err);
    CHECK_INT_EQ(nn_bert_config_read(path, &c, &err), FINCH_EFORMAT);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, cases[i].want);
  }
  write_text(path, "{\"hidden_act\":\"gelu\"}");
  CHECK_INT_EQ(nn_bert_config_read(path, &c, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "field vocab_size: missing");
  write_text(path, "{\"hidden_size\": 8,");
  CHECK_INT_EQ(nn_bert_config_read(path, &c, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "not valid JSON");
  write_text(path, "[1, 2]");
  CHECK_INT_EQ(nn_bert_config_read(path, &c, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "not a JSON object");
  /* No checkpoint at all: one line naming the script. */
  nn_bert *m = NULL;
  snprintf(d, sizeof d, "%s/none", dir);
  CHECK_INT_EQ(nn_bert_load_dir(&m, d, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "scripts/fetch-pretrained.sh");
  CHECK(strchr(err.msg, '\n') == NULL);
  /* A weight of the wrong shape names the file and the tensor. */
  snprintf(d, sizeof d, "%s/tiny", dir);
  snprintf(path, sizeof path, "%s/model.safetensors", d);
  nn_bert_config small = {V, P, TV, D, L, H, F + 1, 1e-12f};
  CHECK_INT_EQ(nn_bert_from_safetensors(&m, &small, path, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "encoder.layer.0.intermediate.dense.weight");
  CHECK(m == NULL);
}

/* The "bert" model: predictions through the head, identical after save and load. */
static void test_model(void) {
  char d[640], path[700];
  snprintf(d, sizeof d, "%s/tiny", dir);
  const char *labels[3] = {"card_lost", "refund", "greeting"};
  float hw[3 * D], hb[3];
  for (int i = 0; i < 3 * D; i++) hw[i] = nn_rng_normal(&rng);
  for (int i = 0; i < 3; i++) hb[i] = 0.1f * nn_rng_normal(&rng);
  finch_err err = {0};
  nn_model *m = NULL, *back = NULL;
  CHECK_INT_EQ(nn_model_bert_from_dir(&m, d, 12, labels, 3, hw, hb, &err), FINCH_OK);
  if (!m) {
    fprintf(stderr, "%s\n", err.msg);
    return;
  }
  CHECK_STR_EQ(nn_model_arch_name(m), "bert");
  CHECK_INT_EQ(nn_model_arch(m), NN_ARCH_BERT);
  CHECK(nn_model_bert(m) != NULL);
  CHECK_INT_EQ(nn_model_n_params(m), nn_bert_n_params(nn_model_bert(m)) + 3 * (D + 1));
  const char *texts[6] = {"Where is my card?", "refund please", "hello world!", "my card is lost, help",
                          "bad \xff utf-8", "the money transfer is lost . where is the money ? help please !"};
  float probs[6 * 3], probs2[6 * 3], one[3], pooled[6 * D];
  int32_t pred[6], pred2[6];
  CHECK_INT_EQ(nn_model_predict_many(m, texts, 6, probs, pred, 1.0f, &err), FINCH_OK);
  CHECK_INT_EQ(pred[4], -1);
  for (int k = 0; k < 3; k++) CHECK_NEAR(probs[4 * 3 + k], 1.0 / 3, 1e-6);
  /* The head on the pooled vectors, by hand; one text at a time agrees. */
  const char *valid[5] = {texts[0], texts[1], texts[2], texts[3], texts[5]};
  CHECK_INT_EQ(nn_model_bert_embed(m, NULL, valid, 5, 2, pooled, &err), FINCH_OK);
  for (int i = 0; i < 5; i++) {
    const int r = i < 4 ? i : 5;
    double z[3], mx = -1e300, s = 0;
    for (int k = 0; k < 3; k++) {
      z[k] = hb[k];
      for (int e = 0; e < D; e++) z[k] += (double)hw[k * D + e] * pooled[i * D + e];
      mx = fmax(mx, z[k]);
    }
    for (int k = 0; k < 3; k++) s += exp(z[k] - mx);
    for (int k = 0; k < 3; k++) CHECK_NEAR(probs[r * 3 + k], exp(z[k] - mx) / s, 1e-5);
    CHECK_INT_EQ(nn_model_predict(m, texts[r], one, 1.0f), pred[r]);
    for (int k = 0; k < 3; k++) CHECK_NEAR(one[k], probs[r * 3 + k], 1e-5);
  }
  CHECK_INT_EQ(nn_model_bert_embed(m, NULL, texts, 6, 4, pooled, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "text 4");

  snprintf(path, sizeof path, "%s/tiny.finch", dir);
  char sha[65];
  CHECK_INT_EQ(nn_model_save(m, path, NN_DTYPE_F32, sha, &err), FINCH_OK);
  CHECK_INT_EQ(nn_model_load(&back, path, &err), FINCH_OK);
  if (back) {
    CHECK_STR_EQ(nn_model_arch_name(back), "bert");
    CHECK_STR_EQ(nn_model_label(back, 2), "greeting");
    CHECK_INT_EQ(nn_model_predict_many(back, texts, 6, probs2, pred2, 1.0f, &err), FINCH_OK);
    CHECK(memcmp(probs, probs2, sizeof probs) == 0);
    CHECK(memcmp(pred, pred2, sizeof pred) == 0);
    /* Saved again, the same bytes. */
    char sha2[65], path2[720];
    snprintf(path2, sizeof path2, "%s/tiny2.finch", dir);
    CHECK_INT_EQ(nn_model_save(back, path2, NN_DTYPE_F32, sha2, &err), FINCH_OK);
    CHECK_STR_EQ(sha, sha2);
    nn_model_free(back);
  }
  /* Files with a section missing or of the wrong size are refused, naming the file and the section. */
  for (int k = 0; k < 3; k++) {
    nn_file_writer fw;
    nn__file_begin(&fw);
    nn_file_arch a;
    memset(&a, 0, sizeof a);
    memcpy(a.name, "bert", 4);
    a.n_labels = 3;
    nn__file_section(&fw, "ARCH", &a, sizeof a);
    nn__file_section_begin(&fw, "LABELS");
    nn_buf_strings(&fw.b, labels, 3);
    nn__file_section_end(&fw);
    nn_file_bert fb = {V, P, TV, D, L, H, F, 3, 12, 1e-12f, {0}};
    float zeros[3 * (D + 1)] = {0};
    if (k != 0) nn__file_section(&fw, "BERTCFG", &fb, sizeof fb);
    nn__file_section(&fw, "BERTTOK", "{}", 2);
    nn__file_section(&fw, "BERTPAR", zeros, k == 1 ? sizeof zeros - 4 : sizeof zeros);
    nn__file_section(&fw, "BERTHEAD", zeros, k == 2 ? sizeof zeros - 4 : sizeof zeros);
    unsigned char *buf = NULL;
    size_t len = 0;
    CHECK_INT_EQ(nn__file_end(&fw, &buf, &len, &err), FINCH_OK);
    snprintf(path, sizeof path, "%s/bad%d.finch", dir, k);
    FILE *fp = fopen(path, "wb");
    if (fp) fwrite(buf, 1, len, fp), fclose(fp);
    free(buf);
    CHECK_INT_EQ(nn_model_load(&back, path, &err), FINCH_EFORMAT);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, k == 0 ? "needs BERTCFG" : k == 1 ? "BERT parameter block has" : "BERTHEAD has the wrong size");
  }
  /* A sequence length beyond the positions is refused. */
  nn_model *bad = NULL;
  CHECK_INT_EQ(nn_model_bert_from_dir(&bad, d, P + 1, labels, 3, NULL, NULL, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "sequence length");
  nn_model_free(m);
}

/* ---- the real checkpoint ----------------------------------------------------- */

static void test_pretrained(void) {
  const char *root = getenv("FINCH_PRETRAINED_DIR");
  char mdir[1024], path[1100];
  snprintf(mdir, sizeof mdir, "%s/all-minilm-l6-v2", root ? root : "");
  snprintf(path, sizeof path, "%s/model.safetensors", mdir);
  if (!root || access(path, R_OK) != 0)
    TEST_SKIP("no checkpoint at $FINCH_PRETRAINED_DIR/all-minilm-l6-v2/ (FINCH_PRETRAINED_DIR=%s); run "
              "scripts/fetch-pretrained.sh and point FINCH_PRETRAINED_DIR at its directory",
              root ? root : "(unset)");
  const char *golden = FINCH_SOURCE_DIR "/tests/nn/golden/bert_vectors.jsonl";
  FILE *fp = fopen(golden, "r");
  CHECK(fp != NULL);
  if (!fp) return;
  enum { MAXN = 256, DIM = 384 };
  static char *texts[MAXN];
  static float want[MAXN * DIM], got[MAXN * DIM];
  static int32_t want_ids[MAXN][128], ids[128];
  static int want_n[MAXN];
  int n = 0;
  char *line = NULL;
  size_t cap = 0;
  json_error_t je;
  while (getline(&line, &cap, fp) > 0 && n < MAXN) {
    json_t *row = json_loads(line, 0, &je);
    json_t *vec = json_object_get(row, "vector"), *jids = json_object_get(row, "ids");
    if (!row || json_array_size(vec) != DIM || json_array_size(jids) > 128) {
      TEST_FAIL_("%s:%d: malformed line", golden, n + 1);
      json_decref(row);
      continue;
    }
    texts[n] = strdup(json_string_value(json_object_get(row, "text")));
    for (int d = 0; d < DIM; d++) want[n * DIM + d] = (float)json_number_value(json_array_get(vec, (size_t)d));
    want_n[n] = (int)json_array_size(jids);
    for (int t = 0; t < want_n[n]; t++) want_ids[n][t] = (int32_t)json_integer_value(json_array_get(jids, (size_t)t));
    n++;
    json_decref(row);
  }
  free(line);
  fclose(fp);
  CHECK(n >= 50);
  finch_err err = {0};
  nn_model *m = NULL;
  const char *labels[2] = {"a", "b"};
  CHECK_INT_EQ(nn_model_bert_from_dir(&m, mdir, 128, labels, 2, NULL, NULL, &err), FINCH_OK);
  if (!m) {
    fprintf(stderr, "%s\n", err.msg);
    return;
  }
  /* The tokenizer inside gives the reference ids. */
  snprintf(path, sizeof path, "%s/tokenizer.json", mdir);
  nn_bert_tok_t *tok = NULL;
  CHECK_INT_EQ(nn_bert_tok_load(path, &tok, &err), FINCH_OK);
  for (int i = 0; tok && i < n; i++) {
    int k = 0;
    CHECK_INT_EQ(nn_bert_tok_encode(tok, texts[i], strlen(texts[i]), 128, ids, &k, &err), FINCH_OK);
    if (k != want_n[i] || memcmp(ids, want_ids[i], (size_t)k * sizeof *ids))
      TEST_FAIL_("%s:%d: token ids differ from the reference", golden, i + 1);
  }
  nn_bert_tok_free(tok);
  /* Pooled vectors in padded batches of 16 (rows grouped by length), and a few one at a time. */
  double worst = 0;
  CHECK_INT_EQ(nn_model_bert_embed(m, NULL, (const char *const *)texts, (size_t)n, 16, got, &err), FINCH_OK);
  for (int i = 0; i < n; i++) {
    double e = 0;
    for (int d = 0; d < DIM; d++) e = fmax(e, fabs(got[i * DIM + d] - want[i * DIM + d]));
    if (!(e <= 1e-4)) TEST_FAIL_("%s:%d: max abs diff %.3g above 1e-4 (\"%.40s\")", golden, i + 1, e, texts[i]);
    worst = fmax(worst, e);
  }
  for (int i = 0; i < n; i += 13) {
    float one[DIM];
    CHECK_INT_EQ(nn_model_bert_embed(m, NULL, (const char *const *)&texts[i], 1, 1, one, &err), FINCH_OK);
    for (int d = 0; d < DIM; d++) worst = fmax(worst, fabs(one[d] - want[i * DIM + d]));
  }
  printf("%s: %d sentences, pooled vectors within max abs diff %.3g of the reference\n", golden, n, worst);
  CHECK(worst <= 1e-4);
  nn_backend *cu = NULL;
  if (nn_backend_open(&cu, NN_DEVICE_CUDA, &err) == FINCH_OK) {
    double wc = 0;
    CHECK_INT_EQ(nn_model_bert_embed(m, cu, (const char *const *)texts, (size_t)n, 16, got, &err), FINCH_OK);
    for (int i = 0; i < n * DIM; i++) wc = fmax(wc, fabs(got[i] - want[i]));
    printf("on CUDA: max abs diff %.3g\n", wc);
    CHECK(wc <= 1e-4);
    nn_backend_free(cu);
  } else {
    printf("on CUDA: not run, no device: %s\n", err.msg);
  }
  for (int i = 0; i < n; i++) free(texts[i]);
  nn_model_free(m);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "pretrained") == 0) {
    test_pretrained();
    TEST_DONE();
  }
  const char *base = getenv("FINCH_TEST_TMP");
  snprintf(dir, sizeof dir, "%s/nn_bert.%d", base ? base : "/tmp", (int)getpid());
  if (base) mkdir(base, 0755);
  CHECK(mkdir(dir, 0755) == 0);
  test_tiny();
  test_bad_config();
  test_model();
  for (int i = 0; i < n_tiny; i++) free(tiny[i].x);
  TEST_DONE();
}
