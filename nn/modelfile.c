/* nn_model_save / nn_model_load: the format documented in nn/modelfile.h. */
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

#include "nn/bow.h"

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

/* ---- writing ----------------------------------------------------------- */

/* A writer either counts bytes (f == NULL, the sizing pass) or writes them,
 * hashing everything into `body` (for the trailer) and `whole` (the file's
 * SHA-256, trailer included). */
typedef struct {
  FILE *f;
  EVP_MD_CTX *body, *whole;
  uint64_t pos;
  int failed;
} writer;

static void put(writer *w, const void *p, size_t n) {
  if (n == 0) return;
  w->pos += n;
  if (!w->f || w->failed) return;
  if (fwrite(p, 1, n, w->f) != n || !EVP_DigestUpdate(w->body, p, n) || !EVP_DigestUpdate(w->whole, p, n))
    w->failed = 1;
}

static void pad8(writer *w) {
  static const char zeros[8] = {0};
  put(w, zeros, (size_t)((8 - w->pos % 8) % 8));
}

static void put_u32(writer *w, uint32_t v) { put(w, &v, 4); }

static void section(writer *w, const char *tag, uint64_t size) {
  nn_section_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.tag, tag, strlen(tag) < sizeof h.tag ? strlen(tag) : sizeof h.tag);
  h.size = size;
  put(w, &h, sizeof h);
}

static uint64_t strings_size(const char *const *s, size_t n) {
  uint64_t z = 4;
  for (size_t i = 0; i < n; i++) z += 4 + strlen(s[i]);
  return z;
}

static void put_strings(writer *w, const char *tag, const char *const *s, size_t n) {
  section(w, tag, strings_size(s, n));
  put_u32(w, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    uint32_t len = (uint32_t)strlen(s[i]);
    put_u32(w, len);
    put(w, s[i], len);
  }
  pad8(w);
}

/* Writes one tensor section; q8 applies to matrices only. rowbuf holds at
 * least cols int8. */
static void put_tensor(writer *w, const char *name, const float *x, uint64_t rows, uint64_t cols,
                       int n_dims, int q8, int8_t *rowbuf) {
  nn_file_tensor t;
  memset(&t, 0, sizeof t);
  memcpy(t.name, name, strlen(name) < sizeof t.name ? strlen(name) : sizeof t.name - 1);
  t.dtype = q8 ? NN_DTYPE_Q8 : NN_DTYPE_F32;
  t.n_dims = (uint32_t)n_dims;
  t.shape[0] = rows;
  t.shape[1] = cols;
  uint64_t data = q8 ? rows * 4 + rows * cols : rows * cols * 4;
  section(w, "TENSOR", sizeof t + data);
  put(w, &t, sizeof t);
  if (!q8) {
    put(w, x, (size_t)(rows * cols * 4));
  } else if (!w->f) {
    w->pos += data; /* sizing pass: no need to quantise */
  } else {
    for (uint64_t r = 0; r < rows; r++) {
      float s;
      nn_q8_quantize_row_ref(x + r * cols, (size_t)cols, rowbuf, &s);
      put(w, &s, 4);
    }
    for (uint64_t r = 0; r < rows; r++) {
      float s;
      nn_q8_quantize_row_ref(x + r * cols, (size_t)cols, rowbuf, &s);
      put(w, rowbuf, (size_t)cols);
    }
  }
  pad8(w);
}

