/* The teacher's selection, kept apart from its report (distill/teacher.h):
 * the holdout rows are split, seeded and stratified by label, into a
 * selection half (temperatures, subset choice) and a report half (the
 * figures the teacher is reported with). Internal to distill/. */
#ifndef FINCH_DISTILL_TEACHER_SELECT_H
#define FINCH_DISTILL_TEACHER_SELECT_H

#include <stddef.h>
#include <stdint.h>

/* The halves themselves: nn_split_halves (nn/halves.h). */

/* The rows of probs (n, C) and y (n) in half h, gathered in order into
 * out_probs (m, C) and out_y (m) when they are not NULL; returns m. */
size_t finch_teacher__gather(const float *probs, const int32_t *y, const uint8_t *half, size_t n, size_t C, int h,
                             float *out_probs, int32_t *out_y);

/* Figures of probability rows (n, C) against y (n): a row with y < 0 (a
 * label the training split lacks) counts as wrong and is left out of the NLL. */
double finch_teacher__accuracy(const float *probs, const int32_t *y, size_t n, size_t C);
double finch_teacher__nll(const float *probs, const int32_t *y, size_t n, size_t C);
/* softmax(log p / T) row by row, into out (may be p). */
void finch_teacher__temper(const float *p, float *out, size_t n, size_t C, float T);

/* The subset (bit i = member i) of k members whose average calibrated
 * probabilities are most accurate on y; ties go to fewer members, then lower
 * NLL. probs[i] (n, C) at T = 1, temps[i] the member's temperature.
 * acc and nll receive the subset's figures on these rows. */
unsigned finch_teacher__choose(const float *const *probs, const float *temps, size_t k, const int32_t *y, size_t n,
                               size_t C, double *acc, double *nll);

/* The figures of subset mask's average calibrated probabilities on y. */
void finch_teacher__score(const float *const *probs, const float *temps, size_t k, unsigned mask, const int32_t *y,
                          size_t n, size_t C, double *acc, double *nll);

#endif
