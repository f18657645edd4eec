#include "evaluate/results.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "evaluate/metrics.h"
#include "evaluate/stats.h"

/* A real, or null where it is not finite (JSON has no NaN). */
static json_t *real(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *estimate(const finch_estimate *e) {
  return json_pack("{s:o, s:[o, o]}", "value", real(e->value), "ci95", real(e->lo), real(e->hi));
}

static json_t *bins_json(const finch_calib_bin *b, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++)
    if (json_array_append_new(a, json_pack("{s:o, s:o, s:I, s:o, s:o}", "lo", real(b[i].lo), "hi", real(b[i].hi),
                                           "count", (json_int_t)b[i].count, "confidence", real(b[i].confidence),
                                           "accuracy", real(b[i].accuracy)))) {
      json_decref(a);
      return NULL;
    }
  return a;
}

static finch_status check(const finch_results_in *in, finch_err *err) {
  if (!in) return finch_err_set(err, FINCH_EINVAL, "results: no input");
  if (!in->n) return finch_err_set(err, FINCH_EINVAL, "results: no rows to evaluate (n = 0)");
  if (!in->C) return finch_err_set(err, FINCH_EINVAL, "results: no labels (C = 0)");
  if (in->C > INT32_MAX) return finch_err_set(err, FINCH_EINVAL, "results: %zu labels, more than a label index holds", in->C);
  if (!in->gold || !in->pred) return finch_err_set(err, FINCH_EINVAL, "results: %s labels missing", in->gold ? "predicted" : "gold");
  if (!in->labels) return finch_err_set(err, FINCH_EINVAL, "results: label names missing");
  if (in->bootstrap < 0) return finch_err_set(err, FINCH_EINVAL, "results: bootstrap resamples %d below 0", in->bootstrap);
  if (in->top_pairs < 0) return finch_err_set(err, FINCH_EINVAL, "results: top_pairs %d below 0", in->top_pairs);
  for (size_t k = 0; k < in->C; k++) {
    const char *s = in->labels[k];
    if (!s) return finch_err_set(err, FINCH_EINVAL, "results: label %zu has no name", k);
    if (!finch_utf8_valid(s, strlen(s), NULL))
      return finch_err_set(err, FINCH_EINVAL, "results: label %zu's name is not valid UTF-8", k);
  }
  for (size_t i = 0; i < in->n; i++) {
    if (in->gold[i] < 0 || (size_t)in->gold[i] >= in->C)
      return finch_err_set(err, FINCH_EINVAL, "results: row %zu: gold label %d outside [0, %zu)", i, (int)in->gold[i], in->C);
    if (in->pred[i] < 0 || (size_t)in->pred[i] >= in->C)
      return finch_err_set(err, FINCH_EINVAL, "results: row %zu: predicted label %d outside [0, %zu)", i, (int)in->pred[i],
                           in->C);
  }
  for (size_t i = 0; in->probs && i < in->n * in->C; i++)
    if (!(in->probs[i] >= 0 && in->probs[i] <= 1))
      return finch_err_set(err, FINCH_EINVAL, "results: row %zu: probability of label %zu is %g, not in [0, 1]", i / in->C,
                           i % in->C, (double)in->probs[i]);
  return FINCH_OK;
}

static json_t *per_intent(const finch_metrics *m, const char *const *labels) {
  json_t *a = json_array();
  for (size_t k = 0; a && k < m->n_labels; k++) {
    const finch_label_metrics *l = &m->per_label[k];
    if (json_array_append_new(a, json_pack("{s:s, s:o, s:o, s:o, s:I, s:I}", "label", labels[k], "precision",
                                           real(l->precision), "recall", real(l->recall), "f1", real(l->f1),
                                           "support", (json_int_t)l->support, "predicted",
                                           (json_int_t)l->predicted))) {
      json_decref(a);
      return NULL;
    }
  }
  return a;
}

static json_t *confusion_json(const long long *cm, size_t C, const char *const *labels) {
  json_t *names = json_array(), *rows = json_array();
  for (size_t g = 0; names && rows && g < C; g++) {
    json_t *row = json_array();
    for (size_t p = 0; row && p < C; p++)
      if (json_array_append_new(row, json_integer((json_int_t)cm[g * C + p]))) json_decref(row), row = NULL;
    if (!row || json_array_append_new(rows, row) || json_array_append_new(names, json_string(labels[g])))
      json_decref(names), names = NULL;
  }
  if (!names || !rows) {
    json_decref(names), json_decref(rows);
    return NULL;
  }
  return json_pack("{s:o, s:o}", "labels", names, "matrix", rows);
}

