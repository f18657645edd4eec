/* Ingest: labelled utterances from a file into PostgreSQL.
 *
 * Every row is normalised (core/text.h), hashed (SHA-256 of the case-folded
 * text, the label and the dialogue position) and loaded with COPY in batches;
 * each batch is committed together with the run's counters, so an interrupted
 * run leaves whole batches and an accurate ingest_runs row. Re-ingesting the
 * same rows inserts nothing (unique content hash per dataset). Rows that
 * cannot be read (malformed CSV, invalid UTF-8, empty text or label) are
 * counted, stored in ingest_rejects with file, line and reason, and skipped.
 *
 * The dev holdout is stratified and seeded, and a row's split depends only on
 * (seed, its content hash, its label's rows): the same source and seed give
 * the same split whatever the row order. */
#ifndef FINCH_INGEST_INGEST_H
#define FINCH_INGEST_INGEST_H

#include "core/db.h"
#include "core/status.h"

typedef struct {
  const char *source;  /* file path, or "-" for standard input */
  const char *format;  /* "banking77": CSV with header text,category */
  const char *dataset; /* dataset name, created on first use */
  double holdout;      /* share of each label marked split='dev'; 0 = none */
  unsigned long long seed;
  size_t batch_rows;   /* rows per COPY batch and transaction; 0 = 5000 */
} finch_ingest_opts;

typedef struct {
  long long run_id;
  long long read;      /* data records read */
  long long inserted;  /* new rows stored */
  long long duplicate; /* rows already stored, or repeated in the source */
  long long rejected;
  long long dev;       /* inserted rows marked dev */
} finch_ingest_result;

finch_status finch_ingest_run(finch_db *db, const finch_ingest_opts *opts, finch_ingest_result *res,
                              finch_err *err);

#endif
