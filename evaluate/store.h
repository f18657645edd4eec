/* Evaluation reports as stored: one row of eval_reports per distinct body
 * (schemas/013_reports.sql) and two files under $FINCH_HOME/reports:
 *
 *   report-<id>-<sha12>.json  the body's canonical bytes (evaluate/body.h),
 *                             exactly what body_sha256 is the hash of;
 *   report-<id>-<sha12>.md    the Markdown made from the body and the run's
 *                             measurements when the report was made.
 * <sha12> is the first 12 hex digits of body_sha256. Files are written to a
 * temporary name in the same directory and linked into place; an existing
 * file is never overwritten: for the JSON the same bytes are accepted,
 * different ones refused (FINCH_ECHECKSUM naming the path); a Markdown
 * file already there is kept as it is (it renders the same body, on an
 * earlier run with that run's measurements).
 *
 * Storing a body whose hash is already stored adds nothing: the existing
 * report is returned with unchanged = 1 (its files are written only where
 * missing). The database refuses to change a stored body or to delete its
 * row. Sign-off decisions go to report_approvals, append-only, each naming
 * the report's body hash; they are read when a report is shown, never
 * written into its files. */
#ifndef FINCH_EVALUATE_STORE_H
#define FINCH_EVALUATE_STORE_H

#include <jansson.h>
#include <limits.h>

#include "core/db.h"
#include "core/hash.h"
#include "core/status.h"

/* The legacy columns of eval_reports, kept for readers of before. */
typedef struct {
  long long model_id; /* 0 = not registered */
  const char *model_sha256, *model_path, *source;
  long long n;
  const json_t *metrics;
} finch_report_row;

typedef struct {
  long long id;
  int unchanged; /* the body was stored before: nothing was added */
  char body_sha256[FINCH_SHA256_HEX_LEN];
  char json_path[PATH_MAX], md_path[PATH_MAX], html_path[PATH_MAX];
} finch_report_ref;

/* Stores body (and measurements: what the run measured that varies by run)
 * as described above; command_line is recorded in the measurements. */
finch_status finch_report_store(finch_db *db, const json_t *body, const json_t *measurements,
                                const finch_report_row *row, finch_report_ref *out, finch_err *err);

/* A stored report, as shown: its body as stored, its measurements, its
 * approvals ([{id, reviewer, decision, comment, body_sha256, created_at}],
 * oldest first), and whether the JSON file on disk still hashes to
 * body_sha256 (file_state: "intact", "differs" with file_sha256 set, or
 * "missing"). Release with finch_report_free. */
typedef struct {
  long long id;
  char body_sha256[FINCH_SHA256_HEX_LEN], file_sha256[FINCH_SHA256_HEX_LEN];
  char created_at[40];
  const char *file_state;
  json_t *body, *measurements, *approvals;
  char json_path[PATH_MAX], md_path[PATH_MAX], html_path[PATH_MAX]; /* html_path: "" when unknown */
} finch_report;

/* FINCH_ENOTFOUND naming the id when there is no report with a body. */
finch_status finch_report_load(finch_db *db, long long id, finch_report *out, finch_err *err);
void finch_report_free(finch_report *r);

/* Every report with a body, newest first, as a JSON array of {id, created_at,
 * body_sha256, model_sha256, model_id, source, n, accuracy, macro_f1,
 * approvals, last_decision}. */
finch_status finch_report_list(finch_db *db, json_t **out, finch_err *err);

/* Appends a decision on report id; reviewer must not be empty, decision is
 * "approve" or "reject" (FINCH_EINVAL naming the value otherwise), an unknown
 * id is FINCH_ENOTFOUND. *approval_id receives the new row's id. */
finch_status finch_report_approve(finch_db *db, long long id, const char *reviewer, const char *decision,
                                  const char *comment, long long *approval_id, finch_err *err);

#endif
