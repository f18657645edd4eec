/* The results and comparison sections of the HTML report: headline figures
 * with their intervals, tables, and the charts (evaluate/svg.h) drawn from
 * the same JSON the report's body holds, so the page shows nothing the
 * body does not. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate/metrics.h"
#include "evaluate/report_html_internal.h"
#include "evaluate/svg.h"

static double num(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

/* "0.9312 (95% CI 0.9150-0.9460)": the figure key of r, a number or a
 * {value, ci95} object, with its interval (the object's, or r's key_ci95). */
static void estimate(FILE *fp, const json_t *r, const char *key) {
  const json_t *e = json_object_get(r, key), *ci = json_object_get(e, "ci95");
  char k[64];
  snprintf(k, sizeof k, "%s_ci95", key);
  if (!ci) ci = json_object_get(r, k);
  fprintf(fp, "<strong>%.4f</strong>", json_is_number(e) ? json_number_value(e) : num(e, "value"));
  if (json_array_size(ci) == 2)
    fprintf(fp, " (95%% CI %.4f&ndash;%.4f)", json_number_value(json_array_get(ci, 0)),
            json_number_value(json_array_get(ci, 1)));
}

/* Calibration bins from the body's array of {lo, hi, count, confidence, accuracy}. */
static finch_calib_bin *bins_of(const json_t *a, size_t *n) {
  *n = json_array_size(a);
  finch_calib_bin *b = calloc(*n + 1, sizeof *b);
  if (!b) return NULL;
  for (size_t i = 0; i < *n; i++) {
    const json_t *o = json_array_get(a, i);
    b[i] = (finch_calib_bin){.lo = num(o, "lo"), .hi = num(o, "hi"),
                             .count = json_integer_value(json_object_get(o, "count")),
                             .confidence = num(o, "confidence"), .accuracy = num(o, "accuracy")};
  }
  return b;
}

static void confusion_chart(FILE *fp, const json_t *conf) {
  const json_t *labels = json_object_get(conf, "labels"), *m = json_object_get(conf, "matrix");
  size_t C = json_array_size(labels);
  if (!C || json_array_size(m) != C) return;
  const char **names = calloc(C, sizeof *names);
  double *v = calloc(C * C, sizeof *v);
  if (names && v) {
    for (size_t i = 0; i < C; i++) {
      names[i] = json_string_value(json_array_get(labels, i));
      const json_t *row = json_array_get(m, i);
      for (size_t j = 0; j < C && j < json_array_size(row); j++)
        v[i * C + j] = (double)json_integer_value(json_array_get(row, j));
    }
    finch_report__figure(fp, finch_svg_heatmap("Confusion matrix", names, names, v, C, C, "predicted", "gold"),
                         "Rows: the gold intent; columns: the intent predicted; darker cells hold more rows (square-root "
                         "scale). Off-diagonal cells are the errors.");
  }
  free(names);
  free(v);
}

static void calibration_chart(FILE *fp, const json_t *cal) {
  size_t nb = 0, na = 0;
  finch_calib_bin *b = bins_of(json_object_get(cal, "bins"), &nb);
  finch_calib_bin *a = bins_of(json_object_get(cal, "bins_after"), &na);
  if (b && nb && (!a || na == nb)) {
    char cap[320];
    snprintf(cap, sizeof cap,
             "Reliability: accuracy within each confidence bin against the diagonal of perfect calibration. "
             "ECE %.4f as is; %.4f after temperature scaling (T = %.3f, fitted on these rows).",
             num(cal, "ece"), num(cal, "ece_after"), num(cal, "temperature"));
    finch_report__figure(fp, finch_svg_reliability("Reliability diagram", b, na ? a : NULL, nb), cap);
  }
  free(b);
  free(a);
}

