#include "evaluate/body.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "core/version.h"
#include "evaluate/lineage.h"
#include "evaluate/metrics.h"
#include "nn/model_arch.h"

static const char default_purpose[] =
    "Intent recognition for customer-service messages to a financial institution (retail banking): the model "
    "routes a customer's message to one of its intents, or refuses it as out of scope where it has an "
    "abstention policy, with the legacy rules or a human behind it. It is not for credit, lending, pricing, "
    "fraud or any other decision about a customer, and not for messages outside the domain and language it "
    "was trained and evaluated on.";

static int cmp_line(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

finch_status finch_eval_rows_sha256(const char *const *texts, const char *const *labels, size_t n,
                                    char sha[FINCH_SHA256_HEX_LEN], finch_err *err) {
  char **lines = calloc(n + 1, sizeof *lines);
  if (!lines) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  finch_status st = FINCH_OK;
  for (size_t i = 0; i < n && !st; i++) {
    char *folded = NULL, h[FINCH_SHA256_HEX_LEN];
    st = finch_text_normalize(texts[i], strlen(texts[i]), FINCH_TEXT_FOLD, &folded, err);
    if (st) {
      finch_err_prefix(err, "evaluated row %zu", i + 1);
      break;
    }
    finch_utterance_hash(folded, labels[i], "", h);
    free(folded);
    size_t len = strlen(h) + strlen(labels[i]) + 3;
    if (!(lines[i] = malloc(len))) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    snprintf(lines[i], len, "%s %s\n", h, labels[i]);
  }
  if (!st) {
    qsort(lines, n, sizeof *lines, cmp_line);
    finch_sha256 *ctx = finch_sha256_new();
    if (!ctx) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    } else {
      for (size_t i = 0; i < n; i++) finch_sha256_update(ctx, lines[i], strlen(lines[i]));
      finch_sha256_final(ctx, sha);
    }
  }
  for (size_t i = 0; i < n; i++) free(lines[i]);
  free(lines);
  return st;
}

json_t *finch_eval_baseline_json(const finch_eval_baseline *b, const char *const *texts, const char *const *labels,
                                 size_t n) {
  if (!b) return json_pack("{s:b, s:s}", "available", 0, "why", "no rule pack was given to this evaluation");
  /* Labels: the gold ones and the rules' answers, sorted; one more index for "no rule fired". */
  const char **names = malloc((2 * n + 1) * sizeof *names), **got = malloc((n + 1) * sizeof *got);
  int *gold = malloc((n + 1) * sizeof *gold), *pred = malloc((n + 1) * sizeof *pred);
  json_t *out = NULL;
  finch_metrics m = {0};
  if (!names || !got || !gold || !pred) goto done;
  size_t nl = 0;
  long long fired = 0;
  for (size_t i = 0; i < n; i++) {
    got[i] = b->answer(b->ctx, texts[i]);
    fired += got[i] != NULL;
    names[nl++] = labels[i];
    if (got[i]) names[nl++] = got[i];
  }
  nl = finch_str_sort_unique(names, nl);
  for (size_t i = 0; i < n; i++) {
    gold[i] = finch_str_index(names, nl, labels[i]);
    pred[i] = got[i] ? finch_str_index(names, nl, got[i]) : (int)nl;
  }
  if (finch_metrics_compute(gold, pred, NULL, n, nl + 1, &m)) goto done;
  out = json_pack("{s:b, s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:s}", "available", 1, "engine",
                  "legacy PCRE2 rule pack (serve/rules.h), as the server's fallback", "rules_file", b->name,
                  "rules_sha256", b->sha256, "rules", (json_int_t)b->n_rules, "n", (json_int_t)n, "accuracy",
                  m.accuracy, "macro_f1", m.macro_f1, "coverage", n ? (double)fired / (double)n : 0.0, "method",
                  "the rules' answer on each evaluated row; a row no rule fires on counts as wrong; coverage is the "
                  "share of rows a rule fired on; macro-F1 is over the intents with evaluated rows");
done:
  finch_metrics_free(&m);
  free(names), free(got), free(gold), free(pred);
  return out;
}

/* The intended use: the model file's "intended_use" metadata, else its
 * registry config's, else the default. */
static json_t *purpose_json(finch_db *db, const finch_eval_body_in *in) {
  char text[4096];
  if (nn_model_meta_string(in->model, "intended_use", text, sizeof text) && text[0])
    return json_pack("{s:s, s:s}", "text", text, "source", "model");
  if (db && in->model_id) {
    char id[32];
    snprintf(id, sizeof id, "%lld", in->model_id);
    const char *p[] = {id};
    finch_err err;
    PGresult *r = finch_db_query(db, "SELECT coalesce(config->>'intended_use', '') FROM models WHERE id = $1", 1,
                                 p, &err);
    json_t *out = NULL;
    if (r && PQntuples(r) && *PQgetvalue(r, 0, 0))
      out = json_pack("{s:s, s:s}", "text", PQgetvalue(r, 0, 0), "source", "registry");
    PQclear(r);
    if (out) return out;
  }
  return json_pack("{s:s, s:s}", "text", default_purpose, "source", "default");
}

