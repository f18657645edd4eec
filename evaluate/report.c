#include "evaluate/report.h"

#include "evaluate/compare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double num(const json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }
static const char *str(const json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}
static long long integer(const json_t *o, const char *k) { return (long long)json_integer_value(json_object_get(o, k)); }

/* Text in a table cell: '|' escaped, line breaks as spaces. */
static void cell(FILE *fp, const char *s) {
  for (; s && *s; s++) {
    if (*s == '|')
      fputs("\\|", fp);
    else
      fputc(*s == '\n' || *s == '\r' ? ' ' : *s, fp);
  }
}

/* A JSON value in a cell: strings bare, null as "-", the rest compact. */
static void value_cell(FILE *fp, const json_t *v) {
  if (!v || json_is_null(v)) {
    fputs("-", fp);
  } else if (json_is_string(v)) {
    cell(fp, json_string_value(v));
  } else {
    char *t = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
    cell(fp, t);
    free(t);
  }
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


static void write_model(FILE *fp, const json_t *model) {
  fprintf(fp, "## Model\n\n| | |\n|---|---|\n");
  fprintf(fp, "| Model SHA-256 | `%s` |\n", str(model, "sha256"));
  if (integer(model, "id")) fprintf(fp, "| Registered model id | %lld |\n", integer(model, "id"));
  fprintf(fp, "| Model kind | %s |\n", str(model, "kind"));
  const json_t *pre = json_object_get(model, "pretrained");
  if (json_is_object(pre))
    fprintf(fp, "| Pretrained weights | %s, %s |\n", str(pre, "weights"),
            !strcmp(str(pre, "use"), "member") ? "a member of this model"
                                               : "in the teacher this model was distilled from");
  fprintf(fp, "| Architecture | %s |\n| Parameters | %lld |\n| File size (bytes) | %lld |\n| Weights | %s |\n",
          str(model, "arch"), integer(model, "params"), integer(model, "bytes"), str(model, "dtype"));
  fprintf(fp, "| Intents | %zu |\n| Abstention policy | ", json_array_size(json_object_get(model, "labels")));
  const json_t *pol = json_object_get(model, "abstention");
  if (json_is_object(pol))
    value_cell(fp, pol);
  else
    fputs("none: it answers every message with an intent", fp);
  fprintf(fp, " |\n\n");
}

static void write_data(FILE *fp, const json_t *data) {
  fprintf(fp, "## Data\n\n| | |\n|---|---|\n| Evaluated on | ");
  if (!strcmp(str(data, "source"), "file")) {
    fprintf(fp, "file `");
    cell(fp, str(data, "file"));
    fprintf(fp, "` (%s)", str(data, "format"));
  } else {
    fprintf(fp, "dataset ");
    cell(fp, str(data, "dataset"));
    fprintf(fp, ", split %s", str(data, "split"));
  }
  if (json_is_string(json_object_get(data, "half")))
    fprintf(fp, ", %s half (seed %lld)", str(data, "half"), integer(data, "half_seed"));
  fprintf(fp, " |\n");
  if (*str(data, "source_sha256")) fprintf(fp, "| Input SHA-256 | `%s` |\n", str(data, "source_sha256"));
  fprintf(fp, "| Rows | %lld |\n| Rows SHA-256 | `%s` |\n| Rows skipped (unreadable) | %lld |\n"
              "| Gold labels unknown to the model | %lld rows |\n\n",
          integer(data, "n"), str(data, "rows_sha256"), integer(data, "skipped"), integer(data, "unknown_label_rows"));
  fprintf(fp, "Rows SHA-256: %s.\n\n", str(data, "rows_sha256_method"));
}

/* A model's training options: the scalar entries of its config. */
static void options_cell(FILE *fp, const json_t *config) {
  const char *k;
  const json_t *v;
  int any = 0;
  json_object_foreach((json_t *)config, k, v) {
    if (json_is_object(v) || json_is_array(v)) continue;
    fprintf(fp, "%s%s=", any++ ? ", " : "", k);
    value_cell(fp, v);
  }
  if (!any) fputs("-", fp);
}

static void write_lineage(FILE *fp, const json_t *lin) {
  fprintf(fp, "## Lineage\n\n%s\n\n", str(lin, "method"));
  const json_t *models = json_object_get(lin, "models"), *v;
  size_t i;
  if (json_array_size(models)) {
    fprintf(fp, "| model | kind | stage | arch | weights | derivation | parent | SHA-256 | options |\n"
                "|---:|---|---|---|---|---|---:|---|---|\n");
    json_array_foreach(models, i, v) {
      fprintf(fp, "| %lld | %s | %s | %s | %s | %s | ", integer(v, "id"), str(v, "kind"), str(v, "stage"),
              str(v, "arch"), str(v, "dtype"), str(v, "derivation"));
      value_cell(fp, json_object_get(v, "parent_model_id"));
      fprintf(fp, " | `%.12s` | ", str(v, "sha256"));
      options_cell(fp, json_object_get(v, "config"));
      fprintf(fp, " |\n");
    }
    fprintf(fp, "\n");
  } else {
    fprintf(fp, "The model file is not in the registry: its training is not on record.\n\n");
  }
  const json_t *runs = json_object_get(lin, "training_runs");
  if (json_array_size(runs)) {
    fprintf(fp, "| training run | kind | dataset | model | steps logged |\n|---:|---|---|---:|---:|\n");
    json_array_foreach(runs, i, v)
      fprintf(fp, "| %lld | %s | %s | %lld | %lld |\n", integer(v, "id"), str(v, "kind"), str(v, "dataset"),
              integer(v, "model_id"), integer(v, "steps"));
    fprintf(fp, "\n");
  }
  const json_t *sets = json_object_get(lin, "datasets");
  json_array_foreach(sets, i, v) {
    fprintf(fp, "Dataset `%s` (%s):\n\n", str(v, "name"), str(v, "format"));
    const json_t *ing = json_object_get(v, "ingest_runs"), *a = json_object_get(v, "augment_runs"), *r;
    size_t j;
    if (json_array_size(ing)) {
      fprintf(fp, "| ingest run | status | source | source SHA-256 | format | seed | holdout | split policy | rows "
                  "inserted |\n|---:|---|---|---|---|---:|---:|---|---:|\n");
      json_array_foreach(ing, j, r) {
        fprintf(fp, "| %lld | %s | ", integer(r, "id"), str(r, "status"));
        cell(fp, str(r, "source"));
        fprintf(fp, " | `%s` | %s | ", str(r, "source_sha256"), str(r, "format"));
        value_cell(fp, json_object_get(r, "seed"));
        fprintf(fp, " | ");
        value_cell(fp, json_object_get(r, "holdout"));
        fprintf(fp, " | ");
        value_cell(fp, json_object_get(r, "split_policy"));
        fprintf(fp, " | %lld |\n", integer(r, "rows_inserted"));
      }
      fprintf(fp, "\n");
    }
    if (json_array_size(a)) {
      fprintf(fp, "| augment run | status | rows inserted | options |\n|---:|---|---:|---|\n");
      json_array_foreach(a, j, r) {
        fprintf(fp, "| %lld | %s | %lld | ", integer(r, "id"), str(r, "status"), integer(r, "rows_inserted"));
        value_cell(fp, json_object_get(r, "params"));
        fprintf(fp, " |\n");
      }
      fprintf(fp, "\n");
    }
  }
}

static void write_per_intent(FILE *fp, const json_t *per) {
  size_t n = json_array_size(per);
  json_t **rows = malloc((n ? n : 1) * sizeof *rows);
  if (!rows) return;
  for (size_t i = 0; i < n; i++) rows[i] = json_array_get(per, i);
  qsort(rows, n, sizeof *rows, cmp_f1);
  fprintf(fp, "## Per intent (weakest first)\n\n| intent | support | predicted | precision | recall | F1 |\n"
              "|---|---:|---:|---:|---:|---:|\n");
  for (size_t i = 0; i < n; i++) {
    fprintf(fp, "| ");
    cell(fp, str(rows[i], "intent"));
    fprintf(fp, " | %lld | %lld | %.3f | %.3f | %.3f |\n", integer(rows[i], "support"), integer(rows[i], "predicted"),
            num(rows[i], "precision"), num(rows[i], "recall"), num(rows[i], "f1"));
  }
  fprintf(fp, "\n");
  free(rows);
}

static void write_baseline(FILE *fp, const json_t *b, const json_t *res) {
  fprintf(fp, "## Baseline: the legacy rules\n\n");
  if (!json_is_true(json_object_get(b, "available"))) {
    fprintf(fp, "Not measured: %s.\n\n", str(b, "why"));
    return;
  }
  fprintf(fp, "The %s: `%s` (%lld rules, SHA-256 `%s`) on the same %lld rows; %s.\n\n", str(b, "engine"),
          str(b, "rules_file"), integer(b, "rules"), str(b, "rules_sha256"), integer(b, "n"), str(b, "method"));
  fprintf(fp, "| | model | legacy rules |\n|---|---:|---:|\n| Accuracy | %.4f | %.4f |\n| Macro-F1 | %.4f | %.4f |\n"
              "| Coverage (share answered) | 1.0000 | %.4f |\n\n",
          num(res, "accuracy"), num(b, "accuracy"), num(res, "macro_f1"), num(b, "macro_f1"), num(b, "coverage"));
}

static void write_limitations(FILE *fp, const json_t *l) {
  fprintf(fp, "## Limitations\n\n");
  const json_t *weak = json_object_get(l, "weak_intents"), *v;
  size_t i;
  fprintf(fp, "Intents with F1 below %.2f or fewer than %lld evaluated rows: ", num(l, "f1_floor"),
          integer(l, "support_floor"));
  if (!json_array_size(weak)) fprintf(fp, "none.\n\n");
  else {
    fprintf(fp, "%zu.\n\n| intent | F1 | support |\n|---|---:|---:|\n", json_array_size(weak));
    json_array_foreach(weak, i, v) {
      fprintf(fp, "| ");
      cell(fp, str(v, "intent"));
      fprintf(fp, " | %.3f%s | %lld%s |\n", num(v, "f1"), json_is_true(json_object_get(v, "f1_below_floor")) ? " (low)" : "",
              integer(v, "support"), json_is_true(json_object_get(v, "support_below_floor")) ? " (few)" : "");
    }
    fprintf(fp, "\n");
  }
  const json_t *cal = json_object_get(l, "calibration");
  fprintf(fp, "Calibration: the expected calibration error is %.4f, %s the bound of %.2f.\n\n", num(cal, "ece"),
          json_is_true(json_object_get(cal, "above_bound")) ? "above" : "within", num(l, "ece_bound"));
  json_array_foreach(json_object_get(l, "data_coverage"), i, v) fprintf(fp, "- %s\n", json_string_value(v));
  const json_t *nc = json_object_get(l, "intents_not_covered");
  if (json_array_size(nc)) {
    fprintf(fp, "- Intents without an evaluated row: ");
    json_array_foreach(nc, i, v) fprintf(fp, "%s`%s`", i ? ", " : "", json_string_value(v));
    fprintf(fp, ".\n");
  }
  fprintf(fp, "\n");
}

static void write_measurements(FILE *fp, const json_t *body, const json_t *m) {
  const json_t *cost = json_object_get(body, "cost");
  fprintf(fp, "## Measurements of the run\n\nMeasured when the report was made, on that machine; they vary from run "
              "to run and are kept beside the hashed body, not in it. Latency: %s.\n\n| | |\n|---|---|\n",
          str(json_object_get(body, "latency"), "method"));
  fprintf(fp, "| Date (UTC) | %s |\n", str(m, "created_at"));
  fprintf(fp, "| Latency p50 (ms, one query, one thread) | %.4f |\n| Latency p90 (ms) | %.4f |\n"
              "| Latency p99 (ms) | %.4f |\n| Latency mean (ms) | %.4f |\n",
          num(m, "latency_ms_p50"), num(m, "latency_ms_p90"), num(m, "latency_ms_p99"), num(m, "latency_ms_mean"));
  fprintf(fp, "| Cost per 1,000 requests (%s, at %.4f per core-hour) | %.3g |\n", str(cost, "currency"),
          num(cost, "cpu_price_per_core_hour"), num(m, "cost_per_1000_requests"));
  fprintf(fp, "| Model file | `");
  cell(fp, str(m, "model_path"));
  fprintf(fp, "` |\n");
  if (*str(m, "input_path")) {
    fprintf(fp, "| Input file | `");
    cell(fp, str(m, "input_path"));
    fprintf(fp, "` |\n");
  }
  fprintf(fp, "\nCost: %s. Compare latency only with figures measured in the same run.\n\n", str(cost, "formula"));
}

static void write_signoff(FILE *fp, const finch_report *r) {
  fprintf(fp, "## Sign-off\n\nDecisions are append-only, each naming the body SHA-256 it was made on "
              "(`finch report approve %lld --reviewer NAME --decision approve|reject --comment TEXT`).\n\n", r->id);
  if (!json_array_size(r->approvals)) {
    fprintf(fp, "No decision was recorded when this was rendered.\n\n");
    return;
  }
  fprintf(fp, "| time (UTC) | reviewer | decision | body SHA-256 | comment |\n|---|---|---|---|---|\n");
  size_t i;
  const json_t *a;
  json_array_foreach(r->approvals, i, a) {
    fprintf(fp, "| %s | ", str(a, "created_at"));
    cell(fp, str(a, "reviewer"));
    fprintf(fp, " | %s | `%s` | ", str(a, "decision"), str(a, "body_sha256"));
    cell(fp, str(a, "comment"));
    fprintf(fp, " |\n");
  }
  fprintf(fp, "\n");
}

void finch_report_write_markdown(FILE *fp, const finch_report *r) {
  const json_t *b = r->body, *res = json_object_get(b, "results"), *sw = json_object_get(b, "software");
  const int cmp = json_object_get(b, "comparison") != NULL;
  fprintf(fp, "# %s report %lld\n\n", cmp ? "Comparison" : "Evaluation", r->id);
  fprintf(fp, "Body SHA-256 `%s`: the hash of the report's JSON, which holds every figure below except the run's "
              "measurements and the sign-off. Made %s by finch %s, source commit `%s`.\n\n",
          r->body_sha256, r->created_at, str(sw, "finch_version"), str(sw, "source_commit"));
  fprintf(fp, "## Purpose and intended use\n\n%s\n\n", str(json_object_get(b, "purpose_and_intended_use"), "text"));
  if (cmp) {
    fprintf(fp, "%s.\n\n", str(b, "title"));
    write_data(fp, json_object_get(b, "data"));
    finch_compare_write_markdown(fp, b, r->measurements);
    goto signoff;
  }
  write_model(fp, json_object_get(b, "model"));
  write_data(fp, json_object_get(b, "data"));
  fprintf(fp, "## Summary\n\n| metric | value |\n|---|---|\n| Accuracy | %.4f |\n| Macro-F1 | %.4f |\n"
              "| Expected calibration error (10 bins) | %.4f |\n\n",
          num(res, "accuracy"), num(res, "macro_f1"), num(res, "ece"));
  write_baseline(fp, json_object_get(b, "baseline"), res);
  const json_t *oos = json_object_get(res, "out_of_scope");
  if (oos) write_oos(fp, oos);
  write_per_intent(fp, json_object_get(res, "per_intent"));
  write_limitations(fp, json_object_get(b, "limitations"));
  write_measurements(fp, b, r->measurements);
  write_lineage(fp, json_object_get(b, "lineage"));
signoff:
  write_signoff(fp, r);
  fprintf(fp, "## Reproduce\n\n```\n%s\n```\n", *str(r->measurements, "command_line")
                                                   ? str(r->measurements, "command_line") : "(not recorded)");
}
