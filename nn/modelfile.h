/* The finch model file, version 1: one self-checking file per model.
 *
 * All integers and floats are little-endian; every block starts at a
 * multiple of 8 bytes from the start of the file.
 *
 *   offset 0   file header       nn_file_header, 64 bytes
 *   offset 64  sections          n_sections times:
 *                                  nn_section_header, 16 bytes
 *                                  body, size bytes
 *                                  zero padding to a multiple of 8
 *   end - 32   trailer           SHA-256 (32 bytes) of every byte before it
 *
 * nn_file_header (64 bytes)
 *   magic[8]      "FINCHNN\0"
 *   version       u32, 1 (NN_FILE_VERSION); a reader refuses other versions
 *   header_size   u32, 64
 *   file_size     u64, bytes in the whole file, trailer included; a shorter
 *                 file is reported as truncated before the checksum is read
 *   n_sections    u32
 *   flags         u32, 0
 *   reserved[32]  zero
 *
 * nn_section_header (16 bytes)
 *   tag[8]  ASCII, NUL-padded: one of the tags below; a reader skips tags
 *           it does not know
 *   size    u64, body bytes, padding excluded
 *
 * Sections, written in this order (each at most once):
 *   "CONFIG"  nn_file_config (64 bytes): the nn_train_config the model was
 *             trained with, field by field (u32 dim, hidden, buckets, minn,
 *             maxn, word_ngrams, min_count, epochs, batch; f32 lr,
 *             weight_decay, warmup, label_smoothing, dropout; u64 seed).
 *   "ARCH"    nn_file_arch (32 bytes): name[8] "bow"; u32 rows (= n_words +
 *             buckets), dim, hidden, n_labels, n_words; u32 reserved 0.
 *   "VOCAB"   u32 count, then count strings, each u32 length + UTF-8 bytes
 *             (no NUL); string i is the word of embedding row i.
 *   "LABELS"  the same string list: label i's name.
 *   "META"    UTF-8 JSON object text (no NUL), from nn_model_set_meta.
 *   "TENSOR"  one per tensor: nn_file_tensor (48 bytes): name[16]
 *             NUL-padded, u32 dtype (0 F32, 1 Q8), u32 n_dims (1 or 2),
 *             u64 shape[2] (shape[1] = 1 for a vector), u64 reserved 0;
 *             then the data of a (rows, cols) = (shape[0], shape[1]) matrix:
 *               F32: rows*cols f32, row-major;
 *               Q8:  rows f32 scales, then rows*cols int8, row-major, where
 *                    x[r][c] ~= q[r][c] * scale[r] (symmetric per row).
 *             Tensors: "emb" (rows,dim); "W1" (hidden,dim), "b1" (hidden),
 *             only when hidden > 0; "W2" (n_labels, hidden or dim);
 *             "b2" (n_labels). Weight matrices are F32 or Q8, biases F32.
 *
 * A reader checks, in order: magic, version, header size, file size against
 * the file (truncation), the SHA-256 trailer (FINCH_ECHECKSUM), then each
 * section's bounds and the shapes against ARCH (FINCH_EFORMAT). */
#ifndef FINCH_NN_MODELFILE_H
#define FINCH_NN_MODELFILE_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "nn/modelfile.c writes its structs as they lie in memory: little-endian hosts only"
#endif

#define NN_FILE_MAGIC "FINCHNN"
#define NN_FILE_VERSION 1u

typedef struct {
  char magic[8];
  uint32_t version;
  uint32_t header_size;
  uint64_t file_size;
  uint32_t n_sections;
  uint32_t flags;
  uint8_t reserved[32];
} nn_file_header;
_Static_assert(sizeof(nn_file_header) == 64, "nn_file_header is 64 bytes");

typedef struct {
  char tag[8];
  uint64_t size;
} nn_section_header;
_Static_assert(sizeof(nn_section_header) == 16, "nn_section_header is 16 bytes");

typedef struct {
  uint32_t dim, hidden, buckets, minn, maxn, word_ngrams, min_count, epochs, batch;
  float lr, weight_decay, warmup, label_smoothing, dropout;
  uint64_t seed;
} nn_file_config;
_Static_assert(sizeof(nn_file_config) == 64, "nn_file_config is 64 bytes");

