/* Augment: label-preserving variants of a dataset's training rows, each
 * stored in utterances with origin 'augmented', split 'train', the parent's
 * id, the method, its parameters and the augment run.
 *
 * Methods (augment/methods.h): eda (random deletion and swap; Wei & Zou
 * 2019), synonyms (WordNet, never a finance term), entities (amounts,
 * currencies, merchants, card brands, countries, dates, banks, placeholders
 * from the project's lexicons), noise (typos, casing, punctuation,
 * contractions, texting spellings), templates (slot-filled patterns per
 * intent mined from the training rows). Only source rows of split 'train' are
 * parents: dev and test rows never are.
 *
 * Balance: the target is shared out uniformly over the intents (or in
 * proportion to their training rows), then over each intent's parents, and
 * the methods take turns. The target counts the dataset's augmented rows
 * from earlier runs too, so re-running a run stores nothing new. Every
 * variant is derived from (seed, parent content hash, attempt) alone, so a
 * run is deterministic; exact and case/space-only duplicates of stored or
 * already-made rows are skipped and do not count.
 *
 * Label guard: when a teacher is given (or one is registered for the
 * dataset), it scores every candidate; a candidate whose predicted intent
 * differs from its parent's with probability >= guard_threshold is dropped
 * (counted by method), and the teacher's probabilities at the temperature
 * are stored in teacher_outputs for the kept rows, ready for distillation. */
#ifndef FINCH_AUGMENT_AUGMENT_H
#define FINCH_AUGMENT_AUGMENT_H

#include "core/db.h"
#include "core/status.h"

#define FINCH_AUGMENT_MAX_METHODS 8

typedef struct {
  const char *dataset;
  long long target;         /* augmented rows the dataset should hold; 0 = 2 per parent */
  unsigned long long seed;
  const char *methods;      /* comma-separated; NULL = "eda,synonyms,entities,noise,templates" */
  int proportional;         /* share the target by intent size instead of uniformly */
  int progress;             /* progress on stderr */
  const char *teacher;      /* model id, file, alias, best or latest; NULL = the dataset's best teacher that
                               passed the quality gate, if any; "none" = no guard */
  double guard_threshold;   /* 0 = 0.5 */
  double temperature;       /* of the stored probabilities; 0 = 2 */
} finch_augment_opts;

typedef struct {
  long long run_id;
  long long parents;
  long long generated; /* distinct new variants made */
  long long duplicates; /* variants already stored or already made, not counted */
  long long inserted;  /* new rows stored (the rest already existed) */
  double seconds;
  size_t n_methods;
  const char *method_names[FINCH_AUGMENT_MAX_METHODS];
  long long method_inserted[FINCH_AUGMENT_MAX_METHODS];
  long long method_dropped[FINCH_AUGMENT_MAX_METHODS]; /* by the label guard */
  long long teacher_id;                                /* 0 = no guard */
} finch_augment_result;

finch_status finch_augment_run(finch_db *db, const finch_augment_opts *opts, finch_augment_result *res,
                               finch_err *err);

/* One EDA variant of text (words separated by single spaces), written to out
 * (at least strlen(text)+1 bytes). Exposed for tests. */
void finch_augment_eda(const char *text, unsigned long long stream, double p_delete, int n_swap, char *out);

#endif
