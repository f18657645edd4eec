/* Shared between ingest.c (reading, checking, splitting) and load.c (the
 * database side). Not part of the room's public interface. */
#ifndef FINCH_INGEST_INTERNAL_H
#define FINCH_INGEST_INTERNAL_H

#include <signal.h>
#include <stddef.h>

#include "core/db.h"
#include "core/hash.h"
#include "ingest/ingest.h"

typedef struct ingest_arena_block ingest_arena_block;
typedef struct {
  ingest_arena_block *head;
} ingest_arena;

/* Copies s into the arena; NULL for NULL or on allocation failure (check
 * with the source pointer). Freed all at once by ingest_arena_free. */
char *ingest_arena_strdup(ingest_arena *a, const char *s);
void ingest_arena_free(ingest_arena *a);

typedef struct {
  const char *text;      /* NFKC, redacted */
  const char *text_norm; /* case-folded text */
  const char *label, *split, *dialogue_id, *speaker, *meta;
  int turn;
  long long line; /* line or record number in the source */
  long long seq;  /* read order */
  char hash[FINCH_SHA256_HEX_LEN];
} ingest_row;

typedef struct {
  long long line;
  char field[24];
  char reason[256];
} ingest_reject;

typedef struct {
  ingest_row *rows;
  size_t n, cap;
  ingest_reject *rej;
  size_t nrej, caprej;
  ingest_arena arena;
} ingest_table;

/* The run's identity and bookkeeping, as stored in ingest_runs. */
typedef struct {
  long long id;
  long long dataset_id;
  long long rows_loaded; /* resume point: rows of the ordered list already committed */
  int dataset_was_empty;  /* no row can already be stored: batches skip the lookup */
} ingest_run;

/* load.c */
finch_status ingest_run_create(finch_db *db, const finch_ingest_opts *o, const char *lineage, const char *sha,
                               const char *split_policy, size_t rows_total, ingest_run *run, finch_err *err);
finch_status ingest_run_open(finch_db *db, long long id, const char *sha, size_t rows_total, ingest_run *run,
                             finch_err *err);
/* Reserves to - from utterance ids from the table's sequence, ascending,
 * into ids (malloc'd; the caller frees it). Batches reserve in batch order,
 * so a source loads to the same ids in the same order however many
 * connections stage its batches (ids of rows found already stored are left
 * unused). */
finch_status ingest_reserve_ids(finch_db *db, size_t from, size_t to, long long **ids, finch_err *err);
/* Opens a transaction and stages rows [from, to) in it (the lookup of rows
 * already stored, then COPY), row i under id ids[i - from]; *inserted and
 * *dev get the batch's counts. On failure the transaction is rolled back. */
finch_status ingest_stage_batch(finch_db *db, const ingest_table *t, size_t from, size_t to, const long long *ids,
                                const ingest_run *run, long long *inserted, long long *dev, finch_err *err);
/* Records rows_loaded = to and the batch's inserted rows on the run, and
 * commits the transaction ingest_stage_batch opened. */
finch_status ingest_commit_batch(finch_db *db, const ingest_run *run, size_t to, long long inserted, finch_err *err);
/* load_pool.c: loads rows [run->rows_loaded, t->n) in batches of `batch`
 * rows (0 = 5000) over up to `jobs` connections (0 = 2; db and jobs - 1 of its own), each
 * batch committed with the run's progress, in order. A stop request ends it
 * at a batch boundary with *stopped set. The counts are added to *inserted
 * and *dev. */
finch_status ingest_load_rows(finch_db *db, const ingest_table *t, const ingest_run *run, size_t batch, int jobs,
                              volatile sig_atomic_t *stop, int progress, long long *inserted, long long *dev,
                              int *stopped, finch_err *err);
finch_status ingest_run_finish(finch_db *db, const ingest_table *t, const ingest_run *run, const char *source,
                               const finch_ingest_result *res, int stopped, long long *inserted_total,
                               long long *dev_total, finch_err *err);
/* Takes the per-dataset advisory lock on db's session, waiting (and
 * telling so) while another run holds it; *got stays 0 when a stop request
 * ended the wait. */
finch_status ingest_lock_dataset(finch_db *db, const char *dataset, volatile sig_atomic_t *stop, int *got,
                                 finch_err *err);
void ingest_unlock_dataset(finch_db *db, const char *dataset);
void ingest_run_fail(finch_db *db, long long run_id, const char *msg);

#endif
