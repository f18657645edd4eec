/* The model file container (format in nn/modelfile.h): the one byte
 * writer, the section writer with its SHA-256 trailer, verification and the
 * section list on reading, and the file's trip to and from disk. What the
 * sections hold is each architecture's business (nn/model_impl.h). */
#include "nn/modelfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void nn_q8_quantize_row_ref(const float *x, size_t n, int8_t *q, float *scale) {
  float amax = 0.0f;
  for (size_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
  float s = amax / 127.0f;
  float inv = s > 0.0f ? 1.0f / s : 0.0f;
  for (size_t i = 0; i < n; i++) {
    float v = roundf(x[i] * inv);
    q[i] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
  }
  *scale = s;
}

void nn_q8_dequantize_row_ref(const int8_t *q, float scale, size_t n, float *x) {
  for (size_t i = 0; i < n; i++) x[i] = (float)q[i] * scale;
}

static void hex32(const unsigned char *d, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = hx[d[i] >> 4];
    out[2 * i + 1] = hx[d[i] & 15];
  }
  out[64] = '\0';
}

void nn__sha256_hex(const unsigned char *buf, size_t len, char *hex) {
  unsigned char d[32];
  unsigned int dl = 0;
  EVP_Digest(buf, len, d, &dl, EVP_sha256(), NULL);
  hex32(d, hex);
}

/* ---- the byte writer --------------------------------------------------- */

void *nn_buf_reserve(nn_buf *b, size_t n) {
  if (b->failed) return NULL;
  if (b->n + n > b->cap) {
    size_t nc = b->cap ? b->cap * 2 : 4096;
    while (nc < b->n + n) nc *= 2;
    unsigned char *q = realloc(b->p, nc);
    if (!q) {
      b->failed = 1;
      return NULL;
    }
    b->p = q;
    b->cap = nc;
  }
  void *at = b->p + b->n;
  b->n += n;
  return at;
}

void nn_buf_put(nn_buf *b, const void *p, size_t n) {
  if (n == 0) return;
  void *at = nn_buf_reserve(b, n);
  if (at) memcpy(at, p, n);
}

void nn_buf_u32(nn_buf *b, uint32_t v) { nn_buf_put(b, &v, 4); }

void nn_buf_pad8(nn_buf *b) {
  static const unsigned char z[8];
  if (b->n % 8) nn_buf_put(b, z, 8 - b->n % 8);
}

void nn_buf_strings(nn_buf *b, const char *const *s, size_t n) {
  nn_buf_u32(b, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    uint32_t len = (uint32_t)strlen(s[i]);
    nn_buf_u32(b, len);
    nn_buf_put(b, s[i], len);
  }
}

void nn_buf_free(nn_buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

/* ---- writing a file ---------------------------------------------------- */

void nn__file_begin(nn_file_writer *w) {
  memset(w, 0, sizeof *w);
  nn_file_header h;
  memset(&h, 0, sizeof h);
  nn_buf_put(&w->b, &h, sizeof h); /* filled in by nn__file_end */
}

void nn__file_section_begin(nn_file_writer *w, const char *tag) {
  nn_section_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.tag, tag, strnlen(tag, sizeof h.tag));
  w->open = w->b.n;
  nn_buf_put(&w->b, &h, sizeof h); /* size filled in by nn__file_section_end */
}

void nn__file_section_end(nn_file_writer *w) {
  if (!w->b.failed) {
    uint64_t size = w->b.n - w->open - sizeof(nn_section_header);
    memcpy(w->b.p + w->open + offsetof(nn_section_header, size), &size, sizeof size);
  }
  nn_buf_pad8(&w->b);
  w->n_sections++;
}

void nn__file_section(nn_file_writer *w, const char *tag, const void *data, size_t size) {
  nn__file_section_begin(w, tag);
  nn_buf_put(&w->b, data, size);
  nn__file_section_end(w);
}