static void coverage_chart(FILE *fp, const json_t *curve) {
  size_t n = json_array_size(curve);
  if (!n) return;
  double *x = calloc(n, sizeof *x), *acc = calloc(n, sizeof *acc), *cov = calloc(n, sizeof *cov);
  if (x && acc && cov) {
    for (size_t i = 0; i < n; i++) {
      const json_t *p = json_array_get(curve, i);
      x[i] = num(p, "threshold");
      acc[i] = num(p, "accuracy");
      cov[i] = num(p, "coverage");
    }
    finch_svg_series s[2] = {{"accuracy of the answered rows", x, acc, n}, {"coverage (share answered)", x, cov, n}};
    finch_report__figure(fp, finch_svg_lines("Accuracy and coverage over confidence thresholds",
                                             "confidence threshold", "share", s, 2),
                         "A row is answered when the model's top probability reaches the threshold; the rest would "
                         "be refused or handed to an agent.");
  }
  free(x);
  free(acc);
  free(cov);
}

/* Per-intent rows sorted by F1, lowest first: the intents a reviewer should
 * read first. */
/* A per-intent row's name: "intent" in eval's metrics, "label" in
 * finch_results_json's. */
static const json_t *intent_of(const json_t *row) {
  const json_t *v = json_object_get(row, "intent");
  return v ? v : json_object_get(row, "label");
}

static int by_f1(const void *a, const void *b) {
  double x = num(*(json_t *const *)a, "f1"), y = num(*(json_t *const *)b, "f1");
  if (x != y) return (x > y) - (x < y);
  const char *p = json_string_value(intent_of(*(json_t *const *)a)), *q = json_string_value(intent_of(*(json_t *const *)b));
  return strcmp(p ? p : "", q ? q : "");
}

static void per_intent(FILE *fp, const json_t *pi) {
  size_t n = json_array_size(pi);
  if (!n) return;
  const json_t **rows = calloc(n, sizeof *rows);
  if (!rows) return;
  for (size_t i = 0; i < n; i++) rows[i] = json_array_get(pi, i);
  qsort(rows, n, sizeof *rows, by_f1);
  fputs("<h3>Per intent (lowest F1 first)</h3>\n<table class=\"grid\"><thead><tr><th>intent</th><th>precision</th>"
        "<th>recall</th><th>F1</th><th>support</th></tr></thead><tbody>",
        fp);
  for (size_t i = 0; i < n; i++) {
    fputs("<tr><td>", fp);
    finch_report__scalar(fp, intent_of(rows[i]));
    fprintf(fp, "</td><td class=\"num\">%.3f</td><td class=\"num\">%.3f</td><td class=\"num\">%.3f</td>"
                "<td class=\"num\">%lld</td></tr>",
            num(rows[i], "precision"), num(rows[i], "recall"), num(rows[i], "f1"),
            (long long)json_integer_value(json_object_get(rows[i], "support")));
  }
  fputs("</tbody></table>\n", fp);
  free(rows);
}

/* The keys drawn or tabled above; the rest of the section follows as a
 * generic table so that nothing in the body is left off the page. */
static int drawn(const char *k) {
  static const char *const keys[] = {"accuracy", "macro_f1", "accuracy_ci95", "macro_f1_ci95", "per_intent",
                                     "confusion", "calibration", "coverage_curve", "most_confused"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    if (!strcmp(keys[i], k)) return 1;
  return 0;
}

void finch_report__results_html(FILE *fp, const json_t *r) {
  fputs("<p>Accuracy ", fp);
  estimate(fp, r, "accuracy");
  fputs("; macro-F1 ", fp);
  estimate(fp, r, "macro_f1");
  if (json_is_integer(json_object_get(r, "n")))
    fprintf(fp, " on %lld rows", (long long)json_integer_value(json_object_get(r, "n")));
  fputs(" (intervals: percentile bootstrap over the rows).</p>\n", fp);
  const json_t *cal = json_object_get(r, "calibration");
  if (cal) calibration_chart(fp, cal);
  coverage_chart(fp, json_object_get(r, "coverage_curve"));
  const json_t *conf = json_object_get(r, "confusion");
  if (conf) confusion_chart(fp, conf);
  const json_t *mc = json_object_get(r, "most_confused");
  if (json_array_size(mc)) {
    fputs("<h3>Most-confused pairs</h3>\n", fp);
    finch_report__table(fp, mc);
  }
  per_intent(fp, json_object_get(r, "per_intent"));
  json_t *rest = json_object();
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)r, k, v) if (!drawn(k)) json_object_set(rest, k, v);
  if (json_object_size(rest)) {
    fputs("<h3>Further figures</h3>\n", fp);
    finch_report__value(fp, rest, 0);
  }
  json_decref(rest);
}

