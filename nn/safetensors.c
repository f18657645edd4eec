/* The safetensors reader (format and checks in nn/safetensors.h).
 *
 * nn_st_open maps the file, parses the header with jansson, checks every
 * tensor on its own (dtype, shape, offsets, size, bounds) in header order so
 * the first error names the tensor at fault, then sorts the tensors by offset
 * and checks that they tile the data section. */
#include "nn/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct nn_st_file {
  char *path;
  const uint8_t *map; /* the whole file, read-only */
  size_t size;
  size_t n;
  nn_st_tensor *tensors; /* sorted by offset */
  char *names;           /* the tensors' names, NUL-separated */
  void *aligned;         /* copies of tensors whose bytes are misaligned in the file */
  json_t *meta;          /* "__metadata__" or NULL */
};

static const struct {
  const char *name;
  size_t size;
} st__dtypes[NN_ST_N_DTYPES] = {
    [NN_ST_BOOL] = {"BOOL", 1},       [NN_ST_U8] = {"U8", 1},    [NN_ST_I8] = {"I8", 1},
    [NN_ST_F8_E5M2] = {"F8_E5M2", 1}, [NN_ST_F8_E4M3] = {"F8_E4M3", 1},
    [NN_ST_I16] = {"I16", 2},         [NN_ST_U16] = {"U16", 2},  [NN_ST_F16] = {"F16", 2},
    [NN_ST_BF16] = {"BF16", 2},       [NN_ST_I32] = {"I32", 4},  [NN_ST_U32] = {"U32", 4},
    [NN_ST_F32] = {"F32", 4},         [NN_ST_I64] = {"I64", 8},  [NN_ST_U64] = {"U64", 8},
    [NN_ST_F64] = {"F64", 8},
};

const char *nn_st_dtype_name(nn_st_dtype d) {
  return (unsigned)d < NN_ST_N_DTYPES ? st__dtypes[d].name : NULL;
}

size_t nn_st_dtype_size(nn_st_dtype d) {
  return (unsigned)d < NN_ST_N_DTYPES ? st__dtypes[d].size : 0;
}

static int st__dtype_parse(const char *s, nn_st_dtype *out) {
  for (int d = 0; d < NN_ST_N_DTYPES; d++) {
    if (strcmp(s, st__dtypes[d].name) == 0) {
      *out = (nn_st_dtype)d;
      return 1;
    }
  }
  return 0;
}

void nn_st_close(nn_st_file_t *f) {
  if (!f) return;
  if (f->map) munmap((void *)f->map, f->size);
  json_decref(f->meta);
  free(f->tensors);
  free(f->names);
  free(f->aligned);
  free(f->path);
  free(f);
}

/* Reads tensor `name`'s record (json value v) into *t and its data_offsets
 * into *begin; checks everything that concerns the tensor alone. data_len is
 * the size of the data section. */
static finch_status st__tensor(const char *path, const char *name, json_t *v, size_t data_len,
                               nn_st_tensor *t, size_t *begin, finch_err *err) {
  if (!json_is_object(v))
    return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': not a JSON object", path, name);
  json_t *dt = json_object_get(v, "dtype");
  json_t *sh = json_object_get(v, "shape");
  json_t *off = json_object_get(v, "data_offsets");
  if (!json_is_string(dt))
    return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': dtype missing or not a string", path, name);
  if (!st__dtype_parse(json_string_value(dt), &t->dtype))
    return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                         json_string_value(dt));
  if (!json_is_array(sh))
    return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': shape missing or not an array", path, name);
  if (json_array_size(sh) > NN_ST_MAX_DIMS)
    return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': shape has %zu dimensions, at most %d read",
                         path, name, json_array_size(sh), NN_ST_MAX_DIMS);
  t->ndim = (int)json_array_size(sh);
  size_t numel = 1;
  for (int i = 0; i < t->ndim; i++) {
    json_t *d = json_array_get(sh, (size_t)i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                           path, name, i);
    t->shape[i] = (int64_t)json_integer_value(d);
    if (__builtin_mul_overflow(numel, (size_t)t->shape[i], &numel))
      return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': shape overflows the address space", path,
                           name);
  }
  size_t nbytes;
  if (__builtin_mul_overflow(numel, st__dtypes[t->dtype].size, &nbytes))
    return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': shape overflows the address space", path, name);
  if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
      !json_is_integer(json_array_get(off, 1)))
    return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': data_offsets is not an array of 2 integers",
                         path, name);
  json_int_t b = json_integer_value(json_array_get(off, 0));
  json_int_t e = json_integer_value(json_array_get(off, 1));
  if (b < 0 || e < b)
    return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] are not ordered",
                         path, name, (long long)b, (long long)e);
  if ((unsigned long long)e > data_len)
    return finch_err_set(err, FINCH_EFORMAT,
                         "%s: tensor '%s': data_offsets [%lld, %lld] end past the data section (%zu bytes; "
                         "truncated file?)",
                         path, name, (long long)b, (long long)e, data_len);
  if ((size_t)(e - b) != nbytes)
    return finch_err_set(err, FINCH_EFORMAT,
                         "%s: tensor '%s': data_offsets [%lld, %lld] hold %lld bytes, shape and dtype %s "
                         "need %zu",
                         path, name, (long long)b, (long long)e, (long long)(e - b), st__dtypes[t->dtype].name,
                         nbytes);
  t->numel = numel;
  t->nbytes = nbytes;
  *begin = (size_t)b;
  return FINCH_OK;
}

