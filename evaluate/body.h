/* The evaluation report's data model: one JSON object, the "body", from
 * which the JSON file, the Markdown and any other rendering are made.
 *
 * The body is deterministic: the same model file, rows, options and binary
 * give the same bytes. Its canonical form (finch_eval_body_dump) has sorted
 * keys, two-space indentation, reals with FINCH_EVAL_BODY_PRECISION
 * significant digits and a final newline; its SHA-256 names the report.
 * Nothing in it varies between runs of the same evaluation: no time stamps,
 * no paths of this machine, no timings (those are the run's measurements,
 * kept beside the body: evaluate/store.h).
 *
 * Sections (every key always present):
 *   purpose_and_intended_use  {text, source: "model" (its file's
 *       "intended_use" metadata) | "registry" (models.config) | "default"}
 *   model      {sha256, id (null: not registered), kind, arch, dtype,
 *       params, bytes, labels, abstention (the policy, null: none),
 *       pretrained (null or {weights, use})}
 *   software   {finch_version, source_commit}
 *   data       {source: "dataset"|"file", dataset, split, file (name
 *       only), source_sha256, half, half_seed, n, skipped,
 *       unknown_label_rows, rows_sha256, rows_sha256_method}
 *   lineage    evaluate/lineage.h
 *   results    the metrics finch_eval_run computes (accuracy, macro_f1,
 *       ece, per_intent, out_of_scope...) without timings, and from the
 *       statistics (evaluate/results.h): accuracy_ci95 and macro_f1_ci95
 *       (bootstrap percentile intervals), bootstrap, confusion,
 *       most_confused, calibration (bins and ECE before and after
 *       temperature scaling) and coverage_curve
 *   latency    {method, rows, where}: how latency is measured; the figures
 *       are measurements of the run, not of the body
 *   cost       {cpu_price_per_core_hour, currency, formula}
 *   baseline   {available, engine, rules_file, rules_sha256, rules, n,
 *       accuracy, macro_f1, coverage, method} or {available: false, why}
 *   limitations {f1_floor, support_floor, ece_bound, weak_intents[],
 *       calibration {ece, above_bound}, data_coverage[] (sentences)}
 *   monitoring  only with opts->monitoring: the deployment's serving record
 *       over the period it states (serve_monitor_json's object)
 * The sign-off is not in the body: approvals name the body's hash and are
 * read from report_approvals when the report is shown. */
#ifndef FINCH_EVALUATE_BODY_H
#define FINCH_EVALUATE_BODY_H

#include <jansson.h>
#include <stddef.h>

#include "core/db.h"
#include "core/hash.h"
#include "core/status.h"
#include "evaluate/evaluate.h"
#include "nn/model.h"

/* Significant digits of every real in the canonical body. */
#define FINCH_EVAL_BODY_PRECISION 10
/* Price of one CPU core-hour (USD) when --cpu-price-hour is not given:
 * about an on-demand general-purpose cloud vCPU. */
#define FINCH_EVAL_DEFAULT_CPU_PRICE_HOUR 0.05
/* Limitations: an intent with F1 below this, or fewer rows than the support
 * floor, is named; an ECE above the bound is flagged. */
#define FINCH_EVAL_F1_FLOOR 0.80
#define FINCH_EVAL_SUPPORT_FLOOR 10
#define FINCH_EVAL_ECE_BOUND 0.05

/* What the body is made of. The caller owns everything; metrics is the
 * object finch_eval_run computes (its timing keys latency_ms_* are left out
 * of the body). */
typedef struct {
  const nn_model *model;
  long long model_id;   /* 0: a file not in the registry */
  const char *model_sha256, *kind;
  long long model_bytes;
  const json_t *pretrained; /* {weights, use} or NULL */
  const finch_eval_opts *opts;
  const char *const *texts, *const *labels; /* the evaluated rows (n) */
  size_t n;
  long long skipped, unknown_label_rows;
  const char *source_sha256;  /* the input file's, or the dataset's ingest sources' */
  const char *rows_sha256;    /* finch_eval_rows_sha256 */
  const json_t *metrics;
  const json_t *statistics; /* finch_results_json's object over the same rows, or NULL */
} finch_eval_body_in;

/* The CPU price the cost figure uses: opts->cpu_price_hour, or the default
 * when it is 0. */
double finch_eval_cpu_price(const finch_eval_opts *opts);

/* Builds the body (a new reference in *out, NULL on error). */
finch_status finch_eval_body(finch_db *db, const finch_eval_body_in *in, json_t **out, finch_err *err);

/* The canonical bytes of body (malloc'd, NUL-terminated, caller frees; NULL
 * when out of memory) and their SHA-256 in sha. */
char *finch_eval_body_dump(const json_t *body, char sha[FINCH_SHA256_HEX_LEN]);

/* The rows' hash: each row's content hash (finch_utterance_hash over its
 * case-folded text and its label, no dialogue position), the lines
 * "<content hash> <label>\n" sorted by byte value, SHA-256 over their
 * concatenation. The order of the rows does not matter; any change to a
 * text or a label changes it. */
#define FINCH_EVAL_ROWS_SHA256_METHOD                                                                          \
  "SHA-256 over the lines '<content hash> <label>' (newline-terminated, sorted by byte value), one per "        \
  "evaluated row, the content hash being SHA-256 over the row's case-folded text and label separated by "     \
  "U+001F, with an empty dialogue position"
finch_status finch_eval_rows_sha256(const char *const *texts, const char *const *labels, size_t n,
                                    char sha[FINCH_SHA256_HEX_LEN], finch_err *err);

/* The legacy baseline on the rows: {available, engine, rules_file,
 * rules_sha256, rules, n, accuracy, macro_f1, coverage, method}, or
 * {available: false, why} when b is NULL. NULL when out of memory. */
json_t *finch_eval_baseline_json(const finch_eval_baseline *b, const char *const *texts, const char *const *labels,
                                 size_t n);

#endif
