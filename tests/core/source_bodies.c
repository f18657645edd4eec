#include "tests/core/source_bodies.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

const char test_plain_body[] = "hello\nworld\n";

unsigned char *test_gzip(const void *data, size_t len, size_t *out_len) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
  size_t cap = deflateBound(&zs, len) + 64;
  unsigned char *out = malloc(cap);
  if (!out) abort();
  zs.next_in = (unsigned char *)data;
  zs.avail_in = (uInt)len;
  zs.next_out = out;
  zs.avail_out = (uInt)cap;
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
  *out_len = zs.total_out;
  deflateEnd(&zs);
  return out;
}

unsigned char *test_concat(const void *a, size_t na, const void *b, size_t nb) {
  unsigned char *out = malloc(na + nb + 1);
  if (!out) abort();
  memcpy(out, a, na);
  memcpy(out + na, b, nb);
  out[na + nb] = '\0';
  return out;
}

unsigned char *test_read_all(FILE *fp, size_t *len, int *bad) {
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap + 1);
  if (!buf) abort();
  for (;;) {
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap + 1);
      if (!buf) abort();
    }
    size_t k = fread(buf + n, 1, cap - n, fp);
    n += k;
    if (k == 0) break;
  }
  buf[n] = '\0';
  *len = n;
  if (bad) *bad = ferror(fp);
  return buf;
}

void test_write_bytes(const char *path, const void *data, size_t len) {
  FILE *fp = fopen(path, "wb");
  if (!fp || (len && fwrite(data, 1, len, fp) != len) || fclose(fp) != 0) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(1);
  }
}

void test_sha_of(const void *data, size_t len, char out[FINCH_SHA256_HEX_LEN]) { finch_sha256_hex(data, len, out); }

finch_status test_fetch(const char *uri, const finch_source_opts *o, unsigned char **body, size_t *len,
                        char sha[FINCH_SHA256_HEX_LEN], finch_err *err) {
  finch_source *s = NULL;
  *body = NULL;
  *len = 0;
  sha[0] = '\0';
  finch_status st = finch_source_open(&s, uri, o, err);
  if (st) return st;
  *body = test_read_all(finch_source_file(s), len, NULL);
  return finch_source_close(s, sha, err);
}

void test_bodies_make(test_source_bodies *b) {
  b->big = malloc(BIG_LEN);
  if (!b->big) abort();
  uint32_t x = 2463534242u; /* xorshift32: incompressible, every byte value */
  for (size_t i = 0; i < BIG_LEN; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b->big[i] = (unsigned char)(x >> 24);
  }
  char *text = malloc(64 * 2000);
  if (!text) abort();
  size_t tl = 0;
  for (int i = 0; i < 2000; i++) tl += (size_t)sprintf(text + tl, "gzip body line %d\n", i);
  size_t half = tl / 2, n1, n2;
  unsigned char *g1 = test_gzip(text, half, &n1), *g2 = test_gzip(text + half, tl - half, &n2);
  b->gz = test_concat(g1, n1, g2, n2);
  b->gz_len = n1 + n2;
  b->gz_text = (unsigned char *)text;
  b->gz_text_len = tl;
  free(g1);
  free(g2);
}

void test_bodies_free(test_source_bodies *b) {
  free(b->big);
  free(b->gz);
  free(b->gz_text);
  memset(b, 0, sizeof *b);
}
