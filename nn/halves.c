/* The holdout's two halves (nn/halves.h). */
#include "nn/halves.h"

#include <stdlib.h>
#include <string.h>

#include "nn/model.h"
#include "nn/rng.h"

void nn_split_halves(const int32_t *y, size_t n, size_t C, unsigned long long seed, uint8_t *half) {
  size_t *idx = malloc((n ? n : 1) * sizeof *idx);
  for (size_t i = 0; i < n; i++) half[i] = 1;
  if (!idx) { /* out of memory: alternate in row order, still deterministic */
    for (size_t i = 0; i < n; i++) half[i] = y[i] < 0 ? 1 : (uint8_t)(i & 1);
    return;
  }
  nn_rng rng;
  nn_rng_seed(&rng, seed, 0x5e1ec7);
  unsigned turn = 0;
  for (size_t c = 0; c < C; c++) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      if (y[i] == (int32_t)c) idx[k++] = i;
    for (size_t i = k; i > 1; i--) {
      size_t j = (size_t)nn_rng_below(&rng, i), t = idx[i - 1];
      idx[i - 1] = idx[j], idx[j] = t;
    }
    for (size_t i = 0; i < k; i++) half[idx[i]] = (uint8_t)(turn++ & 1);
  }
  free(idx);
}

void nn_model_holdout_halves(const struct nn_model *m, const char *const *labels, size_t n, const char *oos_label,
                             unsigned long long seed, uint8_t *half) {
  const size_t C = nn_model_n_labels(m);
  int32_t *y = malloc((n ? n : 1) * sizeof *y);
  if (!y) { /* out of memory: alternate in row order, still deterministic */
    for (size_t i = 0; i < n; i++) half[i] = (uint8_t)(i & 1);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    int li = labels[i] ? nn_model_label_index(m, labels[i]) : -1;
    y[i] = li >= 0 ? li : labels[i] && oos_label && !strcmp(labels[i], oos_label) ? (int32_t)C : -1;
  }
  nn_split_halves(y, n, C + 1, seed, half);
  free(y);
}