static json_t *model_json(const finch_eval_body_in *in) {
  const nn_model *m = in->model;
  json_t *labels = json_array();
  for (size_t i = 0; i < nn_model_n_labels(m); i++) json_array_append_new(labels, json_string(nn_model_label(m, i)));
  const json_t *oos = json_object_get(in->metrics, "out_of_scope");
  const json_t *policy = json_object_get(oos, "policy");
  const char *method = json_string_value(json_object_get(policy, "method"));
  json_t *abst = policy && method && strcmp(method, "none") != 0 ? json_deep_copy(policy) : json_null();
  return json_pack("{s:s, s:o, s:s, s:s, s:s, s:I, s:I, s:o, s:o, s:o}", "sha256", in->model_sha256, "id",
                   in->model_id ? json_integer(in->model_id) : json_null(), "kind", in->kind, "arch",
                   nn_model_arch_name(m), "dtype", nn_model_dtype(m) == NN_DTYPE_Q8 ? "int8 (q8)" : "f32",
                   "params", (json_int_t)nn_model_n_params(m), "bytes", (json_int_t)in->model_bytes, "labels", labels,
                   "abstention", abst, "pretrained", in->pretrained ? json_deep_copy(in->pretrained) : json_null());
}

static json_t *data_json(const finch_eval_body_in *in) {
  const finch_eval_opts *o = in->opts;
  const char *file = NULL;
  if (o->input) {
    file = strrchr(o->input, '/');
    file = file ? file + 1 : o->input;
  }
  return json_pack("{s:s, s:o, s:o, s:o, s:o, s:s, s:o, s:o, s:I, s:I, s:I, s:s, s:s}", "source",
                   o->input ? "file" : "dataset", "dataset", o->input ? json_null() : json_string(o->dataset),
                   "split", o->input ? json_null() : json_string(o->split ? o->split : "dev"), "file",
                   file ? json_string(file) : json_null(), "format",
                   o->input ? json_string(o->format ? o->format : "banking77") : json_null(), "source_sha256",
                   in->source_sha256, "half", o->half ? json_string(o->half) : json_null(), "half_seed",
                   o->half ? json_integer((json_int_t)o->seed) : json_null(), "n", (json_int_t)in->n, "skipped",
                   (json_int_t)in->skipped, "unknown_label_rows", (json_int_t)in->unknown_label_rows, "rows_sha256",
                   in->rows_sha256, "rows_sha256_method", FINCH_EVAL_ROWS_SHA256_METHOD);
}

/* The metrics without what is elsewhere in the body or varies by run. */
static json_t *results_json(const json_t *metrics, const json_t *stats) {
  static const char *const drop[] = {"model",     "source",          "source_sha256",   "n",
                                     "skipped",   "unknown_label_rows", "created_at",   "latency_ms_p50",
                                     "latency_ms_p90", "latency_ms_p99", "latency_ms_mean", "rows_sha256",
                                     "report_id", "report_path"};
  json_t *r = json_deep_copy(metrics);
  for (size_t i = 0; r && i < sizeof drop / sizeof *drop; i++) json_object_del(r, drop[i]);
  static const char *const take[] = {"bootstrap", "confusion", "most_confused", "calibration", "coverage_curve"};
  for (size_t i = 0; r && stats && i < sizeof take / sizeof *take; i++) {
    json_t *v = json_object_get(stats, take[i]);
    if (v) json_object_set(r, take[i], v);
  }
  json_t *ci;
  if (r && stats && (ci = json_object_get(json_object_get(stats, "accuracy"), "ci95")))
    json_object_set(r, "accuracy_ci95", ci);
  if (r && stats && (ci = json_object_get(json_object_get(stats, "macro_f1"), "ci95")))
    json_object_set(r, "macro_f1_ci95", ci);
  return r;
}

