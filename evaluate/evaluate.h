/* Evaluate: a model (teacher or student, registered id or file) on labelled
 * rows from a file or from the database. Every run is stored in
 * eval_reports with its metrics and written as a Markdown report under
 * $FINCH_HOME/reports, so that a reviewer can see what was measured, on
 * what, with which model file (by SHA-256), and how to reproduce it. */
#ifndef FINCH_EVALUATE_EVALUATE_H
#define FINCH_EVALUATE_EVALUATE_H

#include "core/db.h"
#include "core/status.h"

typedef struct {
  const char *model;        /* registered id or model file */
  const char *format;       /* "banking77" when input is given */
  const char *input;        /* labelled file, or NULL to read the database */
  const char *dataset;      /* with split: rows from utterances */
  const char *split;        /* default "dev" */
  const char *command_line; /* recorded in the report, to reproduce it */
} finch_eval_opts;

typedef struct {
  long long report_id;
  long long n;
  double accuracy, macro_f1;
  char report_path[4096];
  char *json; /* the metrics object, malloc'd; release with finch_eval_result_free */
} finch_eval_result;

finch_status finch_eval_run(finch_db *db, const finch_eval_opts *opts, finch_eval_result *res, finch_err *err);

/* Labelled rows to measure on, as finch_eval_run reads them: from
 * opts->input (banking77 CSV; unreadable rows are counted in skipped and
 * warned about with file and line) or from opts->dataset / opts->split. */
typedef struct {
  char **texts, **labels; /* NFKC-normalised, owned */
  size_t n, cap;
  long long skipped;
} finch_eval_rows;

finch_status finch_eval_rows_load(finch_db *db, const finch_eval_opts *opts, finch_eval_rows *rows, finch_err *err);
void finch_eval_rows_free(finch_eval_rows *rows);
void finch_eval_result_free(finch_eval_result *res);

#endif