/* Header and sections: the whole file but the trailer. */
static void put_model(writer *w, const nn_model *m, int q8, uint64_t file_size, int8_t *rowbuf,
                      const char *const *words, size_t n_words) {
  const int with_hidden = m->H > 0;
  nn_file_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, NN_FILE_MAGIC, sizeof NN_FILE_MAGIC);
  h.version = NN_FILE_VERSION;
  h.header_size = sizeof h;
  h.file_size = file_size;
  h.n_sections = 5 + (with_hidden ? 5 : 3);
  put(w, &h, sizeof h);

  const nn_train_config *c = &m->cfg;
  nn_file_config fc = {c->dim, c->hidden, c->buckets, c->minn, c->maxn, c->word_ngrams, c->min_count,
                       c->epochs, c->batch, c->lr, c->weight_decay, c->warmup, c->label_smoothing,
                       c->dropout, c->seed};
  section(w, "CONFIG", sizeof fc);
  put(w, &fc, sizeof fc);

  nn_file_arch a = {.name = "bow", .rows = m->R, .dim = m->D, .hidden = m->H,
                    .n_labels = m->C, .n_words = (uint32_t)n_words, .reserved = 0};
  section(w, "ARCH", sizeof a);
  put(w, &a, sizeof a);

  put_strings(w, "VOCAB", words, n_words);
  put_strings(w, "LABELS", (const char *const *)m->labels, m->n_labels);

  const char *meta = nn_model_meta(m);
  section(w, "META", strlen(meta));
  put(w, meta, strlen(meta));
  pad8(w);

  put_tensor(w, "emb", m->emb, m->R, m->D, 2, q8, rowbuf);
  if (with_hidden) {
    put_tensor(w, "W1", m->W1, m->H, m->D, 2, q8, rowbuf);
    put_tensor(w, "b1", m->b1, m->H, 1, 1, 0, rowbuf);
  }
  put_tensor(w, "W2", m->W2, m->C, m->Din, 2, q8, rowbuf);
  put_tensor(w, "b2", m->b2, m->C, 1, 1, 0, rowbuf);
}

/* Serialises a bow model (header, sections, trailer) into a malloc'd buffer. */
finch_status nn__bow_bytes(const nn_model *m, nn_dtype dtype, unsigned char **out, size_t *out_len,
                              finch_err *err) {
  const int q8 = dtype == NN_DTYPE_Q8;
  size_t n_words = nn_featurizer_n_words(m->feat);
  const char **words = malloc((n_words + 1) * sizeof *words);
  size_t maxcols = m->D > m->Din ? m->D : m->Din;
  int8_t *rowbuf = malloc(maxcols + 1);
  EVP_MD_CTX *body = EVP_MD_CTX_new(), *whole = EVP_MD_CTX_new();
  char *mem = NULL;
  size_t mem_len = 0;
  FILE *f = NULL;
  finch_status st = FINCH_OK;
  if (!words || !rowbuf || !body || !whole || !(f = open_memstream(&mem, &mem_len))) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory saving a model");
    goto out;
  }
  for (size_t i = 0; i < n_words; i++) words[i] = nn_featurizer_word(m->feat, i);
  writer sizing = {0};
  put_model(&sizing, m, q8, 0, rowbuf, words, n_words);
  uint64_t file_size = sizing.pos + 32;
  if (!EVP_DigestInit_ex(body, EVP_sha256(), NULL) || !EVP_DigestInit_ex(whole, EVP_sha256(), NULL)) {
    st = finch_err_set(err, FINCH_EINTERNAL, "SHA-256 init failed");
    goto out;
  }
  writer w = {.f = f, .body = body, .whole = whole};
  put_model(&w, m, q8, file_size, rowbuf, words, n_words);
  unsigned char digest[32];
  unsigned int dl = 0;
  if (!w.failed && !EVP_DigestFinal_ex(body, digest, &dl)) w.failed = 1;
  if (!w.failed && fwrite(digest, 1, 32, f) != 32) w.failed = 1;
  int rc = fclose(f);
  f = NULL;
  if (w.failed || rc != 0 || w.pos + 32 != file_size || mem_len != file_size) {
    st = finch_err_set(err, FINCH_ENOMEM, "serialising a model failed");
    goto out;
  }
  *out = (unsigned char *)mem;
  *out_len = mem_len;
  mem = NULL;
out:
  if (f) fclose(f);
  free(mem);
  EVP_MD_CTX_free(body);
  EVP_MD_CTX_free(whole);
  free(rowbuf);
  free(words);
  return st;
}

