/* A small synthetic intent task shared by the nn tests: each of N_CLASSES
 * labels has its own keywords, mixed into random filler words, so a bag of
 * words separates the classes perfectly. Deterministic for a given seed. */
#ifndef FINCH_TESTS_NN_SYNTH_H
#define FINCH_TESTS_NN_SYNTH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/rng.h"

enum { SYNTH_CLASSES = 4 };

static const char *const synth_labels[SYNTH_CLASSES] = {"card_arrival", "pin_blocked", "top_up", "exchange_rate"};
static const char *const synth_keys[SYNTH_CLASSES][4] = {
    {"delivery", "arrive", "post", "shipping"},
    {"pin", "blocked", "locked", "code"},
    {"topup", "deposit", "funds", "balance"},
    {"rate", "euro", "dollar", "convert"}};
static const char *const synth_filler[] = {"i", "my", "the", "please", "help", "why", "is", "it",
                                           "can", "you", "what", "still", "not", "yet", "today",
                                           "again", "how", "do", "a", "with"};

typedef struct {
  char **texts;
  int32_t *labels;
  size_t n;
} synth_set;

static void synth_make(synth_set *s, size_t n, uint64_t seed) {
  nn_rng r;
  nn_rng_seed(&r, seed, 0);
  s->n = n;
  s->texts = malloc(n * sizeof(char *));
  s->labels = malloc(n * sizeof(int32_t));
  const size_t nf = sizeof synth_filler / sizeof *synth_filler;
  for (size_t i = 0; i < n; i++) {
    int c = (int)(i % SYNTH_CLASSES);
    char buf[256] = "";
    int words = 4 + (int)nn_rng_below(&r, 4), key_at = (int)nn_rng_below(&r, (uint64_t)words);
    for (int k = 0; k < words; k++) {
      const char *w = k == key_at ? synth_keys[c][nn_rng_below(&r, 4)] : synth_filler[nn_rng_below(&r, nf)];
      if (k) strcat(buf, " ");
      strcat(buf, w);
    }
    s->texts[i] = strdup(buf);
    s->labels[i] = c;
  }
}

static void synth_free(synth_set *s) {
  for (size_t i = 0; i < s->n; i++) free(s->texts[i]);
  free(s->texts);
  free(s->labels);
}

/* A configuration small enough to train in well under a second. */
static nn_train_config synth_config(uint32_t hidden) {
  nn_train_config c = nn_train_config_teacher();
  c.dim = 16;
  c.hidden = hidden;
  c.buckets = 2048;
  c.maxn = 4;
  c.epochs = 6;
  c.batch = 16;
  c.lr = 1e-2f;
  c.seed = 5;
  return c;
}

#endif