typedef struct {
  nn_st_tensor t;
  size_t begin;
} st__entry;

static int st__by_offset(const void *a, const void *b) {
  const st__entry *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  return x->t.nbytes < y->t.nbytes ? -1 : x->t.nbytes > y->t.nbytes;
}

/* Parses and checks the header, filling f->tensors (sorted), names, meta. */
static finch_status st__header(nn_st_file_t *f, size_t hlen, finch_err *err) {
  const char *path = f->path;
  size_t data_at = 8 + hlen, data_len = f->size - data_at;
  json_error_t jerr;
  json_t *root = json_loadb((const char *)f->map + 8, hlen, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return finch_err_set(err, FINCH_EFORMAT, "%s: header (bytes 8..%zu) is not valid JSON: %s at byte %d",
                         path, data_at, jerr.text, jerr.position);
  finch_status st = FINCH_OK;
  st__entry *ents = NULL;
  if (!json_is_object(root)) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: header is not a JSON object", path);
    goto out;
  }
  size_t n = json_object_size(root), names_len = 0, k = 0;
  const char *key;
  json_t *v;
  ents = calloc(n ? n : 1, sizeof *ents);
  if (!ents) {
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory for %zu tensors", path, n);
    goto out;
  }
  json_object_foreach(root, key, v) {
    if (strcmp(key, "__metadata__") == 0) {
      const char *mk;
      json_t *mv;
      if (!json_is_object(v)) {
        st = finch_err_set(err, FINCH_EFORMAT, "%s: __metadata__ is not a JSON object", path);
        goto out;
      }
      json_object_foreach(v, mk, mv) {
        if (!json_is_string(mv)) {
          st = finch_err_set(err, FINCH_EFORMAT, "%s: __metadata__.%s is not a string", path, mk);
          goto out;
        }
      }
      f->meta = json_incref(v);
      continue;
    }
    st = st__tensor(path, key, v, data_len, &ents[k].t, &ents[k].begin, err);
    if (st) goto out;
    ents[k].t.name = key; /* replaced by the handle's copy below */
    names_len += strlen(key) + 1;
    k++;
  }
  n = k;
  qsort(ents, n, sizeof *ents, st__by_offset);
  size_t expect = 0;
  for (size_t i = 0; i < n; i++) {
    size_t b = ents[i].begin, e = b + ents[i].t.nbytes;
    if (b < expect) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap", path,
                         ents[i - 1].t.name, ents[i - 1].begin, expect, ents[i].t.name, b, e);
      goto out;
    }
    if (b > expect) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: bytes [%zu, %zu) of the data section, before tensor '%s', "
                         "belong to no tensor", path, expect, b, ents[i].t.name);
      goto out;
    }
    expect = e;
  }
  if (expect != data_len) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: %zu bytes after the last tensor's data belong to no tensor",
                       path, data_len - expect);
    goto out;
  }

  /* Copy the names, and the bytes of tensors misaligned in the file. */
  size_t copy_len = 0;
  for (size_t i = 0; i < n; i++) {
    size_t es = st__dtypes[ents[i].t.dtype].size;
    if ((uintptr_t)(f->map + data_at + ents[i].begin) % es) copy_len += (ents[i].t.nbytes + 7) & ~(size_t)7;
  }
  f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
  f->names = malloc(names_len ? names_len : 1);
  f->aligned = copy_len ? malloc(copy_len) : NULL;
  if (!f->tensors || !f->names || (copy_len && !f->aligned)) {
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory for %zu tensors", path, n);
    goto out;
  }
  char *np = f->names;
  uint8_t *cp = f->aligned;
  for (size_t i = 0; i < n; i++) {
    nn_st_tensor *t = &f->tensors[i];
    *t = ents[i].t;
    size_t len = strlen(ents[i].t.name) + 1;
    memcpy(np, ents[i].t.name, len);
    t->name = np;
    np += len;
    t->offset = data_at + ents[i].begin;
    const uint8_t *src = f->map + t->offset;
    if ((uintptr_t)src % st__dtypes[t->dtype].size) {
      memcpy(cp, src, t->nbytes);
      t->data = cp;
      cp += (t->nbytes + 7) & ~(size_t)7;
    } else {
      t->data = src;
    }
  }
  f->n = n;
