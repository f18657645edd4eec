#include "evaluate/report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double num(const json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }
static const char *str(const json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

static int cmp_f1(const void *a, const void *b) {
  double x = num(*(json_t *const *)a, "f1"), y = num(*(json_t *const *)b, "f1");
  return (x > y) - (x < y);
}

/* A figure of the out-of-scope section: "n/a" where it is null (undefined). */
static void fig(FILE *fp, const json_t *o, const char *k, const char *end) {
  const json_t *v = json_object_get(o, k);
  if (json_is_number(v))
    fprintf(fp, "%.4f%s", json_number_value(v), end);
  else
    fprintf(fp, "n/a%s", end);
}

static void write_oos(FILE *fp, const json_t *o) {
  const json_t *pol = json_object_get(o, "policy");
  const char *label = json_string_value(json_object_get(o, "label"));
  fprintf(fp, "## Out of scope\n\n");
  if (label)
    fprintf(fp, "Rows labelled `%s` are out of scope: %lld of them, and %lld in scope.", label,
            (long long)json_integer_value(json_object_get(o, "out_of_scope_rows")),
            (long long)json_integer_value(json_object_get(o, "in_scope_rows")));
  else
    fprintf(fp, "The rows have no out-of-scope label: %lld rows in scope, %lld out of scope.",
            (long long)json_integer_value(json_object_get(o, "in_scope_rows")),
            (long long)json_integer_value(json_object_get(o, "out_of_scope_rows")));
  const char *method = str(pol, "method");
  if (!strcmp(method, "none")) {
    fprintf(fp, " The model has no abstention policy: it answers every row, and answering the out-of-scope "
                "label counts as a refusal.\n\n");
  } else {
    fprintf(fp, " The model's policy: %s", method);
    if (json_is_number(json_object_get(pol, "threshold")))
      fprintf(fp, ", refusing when the best in-scope probability is below %.4f", num(pol, "threshold"));
    if (json_is_string(json_object_get(pol, "oos_label")))
      fprintf(fp, ", refusing when its class `%s` wins", str(pol, "oos_label"));
    fprintf(fp, "; probabilities at temperature %.4f.\n\n", num(pol, "temperature"));
  }
  static const struct {
    const char *name, *key;
  } rows[] = {
      {"In-scope accuracy (a refusal is wrong)", "in_scope_accuracy"},
      {"In-scope coverage (share answered)", "in_scope_coverage"},
      {"Out-of-scope recall (share refused)", "oos_recall"},
      {"Out-of-scope precision (refusals that were out of scope)", "oos_precision"},
      {"AUROC of the in-scope score", "auroc"},
      {"FPR at 95% in-scope recall", "fpr_at_95_in_scope_recall"},
      {"Score threshold keeping 95% of in-scope rows", "threshold_at_95_in_scope_recall"},
  };
  fprintf(fp, "| metric | value |\n|---|---|\n");
  for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
    fprintf(fp, "| %s | ", rows[r].name);
    fig(fp, o, rows[r].key, " |\n");
  }
  fprintf(fp, "\n");
  fprintf(fp, "The plain accuracy above counts a refusal as wrong on an in-scope row and as right on an "
              "out-of-scope one. The score is the model's best in-scope probability at the policy's "
              "temperature; the AUROC is the chance that an in-scope row scores above an out-of-scope one "
              "(ties half), and the FPR the share of out-of-scope rows at or above the score that keeps 95%% "
              "of in-scope rows. n/a: undefined on these rows (no row of that kind).\n\n");
  const json_t *curve = json_object_get(o, "curve");
  fprintf(fp, "### Accuracy and coverage over thresholds\n\nA row is answered when its score is at or above the "
              "threshold (and the model's out-of-scope class, if any, does not win).\n\n"
              "| threshold | in-scope coverage | accuracy on answered | out-of-scope refused |\n"
              "|---:|---:|---:|---:|\n");
  for (size_t j = 0; j < json_array_size(curve); j++) {
    const json_t *p = json_array_get(curve, j);
    fprintf(fp, "| %.4f | ", num(p, "threshold"));
    fig(fp, p, "coverage", " | ");
    fig(fp, p, "accuracy", " | ");
    fig(fp, p, "oos_refused", " |\n");
  }
  fprintf(fp, "\n");
}

