/* A holdout split in two, seeded and stratified by label: the selection
 * half, where a teacher's members, their temperatures and a model's
 * out-of-scope threshold are chosen, and the report half, which takes no
 * part in any choice and gives the figures reported (finch eval --half). */
#ifndef FINCH_NN_HALVES_H
#define FINCH_NN_HALVES_H

#include <stddef.h>
#include <stdint.h>

/* half (n) gets 0 (selection) or 1 (report) for each row of labels y (n;
 * a row with y < 0 goes to the report half): per label in order 0..C-1,
 * its rows in an order shuffled by one generator seeded with seed, dealt
 * alternately to the two halves with one turn carried across labels, so
 * each label is split within one row and the halves within one row of each
 * other. The same y and seed give the same split. Label indices are those
 * of the model's (the training split's) label list, so that every stage
 * halves a holdout alike. */
void nn_split_halves(const int32_t *y, size_t n, size_t C, unsigned long long seed, uint8_t *half);

struct nn_model;

/* The halves of n holdout rows with labels labels[i] (NULL = none) for
 * model m: a row's y is the index of its label in m's list; a row labelled
 * oos_label (may be NULL) that m lacks is one more stratum after them; any
 * other row y = -1 (the report half). On the labels m has, the same halves
 * as nn_split_halves over m's labels, so the teacher's selection rows,
 * finch compile --abstain's and finch eval --half's are the same rows. */
void nn_model_holdout_halves(const struct nn_model *m, const char *const *labels, size_t n, const char *oos_label,
                             unsigned long long seed, uint8_t *half);

#endif
