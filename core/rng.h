/* A small seeded generator (splitmix64) for splits and augmentation: the
 * same seed gives the same stream on every platform. */
#ifndef FINCH_CORE_RNG_H
#define FINCH_CORE_RNG_H

#include <stdint.h>

typedef struct {
  uint64_t s;
} finch_rng;

static inline uint64_t finch_rng_next(finch_rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double finch_rng_uniform(finch_rng *r) { return (double)(finch_rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform in [0, n); n > 0. */
static inline uint64_t finch_rng_below(finch_rng *r, uint64_t n) { return finch_rng_next(r) % n; }

#endif