/* The comparison (evaluate/compare.h): its models, the paired tests, and
 * the per-intent F1 with each model's difference from the first; the
 * latencies and the Pareto front are the run's measurements
 * (finch_report__pareto_html), not the body's. */
void finch_report__comparison_html(FILE *fp, const json_t *c) {
  const json_t *models = json_object_get(c, "models"), *per = json_object_get(c, "per_intent");
  if (json_array_size(models)) {
    fputs("<h3>Models</h3>\n", fp);
    finch_report__table(fp, models);
  }
  if (json_array_size(json_object_get(c, "mcnemar"))) {
    fputs("<h3>McNemar's test on the paired rows</h3>\n", fp);
    finch_report__table(fp, json_object_get(c, "mcnemar"));
  }
  size_t nm = json_array_size(models), i;
  const json_t *p;
  if (json_array_size(per) && nm) {
    fputs("<h3>Per intent: F1, and the difference from the first model</h3>\n<table class=\"grid\"><thead><tr>"
          "<th>intent</th><th>support</th>", fp);
    for (size_t m = 0; m < nm; m++) {
      fputs("<th>F1 ", fp);
      finch_report__esc(fp, json_string_value(json_object_get(json_array_get(models, m), "name")));
      fputs("</th>", fp);
    }
    for (size_t m = 1; m < nm; m++) {
      fputs("<th>&Delta; ", fp);
      finch_report__esc(fp, json_string_value(json_object_get(json_array_get(models, m), "name")));
      fputs("</th>", fp);
    }
    fputs("</tr></thead><tbody>", fp);
    json_array_foreach(per, i, p) {
      fputs("<tr><td>", fp);
      finch_report__scalar(fp, json_object_get(p, "intent"));
      fputs("</td><td class=\"num\">", fp);
      finch_report__scalar(fp, json_object_get(p, "support"));
      fputs("</td>", fp);
      for (size_t m = 0; m < nm; m++) {
        const char *name = json_string_value(json_object_get(json_array_get(models, m), "name"));
        fprintf(fp, "<td class=\"num\">%.3f</td>", num(json_object_get(p, "f1"), name ? name : ""));
      }
      for (size_t m = 1; m < nm; m++) {
        const char *name = json_string_value(json_object_get(json_array_get(models, m), "name"));
        fprintf(fp, "<td class=\"num\">%+.3f</td>", num(json_object_get(p, "delta_vs_first"), name ? name : ""));
      }
      fputs("</tr>", fp);
    }
    fputs("</tbody></table>\n", fp);
  }
  const char *k;
  const json_t *v;
  json_object_foreach((json_t *)c, k, v) {
    if (!strcmp(k, "models") || !strcmp(k, "mcnemar") || !strcmp(k, "per_intent")) continue;
    fputs("<h3>", fp);
    finch_report__esc(fp, k);
    fputs("</h3>\n", fp);
    finch_report__value(fp, v, 0);
  }
}

/* The accuracy-latency scatter of a run's measurements.pareto ({models:
 * [{name, accuracy, latency_ms_p50, on_front}], method}), the front joined. */
