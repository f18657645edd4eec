#include "core/hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct finch_sha256 {
  EVP_MD_CTX *ctx;
};

static void to_hex(const unsigned char *md, unsigned n, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (unsigned i = 0; i < n; i++) {
    out[2 * i] = hx[md[i] >> 4];
    out[2 * i + 1] = hx[md[i] & 15];
  }
  out[2 * n] = '\0';
}

void finch_sha256_hex(const void *data, size_t len, char out[FINCH_SHA256_HEX_LEN]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
  to_hex(md, n, out);
}

finch_sha256 *finch_sha256_new(void) {
  finch_sha256 *h = malloc(sizeof *h);
  if (!h) return NULL;
  h->ctx = EVP_MD_CTX_new();
  if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(h->ctx);
    free(h);
    return NULL;
  }
  return h;
}

void finch_sha256_update(finch_sha256 *h, const void *data, size_t len) {
  EVP_DigestUpdate(h->ctx, data, len);
}

void finch_sha256_final(finch_sha256 *h, char out[FINCH_SHA256_HEX_LEN]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_DigestFinal_ex(h->ctx, md, &n);
  to_hex(md, n, out);
  EVP_MD_CTX_free(h->ctx);
  free(h);
}

finch_status finch_sha256_file(const char *path, char out[FINCH_SHA256_HEX_LEN], finch_err *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(errno));
  finch_sha256 *h = finch_sha256_new();
  if (!h) {
    fclose(fp);
    return finch_err_set(err, FINCH_ENOMEM, "%s: cannot create digest", path);
  }
  unsigned char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, fp)) > 0) finch_sha256_update(h, buf, n);
  int bad = ferror(fp);
  fclose(fp);
  finch_sha256_final(h, out);
  if (bad) return finch_err_set(err, FINCH_EIO, "%s: read error", path);
  return FINCH_OK;
}

void finch_utterance_hash(const char *text_norm, const char *label, const char *position,
                          char out[FINCH_SHA256_HEX_LEN]) {
  finch_sha256 *h = finch_sha256_new();
  finch_sha256_update(h, text_norm, strlen(text_norm));
  finch_sha256_update(h, "\x1f", 1);
  finch_sha256_update(h, label ? label : "", label ? strlen(label) : 0);
  finch_sha256_update(h, "\x1f", 1);
  finch_sha256_update(h, position ? position : "", position ? strlen(position) : 0);
  finch_sha256_final(h, out);
}