static json_t *limitations_json(const finch_eval_body_in *in) {
  const nn_model *m = in->model;
  json_t *weak = json_array(), *coverage = json_array(), *uncovered = json_array();
  const json_t *per = json_object_get(in->metrics, "per_intent");
  for (size_t i = 0; i < json_array_size(per); i++) {
    const json_t *p = json_array_get(per, i);
    json_int_t support = json_integer_value(json_object_get(p, "support"));
    double f1 = json_number_value(json_object_get(p, "f1"));
    if (!support || (f1 >= FINCH_EVAL_F1_FLOOR && support >= FINCH_EVAL_SUPPORT_FLOOR)) continue;
    json_array_append_new(weak, json_pack("{s:O, s:f, s:I, s:b, s:b}", "intent", json_object_get(p, "intent"), "f1",
                                          f1, "support", support, "f1_below_floor", f1 < FINCH_EVAL_F1_FLOOR,
                                          "support_below_floor", support < FINCH_EVAL_SUPPORT_FLOOR));
  }
  for (size_t l = 0; l < nn_model_n_labels(m); l++) {
    const char *name = nn_model_label(m, l);
    size_t k = 0;
    while (k < in->n && strcmp(in->labels[k], name) != 0) k++;
    if (k == in->n) json_array_append_new(uncovered, json_string(name));
  }
  char s[512];
  if (json_array_size(uncovered)) {
    snprintf(s, sizeof s, "%zu of the model's %zu intents have no evaluated row (intents_not_covered): their "
             "quality is not measured here.", json_array_size(uncovered), nn_model_n_labels(m));
    json_array_append_new(coverage, json_string(s));
  }
  if (in->unknown_label_rows) {
    snprintf(s, sizeof s, "%lld rows carry a gold label the model does not have; they count as wrong.",
             in->unknown_label_rows);
    json_array_append_new(coverage, json_string(s));
  }
  if (in->skipped) {
    snprintf(s, sizeof s, "%lld rows of the input were unreadable and are not evaluated.", in->skipped);
    json_array_append_new(coverage, json_string(s));
  }
  const json_t *oos = json_object_get(in->metrics, "out_of_scope");
  if (!oos || !json_integer_value(json_object_get(oos, "out_of_scope_rows")))
    json_array_append_new(coverage, json_string("The rows hold no out-of-scope message: how the model treats "
                                                "messages outside its intents is not measured."));
  json_array_append_new(coverage, json_string("Only the rows described under data are measured: other channels, "
                                               "languages, customer groups or later traffic may differ; the "
                                               "monitoring of the serving side is the check on those."));
  double ece = json_number_value(json_object_get(in->metrics, "ece"));
  return json_pack("{s:f, s:i, s:f, s:o, s:{s:f, s:b}, s:o, s:o}", "f1_floor", FINCH_EVAL_F1_FLOOR,
                   "support_floor", FINCH_EVAL_SUPPORT_FLOOR, "ece_bound", FINCH_EVAL_ECE_BOUND, "weak_intents", weak,
                   "calibration", "ece", ece, "above_bound", ece > FINCH_EVAL_ECE_BOUND, "data_coverage", coverage,
                   "intents_not_covered", uncovered);
}

double finch_eval_cpu_price(const finch_eval_opts *opts) {
  return opts->cpu_price_hour > 0 ? opts->cpu_price_hour : FINCH_EVAL_DEFAULT_CPU_PRICE_HOUR;
}

finch_status finch_eval_body(finch_db *db, const finch_eval_body_in *in, json_t **out, finch_err *err) {
  *out = NULL;
  const finch_eval_opts *o = in->opts;
  json_t *lineage = NULL;
  finch_status st = finch_eval_lineage(db, in->model_id, o->input ? NULL : o->dataset, &lineage, err);
  if (st) return st;
  double price = finch_eval_cpu_price(o);
  json_t *body = json_pack(
      "{s:o, s:o, s:{s:s, s:s}, s:o, s:o, s:o, s:{s:s, s:I, s:s}, s:{s:f, s:s, s:s}, s:o, s:o}",
      "purpose_and_intended_use", purpose_json(db, in), "model", model_json(in), "software", "finch_version",
      finch_version(), "source_commit", finch_source_commit(), "data", data_json(in), "lineage", lineage, "results",
      results_json(in->metrics, in->statistics), "latency", "method",
      "wall time of one prediction (normalisation, features, forward pass), one query at a time on one thread, "
      "over every evaluated row; p50, p90 and p99 by the nearest-rank method and the mean",
      "rows", (json_int_t)in->n, "where",
      "the figures are measurements of the run on its machine (the report's measurements), outside this body: "
      "timings differ from run to run, the body does not",
      "cost", "cpu_price_per_core_hour", price, "currency", "USD", "formula",
      "cost_per_1000_requests = cpu_price_per_core_hour * latency_ms_mean / 3600: 1,000 requests at the mean "
      "latency keep one core busy for latency_ms_mean seconds",
      "baseline", finch_eval_baseline_json(o->baseline, in->texts, in->labels, in->n), "limitations",
      limitations_json(in));
  if (!body) return finch_err_set(err, FINCH_ENOMEM, "out of memory building the report body");
  if (o->monitoring) json_object_set_new(body, "monitoring", json_deep_copy(o->monitoring));
  *out = body;
  return FINCH_OK;
}

char *finch_eval_body_dump(const json_t *body, char sha[FINCH_SHA256_HEX_LEN]) {
  char *s = json_dumps(body, JSON_SORT_KEYS | JSON_INDENT(2) | JSON_REAL_PRECISION(FINCH_EVAL_BODY_PRECISION));
  if (!s) return NULL;
  size_t len = strlen(s);
  char *t = realloc(s, len + 2);
  if (!t) {
    free(s);
    return NULL;
  }
  t[len] = '\n';
  t[len + 1] = '\0';
  finch_sha256_hex(t, len + 1, sha);
  return t;
}
