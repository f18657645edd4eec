/* Out-of-scope figures of an evaluation, over plain arrays (one entry per row):
 *
 *   score[i]   the in-scope score of nn_abstain_decide (the best in-scope
 *              probability at the policy's temperature); higher = more in scope
 *   is_oos[i]  1 when the row's gold label is the out-of-scope label
 *   decided[i] the label answered, or -1 when the row was refused (abstained on)
 *   answer[i]  the label the model would answer with its threshold removed
 *              (-1 only when its explicit out-of-scope class wins): what the
 *              accuracy/coverage curve sweeps its thresholds over
 *   label[i]   the gold label index; only compared on in-scope rows, so any
 *              value that never equals a decided label (a label the model lacks)
 *              makes the row wrong
 *
 * In-scope rows are the positives of the AUROC and the FPR; refusals are the
 * positives of out-of-scope recall and precision. A figure whose denominator
 * is empty (no out-of-scope rows for the recall, no refusal for the precision,
 * either class empty for the AUROC and the FPR) is NaN: undefined, not zero. */
#ifndef FINCH_EVALUATE_OOS_H
#define FINCH_EVALUATE_OOS_H

#include <stddef.h>

/* The share of in-scope rows the FPR figure keeps above its threshold. */
#define FINCH_OOS_KEEP_IN_SCOPE 0.95

typedef struct {
  long long n_in, n_oos;     /* in-scope and out-of-scope rows */
  long long in_answered;     /* in-scope rows answered (not refused) */
  long long in_correct;      /* in-scope rows answered with their gold label */
  long long oos_refused;     /* out-of-scope rows refused: true positives */
  long long in_refused;      /* in-scope rows refused: false positives */
  double in_accuracy;        /* in_correct / n_in: a refusal of an in-scope row is wrong */
  double in_coverage;        /* in_answered / n_in */
  double oos_recall;         /* oos_refused / n_oos */
  double oos_precision;      /* oos_refused / (oos_refused + in_refused) */
  double auroc;              /* finch_oos_auroc */
  double fpr_at_95;          /* finch_oos_fpr_at_keep at FINCH_OOS_KEEP_IN_SCOPE */
  double threshold_at_95;    /* the score threshold it used */
} finch_oos_metrics;

/* One point of the accuracy/coverage curve: at score threshold t, a row is
 * answered when answer[i] >= 0 and score[i] >= t. */
typedef struct {
  double threshold;
  double coverage;    /* share of in-scope rows answered (NaN: no such rows) */
  double accuracy;    /* share of the answered in-scope rows answered right (NaN: none answered) */
  double oos_refused; /* share of out-of-scope rows not answered (NaN: no such rows) */
} finch_oos_point;

/* The area under the ROC curve of score separating in-scope rows (positive)
 * from out-of-scope rows: the chance that a random in-scope row scores above
 * a random out-of-scope one, ties counted half. NaN when either class has
 * no row. */
double finch_oos_auroc(const float *score, const unsigned char *is_oos, size_t n);

/* The share of out-of-scope rows whose score is at or above the threshold
 * that keeps the share keep (0..1] of in-scope rows: the ceil(keep * n_in)-th
 * highest in-scope score, stored in *threshold (may be NULL; NaN with no
 * in-scope row). NaN when either class has no row. */
double finch_oos_fpr_at_keep(const float *score, const unsigned char *is_oos, size_t n, double keep,
                             double *threshold);

/* Every figure of finch_oos_metrics. Returns 0, or -1 when out of memory. */
int finch_oos_compute(const float *score, const unsigned char *is_oos, const int *decided, const int *label,
                      size_t n, finch_oos_metrics *out);

/* The accuracy/coverage curve at n_points thresholds: the j-th (j = 0 ..
 * n_points-1) is the in-scope score that keeps the share 1 - j / n_points of
 * in-scope rows (the ceil of it, counted from the highest score), so the
 * thresholds rise and the coverage falls from point to point; with no
 * in-scope row the thresholds are j / n_points. pts has n_points entries.
 * Returns 0, or -1 when out of memory. */
int finch_oos_curve(const float *score, const unsigned char *is_oos, const int *answer, const int *label,
                    size_t n, size_t n_points, finch_oos_point *pts);

#endif
