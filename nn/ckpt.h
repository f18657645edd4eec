/* Training checkpoints on disk, for every trainer in nn/ (nn/tfm_train.c,
 * nn/bert_train.c). A file is the trainer's parts written in order (its
 * header first: magic, version, sizes, a hash of the run's configuration),
 * then the 32-byte SHA-256 of everything before it. Writing goes through a
 * temporary file in the same directory that is fsync'd and renamed over the
 * old checkpoint, so a crash leaves the previous checkpoint or the new one,
 * never half of one. What the parts mean, and whether a file belongs to the
 * run reading it, is the trainer's to check. */
#ifndef FINCH_NN_CKPT_H
#define FINCH_NN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
  const void *p;
  size_t n; /* bytes; 0 = nothing */
} nn_ckpt_part;

/* Writes the n parts and their SHA-256 to path, atomically (above).
 * FINCH_EIO naming path; FINCH_ENOMEM. */
finch_status nn_ckpt_write(const char *path, const nn_ckpt_part *parts, size_t n, finch_err *err);

/* Reads path whole into *buf (malloc'd, the caller frees it; NULL on error)
 * when it is exactly want bytes, trailer included, and the trailer is the
 * SHA-256 of the rest. FINCH_ENOTFOUND (cannot open), FINCH_EFORMAT (another
 * size: another run's checkpoint), FINCH_ECHECKSUM (corrupt), FINCH_EIO,
 * FINCH_ENOMEM; each names path. */
finch_status nn_ckpt_read(const char *path, size_t want, unsigned char **buf, finch_err *err);

/* FNV-1a over n bytes from h: what the trainers hash their run's
 * configuration with (start from 0xcbf29ce484222325). */
static inline uint64_t nn_ckpt_fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ULL;
  return h;
}

#endif
