/* The Markdown rendering of an evaluation report (evaluate/store.h's
 * finch_report): every section of the body (evaluate/body.h), the run's
 * measurements (latency, cost, date, paths, command line) and the sign-off
 * block with the approvals r carries. The file written when the report is
 * made has the approvals of that moment (none); `finch report show ID
 * --format md` renders the current ones. */
#ifndef FINCH_EVALUATE_REPORT_H
#define FINCH_EVALUATE_REPORT_H

#include <stdio.h>

#include "evaluate/store.h"

/* Writes to fp; the caller checks ferror(fp). */
void finch_report_write_markdown(FILE *fp, const finch_report *r);

#endif
