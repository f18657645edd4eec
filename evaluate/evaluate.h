/* Evaluate: a model (teacher or student, registered id or file) on labelled
 * rows from a file or from the database. Each distinct evaluation is one
 * immutable report (evaluate/body.h: its data model; evaluate/store.h: its
 * row in eval_reports and its files under $FINCH_HOME/reports, JSON and
 * Markdown), so that a reviewer can see what was measured, on what, with
 * which model file (by SHA-256) and code, where the model came from, and
 * how to reproduce it. Re-running the same evaluation finds the same body
 * and returns that report (res->unchanged) instead of adding another.
 *
 * Out of scope: every row is decided by the model's abstention policy
 * (nn/abstain.h, nn_abstain_decide on its probabilities at temperature 1),
 * as POST /v1/intent decides it. A row is out of scope when its gold label
 * is the out-of-scope label: oos_label when given (it must occur in the
 * rows), else "oos" when the rows have it, and also the policy's own
 * out-of-scope class. When some row is out of scope or the model has a
 * policy, the metrics gain "out_of_scope" (evaluate/oos.h); the plain
 * accuracy then counts a refusal as wrong on an in-scope row and right on
 * an out-of-scope one. A model without a policy on rows without an
 * out-of-scope label is measured exactly as before. */
#ifndef FINCH_EVALUATE_EVALUATE_H
#define FINCH_EVALUATE_EVALUATE_H

#include <jansson.h>

#include "core/db.h"
#include "core/status.h"
#include "evaluate/oos.h"

/* The legacy baseline run on the same rows (the rule pack the server
 * falls back to: serve/rules.h). The evaluate room does not call serve; the
 * caller hands in the engine as a function. */
typedef struct {
  const char *name;   /* the rule file's name (no directory), as the report states it */
  const char *sha256; /* of the rule file */
  long long n_rules;
  /* The intent the engine answers for text, or NULL when no rule fires. */
  const char *(*answer)(void *ctx, const char *text);
  void *ctx;
} finch_eval_baseline;

typedef struct {
  const char *model;        /* registered id or model file */
  const char *format;       /* "banking77" when input is given */
  const char *input;        /* labelled file, or NULL to read the database */
  const char *dataset;      /* with split: rows from utterances */
  const char *split;        /* default "dev" */
  const char *command_line; /* recorded in the report, to reproduce it */
  const char *oos_label;    /* the rows' out-of-scope label; NULL = "oos" when present */
  const char *half;         /* "selection" or "report": only that half of the rows, halved as the teacher's
                               holdout and finch compile --abstain halve it (nn/halves.h); NULL = every row */
  unsigned long long seed;  /* the halves' seed */
  double cpu_price_hour;    /* price of one CPU core-hour for the cost figure; 0 = FINCH_EVAL_DEFAULT_CPU_PRICE_HOUR (body.h) */
  const finch_eval_baseline *baseline; /* NULL: the report says no baseline was run */
  const json_t *monitoring; /* a deployment's serving record over a stated period (serve_monitor_json's
                               object): the body's "monitoring" section; NULL = none */
  int keep_rows;            /* 1: res hands back the evaluated rows and each row's answer (finch_compare_run pairs
                               them across models) */
} finch_eval_opts;

/* Labelled rows to measure on, as finch_eval_run reads them
 * (finch_eval_rows_load below): from opts->input (banking77 CSV; unreadable rows are counted in skipped and
 * warned about with file and line) or from opts->dataset / opts->split. */
typedef struct {
  char **texts, **labels; /* NFKC-normalised, owned */
  size_t n, cap;
  long long skipped;
} finch_eval_rows;

typedef struct {
  long long report_id;
  int unchanged;         /* 1: a report with this body existed; report_id names it and nothing was written */
  char body_sha256[65];  /* the report's body hash */
  long long n;
  double accuracy, macro_f1;
  int has_oos;           /* the metrics have an "out_of_scope" section, summarised in oos */
  finch_oos_metrics oos;
  char report_path[4096]; /* the Markdown report */
  char json_path[4096];   /* the body, byte for byte as hashed */
  char html_path[4096];   /* the self-contained HTML page */
  char *json; /* the metrics object with report_id, report_path, json_path, body_sha256 and unchanged;
                 malloc'd; release with finch_eval_result_free */
  char model_sha256[65], rows_sha256[65]; /* the model file's hash; the rows' (finch_eval_rows_sha256) */
  double latency_ms_p50, latency_ms_p99;  /* this run's, one prediction at a time */
  /* With opts->keep_rows, owned by res: the evaluated rows in the order
   * measured (rows.n == n); answers[i] the intent the model decided on row
   * i (malloc'd; the rows' out-of-scope label too when the model answers
   * it), NULL where its policy refused; correct[i] 1 where the plain
   * accuracy counts row i right (a refusal is right on an out-of-scope row). */
  finch_eval_rows rows;
  char **answers;
  unsigned char *correct;
} finch_eval_result;

finch_status finch_eval_run(finch_db *db, const finch_eval_opts *opts, finch_eval_result *res, finch_err *err);

finch_status finch_eval_rows_load(finch_db *db, const finch_eval_opts *opts, finch_eval_rows *rows, finch_err *err);
void finch_eval_rows_free(finch_eval_rows *rows);
void finch_eval_result_free(finch_eval_result *res);

#endif
