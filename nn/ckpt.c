/* Training checkpoints on disk (nn/ckpt.h). */
#include "nn/ckpt.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

finch_status nn_ckpt_write(const char *path, const nn_ckpt_part *parts, size_t n, finch_err *err) {
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 16);
  if (!tmp) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  memcpy(tmp, path, pl);
  memcpy(tmp + pl, ".tmp.XXXXXX", 12);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    finch_status st = finch_err_set(err, FINCH_EIO, "%s: cannot create a temporary file: %s", path, strerror(errno));
    free(tmp);
    return st;
  }
  FILE *f = fdopen(fd, "wb");
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = f && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL);
  for (size_t i = 0; ok && i < n; i++)
    if (parts[i].n) ok = fwrite(parts[i].p, 1, parts[i].n, f) == parts[i].n && EVP_DigestUpdate(md, parts[i].p, parts[i].n);
  unsigned char dg[32];
  unsigned dl = 0;
  ok = ok && EVP_DigestFinal_ex(md, dg, &dl) && fwrite(dg, 1, 32, f) == 32 && fflush(f) == 0 && fsync(fileno(f)) == 0;
  EVP_MD_CTX_free(md);
  if (f) ok = (fclose(f) == 0) && ok;
  else close(fd);
  finch_status st = FINCH_OK;
  if (!ok || rename(tmp, path) != 0) {
    st = finch_err_set(err, FINCH_EIO, "%s: writing the checkpoint failed: %s", path, strerror(errno));
    unlink(tmp);
  }
  free(tmp);
  return st;
}

finch_status nn_ckpt_read(const char *path, size_t want, unsigned char **buf, finch_err *err) {
  *buf = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return finch_err_set(err, FINCH_ENOTFOUND, "%s: cannot open checkpoint: %s", path, strerror(errno));
  struct stat sb;
  finch_status st = FINCH_OK;
  unsigned char *b = NULL;
  if (fstat(fileno(f), &sb) != 0 || (size_t)sb.st_size != want || want < 32) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: checkpoint has %lld bytes, this run's has %zu (another run's checkpoint?)",
                       path, (long long)sb.st_size, want);
    goto out;
  }
  if (!(b = malloc(want))) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory reading %s", path);
    goto out;
  }
  if (fread(b, 1, want, f) != want) {
    st = finch_err_set(err, FINCH_EIO, "%s: short read", path);
    goto out;
  }
  unsigned char dg[32];
  unsigned dl = 0;
  if (!EVP_Digest(b, want - 32, dg, &dl, EVP_sha256(), NULL) || memcmp(dg, b + want - 32, 32) != 0) {
    st = finch_err_set(err, FINCH_ECHECKSUM, "%s: checkpoint checksum mismatch, the file is corrupt", path);
    goto out;
  }
  *buf = b;
  b = NULL;
out:
  free(b);
  fclose(f);
  return st;
}
