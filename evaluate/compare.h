/* Comparison of several models on the same rows: finch eval --model A
 * --model B [--model rules] ...
 *
 * Each model is evaluated by finch_eval_run with the same options (so each
 * has its own report, which a reviewer can open); "rules" names the legacy
 * rule pack (opts->baseline), answered on the first model's rows and timed
 * per call. Every model must have been measured on the same rows (the same
 * rows hash, the same rows in the same order: finch_compare_check_rows).
 *
 * The comparison is one more report, stored by finch_report_store like any
 * other (the same comparison again finds it: "unchanged"). Its body:
 *   title, purpose_and_intended_use, software, data   the first real
 *       model's report's (data names the rows and their hash)
 *   comparison {
 *     models   [{name (the ref as given), kind, arch, dtype, params, bytes,
 *               model_sha256 (null for rules), report_id (null for rules),
 *               rules_file, rules_sha256 (null for models), accuracy,
 *               accuracy_ci95, macro_f1, macro_f1_ci95}]
 *     mcnemar  [{a, b, n, a_right_b_wrong, a_wrong_b_right, p_exact, chi2,
 *               p_chi2}] for every pair a before b in the models' order
 *     per_intent [{intent, support, f1: {name: F1}, delta_vs_first:
 *               {name: F1 - first model's F1}}] over the gold intents,
 *               sorted by intent
 *     method   {mcnemar, per_intent, bootstrap, bootstrap_seed,
 *               bootstrap_resamples, rules}
 *   }
 * Everything in it is deterministic: the bootstrap is seeded by opts->seed
 * (0: 42). The latencies, and so the accuracy-latency Pareto front, vary
 * from run to run: they are the report's measurements, as
 * measurements.pareto = {models: [{name, accuracy, latency_ms_p50,
 * latency_ms_p99, on_front}], method}. */
#ifndef FINCH_EVALUATE_COMPARE_H
#define FINCH_EVALUATE_COMPARE_H

#include <jansson.h>
#include <limits.h>
#include <stdio.h>

#include "core/db.h"
#include "core/status.h"
#include "evaluate/evaluate.h"
#include "evaluate/stats.h"

#define FINCH_COMPARE_MAX_MODELS 8
/* The ref that names the legacy rule pack in a comparison. */
#define FINCH_COMPARE_RULES "rules"

typedef struct {
  char name[256];   /* the ref as given */
  char kind[16];    /* the registry's kind, or "rules" */
  long long report_id; /* its own report; 0 for rules */
  double accuracy, accuracy_lo, accuracy_hi, macro_f1, macro_f1_lo, macro_f1_hi;
  double latency_ms_p50, latency_ms_p99;
  int on_front;     /* on the accuracy-latency Pareto front of this run */
} finch_compare_model;

typedef struct {
  size_t a, b; /* indices into models */
  long long n;
  finch_mcnemar test;
} finch_compare_pair;

typedef struct {
  size_t n_models;
  finch_compare_model models[FINCH_COMPARE_MAX_MODELS];
  size_t n_pairs;
  finch_compare_pair pairs[FINCH_COMPARE_MAX_MODELS * (FINCH_COMPARE_MAX_MODELS - 1) / 2];
  long long n; /* rows */
  long long report_id;
  int unchanged; /* the same comparison was reported before: report_id names it */
  char body_sha256[65];
  char report_path[PATH_MAX], json_path[PATH_MAX], html_path[PATH_MAX];
  char *json; /* {report_id, unchanged, body_sha256, report_path, json_path, html_path, n, rows_sha256, models: [{name,
                 kind, report_id, accuracy, accuracy_ci95, macro_f1, macro_f1_ci95, latency_ms_p50, latency_ms_p99,
                 on_front}], mcnemar: [...]}; malloc'd, freed by finch_compare_result_free */
} finch_compare_result;

/* The number of models in the comma-separated list refs (empty items are
 * not counted). */
size_t finch_compare_count(const char *refs);

/* Compares the models of the comma-separated list opts->model (2 to
 * FINCH_COMPARE_MAX_MODELS, each at most once; FINCH_COMPARE_RULES needs
 * opts->baseline and another model) as described above. FINCH_EINVAL names
 * the list's problem; a model measured on other rows than the first is
 * finch_compare_check_rows's error. */
finch_status finch_compare_run(finch_db *db, const finch_eval_opts *opts, finch_compare_result *res, finch_err *err);
void finch_compare_result_free(finch_compare_result *res);

/* FINCH_OK when r (model name) was measured on the same rows as first
 * (model first_name), both evaluated with keep_rows: the same rows hash, the
 * same number of rows and the same text and label at each position;
 * otherwise FINCH_EINVAL naming both models and what differs. */
finch_status finch_compare_check_rows(const char *first_name, const finch_eval_result *first, const char *name,
                                      const finch_eval_result *r, finch_err *err);

/* The comparison section of the Markdown of a report whose body has
 * "comparison" (evaluate/report.c calls it): the models, the McNemar
 * table, the 15 largest per-intent deltas and the Pareto front of the
 * measurements (may be NULL). */
void finch_compare_write_markdown(FILE *fp, const json_t *body, const json_t *measurements);

#endif