finch_status nn__file_end(nn_file_writer *w, unsigned char **buf, size_t *len, finch_err *err) {
  unsigned char *trailer = nn_buf_reserve(&w->b, 32);
  if (w->b.failed) {
    nn_buf_free(&w->b);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory serialising a model");
  }
  nn_file_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, NN_FILE_MAGIC, sizeof NN_FILE_MAGIC);
  h.version = NN_FILE_VERSION;
  h.header_size = sizeof h;
  h.file_size = w->b.n;
  h.n_sections = w->n_sections;
  memcpy(w->b.p, &h, sizeof h);
  unsigned int dl = 0;
  if (!EVP_Digest(w->b.p, w->b.n - 32, trailer, &dl, EVP_sha256(), NULL)) {
    nn_buf_free(&w->b);
    return finch_err_set(err, FINCH_EINTERNAL, "SHA-256 failed");
  }
  *buf = w->b.p;
  *len = w->b.n;
  memset(w, 0, sizeof *w);
  return FINCH_OK;
}

finch_status nn__file_write_atomic(const char *path, const unsigned char *buf, size_t len, finch_err *err) {
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 16);
  if (!tmp) return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory saving a model", path);
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp.XXXXXX", 12);
  finch_status st = FINCH_OK;
  int fd = mkstemp(tmp);
  if (fd < 0) {
    st = finch_err_set(err, FINCH_EIO, "%s: cannot create a temporary file: %s", path, strerror(errno));
    free(tmp);
    return st;
  }
  fchmod(fd, 0644);
  size_t done = 0;
  while (done < len) {
    ssize_t k = write(fd, buf + done, len - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    done += (size_t)k;
  }
  if (done != len || fsync(fd) != 0) {
    st = finch_err_set(err, FINCH_EIO, "%s: writing %s failed: %s", path, tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    free(tmp);
    return st;
  }
  if (close(fd) != 0 || rename(tmp, path) != 0) {
    st = finch_err_set(err, FINCH_EIO, "%s: closing or renaming %s failed: %s", path, tmp, strerror(errno));
    unlink(tmp);
    free(tmp);
    return st;
  }
  free(tmp);
  /* Make the rename itself durable; failure here leaves a complete file. */
  char *dir = strdup(path);
  if (dir) {
    char *slash = strrchr(dir, '/');
    const char *d = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
    int dfd = open(d, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
    free(dir);
  }
  return FINCH_OK;
}

/* ---- reading ----------------------------------------------------------- */

/* A bounded cursor over a section body. */
typedef struct {
  const unsigned char *p, *end;
} cursor;

static int take(cursor *c, void *out, size_t n) {
  if ((size_t)(c->end - c->p) < n) return -1;
  memcpy(out, c->p, n);
  c->p += n;
  return 0;
}

/* Reads a string list into one allocation: n pointers then NUL-terminated
 * strings. Returns NULL on a malformed list (with *why set). */
static char **read_strings(cursor c, uint32_t *count, const char **why) {
  uint32_t n;
  if (take(&c, &n, 4)) return *why = "missing count", NULL;
  if (n > (size_t)(c.end - c.p) / 4) return *why = "count larger than the section", NULL;
  size_t bytes = (size_t)(c.end - c.p);
  char **out = malloc((size_t)n * sizeof(char *) + bytes + 1);
  if (!out) return *why = "out of memory", NULL;
  char *s = (char *)(out + n);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t len;
    if (take(&c, &len, 4) || len > (size_t)(c.end - c.p)) {
      free(out);
      return *why = "string runs past the section", NULL;
    }
    if (memchr(c.p, '\0', len)) {
      free(out);
      return *why = "string holds a NUL byte", NULL;
    }
    memcpy(s, c.p, len);
    s[len] = '\0';
    out[i] = s;
    s += len + 1;
    c.p += len;
  }
  *count = n;
  return out;
}

char **nn__read_strings(const void *data, size_t size, uint32_t *count, const char **why) {
  cursor c = {data, (const unsigned char *)data + size};
  return read_strings(c, count, why);
}

const nn_blob *nn__file_find(const nn_blob *secs, size_t n, const char *tag) {
  for (size_t i = 0; i < n; i++)
    if (strncmp(secs[i].tag, tag, 8) == 0) return &secs[i];
  return NULL;
}

finch_status nn__file_read(const char *path, unsigned char **out, size_t *out_size, finch_err *err) {
  *out = NULL;
  *out_size = 0;
  FILE *f = fopen(path, "rb");
  if (!f)
    return finch_err_set(err, errno == ENOENT ? FINCH_ENOTFOUND : FINCH_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return finch_err_set(err, FINCH_EIO, "%s: not a regular file", path);
  }
  size_t size = (size_t)sb.st_size;
  unsigned char *buf = malloc(size ? size : 1);
  if (!buf) {
    fclose(f);
    return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory reading %zu bytes", path, size);
  }
  size_t got = fread(buf, 1, size, f);
  int ioerr = ferror(f);
  fclose(f);
  if (got != size || ioerr) {
    free(buf);
    return finch_err_set(err, FINCH_EIO, "%s: read %zu of %zu bytes", path, got, size);
  }
  *out = buf;
  *out_size = size;
  return FINCH_OK;
}

finch_status nn__file_verify(const unsigned char *buf, size_t size, const char *path, finch_err *err) {
  finch_status st = FINCH_OK;
  nn_file_header h;
  if (size < 8 || memcmp(buf, NN_FILE_MAGIC, sizeof NN_FILE_MAGIC) != 0) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: not a finch model file (bad magic)", path);
    goto out;
  }
  if (size < sizeof h + 32) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: truncated: %zu bytes, shorter than a header and checksum", path, size);
    goto out;
  }
  memcpy(&h, buf, sizeof h);
  if (h.version != NN_FILE_VERSION) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: unsupported model file version %u (this build reads version %u)",
                       path, h.version, NN_FILE_VERSION);
    goto out;
  }
  if (h.header_size != sizeof h) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: header size %u, expected %zu", path, h.header_size, sizeof h);
    goto out;
  }
  if (h.file_size > size) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: truncated: header says %llu bytes, file has %zu", path,
                       (unsigned long long)h.file_size, size);
    goto out;
  }
  if (h.file_size < size || h.file_size < sizeof h + 32) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: header says %llu bytes, file has %zu", path,
                       (unsigned long long)h.file_size, size);
    goto out;
  }
  unsigned char digest[32];
  unsigned int dl = 0;
  if (!EVP_Digest(buf, size - 32, digest, &dl, EVP_sha256(), NULL)) {
    st = finch_err_set(err, FINCH_EINTERNAL, "%s: SHA-256 failed", path);
    goto out;
  }
  if (memcmp(digest, buf + size - 32, 32) != 0) {
    char want[65], have[65];
    hex32(buf + size - 32, want);
    hex32(digest, have);
    st = finch_err_set(err, FINCH_ECHECKSUM, "%s: checksum mismatch, the file is corrupt (stored sha256 %.16s..., content %.16s...)",
                       path, want, have);
    goto out;
  }

