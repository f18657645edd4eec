/* Model files: F32 round trip is exact, Q8 is close, the returned SHA-256 is
 * the file's, and damaged files are refused with a message naming the file
 * and the fault. */
#include <dirent.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/model.h"
#include "nn/modelfile.h"
#include "tests/nn/synth.h"
#include "tests/test.h"

static char dir[512];

static void path_of(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static unsigned char *slurp(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(*size);
  if (fread(b, 1, *size, f) != *size) *size = 0;
  fclose(f);
  return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
  FILE *f = fopen(path, "wb");
  fwrite(b, 1, n, f);
  fclose(f);
}

/* Loading path must fail with code and a message containing what and the path. */
static void expect_refused(const char *path, finch_status code, const char *what) {
  finch_err err = {0};
  nn_model *m = NULL;
  finch_status st = nn_model_load(&m, path, &err);
  CHECK_INT_EQ(st, code);
  CHECK(m == NULL);
  CHECK_CONTAINS(err.msg, what);
  CHECK_CONTAINS(err.msg, path);
}

static void round_trip(nn_model *m, const synth_set *te, const char *name) {
  finch_err err = {0};
  char p32[600], p8[700], hex[65];
  path_of(p32, sizeof p32, name);
  CHECK_INT_EQ(nn_model_save(m, p32, NN_DTYPE_F32, hex, &err), FINCH_OK);

  /* The returned hash is the SHA-256 of the whole file. */
  size_t size = 0;
  unsigned char *b = slurp(p32, &size), d[32];
  unsigned int dl;
  CHECK(b && size > 64);
  EVP_Digest(b, size, d, &dl, EVP_sha256(), NULL);
  char want[65];
  for (int i = 0; i < 32; i++) snprintf(want + 2 * i, 3, "%02x", d[i]);
  CHECK_STR_EQ(hex, want);
  free(b);

  nn_model *l = NULL;
  CHECK_INT_EQ(nn_model_load(&l, p32, &err), FINCH_OK);
  if (!l) return;
  CHECK_INT_EQ(nn_model_dtype(l), NN_DTYPE_F32);
  CHECK_INT_EQ(nn_model_n_params(l), nn_model_n_params(m));
  CHECK_INT_EQ(nn_model_n_labels(l), SYNTH_CLASSES);
  CHECK_STR_EQ(nn_model_label(l, 3), synth_labels[3]);
  CHECK_STR_EQ(nn_model_meta(l), nn_model_meta(m));
  CHECK(memcmp(nn_model_config(l), nn_model_config(m), sizeof(nn_train_config)) == 0);
  float pm[SYNTH_CLASSES], pl[SYNTH_CLASSES];
  int same = 1;
  for (size_t i = 0; i < te->n; i++) {
    int am = nn_model_predict(m, te->texts[i], pm, 1.0f), al = nn_model_predict(l, te->texts[i], pl, 1.0f);
    same &= am == al && memcmp(pm, pl, sizeof pm) == 0;
  }
  CHECK(same); /* F32: bit-identical predictions */
  nn_model_free(l);

  /* Q8: same arg-max on >= 95% of inputs, probabilities within 0.05. */
  snprintf(p8, sizeof p8, "%s.q8", p32);
  CHECK_INT_EQ(nn_model_save(m, p8, NN_DTYPE_Q8, NULL, &err), FINCH_OK);
  CHECK_INT_EQ(nn_model_load(&l, p8, &err), FINCH_OK);
  if (!l) return;
  CHECK_INT_EQ(nn_model_dtype(l), NN_DTYPE_Q8);
  size_t agree = 0;
  double maxdiff = 0;
  for (size_t i = 0; i < te->n; i++) {
    agree += nn_model_predict(m, te->texts[i], pm, 1.0f) == nn_model_predict(l, te->texts[i], pl, 1.0f);
    for (int c = 0; c < SYNTH_CLASSES; c++) maxdiff = fmax(maxdiff, fabs(pm[c] - pl[c]));
  }
  CHECK(agree >= te->n * 95 / 100);
  CHECK(maxdiff <= 0.05);
  printf("%s: Q8 agrees on %zu/%zu, max |dp| %.4f\n", name, agree, te->n, maxdiff);
  struct stat s32, s8;
  stat(p32, &s32);
  stat(p8, &s8);
  CHECK(s8.st_size < s32.st_size / 2);
  nn_model_free(l);
}

int main(void) {
  const char *base = getenv("FINCH_TEST_TMP");
  snprintf(dir, sizeof dir, "%s/nn_modelfile.%d", base ? base : "/tmp", (int)getpid());
  if (base) mkdir(base, 0755);
  CHECK(mkdir(dir, 0755) == 0);

  /* Q8 reference: error per element at most half a step. */
  float row[5] = {0.5f, -1.27f, 0.0f, 0.01f, 1.0f}, back[5], scale;
  int8_t q[5];
  nn_q8_quantize_row_ref(row, 5, q, &scale);
  CHECK_NEAR(scale, 0.01, 1e-7);
  CHECK_INT_EQ(q[1], -127);
  nn_q8_dequantize_row_ref(q, scale, 5, back);
  for (int i = 0; i < 5; i++) CHECK_NEAR(back[i], row[i], 0.5 * scale + 1e-7);
  float zeros[3] = {0, 0, 0};
  nn_q8_quantize_row_ref(zeros, 3, q, &scale);
  CHECK(scale == 0.0f && q[0] == 0);

  synth_set tr, te;
  synth_make(&tr, 400, 1);
  synth_make(&te, 200, 2);
  finch_err err = {0};
  nn_dataset ds = {.texts = (const char *const *)tr.texts, .labels = tr.labels, .soft = NULL, .n = tr.n};
  nn_model *m = NULL, *lin = NULL;
  nn_train_config cfg = synth_config(16), lcfg = synth_config(0);
  CHECK_INT_EQ(nn_model_train(&m, &ds, synth_labels, SYNTH_CLASSES, &cfg, NULL, NULL, NULL, NULL, &err), FINCH_OK);
  CHECK_INT_EQ(nn_model_train(&lin, &ds, synth_labels, SYNTH_CLASSES, &lcfg, NULL, NULL, NULL, NULL, &err), FINCH_OK);
  if (!m || !lin) TEST_DONE();
  CHECK_INT_EQ(nn_model_set_meta(m, "{\"kind\":\"teacher\",\"dataset\":\"synthetic\"}", &err), FINCH_OK);
  round_trip(m, &te, "hidden.fnm");
  round_trip(lin, &te, "linear.fnm");

  /* Saving replaced the file atomically and left no temporary behind. */
  char good[600], bad[600];
  path_of(good, sizeof good, "hidden.fnm");
  CHECK_INT_EQ(nn_model_save(m, good, NN_DTYPE_F32, NULL, &err), FINCH_OK);
  DIR *d = opendir(dir);
  struct dirent *e;
  int temps = 0;
  while (d && (e = readdir(d))) temps += strstr(e->d_name, ".tmp.") != NULL;
  if (d) closedir(d);
  CHECK_INT_EQ(temps, 0);
  char nodir[700];
  snprintf(nodir, sizeof nodir, "%s/missing/dir/m.fnm", dir);
  CHECK_INT_EQ(nn_model_save(m, nodir, NN_DTYPE_F32, NULL, &err), FINCH_EIO);
  CHECK_CONTAINS(err.msg, nodir);

  size_t size = 0;
  unsigned char *b = slurp(good, &size);
  path_of(bad, sizeof bad, "bad.fnm");

  /* A flipped byte in the payload. */
  b[size / 2] ^= 0x40;
  spit(bad, b, size);
  expect_refused(bad, FINCH_ECHECKSUM, "checksum mismatch");
  b[size / 2] ^= 0x40;
  /* A flipped byte in the trailer itself. */
  b[size - 1] ^= 1;
  spit(bad, b, size);
  expect_refused(bad, FINCH_ECHECKSUM, "checksum");
  b[size - 1] ^= 1;
  /* Truncated, at several lengths. */
  spit(bad, b, size - 1);
  expect_refused(bad, FINCH_EFORMAT, "truncated");
  spit(bad, b, size / 3);
  expect_refused(bad, FINCH_EFORMAT, "truncated");
  spit(bad, b, 40);
  expect_refused(bad, FINCH_EFORMAT, "truncated");
  spit(bad, b, 0);
  expect_refused(bad, FINCH_EFORMAT, "bad magic");
  /* Trailing garbage. */
  unsigned char *longer = calloc(size + 8, 1);
  memcpy(longer, b, size);
  spit(bad, longer, size + 8);
  expect_refused(bad, FINCH_EFORMAT, "file has");
  free(longer);
  /* Bad magic. */
  b[0] = 'X';
  spit(bad, b, size);
  expect_refused(bad, FINCH_EFORMAT, "bad magic");
  b[0] = 'F';
  /* A version this build does not read. */
  nn_file_header h;
  memcpy(&h, b, sizeof h);
  h.version = 2;
  memcpy(b, &h, sizeof h);
  spit(bad, b, size);
  expect_refused(bad, FINCH_EFORMAT, "unsupported model file version 2");
  free(b);
  /* Missing file. */
  path_of(bad, sizeof bad, "does-not-exist.fnm");
  expect_refused(bad, FINCH_ENOTFOUND, "cannot open");

  nn_model_free(m);
  nn_model_free(lin);
  synth_free(&tr);
  synth_free(&te);
  /* Clean up the scratch directory. */
  const char *names[] = {"hidden.fnm", "hidden.fnm.q8", "linear.fnm", "linear.fnm.q8", "bad.fnm"};
  for (size_t i = 0; i < 5; i++) {
    char p[600];
    path_of(p, sizeof p, names[i]);
    unlink(p);
  }
  rmdir(dir);
  TEST_DONE();
}
