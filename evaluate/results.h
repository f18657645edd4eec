/* The "results" section of an evaluation report: one JSON object built from
 * the rows' gold and predicted labels (and the model's probabilities when it
 * has them) by the functions of evaluate/metrics.h and evaluate/stats.h.
 *
 * The object is deterministic: the same input and seed give the same
 * json_dumps(JSON_SORT_KEYS) bytes; it holds no time stamp, and every number
 * in it is finite (an undefined figure is null). Its keys:
 *
 *   n                 rows evaluated
 *   accuracy          {value, ci95: [lo, hi]}: the share of rows with
 *                     pred == gold and its 95% percentile bootstrap interval
 *                     (finch_stats_bootstrap)
 *   macro_f1          {value, ci95: [lo, hi]}: finch_macro_f1, the same way
 *   bootstrap         {resamples, seed}: how the intervals were drawn; seed
 *                     as a decimal string (it is a 64-bit unsigned number)
 *   per_intent        [{label, precision, recall, f1, support, predicted}],
 *                     one per label in label order (finch_label_prf)
 *   confusion         {labels: [C names], matrix: C rows of C counts}; row
 *                     is the gold label, column the predicted one
 *   most_confused     [{gold, pred, gold_index, pred_index, count}]: the
 *                     top_pairs off-diagonal cells with the highest counts
 *                     above 0, by count, then gold index, then pred index
 *                     (finch_stats_most_confused); gold and pred are names
 *   calibration       only when probs is given: {n_bins, bins, ece,
 *                     temperature, ece_after, bins_after}; a row's
 *                     confidence is its largest probability; bins and
 *                     bins_after are n_bins (15) entries {lo, hi, count,
 *                     confidence, accuracy} before and after re-tempering
 *                     at the temperature that minimises the rows' NLL
 *                     (finch_stats_calibration: fitted on these rows, so
 *                     ece_after is in-sample)
 *   coverage_curve    only when probs is given: 20 points {threshold,
 *                     answered, coverage, accuracy} at thresholds j / 20,
 *                     j = 0 .. 19: a row is answered when its largest
 *                     probability is at or above the threshold; accuracy is
 *                     among answered rows, null when none is */
#ifndef FINCH_EVALUATE_RESULTS_H
#define FINCH_EVALUATE_RESULTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define FINCH_RESULTS_TOP_PAIRS 10
#define FINCH_RESULTS_CURVE_POINTS 20

typedef struct {
  const int32_t *gold;        /* n, each in [0, C) */
  const int32_t *pred;        /* n, each in [0, C) */
  const float *probs;         /* (n, C) at temperature 1, each finite in [0, 1]; may be NULL */
  size_t n, C;
  const char *const *labels;  /* C names, valid UTF-8 */
  unsigned long long seed;    /* of the bootstrap */
  int bootstrap;              /* resamples, 0 = 1000 */
  int top_pairs;              /* most-confused pairs kept, 0 = 10 */
} finch_results_in;

/* Builds the object above into *out (the caller json_decrefs it; NULL on
 * error). FINCH_EINVAL names the field and row of malformed input: no rows,
 * no labels, a label outside [0, C), a missing or invalid label name, a
 * probability not in [0, 1], a negative count of resamples or pairs.
 * FINCH_ENOMEM when out of memory. */
finch_status finch_results_json(const finch_results_in *in, json_t **out, finch_err *err);

#endif
