/* String table; the contract is in nn/strtab.h. */
#include "nn/strtab.h"

#include <stdlib.h>
#include <string.h>

enum { MIN_SLOTS = 64, MIN_ENTRIES = 64, MIN_ARENA = 1024 };

void nn_strtab_init(nn_strtab *t, size_t val_size) {
  memset(t, 0, sizeof *t);
  t->val_size = val_size;
}

void nn_strtab_free(nn_strtab *t) {
  size_t val_size = t->val_size;
  free(t->arena);
  free(t->off);
  free(t->len);
  free(t->hash);
  free(t->vals);
  free(t->slots);
  nn_strtab_init(t, val_size);
}

static int rehash(nn_strtab *t, size_t cap) {
  uint32_t *slots = calloc(cap, sizeof *slots);
  if (!slots) return -1;
  free(t->slots);
  t->slots = slots;
  t->cap = cap;
  for (size_t k = 0; k < t->n; k++) {
    size_t i = (size_t)t->hash[k] & (cap - 1);
    while (slots[i]) i = (i + 1) & (cap - 1);
    slots[i] = (uint32_t)(k + 1);
  }
  return 0;
}

/* Room for one more entry in the per-entry arrays. */
static int reserve_entry(nn_strtab *t) {
  if (t->n < t->ncap) return 0;
  size_t nc = t->ncap ? t->ncap * 2 : MIN_ENTRIES;
  size_t *off = realloc(t->off, nc * sizeof *off);
  if (!off) return -1;
  t->off = off;
  uint32_t *len = realloc(t->len, nc * sizeof *len);
  if (!len) return -1;
  t->len = len;
  uint64_t *hash = realloc(t->hash, nc * sizeof *hash);
  if (!hash) return -1;
  t->hash = hash;
  if (t->val_size) {
    unsigned char *vals = realloc(t->vals, nc * t->val_size);
    if (!vals) return -1;
    t->vals = vals;
  }
  t->ncap = nc;
  return 0;
}

static int reserve_arena(nn_strtab *t, size_t need) {
  if (t->alen + need <= t->acap) return 0;
  size_t ac = t->acap ? t->acap : MIN_ARENA;
  while (ac < t->alen + need) ac *= 2;
  char *a = realloc(t->arena, ac);
  if (!a) return -1;
  t->arena = a;
  t->acap = ac;
  return 0;
}

int64_t nn_strtab_add2(nn_strtab *t, const void *head, size_t hlen, const void *tail, size_t tlen, int *added) {
  if (added) *added = 0;
  if (hlen >= UINT32_MAX || tlen >= UINT32_MAX - hlen) return -1;
  if ((t->n + 1) * 2 > t->cap && rehash(t, t->cap ? t->cap * 2 : MIN_SLOTS) != 0) return -1;
  uint64_t h = nn_strtab__hash2(head, hlen, tail, tlen);
  size_t slot = nn_strtab__probe(t, head, hlen, tail, tlen, h);
  if (t->slots[slot]) return (int64_t)(t->slots[slot] - 1);
  size_t len = hlen + tlen;
  if (t->n >= UINT32_MAX - 1 || reserve_entry(t) != 0 || reserve_arena(t, len + 1) != 0) return -1;
  char *x = t->arena + t->alen;
  if (hlen) memcpy(x, head, hlen);
  if (tlen) memcpy(x + hlen, tail, tlen);
  x[len] = '\0';
  size_t k = t->n++;
  t->off[k] = t->alen;
  t->len[k] = (uint32_t)len;
  t->hash[k] = h;
  if (t->val_size) memset(t->vals + k * t->val_size, 0, t->val_size);
  t->alen += len + 1;
  t->slots[slot] = (uint32_t)(k + 1);
  if (added) *added = 1;
  return (int64_t)k;
}
