/* Shared by the two ways an external teacher's soft labels come in:
 * distill/external.c (the dataset, the teacher's registration, stored
 * outputs, JSONL import) and distill/external_query.c (the completions
 * endpoint). Not part of the room's public interface. */
#ifndef FINCH_DISTILL_EXTERNAL_INTERNAL_H
#define FINCH_DISTILL_EXTERNAL_INTERNAL_H

#include <stddef.h>

#include "core/dataset.h"
#include "core/db.h"
#include "core/status.h"

/* The dataset: its label list and labelled training rows. */
typedef struct {
  finch_dataset_split *rows; /* split train, texts as text_norm */
  size_t n;         /* training rows */
  const long long *ids;      /* (n) ascending; rows->ids */
  const char *const *labels; /* (C) sorted by strcmp; rows->label_names */
  size_t C;
  char *labels_json; /* the label list as a JSON array (malloc'd) */
  size_t nb;        /* text_norm hash buckets (a power of 2) */
  size_t *bucket;   /* (nb) first row + 1 of the chain, 0 = empty */
  size_t *next;     /* (n) next row + 1 with the same hash */
} ext_data;

/* Loads the dataset's training rows and labels (with_hash: the text_norm
 * hash chains too); free with distill__ext_data_free. */
finch_status distill__ext_data_load(finch_db *db, const char *dataset, int with_hash, ext_data *d, finch_err *err);
void distill__ext_data_free(ext_data *d);
/* The row index of utterance id, or -1. */
long distill__ext_row_by_id(const ext_data *d, long long id);

/* Registers the external teacher (or finds the one with the same identity:
 * *reused = 1) and returns its model id. */
finch_status distill__ext_teacher(finch_db *db, const char *dataset, const ext_data *d, const char *path,
                                  const char *sha, long long bytes, const char *source, const char *model,
                                  const char *name, long long *id, int *reused, finch_err *err);
/* Stores probs (m,C) for ids (m) at temperature, replacing earlier outputs;
 * inside the caller's transaction. */
finch_status distill__ext_store(finch_db *db, long long model_id, const char *temp, const long long *ids,
                                const float *probs, size_t m, size_t C, finch_err *err);
/* Training rows of d with a stored output of model_id at temp. */
finch_status distill__ext_count_stored(finch_db *db, long long model_id, const char *temp, const ext_data *d,
                                       long long *n, finch_err *err);
/* A temperature as stored (shortest exact text). */
void distill__ext_temp_str(float t, char *buf, size_t n);

#endif
