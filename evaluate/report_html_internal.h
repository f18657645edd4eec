/* Pieces of the HTML report shared by evaluate/report_html.c (the page and
 * its generic sections) and evaluate/report_charts.c (the results' and the
 * comparison's tables and charts). */
#ifndef FINCH_EVALUATE_REPORT_HTML_INTERNAL_H
#define FINCH_EVALUATE_REPORT_HTML_INTERNAL_H

#include <jansson.h>
#include <stdio.h>

/* s with <, >, &, " and ' escaped. */
void finch_report__esc(FILE *fp, const char *s);
/* A scalar: numbers to 6 significant digits, null as "n/a". */
void finch_report__scalar(FILE *fp, const json_t *v);
/* Any value: objects as key/value tables, arrays of flat objects as tables. */
void finch_report__value(FILE *fp, const json_t *v, int depth);
/* An array of flat objects as a table. */
void finch_report__table(FILE *fp, const json_t *a);
/* svg (malloc'd; freed here; NULL writes nothing) in a figure with a caption. */
void finch_report__figure(FILE *fp, char *svg, const char *caption);

/* The results section (finch_results_json's object and eval's figures). */
void finch_report__results_html(FILE *fp, const json_t *results);
/* The monitoring section (serve_monitor_json's object): the rates over
 * time, the models that served on the accuracy-latency front, the table. */
void finch_report__monitoring_html(FILE *fp, const json_t *mon);
/* The comparison section of a report over several models. */
void finch_report__comparison_html(FILE *fp, const json_t *comparison);
/* The accuracy-latency scatter with its Pareto front from a run's
 * measurements.pareto (nothing when absent). */
void finch_report__pareto_html(FILE *fp, const json_t *pareto);

#endif
