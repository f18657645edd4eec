/* EDA edits (Wei & Zou 2019): random deletion and random swap of words.
 * Protected finance terms and placeholders are never deleted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment.h"
#include "augment/methods.h"
#include "core/rng.h"

#define EDA_MAX_WORDS 256
#define EDA_P_DELETE 0.1
#define EDA_N_SWAP 1

void finch_augment_eda(const char *text, unsigned long long stream, double p_delete, int n_swap, char *out) {
  finch_rng rng = {stream};
  size_t len = strlen(text);
  char *copy = malloc(len + 1);
  if (!copy) {
    memcpy(out, text, len + 1);
    return;
  }
  memcpy(copy, text, len + 1);
  char *words[EDA_MAX_WORDS];
  int keep_always[EDA_MAX_WORDS];
  int n = 0;
  /* Split on spaces, marking words inside a protected term. */
  size_t protect_until = 0;
  for (size_t i = 0; i < len && n < EDA_MAX_WORDS;) {
    while (i < len && copy[i] == ' ') i++;
    if (i >= len) break;
    size_t p = finch_aug_protected_at(text + i);
    if (i + p > protect_until) protect_until = i + p;
    words[n] = copy + i;
    keep_always[n] = i < protect_until;
    n++;
    while (i < len && copy[i] != ' ') i++;
    if (i < len) copy[i++] = '\0';
  }
  int keep[EDA_MAX_WORDS], nk = 0;
  for (int i = 0; i < n; i++)
    if (n == 1 || keep_always[i] || finch_rng_uniform(&rng) >= p_delete) keep[nk++] = i;
  if (nk == 0 && n > 0) keep[nk++] = (int)finch_rng_below(&rng, (uint64_t)n);
  for (int s = 0; s < n_swap && nk >= 2; s++) {
    int a = (int)finch_rng_below(&rng, (uint64_t)nk), b = (int)finch_rng_below(&rng, (uint64_t)nk);
    int t = keep[a];
    keep[a] = keep[b];
    keep[b] = t;
  }
  size_t o = 0;
  for (int i = 0; i < nk; i++) {
    size_t wl = strlen(words[keep[i]]);
    if (i) out[o++] = ' ';
    memcpy(out + o, words[keep[i]], wl);
    o += wl;
  }
  out[o] = '\0';
  free(copy);
}

static finch_status eda_open(void **state, finch_err *err) {
  (void)err;
  *state = NULL;
  return FINCH_OK;
}

static void eda_close(void *state) { (void)state; }

static int eda_apply(const void *state, const char *text, uint64_t stream, char *out, size_t cap, char *params,
                     size_t params_cap) {
  (void)state;
  if (strlen(text) + 1 > cap) return 0;
  finch_augment_eda(text, stream, EDA_P_DELETE, EDA_N_SWAP, out);
  if (strcmp(out, text) == 0) return 0;
  snprintf(params, params_cap, "{\"p_delete\": %g, \"n_swap\": %d}", EDA_P_DELETE, EDA_N_SWAP);
  return 1;
}

const finch_aug_method finch_aug_eda = {"eda", eda_open, eda_close, eda_apply};
