/* Augment: label-preserving variants of a dataset's training rows.
 *
 * Method "eda" (Wei & Zou 2019, "EDA: Easy Data Augmentation"): each variant
 * of a parent applies random deletion (each word dropped with probability
 * p_delete, at least one kept) and n_swap random swaps of two words. Variants
 * are stored in utterances with origin 'augmented', the parent's id, the
 * method and its parameters, and split 'train'. Only source rows of split
 * 'train' are parents: dev and test rows never are. The stream of variants of
 * a parent depends only on (seed, parent content hash), so a run is
 * deterministic and re-running it inserts nothing new. */
#ifndef FINCH_AUGMENT_AUGMENT_H
#define FINCH_AUGMENT_AUGMENT_H

#include "core/db.h"
#include "core/status.h"

typedef struct {
  const char *dataset;
  long long target;     /* augmented rows wanted in total; 0 = 2 per parent */
  unsigned long long seed;
  double p_delete;      /* default 0.1 */
  int n_swap;           /* default 1 */
} finch_augment_opts;

typedef struct {
  long long run_id;
  long long parents;
  long long generated; /* distinct variants made */
  long long inserted;  /* new rows stored (the rest already existed) */
} finch_augment_result;

finch_status finch_augment_run(finch_db *db, const finch_augment_opts *opts, finch_augment_result *res,
                               finch_err *err);

/* One EDA variant of text (words separated by single spaces), written to out
 * (at least strlen(text)+1 bytes). Exposed for tests. */
void finch_augment_eda(const char *text, unsigned long long stream, double p_delete, int n_swap, char *out);

#endif