finch_status finch_eval_write_markdown(const char *path, long long report_id, const json_t *m,
                                       const char *command_line, finch_err *err) {
  FILE *fp = fopen(path, "w");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(errno));
  const json_t *model = json_object_get(m, "model");
  fprintf(fp, "# Evaluation report %lld\n\n", report_id);
  fprintf(fp, "| | |\n|---|---|\n");
  fprintf(fp, "| Date (UTC) | %s |\n", str(m, "created_at"));
  fprintf(fp, "| Model file | `%s` |\n", str(model, "path"));
  fprintf(fp, "| Model SHA-256 | `%s` |\n", str(model, "sha256"));
  json_int_t mid = json_integer_value(json_object_get(model, "id"));
  if (mid) fprintf(fp, "| Registered model id | %lld |\n", (long long)mid);
  fprintf(fp, "| Model kind | %s |\n", str(model, "kind"));
  const json_t *pre = json_object_get(model, "pretrained");
  if (pre)
    fprintf(fp, "| Pretrained weights | %s, %s |\n", str(pre, "weights"),
            !strcmp(str(pre, "use"), "member") ? "a member of this model"
                                               : "in the teacher this model was distilled from");
  fprintf(fp, "| Evaluated on | %s |\n", str(m, "source"));
  if (*str(m, "source_sha256")) fprintf(fp, "| Input SHA-256 | `%s` |\n", str(m, "source_sha256"));
  fprintf(fp, "| Rows | %lld |\n", (long long)json_integer_value(json_object_get(m, "n")));
  fprintf(fp, "| Rows skipped (unreadable) | %lld |\n",
          (long long)json_integer_value(json_object_get(m, "skipped")));
  fprintf(fp, "| Gold labels unknown to the model | %lld rows |\n\n",
          (long long)json_integer_value(json_object_get(m, "unknown_label_rows")));
  fprintf(fp, "## Summary\n\n| metric | value |\n|---|---|\n");
  fprintf(fp, "| Accuracy | %.4f |\n", num(m, "accuracy"));
  fprintf(fp, "| Macro-F1 | %.4f |\n", num(m, "macro_f1"));
  fprintf(fp, "| Expected calibration error (10 bins) | %.4f |\n", num(m, "ece"));
  fprintf(fp, "| Latency p50 (ms, one query, one thread) | %.4f |\n", num(m, "latency_ms_p50"));
  fprintf(fp, "| Latency p99 (ms) | %.4f |\n", num(m, "latency_ms_p99"));
  fprintf(fp, "| Latency mean (ms) | %.4f |\n\n", num(m, "latency_ms_mean"));
  const json_t *oos = json_object_get(m, "out_of_scope");
  if (oos) write_oos(fp, oos);

  const json_t *per = json_object_get(m, "per_intent");
  size_t n = json_array_size(per);
  json_t **rows = malloc((n ? n : 1) * sizeof *rows);
  if (rows) {
    for (size_t i = 0; i < n; i++) rows[i] = json_array_get(per, i);
    qsort(rows, n, sizeof *rows, cmp_f1);
    fprintf(fp, "## Per intent (weakest first)\n\n| intent | support | predicted | precision | recall | F1 |\n"
                "|---|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < n; i++)
      fprintf(fp, "| %s | %lld | %lld | %.3f | %.3f | %.3f |\n", str(rows[i], "intent"),
              (long long)json_integer_value(json_object_get(rows[i], "support")),
              (long long)json_integer_value(json_object_get(rows[i], "predicted")), num(rows[i], "precision"),
              num(rows[i], "recall"), num(rows[i], "f1"));
    free(rows);
  }
  fprintf(fp, "\n## Reproduce\n\n```\n%s\n```\n\n", command_line ? command_line : "(not recorded)");
  fprintf(fp, "Latency is the wall time of one prediction (normalisation, features, forward pass) on the "
              "machine that ran the evaluation, one query at a time; compare it only with figures "
              "measured in the same run.\n");
  int bad = ferror(fp);
  if (fclose(fp) != 0 || bad) return finch_err_set(err, FINCH_EIO, "%s: write failed", path);
  return FINCH_OK;
}