out:
  free(ents);
  json_decref(root);
  return st;
}

finch_status nn_st_open(const char *path, nn_st_file_t **out, finch_err *err) {
  *out = NULL;
  nn_st_file_t *f = calloc(1, sizeof *f);
  if (!f || !(f->path = strdup(path))) {
    free(f);
    return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", path);
  }
  finch_status st = FINCH_OK;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    st = finch_err_set(err, errno == ENOENT ? FINCH_ENOTFOUND : FINCH_EIO, "%s: cannot open: %s", path,
                       strerror(errno));
    goto fail;
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    st = finch_err_set(err, FINCH_EIO, "%s: not a regular file", path);
    close(fd);
    goto fail;
  }
  f->size = (size_t)sb.st_size;
  if (f->size < 8) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: %zu bytes, too short for the 8-byte header length", path,
                       f->size);
    close(fd);
    goto fail;
  }
  void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  if (m == MAP_FAILED) {
    st = finch_err_set(err, FINCH_EIO, "%s: cannot map %zu bytes: %s", path, f->size, strerror(map_errno));
    goto fail;
  }
  f->map = m;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->map[i];
  if (hlen < 2 || hlen > NN_ST_MAX_HEADER) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: header length %llu outside [2, %u]", path,
                       (unsigned long long)hlen, NN_ST_MAX_HEADER);
    goto fail;
  }
  if (hlen > f->size - 8) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                       path, (unsigned long long)hlen, f->size);
    goto fail;
  }
  st = st__header(f, (size_t)hlen, err);
  if (st) goto fail;
  *out = f;
  return FINCH_OK;
fail:
  nn_st_close(f);
  return st;
}

const char *nn_st_path(const nn_st_file_t *f) { return f->path; }

size_t nn_st_count(const nn_st_file_t *f) { return f->n; }

const nn_st_tensor *nn_st_at(const nn_st_file_t *f, size_t i) { return i < f->n ? &f->tensors[i] : NULL; }

const nn_st_tensor *nn_st_find(const nn_st_file_t *f, const char *name) {
  for (size_t i = 0; i < f->n; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

/* Writes "[a, b, c]" into buf. */
static const char *st__shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t at = 0;
  at += (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && at < cap; i++)
    at += (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (at < cap) snprintf(buf + at, cap - at, "]");
  return buf;
}

finch_status nn_st_f32(const nn_st_file_t *f, const char *name, int ndim, const int64_t *want,
                       const float **data, const nn_st_tensor **tp, finch_err *err) {
  const nn_st_tensor *t = nn_st_find(f, name);
  if (!t) return finch_err_set(err, FINCH_ENOTFOUND, "%s: no tensor '%s'", f->path, name);
  if (t->dtype != NN_ST_F32)
    return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s' has dtype %s; only F32 is read", f->path, name,
                         st__dtypes[t->dtype].name);
  if (want) {
    int same = ndim == t->ndim;
    for (int i = 0; same && i < ndim; i++) same = want[i] == t->shape[i];
    if (!same) {
      char a[160], b[160];
      return finch_err_set(err, FINCH_EFORMAT, "%s: tensor '%s' has shape %s, expected %s", f->path, name,
                           st__shape_str(a, sizeof a, t->ndim, t->shape), st__shape_str(b, sizeof b, ndim, want));
    }
  }
  *data = t->data;
  if (tp) *tp = t;
  return FINCH_OK;
}

const char *nn_st_metadata(const nn_st_file_t *f, const char *key) {
  return f->meta ? json_string_value(json_object_get(f->meta, key)) : NULL;
}
