/* The safetensors reader (nn/safetensors.h): a small file the test writes
 * itself, read back; every kind of malformed file refused with an error that
 * names the file and the tensor or field; the file truncated at every offset.
 *
 * Run as `test_safetensors pretrained`, it reads the real all-MiniLM-L6-v2
 * checkpoint from $FINCH_PRETRAINED_DIR/all-minilm-l6-v2/model.safetensors
 * (scripts/fetch-pretrained.sh) and skips when that file is absent. */
#include "nn/safetensors.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test.h"

static char dir[512];

/* Writes a safetensors file: 8-byte length, the header text padded with
 * `pad` spaces, then len bytes of data. Returns the path (static buffer). */
static const char *write_st(const char *name, const char *header, int pad, const void *data, size_t len) {
  static char path[640];
  snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
  FILE *fp = fopen(path, "wb");
  CHECK(fp != NULL);
  if (!fp) return path;
  uint64_t n = strlen(header) + (uint64_t)pad;
  uint8_t le[8];
  for (int i = 0; i < 8; i++) le[i] = (uint8_t)(n >> (8 * i));
  fwrite(le, 1, 8, fp);
  fputs(header, fp);
  for (int i = 0; i < pad; i++) fputc(' ', fp);
  if (len) fwrite(data, 1, len, fp);
  fclose(fp);
  return path;
}

/* Writes raw bytes. */
static const char *write_raw(const char *name, const void *bytes, size_t len) {
  static char path[640];
  snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
  FILE *fp = fopen(path, "wb");
  CHECK(fp != NULL);
  if (!fp) return path;
  if (len) fwrite(bytes, 1, len, fp);
  fclose(fp);
  return path;
}

/* Opening path must fail with code, and the message must name the file and
 * contain each of the (up to two) given fragments. */
static void expect_fail(const char *path, finch_status code, const char *frag1, const char *frag2) {
  finch_err err = {0};
  nn_st_file_t *f = (nn_st_file_t *)0x1;
  finch_status st = nn_st_open(path, &f, &err);
  CHECK_INT_EQ(st, code);
  CHECK(f == NULL);
  CHECK_CONTAINS(err.msg, path);
  if (frag1) CHECK_CONTAINS(err.msg, frag1);
  if (frag2) CHECK_CONTAINS(err.msg, frag2);
  if (st == FINCH_OK) nn_st_close(f);
}

/* a: F32 (2,3) = 0..5; b: F32 (4) = 10..13; ids: I64 (2) = 7, -1; s: F32 scalar. */
static const char *good_header =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[40,56]},"
    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[56,60]}}";

static size_t good_data(uint8_t *buf) {
  float a[6] = {0, 1, 2, 3, 4, 5}, b[4] = {10, 11, 12, 13}, s = 2.5f;
  int64_t ids[2] = {7, -1};
  memcpy(buf, a, 24);
  memcpy(buf + 24, b, 16);
  memcpy(buf + 40, ids, 16);
  memcpy(buf + 56, &s, 4);
  return 60;
}