typedef struct {
  char name[8];
  uint32_t rows, dim, hidden, n_labels, n_words, reserved;
} nn_file_arch;
_Static_assert(sizeof(nn_file_arch) == 32, "nn_file_arch is 32 bytes");

typedef struct {
  char name[16];
  uint32_t dtype;
  uint32_t n_dims;
  uint64_t shape[2];
  uint64_t reserved;
} nn_file_tensor;
_Static_assert(sizeof(nn_file_tensor) == 48, "nn_file_tensor is 48 bytes");

/* ---- the container, internal to nn/ --------------------------------------
 * Every model file is written through one growable byte buffer (nn_buf) and
 * one section writer (nn_file_writer); the architectures (nn/model_impl.h)
 * write and read only their section bodies. */

/* A growable byte buffer. A failed allocation is recorded in failed and
 * turns later writes into no-ops, so a writer checks once at the end. */
typedef struct {
  unsigned char *p;
  size_t n, cap;
  int failed;
} nn_buf;

void nn_buf_put(nn_buf *b, const void *p, size_t n);
/* Appends n bytes for the caller to fill; NULL when out of memory. */
void *nn_buf_reserve(nn_buf *b, size_t n);
void nn_buf_u32(nn_buf *b, uint32_t v);
/* Zero bytes up to the next multiple of 8 of b->n. */
void nn_buf_pad8(nn_buf *b);
/* A string list: u32 count, then per string u32 length and its bytes. */
void nn_buf_strings(nn_buf *b, const char *const *s, size_t n);
void nn_buf_free(nn_buf *b);

/* A model file being written: the header, then sections, each opened with
 * nn__file_section_begin and closed with nn__file_section_end (which writes
 * its size and padding), then nn__file_end (the header's counts and the
 * SHA-256 trailer). */
typedef struct {
  nn_buf b;
  uint32_t n_sections;
  size_t open; /* offset of the open section's header */
} nn_file_writer;

void nn__file_begin(nn_file_writer *w);
void nn__file_section_begin(nn_file_writer *w, const char *tag);
void nn__file_section_end(nn_file_writer *w);
/* A whole section from one buffer. */
void nn__file_section(nn_file_writer *w, const char *tag, const void *data, size_t size);
/* Finishes the file and hands its bytes to *buf (malloc'd, *len bytes);
 * FINCH_ENOMEM when any write ran out of memory. Releases w either way. */
finch_status nn__file_end(nn_file_writer *w, unsigned char **buf, size_t *len, finch_err *err);

/* One section of a file in memory. */
typedef struct {
  char tag[8];
  const void *data;
  size_t size;
} nn_blob;

/* Checks magic, version, sizes and the checksum of a whole file in buf. */
finch_status nn__file_verify(const unsigned char *buf, size_t size, const char *path, finch_err *err);
/* Lists the sections of a verified buffer (pointers into buf); *secs is malloc'd. */
finch_status nn__file_sections(const unsigned char *buf, size_t size, const char *path, nn_blob **secs,
                               size_t *n, finch_err *err);
/* The first section tagged tag, or NULL. */
const nn_blob *nn__file_find(const nn_blob *secs, size_t n, const char *tag);
/* A string list section (u32 count, then u32 length + bytes each) as one
 * allocation: count pointers then the NUL-terminated strings. NULL with *why
 * on a malformed list. */
char **nn__read_strings(const void *data, size_t size, uint32_t *count, const char **why);

/* Reads the whole file at path into a malloc'd buffer. */
finch_status nn__file_read(const char *path, unsigned char **buf, size_t *size, finch_err *err);
/* Writes buf to path through a temporary file in the same directory and a
 * rename, so readers see the old file or the whole new one. */
finch_status nn__file_write_atomic(const char *path, const unsigned char *buf, size_t len, finch_err *err);
/* The lowercase hex SHA-256 of buf (65 bytes with the NUL). */
void nn__sha256_hex(const unsigned char *buf, size_t len, char *hex);

/* The Q8 reference: scale = max|x| / 127 (0 for an all-zero row),
 * q = round(x / scale). x (n); q (n). */
void nn_q8_quantize_row_ref(const float *x, size_t n, int8_t *q, float *scale);
/* x (n) = q (n) * scale. */
void nn_q8_dequantize_row_ref(const int8_t *q, float scale, size_t n, float *x);

#endif
