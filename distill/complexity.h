/* Input complexity, for weighting the teacher's soft labels per example.
 *
 *   c(x) = 0.4 * lexical diversity + 0.3 * syntactic complexity + 0.3 * domain specificity
 *
 * Each term is a raw statistic scaled to [0,1] on the training corpus
 * (its 5th percentile maps to 0, its 95th to 1, values outside are clipped):
 *   lexical diversity     Guiraud's root type-token ratio, types / sqrt(tokens):
 *                         a type-token ratio corrected for length;
 *   syntactic complexity  log(1 + tokens) + clause markers (and, but, because,
 *                         if, when, which, ...) + negations (not, n't, never,
 *                         no, ...) + 0.5 per punctuation mark;
 *   domain specificity    share of the tokens whose relative frequency in the
 *                         finance corpus is at least 4 times that in the
 *                         general corpus (add-one smoothed); 0 when no general
 *                         corpus is given.
 * Tokens are the lower-cased runs of letters, digits and apostrophes. */
#ifndef FINCH_DISTILL_COMPLEXITY_H
#define FINCH_DISTILL_COMPLEXITY_H

#include <stddef.h>

#include "core/status.h"

typedef struct {
  double lexical, syntactic, domain; /* each in [0,1] */
  double c;
} finch_complexity;

typedef struct finch_complexity_model finch_complexity_model;

/* Fits the scaling (and the finance/general frequency ratios) on texts;
 * general may be NULL with ng = 0. */
finch_status finch_complexity_fit(finch_complexity_model **out, const char *const *texts, size_t n,
                                  const char *const *general, size_t ng, finch_err *err);
void finch_complexity_score(const finch_complexity_model *m, const char *text, finch_complexity *out);
void finch_complexity_free(finch_complexity_model *m);

/* The soft-label weight of a complexity: alpha_low up to c = knee, then
 * rising linearly to alpha_high at c = 1 (monotone non-decreasing). */
typedef struct {
  double alpha_low, knee, alpha_high;
} finch_alpha_map;

#define FINCH_ALPHA_MAP_DEFAULT ((finch_alpha_map){0.4, 0.3, 0.7})

double finch_complexity_alpha(double c, const finch_alpha_map *map);

#endif
