/* Ingest: labelled utterances and dialogues from a file or URL into PostgreSQL.
 *
 * Every record is checked (valid UTF-8, non-empty, not over-long, a known
 * label when a label set is fixed), normalised (core/text.h), stripped of
 * personal data (core/redact.h) before it is stored or logged, hashed
 * (SHA-256 of the case-folded text, the label and the dialogue position) and
 * loaded with COPY in batches, staged over several connections at once and
 * committed in order (ingest/load_pool.c). Each batch is committed together
 * with the run's progress (rows_loaded), so a run killed at any point is resumed by
 * --resume RUN_ID, or by re-running, without losing or duplicating a row;
 * a stop request (SIGINT) ends the run cleanly at a batch boundary. Rows that
 * cannot be used are counted, stored in ingest_rejects with source, line,
 * field and reason, and skipped; the run goes on.
 *
 * Splits: the source's own splits are kept. When it has none and holdout > 0,
 * a seeded dev split is carved: stratified by label for single queries, by
 * whole dialogue for dialogues (so no dialogue is split across train and dev).
 * A row's split depends only on the seed and the content, not on row order. */
#ifndef FINCH_INGEST_INGEST_H
#define FINCH_INGEST_INGEST_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "core/db.h"
#include "core/status.h"

typedef struct {
  const char *source;  /* path, "-", file://, http(s):// (gzip detected) */
  const char *format;  /* banking77, csv, clinc150, sgd, jsonl */
  const char *dataset; /* created on first use */
  double holdout;      /* share carved as dev when the source has no splits; 0 = none */
  unsigned long long seed;
  size_t batch_rows;        /* rows per COPY batch and transaction; 0 = 5000 */
  int load_jobs;            /* connections loading batches in parallel; 0 = 2 */
  size_t max_text_bytes;    /* longer texts are rejected; 0 = 16384 */
  const char *text_col;     /* csv */
  const char *label_col;    /* csv */
  const char *domains_path; /* clinc150 */
  const char *labels_path;  /* fixes the label set: a JSON array or one label a line */
  const char *const *pii_rules; /* extra redaction rule files */
  size_t n_pii_rules;
  long long resume_run_id;  /* continue this run; 0 = a new run */
  int progress;             /* draw a progress bar on stderr */
  volatile sig_atomic_t *stop; /* when non-NULL and set, stop at the next batch boundary */
} finch_ingest_opts;

#define FINCH_INGEST_MAX_PII_TYPES 32

typedef struct {
  long long run_id;
  long long read;      /* records read */
  long long inserted;  /* new rows stored */
  long long duplicate; /* rows already stored, or repeated in the source */
  long long rejected;
  long long dev;       /* inserted rows in split dev */
  double seconds;
  int stopped;         /* stopped at a batch boundary; resume with --resume run_id */
  size_t n_pii_types;
  char pii_types[FINCH_INGEST_MAX_PII_TYPES][32];   /* "card", "iban", ... */
  uint64_t pii_counts[FINCH_INGEST_MAX_PII_TYPES];
} finch_ingest_result;

finch_status finch_ingest_run(finch_db *db, const finch_ingest_opts *opts, finch_ingest_result *res,
                              finch_err *err);

#endif
