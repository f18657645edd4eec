/* A string table: interns byte strings and numbers them densely.
 *
 * Contract.
 * - Keys are byte strings of 0 .. UINT32_MAX - 1 bytes compared by length
 *   and bytes; they may hold NUL bytes, and the empty key is a key (a key or
 *   key part of 0 bytes may be passed as NULL). The table copies each key it
 *   stores; the caller keeps its own buffers.
 * - Entry indices are dense and stable: the i-th distinct key added gets
 *   index i and keeps it for the table's lifetime (nothing is ever removed),
 *   so callers keep per-entry data in arrays indexed by it, or in the table's
 *   own per-entry value (val_size bytes, zeroed when the entry is created).
 * - nn_strtab_key(t, i) points into the table, NUL-terminated after its
 *   nn_strtab_len(t, i) bytes. It and nn_strtab_val(t, i) stay valid until
 *   the next add or the free: adding may move both the keys and the values.
 *   A key passed to an add must therefore not point into the same table.
 * - Lookups never allocate; a table that is only read (finds and accessors)
 *   may be shared between threads.
 *
 * Inside. Keys sit back to back in one arena; slots[] holds index + 1 (0 is
 * empty) in a power-of-two array probed linearly from the key's hash, kept at
 * most half full. The hash, internal and never stored outside the table, is
 * 64-bit FNV-1a over the key's bytes followed by splitmix64's finaliser
 * (FNV-1a's low bits alone are weak for a mask). */
#ifndef FINCH_NN_STRTAB_H
#define FINCH_NN_STRTAB_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Zero-initialised ({0}) is an empty table without values; nn_strtab_init
 * gives one with values. The fields are the implementation's: use the
 * functions below. */
typedef struct {
  char *arena; /* keys back to back, each followed by a NUL */
  size_t alen, acap;
  size_t *off;         /* (n) key i is arena + off[i] */
  uint32_t *len;       /* (n) */
  uint64_t *hash;      /* (n) */
  unsigned char *vals; /* (n * val_size) */
  size_t val_size;
  size_t n, ncap;
  uint32_t *slots; /* (cap) index + 1, 0 = empty; cap a power of two */
  size_t cap;
} nn_strtab;

/* An empty table whose entries each carry val_size bytes of value (0: none).
 * Values are aligned as malloc aligns when val_size is a multiple of the
 * value type's size (e.g. sizeof a struct). */
void nn_strtab_init(nn_strtab *t, size_t val_size);
/* Releases everything the table holds and leaves it empty (as init with the
 * same val_size). */
void nn_strtab_free(nn_strtab *t);

/* Lookups run per token and per n-gram, so the hash, the probe and the find
 * are inline below; nn_strtab__* are internal (shared with nn/strtab.c). */

static inline uint64_t nn_strtab__fnv1a(uint64_t h, const void *p, size_t len) {
  const unsigned char *s = p;
  for (size_t i = 0; i < len; i++) h = (h ^ s[i]) * 0x100000001b3ULL;
  return h;
}

/* The hash of head then tail: FNV-1a 64, then splitmix64's finaliser. */
static inline uint64_t nn_strtab__hash2(const void *head, size_t hlen, const void *tail, size_t tlen) {
  uint64_t z = nn_strtab__fnv1a(nn_strtab__fnv1a(0xcbf29ce484222325ULL, head, hlen), tail, tlen);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Slot holding the key (hash h), or the empty slot where it would go; the
 * table has slots. The head, a short prefix, is compared byte by byte
 * (cheaper than a memcmp call per hit); memcmp is skipped for an empty tail,
 * whose pointer may be NULL. */
static inline size_t nn_strtab__probe(const nn_strtab *t, const char *head, size_t hlen, const char *tail,
                                      size_t tlen, uint64_t h) {
  size_t mask = t->cap - 1, i = (size_t)h & mask;
  for (;;) {
    uint32_t s = t->slots[i];
    if (s == 0) return i;
    size_t k = s - 1;
    if (t->hash[k] == h && t->len[k] == hlen + tlen) {
      const char *x = t->arena + t->off[k];
      size_t j = 0;
      while (j < hlen && x[j] == head[j]) j++;
      if (j == hlen && (tlen == 0 || memcmp(x + hlen, tail, tlen) == 0)) return i;
    }
    i = (i + 1) & mask;
  }
}

/* The hash the table probes with (see the top of this file). */
static inline uint64_t nn_strtab_hash(const void *key, size_t len) { return nn_strtab__hash2(NULL, 0, key, len); }

/* Index of the key head[0..hlen) followed by tail[0..tlen) (the two are one
 * key, as if concatenated: a caller with a short fixed prefix, such as a tag,
 * passes it as head and need not copy the key), or -1 when absent. */
static inline int64_t nn_strtab_find2(const nn_strtab *t, const void *head, size_t hlen, const void *tail,
                                      size_t tlen) {
  if (t->cap == 0) return -1;
  uint32_t s = t->slots[nn_strtab__probe(t, head, hlen, tail, tlen, nn_strtab__hash2(head, hlen, tail, tlen))];
  return s ? (int64_t)(s - 1) : -1;
}
/* Index of that key, added at index nn_strtab_size(t) when absent.
 * *added (may be NULL) is 1 when it was added, else 0. Returns -1, the table
 * unchanged, when memory runs out, the key is too long or the table already
 * holds UINT32_MAX - 1 keys. */
int64_t nn_strtab_add2(nn_strtab *t, const void *head, size_t hlen, const void *tail, size_t tlen, int *added);

static inline int64_t nn_strtab_find(const nn_strtab *t, const void *key, size_t len) {
  return nn_strtab_find2(t, NULL, 0, key, len);
}
static inline int64_t nn_strtab_add(nn_strtab *t, const void *key, size_t len, int *added) {
  return nn_strtab_add2(t, NULL, 0, key, len, added);
}

/* Number of keys; indices are 0 .. size - 1. */
static inline size_t nn_strtab_size(const nn_strtab *t) { return t->n; }
/* Key i, NUL-terminated; valid until the next add. */
static inline const char *nn_strtab_key(const nn_strtab *t, size_t i) { return t->arena + t->off[i]; }
static inline size_t nn_strtab_len(const nn_strtab *t, size_t i) { return t->len[i]; }
/* Entry i's value (val_size bytes), NULL without values; valid until the
 * next add. */
static inline void *nn_strtab_val(const nn_strtab *t, size_t i) {
  return t->val_size ? t->vals + i * t->val_size : NULL;
}
/* All values as one array, entry i's at byte i * val_size (so a typed
 * pointer indexes it by entry), NULL while empty; valid until the next add. */
static inline void *nn_strtab_vals(const nn_strtab *t) { return t->vals; }

#endif