static void check_good(const char *path) {
  finch_err err = {0};
  nn_st_file_t *f = NULL;
  CHECK_INT_EQ(nn_st_open(path, &f, &err), FINCH_OK);
  if (!f) {
    fprintf(stderr, "%s\n", err.msg);
    return;
  }
  CHECK_STR_EQ(nn_st_path(f), path);
  CHECK_INT_EQ(nn_st_count(f), 4);
  /* In the order of the data, whatever the header's order. */
  CHECK_STR_EQ(nn_st_at(f, 0)->name, "a");
  CHECK_STR_EQ(nn_st_at(f, 1)->name, "b");
  CHECK_STR_EQ(nn_st_at(f, 2)->name, "ids");
  CHECK_STR_EQ(nn_st_at(f, 3)->name, "s");
  CHECK(nn_st_at(f, 4) == NULL);
  CHECK_STR_EQ(nn_st_metadata(f, "format"), "pt");
  CHECK(nn_st_metadata(f, "absent") == NULL);

  const float *x = NULL;
  const nn_st_tensor *t = NULL;
  int64_t want_a[2] = {2, 3};
  CHECK_INT_EQ(nn_st_f32(f, "a", 2, want_a, &x, &t, &err), FINCH_OK);
  if (x) {
    for (int i = 0; i < 6; i++) CHECK_NEAR(x[i], i, 0);
    CHECK_INT_EQ((uintptr_t)x % 4, 0);
  }
  CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6 && t->nbytes == 24);
  CHECK_INT_EQ(nn_st_f32(f, "b", 0, NULL, &x, NULL, &err), FINCH_OK);
  if (x) CHECK_NEAR(x[3], 13, 0);
  CHECK_INT_EQ(nn_st_f32(f, "s", 0, (const int64_t[1]){0}, &x, &t, &err), FINCH_OK);
  if (x) CHECK_NEAR(x[0], 2.5, 0);
  CHECK(t && t->ndim == 0 && t->numel == 1);

  /* The I64 tensor is there and checked, but not read as floats. */
  const nn_st_tensor *ids = nn_st_find(f, "ids");
  CHECK(ids && ids->dtype == NN_ST_I64 && ids->nbytes == 16);
  if (ids) CHECK_INT_EQ(((const int64_t *)ids->data)[1], -1);
  CHECK_INT_EQ(nn_st_f32(f, "ids", 0, NULL, &x, NULL, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, path);
  CHECK_CONTAINS(err.msg, "'ids' has dtype I64");

  /* A shape other than the caller's, and a missing tensor. */
  int64_t want_b[2] = {2, 2};
  CHECK_INT_EQ(nn_st_f32(f, "b", 2, want_b, &x, NULL, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "'b' has shape [4], expected [2, 2]");
  CHECK(nn_st_find(f, "missing") == NULL);
  CHECK_INT_EQ(nn_st_f32(f, "missing", 0, NULL, &x, NULL, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, path);
  CHECK_CONTAINS(err.msg, "no tensor 'missing'");
  nn_st_close(f);
}

static void test_good(void) {
  uint8_t data[64];
  size_t len = good_data(data);
  /* Header padded to a multiple of 8 (as the reference writer does), then
   * padded so the data start at an odd offset: floats are copied to aligned memory. */
  int pad8 = (int)((8 - strlen(good_header) % 8) % 8);
  check_good(write_st("good", good_header, pad8, data, len));
  check_good(write_st("odd", good_header, pad8 + 1, data, len));
  check_good(write_st("odd2", good_header, pad8 + 2, data, len));

  /* An empty header: a file with no tensors. */
  finch_err err = {0};
  nn_st_file_t *f = NULL;
  CHECK_INT_EQ(nn_st_open(write_st("empty", "{}", 0, NULL, 0), &f, &err), FINCH_OK);
  if (f) CHECK_INT_EQ(nn_st_count(f), 0);
  nn_st_close(f);
  nn_st_close(NULL);

  /* F16 and BF16 are recognised: the file opens and the reader names the dtype. */
  uint16_t h[2] = {0x3c00, 0x4000};
  CHECK_INT_EQ(nn_st_open(write_st("half", "{\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]},"
                                            "\"g\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[2,4]}}",
                                   0, h, 4),
                          &f, &err),
               FINCH_OK);
  if (f) {
    const float *x;
    CHECK(nn_st_find(f, "h")->dtype == NN_ST_F16 && nn_st_find(f, "g")->dtype == NN_ST_BF16);
    CHECK_INT_EQ(nn_st_f32(f, "g", 0, NULL, &x, NULL, &err), FINCH_EFORMAT);
    CHECK_CONTAINS(err.msg, "'g' has dtype BF16; only F32 is read");
  }
  nn_st_close(f);
  CHECK_STR_EQ(nn_st_dtype_name(NN_ST_F16), "F16");
  CHECK_INT_EQ(nn_st_dtype_size(NN_ST_BF16), 2);
  CHECK_INT_EQ(nn_st_dtype_size(NN_ST_F64), 8);
  CHECK(nn_st_dtype_name(NN_ST_N_DTYPES) == NULL);
}

/* Every proper prefix of a valid file is refused. */
static void test_truncated(void) {
  uint8_t data[64];
  size_t len = good_data(data);
  const char *path = write_st("whole", good_header, 0, data, len);
  FILE *fp = fopen(path, "rb");
  CHECK(fp != NULL);
  if (!fp) return;
  uint8_t whole[1024];
  size_t size = fread(whole, 1, sizeof whole, fp);
  fclose(fp);
  CHECK_INT_EQ(size, 8 + strlen(good_header) + len);
  int refused = 0;
  for (size_t k = 0; k < size; k++) {
    const char *p = write_raw("cut", whole, k);
    finch_err err = {0};
    nn_st_file_t *f = NULL;
    finch_status st = nn_st_open(p, &f, &err);
    if (st == FINCH_EFORMAT && f == NULL && strstr(err.msg, p)) {
      refused++;
    } else {
      TEST_FAIL_("prefix of %zu bytes: status %d, message \"%s\"", k, (int)st, err.msg);
      nn_st_close(f);
    }
  }
  CHECK_INT_EQ(refused, size);
  /* One byte more than the header promises is refused as well. */
  whole[size] = 0;
  expect_fail(write_raw("long", whole, size + 1), FINCH_EFORMAT, "1 bytes after the last tensor", NULL);
}

/* Every byte of a valid file changed in turn: each result opens or is refused
 * cleanly, and what opens is in bounds (the sanitizer build checks the reads). */
static void test_mutated(void) {
  uint8_t data[64], whole[1024];
  size_t len = good_data(data), hlen = strlen(good_header);
  memcpy(whole + 8, good_header, hlen);
  for (int i = 0; i < 8; i++) whole[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
  memcpy(whole + 8 + hlen, data, len);
  size_t size = 8 + hlen + len;
  int opened = 0, refused = 0;
  for (size_t k = 0; k < size; k++) {
    static const int flips[] = {0x01, 0x20, 0xff};
    for (int v = 0; v < 3; v++) {
      uint8_t keep = whole[k];
      whole[k] ^= (uint8_t)flips[v];
      const char *p = write_raw("mut", whole, size);
      whole[k] = keep;
      finch_err err = {0};
      nn_st_file_t *f = NULL;
      if (nn_st_open(p, &f, &err) != FINCH_OK) {
        CHECK(f == NULL);
        CHECK_CONTAINS(err.msg, p);
        refused++;
        continue;
      }
      opened++;
      unsigned sum = 0;
      for (size_t i = 0; i < nn_st_count(f); i++) {
        const nn_st_tensor *t = nn_st_at(f, i);
        CHECK(t->offset + t->nbytes <= size);
        for (size_t b = 0; b < t->nbytes; b++) sum += ((const uint8_t *)t->data)[b];
      }
      (void)sum;
      nn_st_close(f);
    }
  }
  printf("mutated: %d opened (data or names changed), %d refused\n", opened, refused);
  CHECK(refused > 0 && opened > 0);
}

static void test_malformed(void) {
  uint8_t zeros[256] = {0};
  expect_fail(write_raw("short", zeros, 5), FINCH_EFORMAT, "too short", NULL);
  expect_fail(write_raw("zero", zeros, 16), FINCH_EFORMAT, "header length 0", NULL);
  {
    uint8_t b[16] = {0xff, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_fail(write_raw("pasteof", b, 10), FINCH_EFORMAT, "header length 255 runs past the end", NULL);
    uint8_t big[16] = {0, 0, 0, 0, 0, 0, 0, 0x10, '{', '}'};
    expect_fail(write_raw("huge", big, 10), FINCH_EFORMAT, "outside [2, 100000000]", NULL);
  }
  char missing_path[600];
  snprintf(missing_path, sizeof missing_path, "%s/no-such.safetensors", dir);
  expect_fail(missing_path, FINCH_ENOTFOUND, "cannot open", NULL);

  expect_fail(write_st("badjson", "{\"a\": [1,", 0, NULL, 0), FINCH_EFORMAT, "not valid JSON", NULL);
  expect_fail(write_st("array", "[1, 2]", 0, NULL, 0), FINCH_EFORMAT, "not a JSON object", NULL);
  expect_fail(write_st("dup",
                       "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                       "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                       0, zeros, 1),
              FINCH_EFORMAT, "not valid JSON", "duplicate");
  expect_fail(write_st("meta", "{\"__metadata__\":{\"format\":1}}", 0, NULL, 0), FINCH_EFORMAT,
              "__metadata__.format is not a string", NULL);
  expect_fail(write_st("dtype", "{\"w\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, zeros, 4),
              FINCH_EFORMAT, "tensor 'w'", "unknown dtype 'F12'");
  expect_fail(write_st("nodtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, zeros, 4), FINCH_EFORMAT,
              "tensor 'w'", "dtype missing");
  expect_fail(write_st("noshape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 0, zeros, 4),
              FINCH_EFORMAT, "tensor 'w'", "shape missing");
  expect_fail(write_st("negshape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 0,
                       zeros, 4),
              FINCH_EFORMAT, "tensor 'w'", "shape[1] is not a non-negative integer");
  expect_fail(write_st("bigshape",
                       "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 0,
                       zeros, 4),
              FINCH_EFORMAT, "tensor 'w'", "overflows");
  expect_fail(write_st("manydims",
                       "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 0,
                       zeros, 4),
              FINCH_EFORMAT, "tensor 'w'", "9 dimensions");
  expect_fail(write_st("offs3", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 0, zeros, 8),
              FINCH_EFORMAT, "tensor 'w'", "data_offsets is not an array of 2 integers");
  expect_fail(write_st("reversed", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 0, zeros, 4),
              FINCH_EFORMAT, "tensor 'w'", "[4, 0] are not ordered");
  expect_fail(write_st("oob", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 0, zeros, 12),
              FINCH_EFORMAT, "tensor 'w'", "end past the data section (12 bytes");
  expect_fail(write_st("size", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 0, zeros, 12),
              FINCH_EFORMAT, "tensor 'w'", "hold 12 bytes, shape and dtype F32 need 16");
  expect_fail(write_st("overlap",
                       "{\"p\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"q\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                       0, zeros, 12),
              FINCH_EFORMAT, "'p' [0, 8) and 'q' [4, 12) overlap", NULL);
  expect_fail(write_st("gap",
                       "{\"p\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                       0, zeros, 12),
              FINCH_EFORMAT, "bytes [4, 8) of the data section, before tensor 'q'", NULL);
  expect_fail(write_st("notobj", "{\"w\":[1,2]}", 0, NULL, 0), FINCH_EFORMAT, "tensor 'w'", "not a JSON object");
}

/* The real checkpoint, when scripts/fetch-pretrained.sh has been run. */
static void test_pretrained(void) {
  const char *root = getenv("FINCH_PRETRAINED_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/all-minilm-l6-v2/model.safetensors", root ? root : "");
  if (!root || access(path, R_OK) != 0)
    TEST_SKIP("no pretrained checkpoint at $FINCH_PRETRAINED_DIR/all-minilm-l6-v2/model.safetensors "
              "(FINCH_PRETRAINED_DIR=%s); run scripts/fetch-pretrained.sh and point FINCH_PRETRAINED_DIR at "
              "its directory", root ? root : "(unset)");
  finch_err err = {0};
  nn_st_file_t *f = NULL;
  CHECK_INT_EQ(nn_st_open(path, &f, &err), FINCH_OK);
  if (!f) {
    fprintf(stderr, "%s\n", err.msg);
    return;
  }
  const float *x;
  const nn_st_tensor *t;
  CHECK_INT_EQ(nn_st_f32(f, "embeddings.word_embeddings.weight", 2, (const int64_t[]){30522, 384}, &x, &t, &err),
               FINCH_OK);
  CHECK_INT_EQ(nn_st_f32(f, "embeddings.position_embeddings.weight", 2, (const int64_t[]){512, 384}, &x, NULL,
                         &err),
               FINCH_OK);
  CHECK_INT_EQ(nn_st_f32(f, "embeddings.token_type_embeddings.weight", 2, (const int64_t[]){2, 384}, &x, NULL,
                         &err),
               FINCH_OK);
  size_t params = 0;
  for (size_t i = 0; i < nn_st_count(f); i++)
    if (nn_st_at(f, i)->dtype == NN_ST_F32) params += nn_st_at(f, i)->numel;
  int layers = 0;
  for (int l = 0; l < 8; l++) {
    char name[128];
    snprintf(name, sizeof name, "encoder.layer.%d.attention.self.query.weight", l);
    if (!nn_st_find(f, name)) break;
    layers++;
    CHECK_INT_EQ(nn_st_f32(f, name, 2, (const int64_t[]){384, 384}, &x, NULL, &err), FINCH_OK);
    snprintf(name, sizeof name, "encoder.layer.%d.intermediate.dense.weight", l);
    CHECK_INT_EQ(nn_st_f32(f, name, 2, (const int64_t[]){1536, 384}, &x, NULL, &err), FINCH_OK);
    snprintf(name, sizeof name, "encoder.layer.%d.output.dense.weight", l);
    CHECK_INT_EQ(nn_st_f32(f, name, 2, (const int64_t[]){384, 1536}, &x, NULL, &err), FINCH_OK);
    snprintf(name, sizeof name, "encoder.layer.%d.output.LayerNorm.bias", l);
    CHECK_INT_EQ(nn_st_f32(f, name, 1, (const int64_t[]){384}, &x, NULL, &err), FINCH_OK);
  }
  CHECK_INT_EQ(layers, 6);
  const nn_st_tensor *pos = nn_st_find(f, "embeddings.position_ids");
  CHECK(pos && pos->dtype == NN_ST_I64 && pos->numel == 512);
  if (pos) CHECK_INT_EQ(((const int64_t *)pos->data)[511], 511);
  CHECK_STR_EQ(nn_st_metadata(f, "format"), "pt");
  printf("%s: %zu tensors, %zu F32 parameters, %d layers\n", path, nn_st_count(f), params, layers);
  CHECK(params > 22000000 && params < 23000000);
  nn_st_close(f);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "pretrained") == 0) {
    test_pretrained();
    TEST_DONE();
  }
  const char *base = getenv("FINCH_TEST_TMP");
  snprintf(dir, sizeof dir, "%s/nn_safetensors.%d", base ? base : "/tmp", (int)getpid());
  if (base) mkdir(base, 0755);
  CHECK(mkdir(dir, 0755) == 0);
  test_good();
  test_truncated();
  test_mutated();
  test_malformed();
  TEST_DONE();
}
