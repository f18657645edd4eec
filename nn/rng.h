/* Seeded pseudo-random numbers for initialisation, dropout and shuffling.
 *
 * xoshiro256** seeded through splitmix64 (Blackman & Vigna). The sequence
 * depends only on the seed, so a training run on the CPU is bit-reproducible.
 * Header-only: every function is static inline and the state is the caller's. */
#ifndef FINCH_NN_RNG_H
#define FINCH_NN_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
  uint64_t s[4];
} nn_rng;

static inline uint64_t nn_splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Distinct streams (init, dropout, shuffling) come from distinct stream ids,
 * so changing how many numbers one consumer draws leaves the others alone. */
static inline void nn_rng_seed(nn_rng *r, uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * 0xd1342543de82ef95ULL);
  for (int i = 0; i < 4; i++) r->s[i] = nn_splitmix64(&x);
}

static inline uint64_t nn_rng_next(nn_rng *r) {
  uint64_t *s = r->s;
  uint64_t x = s[1] * 5;
  uint64_t result = ((x << 7) | (x >> 57)) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = (s[3] << 45) | (s[3] >> 19);
  return result;
}

/* Uniform in [0,1) with 24 bits, exactly representable as a float. */
static inline float nn_rng_uniform(nn_rng *r) {
  return (float)(nn_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* Uniform integer in [0,n), n > 0 (Lemire's multiply-shift; the bias is
 * below 2^-32 for the sizes used here). */
static inline uint64_t nn_rng_below(nn_rng *r, uint64_t n) {
  return (uint64_t)(((unsigned __int128)nn_rng_next(r) * n) >> 64);
}

/* Standard normal by Box-Muller (one of the pair is dropped: simple and the
 * init is not a hot path). */
static inline float nn_rng_normal(nn_rng *r) {
  double u1 = ((double)(nn_rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  double u2 = (double)(nn_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#endif
