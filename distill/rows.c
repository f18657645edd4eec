/* The rows a teacher or a student learns from: the dataset's split train,
 * with negatives named, out-of-scope rows from other datasets under one
 * more label; and the general stage's texts (distill/internal.h). */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "distill/internal.h"

finch_status finch_distill__train_rows(finch_db *db, const char *dataset, const finch_negatives_query *neg,
                                       unsigned long long seed, finch_dataset_split **out, finch_err *err) {
  *out = NULL;
  finch_dataset_query q = {.dataset = dataset, .split = "train"};
  finch_dataset_split *train = NULL, *negs = NULL;
  finch_status st = finch_dataset_split_load(db, &q, &train, err);
  if (st || !neg || !neg->names || !*neg->names) {
    *out = train;
    return st;
  }
  finch_negatives_query nq = *neg;
  if (!nq.split) nq.split = "train";
  if (!nq.label) nq.label = "oos";
  if (!nq.seed) nq.seed = seed;
  if ((st = finch_dataset_negatives_load(db, &nq, &negs, err)) != FINCH_OK) goto out;
  for (size_t l = 0; l < train->n_labels; l++)
    if (!strcmp(train->label_names[l], nq.label)) {
      st = finch_err_set(err, FINCH_EINVAL, "--negatives: dataset '%s' already has a label '%s'; its own out-of-scope "
                         "rows are the negatives (drop --negatives or name another label)", dataset, nq.label);
      goto out;
    }
  if (!negs->n) {
    st = finch_err_set(err, FINCH_ENOTFOUND, "--negatives %s: no rows in split %s%s%s", nq.names, nq.split,
                       nq.negatives_exclude && *nq.negatives_exclude ? " outside the domains " : "",
                       nq.negatives_exclude && *nq.negatives_exclude ? nq.negatives_exclude : "");
    goto out;
  }
  if ((st = finch_dataset_split_merge(train, negs, out, err)) != FINCH_OK) goto out;
  finch_info("training rows: %zu of dataset '%s' and %zu negatives from %s (split %s) as label '%s'", train->n, dataset,
             negs->n, nq.names, nq.split, nq.label);
out:
  finch_dataset_split_free(train);
  finch_dataset_split_free(negs);
  return st;
}

finch_status finch_distill__general_sample(finch_db *db, const char *names, size_t cap, const char *stage,
                                           finch_dataset_texts **gen, const char ***texts, size_t *k,
                                           finch_err *err) {
  *texts = NULL;
  *k = 0;
  finch_status st = finch_dataset_general_texts(db, names, 1, gen, err);
  if (st) return st;
  size_t n = (*gen)->n;
  const char **t = malloc((n + 1) * sizeof *t);
  if (!t) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  /* An even, deterministic spread over the sources when capped. */
  for (size_t i = 0; i < n; i++) t[i] = (*gen)->texts[i];
  if (n > cap) {
    for (size_t i = 0; i < cap; i++) t[i] = t[(size_t)((double)i * (double)n / (double)cap)];
    n = cap;
  }
  if (n == 0) {
    free(t);
    return finch_err_set(err, FINCH_ENOTFOUND, "--stage %s: no general-domain texts (ingest sgd_general or clinc150 "
                         "and name them with --general, or provide clinc150/wiki_sents.txt)", stage);
  }
  *texts = t;
  *k = n;
  return FINCH_OK;
}
