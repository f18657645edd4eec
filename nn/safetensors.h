/* Reading safetensors files: the weights of pretrained Hugging Face models.
 *
 * The format (https://github.com/huggingface/safetensors), byte by byte:
 *
 *   offset 0      N        u64 little-endian: bytes in the JSON header
 *   offset 8      header   N bytes of UTF-8 JSON, possibly padded with spaces
 *   offset 8 + N  data     the tensors' bytes, back to back, to the end of file
 *
 * The header is one JSON object. Each member but "__metadata__" is a tensor:
 *
 *   "encoder.layer.0.attention.self.query.weight": {
 *     "dtype": "F32",                  one of the names in nn_st_dtype below
 *     "shape": [384, 384],             non-negative integers, [] for a scalar
 *     "data_offsets": [begin, end]     byte offsets into the data section
 *   }
 *
 * "__metadata__", when present, is an object of string values (free text such
 * as {"format": "pt"}). Data are row-major and little-endian.
 *
 * nn_st_open checks, and fails with FINCH_EFORMAT naming the file and the
 * tensor or field, unless: the file holds at least 8 bytes; 2 <= N <= 100 MB
 * (the reference reader's bound) and 8 + N fits in the file; the header is a
 * JSON object without duplicate names; every tensor has a known dtype, a shape
 * of at most NN_ST_MAX_DIMS dimensions and integer data_offsets with
 * begin <= end; end - begin = product(shape) * dtype size (without overflow);
 * and the tensors, taken in the order of their offsets, cover the data section
 * exactly: each begins where the one before ends (no overlap, no gap) and the
 * last ends at the end of the file (a truncated or padded file is refused).
 *
 * The file is mapped read-only and stays mapped until nn_st_close; every
 * pointer handed out points into the mapping (or, for a tensor whose bytes are
 * not aligned to its element size in the file, into an aligned copy owned by
 * the handle) and is invalid after nn_st_close. A handle is read-only after
 * nn_st_open: any number of threads may read it at once. */
#ifndef FINCH_NN_SAFETENSORS_H
#define FINCH_NN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "nn/safetensors.c hands out views of little-endian data: little-endian hosts only"
#endif

#define NN_ST_MAX_DIMS 8
/* The reference implementation refuses larger headers; so does this one. */
#define NN_ST_MAX_HEADER 100000000u

/* Every dtype the format defines. Only F32 can be read as floats today; the
 * others are recognised (and their bounds checked) so that a file holding
 * them, such as the I64 position ids in BERT checkpoints, still opens. */
typedef enum {
  NN_ST_BOOL,
  NN_ST_U8,
  NN_ST_I8,
  NN_ST_F8_E5M2,
  NN_ST_F8_E4M3,
  NN_ST_I16,
  NN_ST_U16,
  NN_ST_F16,
  NN_ST_BF16,
  NN_ST_I32,
  NN_ST_U32,
  NN_ST_F32,
  NN_ST_I64,
  NN_ST_U64,
  NN_ST_F64,
  NN_ST_N_DTYPES
} nn_st_dtype;

typedef struct {
  const char *name;    /* NUL-terminated, owned by the handle */
  nn_st_dtype dtype;
  int ndim;            /* 0 for a scalar */
  int64_t shape[NN_ST_MAX_DIMS];
  size_t numel;        /* product of shape (1 for a scalar) */
  size_t nbytes;       /* numel * nn_st_dtype_size(dtype) */
  size_t offset;       /* of the data in the file (8 + N + begin) */
  const void *data;    /* nbytes, aligned to the element size */
} nn_st_tensor;

/* An open file: opaque, released by nn_st_close. */
typedef struct nn_st_file nn_st_file_t;

/* Maps path and validates it (see above). On success *out is a handle the
 * caller releases with nn_st_close; on failure *out is NULL and err names the
 * file and what is wrong (FINCH_ENOTFOUND when it does not exist, FINCH_EIO
 * when it cannot be read, FINCH_EFORMAT when it is malformed, FINCH_ENOMEM). */
finch_status nn_st_open(const char *path, nn_st_file_t **out, finch_err *err);
void nn_st_close(nn_st_file_t *f); /* NULL is harmless */

const char *nn_st_path(const nn_st_file_t *f);

/* The tensors in the order of their data in the file; i < nn_st_count. */
size_t nn_st_count(const nn_st_file_t *f);
const nn_st_tensor *nn_st_at(const nn_st_file_t *f, size_t i);

/* The tensor called name, or NULL when the file has none. */
const nn_st_tensor *nn_st_find(const nn_st_file_t *f, const char *name);

/* The F32 tensor called name as a float view of its numel elements.
 * want (ndim entries) is the shape the caller expects, or NULL to accept any:
 * on a mismatch the error gives both shapes. Fails with FINCH_ENOTFOUND when
 * the tensor is absent and FINCH_EFORMAT when its dtype is not F32 or its
 * shape differs, naming the file and the tensor. *t (if non-NULL) receives
 * the tensor's record. */
finch_status nn_st_f32(const nn_st_file_t *f, const char *name, int ndim, const int64_t *want,
                       const float **data, const nn_st_tensor **t, finch_err *err);

/* The string value of key in "__metadata__", or NULL. */
const char *nn_st_metadata(const nn_st_file_t *f, const char *key);

/* "F32" etc.; NULL outside the enum. */
const char *nn_st_dtype_name(nn_st_dtype d);
/* Bytes per element; 0 outside the enum. */
size_t nn_st_dtype_size(nn_st_dtype d);

#endif
