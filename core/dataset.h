/* Reading a dataset's utterances: the one place that selects rows of
 * `utterances` by dataset name (core/dataset.c holds the statement).
 *
 * finch_dataset_split_load() returns the rows of one split (or of every
 * split) in utterance id order: text, label index, utterance id and whether
 * the row is an augmented variant, with the label set the indices refer to.
 * Everything lives in one allocation owned by the returned struct and is
 * released by one finch_dataset_split_free().
 *
 * The label set. Unless the query names another load's label set, it is the
 * distinct labels of the rows loaded, of every origin, sorted by strcmp
 * (finch_cmp_str). Loading split "train" thus gives the dataset's training
 * label list, the order a model's outputs follow (teacher, student, external
 * teachers); loading the holdout with .label_set = that training load gives
 * the holdout rows indexed in the training label list, a label never seen in
 * training as -1 (always wrong). Evaluation loads its split with its own
 * label set, so every row's label is label_names[labels[i]].
 *
 * A missing dataset is FINCH_ENOTFOUND naming it; an existing dataset with
 * no matching rows is a split of n = 0 (the caller decides whether that is
 * an error). The stages check the names they are given first with
 * finch_dataset_check, so that an unknown name is never reported as an
 * empty split. */
#ifndef FINCH_CORE_DATASET_H
#define FINCH_CORE_DATASET_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "core/db.h"
#include "core/status.h"

typedef enum {
  FINCH_DATASET_ANY_ORIGIN = 0, /* source rows and augmented variants */
  FINCH_DATASET_SOURCE,         /* origin 'source' only */
  FINCH_DATASET_AUGMENTED,      /* origin 'augmented' only */
} finch_dataset_origin;

typedef struct finch_dataset_split finch_dataset_split;

typedef struct {
  const char *dataset;               /* the dataset's name */
  const char *split;                 /* "train", "dev" or "test"; NULL = every split */
  finch_dataset_origin origin;
  int unlabelled;                    /* 1 = rows without a label too (label index -1); 0 = labelled rows only */
  int text_norm;                     /* 1 = texts are the case-folded text_norm (what imports match on); 0 = text */
  const finch_dataset_split *label_set; /* NULL = the label set of these rows; else a copy of that load's */
} finch_dataset_query;

struct finch_dataset_split {
  size_t n;
  const char **texts;         /* (n) */
  int32_t *labels;            /* (n) index into label_names; -1 = no label, or one outside the label set */
  long long *ids;             /* (n) utterance ids, ascending */
  unsigned char *augmented;   /* (n) 1 = an augmented variant, 0 = a source row */
  size_t n_labels;
  const char **label_names;   /* (n_labels) sorted by strcmp */
};

/* The one check of a dataset name and split name a command was given:
 * FINCH_EINVAL "no split 'x' (the splits are train, dev and test)" for a
 * split (when not NULL) other than those; FINCH_ENOTFOUND "dataset 'x' does not exist
 * (run finch ingest first)" for a dataset that does not exist. */
finch_status finch_dataset_check(finch_db *db, const char *dataset, const char *split, finch_err *err);
/* Loads the rows q selects into *out (the caller frees it with
 * finch_dataset_split_free; *out is NULL on error). */
finch_status finch_dataset_split_load(finch_db *db, const finch_dataset_query *q, finch_dataset_split **out,
                                      finch_err *err);
void finch_dataset_split_free(finch_dataset_split *s);

/* Out-of-scope training or holdout rows for a model of another dataset
 * ("negatives"), as a split whose every row has label `label` (default
 * "oos"): the source rows (never augmented ones) of the datasets in names
 * (comma-separated; each must exist: FINCH_ENOTFOUND naming it), of split
 * split (NULL = every split), leaving out rows whose meta domain or label is
 * one of negatives_exclude (comma-separated; e.g. CLINC150's banking and
 * credit_cards domains and its exchange_rate intent, which a finance
 * dataset shares), at most max rows
 * (0 = all), a sample seeded by seed (the same rows for the same arguments)
 * and stratified by dataset and label (each label's rows dealt in turn, so
 * a small intent such as CLINC150's greetings is in even a small sample),
 * in id order with their own utterance ids. */
typedef struct {
  const char *names, *split, *negatives_exclude, *label;
  size_t max;
  unsigned long long seed;
} finch_negatives_query;

finch_status finch_dataset_negatives_load(finch_db *db, const finch_negatives_query *q, finch_dataset_split **out,
                                          finch_err *err);

/* The rows of a and b in one split, in id order, over the union of their
 * label lists (sorted; each row's label index remapped). */
finch_status finch_dataset_split_merge(const finch_dataset_split *a, const finch_dataset_split *b,
                                       finch_dataset_split **out, finch_err *err);

/* Rows q selects, counted per label and, when by_method, per label and
 * augmentation method: a result of (label, [method,] count) ordered by label
 * (then method) in the database's collation. Rows without a label are one
 * group with a NULL label when q->unlabelled (q->text_norm and q->label_set
 * do not apply). The caller PQclears it; NULL with err set on error. */
PGresult *finch_dataset_counts(finch_db *db, const finch_dataset_query *q, int by_method, finch_err *err);

/* General-domain texts, for the complexity score's domain term, the
 * encoders' tokenizer and their pre-training. names: dataset names, comma-
 * separated (every row of them, any split, labelled or not, in the order the
 * database returns them), or NULL/"" for none. The Wikipedia sentences that
 * ship with CLINC150 ($FINCH_DATA_DIR/clinc150/wiki_sents.txt, one a line,
 * each line kept with its newline) follow them when with_wiki, or stand in
 * for them when no names are given; an absent file gives none, with a
 * notice. One allocation, freed by finch_dataset_texts_free. */
typedef struct {
  size_t n;
  const char **texts; /* (n) */
} finch_dataset_texts;

finch_status finch_dataset_general_texts(finch_db *db, const char *names, int with_wiki, finch_dataset_texts **out,
                                         finch_err *err);
void finch_dataset_texts_free(finch_dataset_texts *t);

#endif