out:
  return st;
}

finch_status nn__file_sections(const unsigned char *buf, size_t size, const char *path, nn_blob **out,
                               size_t *n_out, finch_err *err) {
  nn_file_header h;
  memcpy(&h, buf, sizeof h);
  if (h.n_sections > (size - sizeof h) / sizeof(nn_section_header))
    return finch_err_set(err, FINCH_EFORMAT, "%s: %u sections cannot fit in %zu bytes", path, h.n_sections, size);
  nn_blob *secs = calloc(h.n_sections ? h.n_sections : 1, sizeof *secs);
  if (!secs) return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", path);
  const unsigned char *p = buf + sizeof h, *end = buf + size - 32;
  for (uint32_t i = 0; i < h.n_sections; i++) {
    nn_section_header sh;
    if ((size_t)(end - p) < sizeof sh) {
      free(secs);
      return finch_err_set(err, FINCH_EFORMAT, "%s: section %u: header runs past the end", path, i);
    }
    memcpy(&sh, p, sizeof sh);
    p += sizeof sh;
    if (sh.size > (uint64_t)(end - p)) {
      free(secs);
      return finch_err_set(err, FINCH_EFORMAT, "%s: section %u (%.8s): %llu bytes run past the end", path, i,
                           sh.tag, (unsigned long long)sh.size);
    }
    memcpy(secs[i].tag, sh.tag, 8);
    secs[i].data = p;
    secs[i].size = (size_t)sh.size;
    uint64_t padded = (sh.size + 7) & ~(uint64_t)7;
    p += padded <= (uint64_t)(end - p) ? padded : sh.size;
  }
  *out = secs;
  *n_out = h.n_sections;
  return FINCH_OK;
}