finch_status nn__file_bytes(const nn_blob *secs, size_t n, unsigned char **out, size_t *out_len, finch_err *err) {
  uint64_t size = sizeof(nn_file_header) + 32;
  for (size_t i = 0; i < n; i++) size += sizeof(nn_section_header) + ((secs[i].size + 7) & ~(size_t)7);
  unsigned char *buf = calloc(1, (size_t)size);
  if (!buf) return finch_err_set(err, FINCH_ENOMEM, "out of memory serialising a model (%llu bytes)",
                                 (unsigned long long)size);
  nn_file_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, NN_FILE_MAGIC, sizeof NN_FILE_MAGIC);
  h.version = NN_FILE_VERSION;
  h.header_size = sizeof h;
  h.file_size = size;
  h.n_sections = (uint32_t)n;
  memcpy(buf, &h, sizeof h);
  size_t at = sizeof h;
  for (size_t i = 0; i < n; i++) {
    nn_section_header sh;
    memset(&sh, 0, sizeof sh);
    memcpy(sh.tag, secs[i].tag, strnlen(secs[i].tag, 8));
    sh.size = secs[i].size;
    memcpy(buf + at, &sh, sizeof sh);
    at += sizeof sh;
    if (secs[i].size) memcpy(buf + at, secs[i].data, secs[i].size);
    at += (secs[i].size + 7) & ~(size_t)7;
  }
  unsigned int dl = 0;
  if (!EVP_Digest(buf, at, buf + at, &dl, EVP_sha256(), NULL)) {
    free(buf);
    return finch_err_set(err, FINCH_EINTERNAL, "SHA-256 failed");
  }
  *out = buf;
  *out_len = (size_t)size;
  return FINCH_OK;
}

/* Writes buf to path through a temporary file in the same directory and a
 * rename, so readers see the old file or the whole new one. */
