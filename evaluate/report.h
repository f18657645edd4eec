/* The Markdown evaluation report. */
#ifndef FINCH_EVALUATE_REPORT_H
#define FINCH_EVALUATE_REPORT_H

#include <jansson.h>

#include "core/status.h"

/* Writes the report for the metrics object produced by finch_eval_run
 * (keys: model, source, n, accuracy, macro_f1, ece, latency_ms_*, per_intent[]). */
finch_status finch_eval_write_markdown(const char *path, long long report_id, const json_t *metrics,
                                       const char *command_line, finch_err *err);

#endif