void finch_report__pareto_html(FILE *fp, const json_t *pareto) {
  const json_t *models = json_object_get(pareto, "models");
  size_t n = json_array_size(models), k = 0;
  finch_svg_point *pts = n ? calloc(n, sizeof *pts) : NULL;
  if (!pts) return;
  for (size_t i = 0; i < n; i++) {
    const json_t *m = json_array_get(models, i);
    double lat = num(m, "latency_ms_p50"), acc = num(m, "accuracy");
    if (isnan(lat) || isnan(acc)) continue;
    pts[k++] = (finch_svg_point){.name = json_string_value(json_object_get(m, "name")), .x = lat, .y = acc,
                                 .on_front = json_is_true(json_object_get(m, "on_front"))};
  }
  if (k)
    finch_report__figure(fp, finch_svg_scatter_front("Accuracy against latency", "median latency per query (ms)",
                                                     "accuracy", pts, k),
                         "Each model on the same rows in this run; filled points and the line are the models no "
                         "other beats on both accuracy and latency (the Pareto front). Latencies are this run's.");
  free(pts);
}

void finch_report__monitoring_html(FILE *fp, const json_t *mon) {
  const json_t *buckets = json_object_get(mon, "buckets"), *models = json_object_get(mon, "models");
  size_t nb = json_array_size(buckets), nm = json_array_size(models);
  if (nb) {
    double *x = calloc(nb, sizeof *x), *acc = calloc(nb, sizeof *acc), *oos = calloc(nb, sizeof *oos),
           *hand = calloc(nb, sizeof *hand);
    if (x && acc && oos && hand) {
      for (size_t i = 0; i < nb; i++) {
        const json_t *b = json_array_get(buckets, i);
        x[i] = (double)i;
        acc[i] = num(b, "accuracy");
        oos[i] = num(b, "out_of_scope_rate");
        hand[i] = num(b, "handoff_rate");
      }
      finch_svg_series s[3] = {{"labelled accuracy", x, acc, nb}, {"out-of-scope rate", x, oos, nb},
                               {"handoff rate", x, hand, nb}};
      char xt[96];
      snprintf(xt, sizeof xt, "%s since the first with requests", json_is_string(json_object_get(mon, "bucket"))
                                                                     ? json_string_value(json_object_get(mon, "bucket"))
                                                                     : "bucket");
      finch_report__figure(fp, finch_svg_lines("The deployment over time", xt, "share", s, 3),
                           "Per time bucket: accuracy of the served answers on labelled turns, and the shares of "
                           "requests refused as out of scope and handed to a person; gaps where a bucket has no "
                           "labelled turn.");
    }
    free(x), free(acc), free(oos), free(hand);
  }
  if (nm) {
    finch_svg_point *pts = calloc(nm, sizeof *pts);
    char (*names)[64] = calloc(nm, sizeof *names);
    size_t k = 0;
    for (size_t i = 0; pts && names && i < nm; i++) {
      const json_t *m = json_array_get(models, i);
      double lat = num(json_object_get(m, "latency_ms"), "p50"), acc = num(m, "accuracy");
      if (isnan(lat) || isnan(acc)) continue;
      const char *sha = json_string_value(json_object_get(m, "model_sha256"));
      if (json_is_integer(json_object_get(m, "model_id")))
        snprintf(names[k], sizeof names[k], "model %lld", (long long)json_integer_value(json_object_get(m, "model_id")));
      else
        snprintf(names[k], sizeof names[k], "%.12s", sha ? sha : "unknown");
      pts[k] = (finch_svg_point){.name = names[k], .x = lat, .y = acc,
                                 .on_front = json_is_true(json_object_get(m, "on_front"))};
      k++;
    }
    if (k)
      finch_report__figure(fp, finch_svg_scatter_front("Models that served: accuracy against latency",
                                                       "median latency (ms)", "labelled accuracy", pts, k),
                           "Each model that answered in the period, by its accuracy on labelled turns and its "
                           "median latency; the line joins the Pareto front.");
    free(pts);
    free(names);
  }
  finch_report__value(fp, mon, 0);
}