static finch_status write_atomic(const char *path, const unsigned char *buf, size_t len, finch_err *err) {
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

finch_status nn_model_save(const nn_model *m, const char *path, nn_dtype dtype, char *sha256_hex,
                           finch_err *err) {
  if (dtype != NN_DTYPE_F32 && dtype != NN_DTYPE_Q8)
    return finch_err_set(err, FINCH_EINVAL, "%s: unknown dtype %d", path, (int)dtype);
  unsigned char *buf = NULL;
  size_t len = 0;
  finch_status st = m->arch != 0 ? nn__arch_bytes(m, dtype, &buf, &len, err) : nn__bow_bytes(m, dtype, &buf, &len, err);
  if (st != FINCH_OK) {
    finch_err_prefix(err, "%s", path);
    return st;
  }
  st = write_atomic(path, buf, len, err);
  if (st == FINCH_OK && sha256_hex) {
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_Digest(buf, len, d, &dl, EVP_sha256(), NULL);
    hex32(d, sha256_hex);
  }
  free(buf);
  return st;
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

enum { T_EMB, T_W1, T_B1, T_W2, T_B2, T_N };
static const char *const tensor_names[T_N] = {"emb", "W1", "b1", "W2", "b2"};

typedef struct {
  nn_file_tensor h;
  const unsigned char *data;
  uint64_t size;
} tensor_ref;

finch_status nn_model_load(nn_model **out, const char *path, finch_err *err) {
  *out = NULL;
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
  finch_status st;
  if (got != size || ioerr) st = finch_err_set(err, FINCH_EIO, "%s: read %zu of %zu bytes", path, got, size);
  else st = nn__model_from_bytes(out, buf, size, path, err);
  free(buf);
  return st;
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

finch_status nn__model_from_bytes(nn_model **out, const unsigned char *buf, size_t size, const char *path,
                                  finch_err *err) {
  *out = NULL;
  finch_status st = nn__file_verify(buf, size, path, err);
  if (st != FINCH_OK) return st;
  {
    nn_blob *secs = NULL;
    size_t ns = 0;
    if ((st = nn__file_sections(buf, size, path, &secs, &ns, err)) != FINCH_OK) return st;
    int other = 0;
    for (size_t i = 0; i < ns; i++) {
      if (strncmp(secs[i].tag, "ARCH", 8) == 0 && secs[i].size >= 8) {
        char name[9] = {0};
        memcpy(name, secs[i].data, 8);
        other = strcmp(name, "bow") != 0;
        break;
      }
    }
    free(secs);
    if (other) return nn__arch_load(out, buf, size, path, err);
  }
  nn_file_header h;
  memcpy(&h, buf, sizeof h);
  char **words = NULL, **labels = NULL, *meta = NULL;
  nn_model *m = NULL;
  /* Sections. */
  nn_file_config fc;
  nn_file_arch arch;
  int have_cfg = 0, have_arch = 0;
  uint32_t n_words = 0, n_labels = 0;
  tensor_ref tens[T_N];
  memset(tens, 0, sizeof tens);
  const unsigned char *p = buf + sizeof h, *end = buf + size - 32;
  for (uint32_t i = 0; i < h.n_sections; i++) {
    nn_section_header sh;
    if ((size_t)(end - p) < sizeof sh) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: section %u: header runs past the end", path, i);
      goto out;
    }
    memcpy(&sh, p, sizeof sh);
    p += sizeof sh;
    if (sh.size > (uint64_t)(end - p)) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: section %u (%.8s): %llu bytes run past the end", path, i,
                         sh.tag, (unsigned long long)sh.size);
      goto out;
    }
    cursor c = {p, p + sh.size};
    uint64_t padded = (sh.size + 7) & ~(uint64_t)7;
    p += padded <= (uint64_t)(end - p) ? padded : sh.size;
    char tag[9] = {0};
    memcpy(tag, sh.tag, 8);
    const char *why = NULL;
    if (strcmp(tag, "CONFIG") == 0) {
      if (have_cfg || take(&c, &fc, sizeof fc)) why = "duplicate or short CONFIG";
      have_cfg = 1;
    } else if (strcmp(tag, "ARCH") == 0) {
      if (have_arch || take(&c, &arch, sizeof arch)) why = "duplicate or short ARCH";
      have_arch = 1;
    } else if (strcmp(tag, "VOCAB") == 0) {
      if (words) why = "duplicate VOCAB";
      else words = read_strings(c, &n_words, &why);
    } else if (strcmp(tag, "LABELS") == 0) {
      if (labels) why = "duplicate LABELS";
      else labels = read_strings(c, &n_labels, &why);
    } else if (strcmp(tag, "META") == 0) {
      size_t len = (size_t)sh.size;
      if (meta) why = "duplicate META";
      else if (memchr(c.p, '\0', len)) why = "META holds a NUL byte";
      else if (!(meta = malloc(len + 1))) why = "out of memory";
      else memcpy(meta, c.p, len), meta[len] = '\0';
    } else if (strcmp(tag, "TENSOR") == 0) {
      nn_file_tensor t;
      if (take(&c, &t, sizeof t)) {
        why = "short TENSOR header";
      } else {
        int k = 0;
        t.name[sizeof t.name - 1] = '\0';
        while (k < T_N && strcmp(t.name, tensor_names[k]) != 0) k++;
        if (k == T_N) why = "unknown tensor name";
        else if (tens[k].data) why = "duplicate tensor";
        else tens[k] = (tensor_ref){t, c.p, (uint64_t)(c.end - c.p)};
      }
    }
    if (why) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: section %u (%s): %s", path, i, tag, why);
      goto out;
    }
  }
  if (!have_cfg || !have_arch || !words || !labels) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: missing section %s", path,
                       !have_cfg ? "CONFIG" : !have_arch ? "ARCH" : !words ? "VOCAB" : "LABELS");
    goto out;
  }
  nn_train_config cfg = {fc.dim, fc.hidden, fc.buckets, fc.minn, fc.maxn, fc.word_ngrams, fc.min_count,
                         fc.epochs, fc.batch, fc.lr, fc.weight_decay, fc.warmup, fc.label_smoothing,
                         fc.dropout, fc.seed};
  if (nn__config_check(&cfg, err) != FINCH_OK) {
    finch_err_prefix(err, "%s: CONFIG", path);
    st = FINCH_EFORMAT;
    if (err) err->code = st;
    goto out;
  }
  arch.name[sizeof arch.name - 1] = '\0';
  if (strcmp(arch.name, "bow") != 0 || arch.dim != cfg.dim || arch.hidden != cfg.hidden ||
      arch.n_words != n_words || arch.n_labels != n_labels || n_labels == 0 ||
      (uint64_t)arch.rows != (uint64_t)n_words + cfg.buckets) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: ARCH (%s, rows %u, dim %u, hidden %u, %u labels, %u words) "
                       "does not match CONFIG and the lists (%u labels, %u words)", path, arch.name,
                       arch.rows, arch.dim, arch.hidden, arch.n_labels, arch.n_words, n_labels, n_words);
    goto out;
  }
  nn_featurizer *feat = NULL;
  nn_feat_config fcfg = nn__feat_config(&cfg);
  st = nn_featurizer_from_words(&feat, (const char *const *)words, n_words, &fcfg, err);
  if (st == FINCH_OK) st = nn__model_create(&m, &cfg, feat, (const char *const *)labels, n_labels, err);
  if (st != FINCH_OK) {
    finch_err_prefix(err, "%s", path);
    goto out;
  }
  m->meta = meta;
  meta = NULL;
  struct {
    float *dst;
    uint64_t rows, cols;
    int matrix;
  } want[T_N] = {{m->emb, m->R, m->D, 1}, {m->W1, m->H, m->D, 1}, {m->b1, m->H, 1, 0},
                 {m->W2, m->C, m->Din, 1}, {m->b2, m->C, 1, 0}};
  int any_q8 = 0;
  for (int k = 0; k < T_N; k++) {
    if ((k == T_W1 || k == T_B1) && m->H == 0) {
      if (tens[k].data) {
        st = finch_err_set(err, FINCH_EFORMAT, "%s: tensor %s present in a model without a hidden layer", path, tensor_names[k]);
        goto out;
      }
      continue;
    }
    const tensor_ref *t = &tens[k];
    if (!t->data) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: missing tensor %s", path, tensor_names[k]);
      goto out;
    }
    uint64_t rows = want[k].rows, cols = want[k].cols;
    if (t->h.shape[0] != rows || t->h.shape[1] != cols || t->h.n_dims != (want[k].matrix ? 2u : 1u)) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: tensor %s has shape (%llu,%llu), expected (%llu,%llu)", path,
                         tensor_names[k], (unsigned long long)t->h.shape[0], (unsigned long long)t->h.shape[1],
                         (unsigned long long)rows, (unsigned long long)cols);
      goto out;
    }
    if (t->h.dtype == NN_DTYPE_F32) {
      if (t->size != rows * cols * 4) goto bad_size;
      memcpy(want[k].dst, t->data, (size_t)(rows * cols * 4));
    } else if (t->h.dtype == NN_DTYPE_Q8) {
      if (t->size != rows * 4 + rows * cols) goto bad_size;
      any_q8 = 1;
      for (uint64_t r = 0; r < rows; r++) {
        float s;
        memcpy(&s, t->data + r * 4, 4);
        nn_q8_dequantize_row_ref((const int8_t *)(t->data + rows * 4 + r * cols), s, (size_t)cols,
                                 want[k].dst + r * cols);
      }
    } else {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: tensor %s has unknown dtype %u", path, tensor_names[k], t->h.dtype);
      goto out;
    }
    continue;
  bad_size:
    st = finch_err_set(err, FINCH_EFORMAT, "%s: tensor %s holds %llu data bytes, wrong for its shape and dtype",
                       path, tensor_names[k], (unsigned long long)t->size);
    goto out;
  }
  m->dtype = any_q8 ? NN_DTYPE_Q8 : NN_DTYPE_F32;
  *out = m;
  m = NULL;
out:
  nn_model_free(m);
  free(meta);
  free(words);
  free(labels);
  return st;
}