static json_t *confused_json(const long long *cm, size_t C, size_t k, const char *const *labels) {
  finch_confused_pair *pairs = malloc((k ? k : 1) * sizeof *pairs);
  size_t m = pairs ? finch_stats_most_confused(cm, C, k, pairs) : (size_t)-1;
  json_t *a = m != (size_t)-1 ? json_array() : NULL;
  for (size_t j = 0; a && j < m; j++)
    if (json_array_append_new(a, json_pack("{s:s, s:s, s:i, s:i, s:I}", "gold", labels[pairs[j].gold], "pred",
                                           labels[pairs[j].pred], "gold_index", (int)pairs[j].gold, "pred_index",
                                           (int)pairs[j].pred, "count", (json_int_t)pairs[j].count)))
      json_decref(a), a = NULL;
  free(pairs);
  return a;
}

/* The calibration object and the coverage curve, into o. 0, or -1 out of memory. */
static int probs_json(const finch_results_in *in, json_t *o) {
  finch_calibration cal;
  float *conf = malloc(in->n * sizeof *conf);
  int rc = finch_stats_calibration(in->probs, in->gold, in->pred, in->n, in->C, 0, &cal);
  if (rc || !conf) {
    if (!rc) finch_stats_calibration_free(&cal);
    free(conf);
    return -1;
  }
  json_t *c = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o}", "n_bins", (json_int_t)cal.n_bins, "bins",
                        bins_json(cal.bins, cal.n_bins), "ece", real(cal.ece), "temperature", real(cal.temperature),
                        "ece_after", real(cal.ece_after), "bins_after", bins_json(cal.bins_after, cal.n_bins));
  finch_stats_calibration_free(&cal);
  double t[FINCH_RESULTS_CURVE_POINTS];
  finch_coverage_point pts[FINCH_RESULTS_CURVE_POINTS];
  for (int j = 0; j < FINCH_RESULTS_CURVE_POINTS; j++) t[j] = (double)j / FINCH_RESULTS_CURVE_POINTS;
  finch_stats_max_prob(in->probs, in->n, in->C, conf);
  finch_stats_coverage(conf, in->gold, in->pred, in->n, t, FINCH_RESULTS_CURVE_POINTS, pts);
  free(conf);
  json_t *curve = json_array();
  for (int j = 0; curve && j < FINCH_RESULTS_CURVE_POINTS; j++)
    if (json_array_append_new(curve, json_pack("{s:o, s:I, s:o, s:o}", "threshold", real(pts[j].threshold),
                                               "answered", (json_int_t)pts[j].answered, "coverage",
                                               real(pts[j].coverage), "accuracy", real(pts[j].accuracy))))
      json_decref(curve), curve = NULL;
  if (!c || !curve || json_object_set_new(o, "calibration", c) || json_object_set_new(o, "coverage_curve", curve)) {
    json_decref(curve);
    return -1;
  }
  return 0;
}

finch_status finch_results_json(const finch_results_in *in, json_t **out, finch_err *err) {
  *out = NULL;
  finch_status st = check(in, err);
  if (st) return st;
  const size_t n = in->n, C = in->C;
  finch_metrics m;
  finch_bootstrap bs;
  long long *cm = calloc(C * C, sizeof *cm);
  json_t *o = NULL;
  if (!cm || finch_metrics_compute(in->gold, in->pred, NULL, n, C, &m)) {
    free(cm);
    return finch_err_set(err, FINCH_ENOMEM, "results: out of memory for %zu labels", C);
  }
  for (size_t i = 0; i < n; i++) cm[(size_t)in->gold[i] * C + (size_t)in->pred[i]]++;
  int rc = finch_stats_bootstrap(in->gold, in->pred, n, C, in->bootstrap, in->seed, &bs);
  if (rc) goto out;
  char seed[32];
  snprintf(seed, sizeof seed, "%llu", in->seed);
  o = json_pack("{s:I, s:o, s:o, s:{s:i, s:s}, s:o, s:o, s:o}", "n", (json_int_t)n, "accuracy",
                estimate(&bs.accuracy), "macro_f1", estimate(&bs.macro_f1), "bootstrap", "resamples",
                bs.resamples, "seed", seed, "per_intent", per_intent(&m, in->labels), "confusion",
                confusion_json(cm, C, in->labels), "most_confused",
                confused_json(cm, C, in->top_pairs ? (size_t)in->top_pairs : FINCH_RESULTS_TOP_PAIRS, in->labels));
  if (!o || (in->probs && probs_json(in, o))) rc = -2;
out:
  finch_metrics_free(&m);
  free(cm);
  if (rc) {
    json_decref(o);
    return finch_err_set(err, FINCH_ENOMEM, "results: out of memory for %zu rows and %zu labels", n, C);
  }
  *out = o;
  return FINCH_OK;
}
