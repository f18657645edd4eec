/* The evaluation report as one self-contained HTML page: the same body the
 * JSON and Markdown forms carry (evaluate/body.h), with the charts drawn as
 * inline SVG (evaluate/svg.h). The page has no scripts and refers to
 * nothing outside itself (no images, style sheets or fonts to fetch), so it
 * opens, prints and archives as one file. The sign-off block lists the
 * approvals given (report_approvals), which are not part of the hashed
 * body: an approval names the body's SHA-256 it approved. */
#ifndef FINCH_EVALUATE_REPORT_HTML_H
#define FINCH_EVALUATE_REPORT_HTML_H

#include <jansson.h>

#include "core/status.h"

/* The page for body (the report's JSON body), its SHA-256 (may be NULL),
 * the run's measurements (latency and cost figures, the date, the command
 * line: evaluate/store.h; may be NULL) and approvals (an array of
 * {reviewer, decision, comment, created_at, body_sha256}; may be NULL): a
 * malloc'd NUL-terminated string, or NULL when out of memory.
 * Deterministic for the same arguments. */
char *finch_report_html(const json_t *body, const char *body_sha256, const json_t *measurements,
                        const json_t *approvals);

/* Writes finch_report_html's page to path (through a temporary file and a
 * rename, so a reader never sees half a page). */
finch_status finch_report_write_html(const char *path, const json_t *body, const char *body_sha256,
                                     const json_t *measurements, const json_t *approvals, finch_err *err);

#endif
