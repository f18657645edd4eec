#include "evaluate/evaluate.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/clock.h"
#include "core/csv.h"
#include "core/dataset.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/models.h"
#include "core/paths.h"
#include "core/text.h"
#include "evaluate/body.h"
#include "evaluate/lineage.h"
#include "evaluate/metrics.h"
#include "evaluate/oos.h"
#include "evaluate/results.h"
#include "evaluate/store.h"
#include "nn/abstain.h"
#include "nn/halves.h"
#include "nn/model.h"
#include "nn/model_arch.h"

typedef finch_eval_rows examples;

void finch_eval_rows_free(finch_eval_rows *e) {
  for (size_t i = 0; i < e->n; i++) {
    free(e->texts[i]);
    free(e->labels[i]);
  }
  free(e->texts);
  free(e->labels);
  memset(e, 0, sizeof *e);
}

static int examples_add(examples *e, char *text, char *label) {
  if (e->n == e->cap) {
    size_t cap = e->cap ? 2 * e->cap : 1024;
    char **t = realloc(e->texts, cap * sizeof *t);
    if (!t) return -1;
    e->texts = t;
    char **l = realloc(e->labels, cap * sizeof *l);
    if (!l) return -1;
    e->labels = l;
    e->cap = cap;
  }
  e->texts[e->n] = text;
  e->labels[e->n++] = label;
  return 0;
}

/* Labelled rows of a banking77 CSV; unreadable rows are counted and skipped. */
static finch_status read_csv(const char *path, examples *e, finch_err *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(errno));
  finch_csv *csv = finch_csv_open(fp, path);
  static const char *const header[] = {"text", "category"};
  finch_status st = finch_csv_expect_header(csv, header, 2, err);
  if (st) goto out;
  char **f;
  size_t nf;
  finch_err rerr;
  int rc;
  while ((rc = finch_csv_next(csv, &f, &nf, &rerr)) != 0) {
    char *text = NULL, *label = NULL;
    finch_err nerr;
    if (rc < 0 || nf != 2 || finch_text_normalize(f[0], strlen(f[0]), 0, &text, &nerr) ||
        finch_text_normalize(f[1], strlen(f[1]), 0, &label, &nerr) || !*text || !*label) {
      finch_warn("%s:%zu: row skipped: %s", path, finch_csv_line(csv),
                 rc < 0 ? rerr.msg : nf != 2 ? "expected 2 fields" : "unreadable or empty text or label");
      free(text);
      free(label);
      e->skipped++;
      continue;
    }
    if (examples_add(e, text, label)) {
      free(text);
      free(label);
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      goto out;
    }
  }
out:
  finch_csv_close(csv);
  fclose(fp);
  return st;
}

/* The split's labelled rows, with the split's own label set: every row's
 * label is a name in it. */
static finch_status read_db(finch_db *db, const char *dataset, const char *split, examples *e, finch_err *err) {
  finch_dataset_split *s = NULL;
  finch_dataset_query q = {.dataset = dataset, .split = split};
  finch_status st = finch_dataset_check(db, dataset, split, err);
  if (st) return st;
  st = finch_dataset_split_load(db, &q, &s, err);
  if (st) return st;
  for (size_t i = 0; i < s->n && !st; i++) {
    char *t = strdup(s->texts[i]), *l = strdup(s->label_names[s->labels[i]]);
    if (!t || !l || examples_add(e, t, l)) {
      free(t);
      free(l);
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    }
  }
  finch_dataset_split_free(s);
  if (!st && e->n == 0)
    st = finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' has no labelled rows in split '%s'", dataset, split);
  return st;
}

finch_status finch_eval_rows_load(finch_db *db, const finch_eval_opts *opts, finch_eval_rows *rows, finch_err *err) {
  memset(rows, 0, sizeof *rows);
  if (opts->input && opts->format && strcmp(opts->format, "banking77") != 0)
    return finch_err_set(err, FINCH_EINVAL, "unknown format '%s' (supported: banking77)", opts->format);
  if (opts->input) return read_csv(opts->input, rows, err);
  if (!opts->dataset) return finch_err_set(err, FINCH_EINVAL, "give --input FILE (with --format) or --dataset NAME");
  return read_db(db, opts->dataset, opts->split ? opts->split : "dev", rows, err);
}

/* How m builds on the pretrained encoder, for its model card: "member" when
 * m holds it (a "bert" model, or an ensemble with a "bert" member), "teacher"
 * when a model it was distilled or compiled from (the registry's parent
 * chain) chose a bert member; NULL when neither. */
static const char *pretrained_use(finch_db *db, const nn_model *m, long long model_id) {
  int holds = nn_model_arch(m) == NN_ARCH_BERT;
  for (size_t i = 0; !holds && i < nn_model_n_members(m); i++)
    holds = nn_model_arch(nn_model_member(m, i)) == NN_ARCH_BERT;
  if (holds) return "member";
  if (!db || !model_id) return NULL;
  char id[32];
  snprintf(id, sizeof id, "%lld", model_id);
  const char *p[] = {id};
  finch_err err;
  PGresult *r = finch_db_query(db,
      "WITH RECURSIVE up(id, parent, config) AS (SELECT id, parent_model_id, config FROM models WHERE id = $1"
      " UNION SELECT m.id, m.parent_model_id, m.config FROM models m JOIN up ON m.id = up.parent)"
      " SELECT count(*) FROM up WHERE config->'members' @> '[{\"name\": \"bert\", \"chosen\": true}]'", 1, p, &err);
  long long n = r ? atoll(PQgetvalue(r, 0, 0)) : 0;
  if (!r) finch_warn("eval: the model's lineage could not be read: %s", err.msg);
  PQclear(r);
  return n > 0 ? "teacher" : NULL;
}

/* Points of the accuracy/coverage curve in the metrics. */
enum { EVAL_CURVE_POINTS = 20 };

/* Keeps the rows of opts->half only (nn_model_holdout_halves) and says so in source. */
static finch_status keep_half(const nn_model *m, const finch_eval_opts *opts, const char *oos_label, examples *ex,
                              char *source, size_t source_n, finch_err *err) {
  int want = !strcmp(opts->half, "selection") ? 0 : !strcmp(opts->half, "report") ? 1 : -1;
  if (want < 0) return finch_err_set(err, FINCH_EINVAL, "--half %s: expected selection or report", opts->half);
  uint8_t *half = malloc(ex->n + 1);
  if (!half) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  nn_model_holdout_halves(m, (const char *const *)ex->labels, ex->n, oos_label, opts->seed, half);
  size_t k = 0;
  for (size_t i = 0; i < ex->n; i++) {
    if (half[i] == want) {
      ex->texts[k] = ex->texts[i];
      ex->labels[k++] = ex->labels[i];
    } else {
      free(ex->texts[i]);
      free(ex->labels[i]);
    }
  }
  ex->n = k;
  free(half);
  size_t len = strlen(source);
  snprintf(source + len, source_n - len, ", %s half (seed %llu)", opts->half, opts->seed);
  return FINCH_OK;
}

/* The rows' out-of-scope label (evaluate.h): opts->oos_label, which must be
 * one of the rows' labels, else "oos" when a row has it, else NULL. */
static finch_status oos_label_of(const finch_eval_opts *opts, const examples *ex, const char **out,
                                 finch_err *err) {
  const char *want = opts->oos_label ? opts->oos_label : "oos";
  *out = NULL;
  for (size_t i = 0; i < ex->n && !*out; i++)
    if (!strcmp(ex->labels[i], want)) *out = ex->labels[i];
  if (!*out && opts->oos_label)
    return finch_err_set(err, FINCH_EINVAL, "--oos-label '%s' is not a label of the evaluated rows", opts->oos_label);
  return FINCH_OK;
}

static json_t *real_or_null(double v) { return isnan(v) ? json_null() : json_real(v); }

/* The "out_of_scope" section of the metrics (keys read by report.c). */
static json_t *oos_json(const nn_model *m, const nn_abstain *pol, const char *label, const finch_oos_metrics *o,
                        const finch_oos_point *pts, size_t n_pts) {
  json_t *policy = json_pack("{s:s, s:o, s:f, s:o}", "method", nn_abstain_method_name(pol->methods), "threshold",
                             (pol->methods & NN_ABSTAIN_THRESHOLD) ? json_real(pol->threshold) : json_null(),
                             "temperature", (double)pol->temperature, "oos_label",
                             pol->oos_index >= 0 ? json_string(nn_model_label(m, (size_t)pol->oos_index))
                                                 : json_null());
  json_t *curve = json_array();
  for (size_t j = 0; j < n_pts; j++)
    json_array_append_new(curve, json_pack("{s:f, s:o, s:o, s:o}", "threshold", pts[j].threshold, "coverage",
                                           real_or_null(pts[j].coverage), "accuracy", real_or_null(pts[j].accuracy),
                                           "oos_refused", real_or_null(pts[j].oos_refused)));
  return json_pack("{s:o, s:o, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "label",
                   label ? json_string(label) : json_null(), "policy", policy, "in_scope_rows", (json_int_t)o->n_in,
                   "out_of_scope_rows", (json_int_t)o->n_oos, "refused_in_scope", (json_int_t)o->in_refused,
                   "refused_out_of_scope", (json_int_t)o->oos_refused, "in_scope_accuracy",
                   real_or_null(o->in_accuracy), "in_scope_coverage", real_or_null(o->in_coverage), "oos_recall",
                   real_or_null(o->oos_recall), "oos_precision", real_or_null(o->oos_precision), "auroc",
                   real_or_null(o->auroc), "fpr_at_95_in_scope_recall", real_or_null(o->fpr_at_95),
                   "threshold_at_95_in_scope_recall", real_or_null(o->threshold_at_95), "curve", curve);
}

/* The report of a finished evaluation: the body made of in (evaluate/body.h)
 * and the run's measurements meas, stored once (evaluate/store.h); fills
 * res's report fields. The legacy columns: model_path, source and in's
 * metrics (eval_reports.metrics). */
static finch_status store_report(finch_db *db, const finch_eval_body_in *in, const json_t *meas,
                                 const char *model_path, const char *source, finch_eval_result *res, finch_err *err) {
  json_t *body = NULL;
  finch_status st = finch_eval_body(db, in, &body, err);
  if (st) return st;
  finch_report_row row = {.model_id = in->model_id, .model_sha256 = in->model_sha256, .model_path = model_path,
                          .source = source, .n = (long long)in->n, .metrics = in->metrics};
  finch_report_ref ref;
  st = finch_report_store(db, body, meas, &row, &ref, err);
  json_decref(body);
  if (st) return st;
  res->report_id = ref.id;
  res->unchanged = ref.unchanged;
  snprintf(res->body_sha256, sizeof res->body_sha256, "%s", ref.body_sha256);
  snprintf(res->report_path, sizeof res->report_path, "%s", ref.md_path);
  snprintf(res->json_path, sizeof res->json_path, "%s", ref.json_path);
  snprintf(res->html_path, sizeof res->html_path, "%s", ref.html_path);
  return FINCH_OK;
}

/* The report's statistics (evaluate/results.h) over the decided answers:
 * the labels are the model's, then the gold labels it lacks, then
 * "(refused)" when it has a policy (the plain metrics' indices); the
 * probabilities are the model's at temperature 1, 0 for the added labels.
 * The bootstrap is seeded by seed (0: 42), so the figures repeat. */
static finch_status eval_statistics(const nn_model *m, char **unknown, size_t n_unknown, int refusals,
                                    const int *gold, const int *pred, const float *all, size_t n,
                                    unsigned long long seed, json_t **out, finch_err *err) {
  const size_t C = nn_model_n_labels(m), Ce = C + n_unknown + (refusals ? 1 : 0);
  const char **labels = calloc(Ce + 1, sizeof *labels);
  float *pe = Ce == C ? NULL : calloc(n * Ce + 1, sizeof *pe);
  int32_t *g = calloc(n + 1, sizeof *g), *p = calloc(n + 1, sizeof *p);
  finch_status st = labels && g && p && (Ce == C || pe) ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t l = 0; !st && l < Ce; l++)
    labels[l] = l < C ? nn_model_label(m, l) : l < C + n_unknown ? unknown[l - C] : "(refused)";
  for (size_t i = 0; !st && i < n; i++) {
    g[i] = gold[i];
    p[i] = pred[i];
    if (pe) memcpy(pe + i * Ce, all + i * C, C * sizeof *pe);
  }
  if (!st) {
    finch_results_in in = {.gold = g, .pred = p, .probs = pe ? pe : all, .n = n, .C = Ce, .labels = labels,
                           .seed = seed ? seed : 42};
    st = finch_results_json(&in, out, err);
  }
  free(labels);
  free(pe);
  free(g);
  free(p);
  return st;
}

finch_status finch_eval_run(finch_db *db, const finch_eval_opts *opts, finch_eval_result *res, finch_err *err) {
  memset(res, 0, sizeof *res);
  const char *split = opts->split ? opts->split : "dev";
  char path[PATH_MAX], kind[16];
  long long model_id;
  finch_status st = finch_models_resolve(db, opts->model, path, sizeof path, &model_id, kind, err);
  if (st) return st;
  char sha[FINCH_SHA256_HEX_LEN], src_sha[FINCH_SHA256_HEX_LEN] = "";
  st = finch_sha256_file(path, sha, err);
  if (st) return st;
  nn_model *m = NULL;
  st = nn_model_load(&m, path, err);
  if (st) return st;
  if (!kind[0] && !nn_model_meta_string(m, "kind", kind, sizeof kind)) snprintf(kind, sizeof kind, "unknown");
  nn_abstain pol;
  st = nn_abstain_read(m, &pol, err);
  if (st) {
    char why[sizeof err->msg];
    snprintf(why, sizeof why, "%s", err->msg);
    finch_err_set(err, st, "%s: %s", path, why);
    nn_model_free(m);
    return st;
  }

  examples ex = {0};
  char source[PATH_MAX + 64];
  st = finch_eval_rows_load(db, opts, &ex, err);
  if (opts->input) {
    if (!st) st = finch_sha256_file(opts->input, src_sha, err);
    char abs[PATH_MAX];
    snprintf(source, sizeof source, "file %s", realpath(opts->input, abs) ? abs : opts->input);
  } else {
    snprintf(source, sizeof source, "dataset %s, split %s", opts->dataset, split);
  }
  const char *oos_label = NULL, *class_label = pol.oos_index >= 0 ? nn_model_label(m, (size_t)pol.oos_index) : NULL;
  if (!st) st = oos_label_of(opts, &ex, &oos_label, err);
  char oos_copy[256]; /* oos_label may point into a row that keep_half frees */
  if (oos_label) {
    snprintf(oos_copy, sizeof oos_copy, "%s", oos_label);
    oos_label = oos_copy;
  }
  if (!st && opts->half) st = keep_half(m, opts, oos_label ? oos_label : class_label, &ex, source, sizeof source, err);
  char rows_sha[FINCH_SHA256_HEX_LEN] = "";
  if (!st)
    st = finch_eval_rows_sha256((const char *const *)ex.texts, (const char *const *)ex.labels, ex.n, rows_sha, err);
  if (!st && !opts->input) st = finch_eval_dataset_source_sha256(db, opts->dataset, src_sha, sizeof src_sha, err);
  /* A model trained with the rows' out-of-scope label but no policy answers
   * it as an intent: the out-of-scope figures count that answer a refusal. */
  const int oos_answer = oos_label ? nn_model_label_index(m, oos_label) : -1;
  size_t C = nn_model_n_labels(m), n = ex.n;
  int *gold = calloc(n + 1, sizeof *gold), *pred = calloc(n + 1, sizeof *pred);
  int *decided = calloc(n + 1, sizeof *decided), *answer = calloc(n + 1, sizeof *answer);
  float *conf = calloc(n + 1, sizeof *conf), *probs = calloc(C, sizeof *probs), *score = calloc(n + 1, sizeof *score);
  float *all = calloc(n * C + 1, sizeof *all); /* every row's probabilities at temperature 1 */
  json_t *stats = NULL;
  unsigned char *is_oos = calloc(n + 1, 1);
  double *lat = calloc(n + 1, sizeof *lat);
  char **unknown = calloc(n + 1, sizeof *unknown); /* gold labels the model lacks */
  size_t n_unknown = 0;
  long long unknown_rows = 0, n_oos = 0;
  json_t *out = NULL;
  finch_metrics mt = {0};
  finch_oos_point pts[EVAL_CURVE_POINTS];
  char **res_answers = opts->keep_rows ? calloc(n + 1, sizeof *res_answers) : NULL;
  unsigned char *res_correct = opts->keep_rows ? calloc(n + 1, 1) : NULL;
  if (!st && (!gold || !pred || !decided || !answer || !conf || !probs || !score || !is_oos || !lat || !unknown || !all ||
              (opts->keep_rows && (!res_answers || !res_correct))))
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  /* Without a threshold: the policy's explicit class alone, on the
   * probabilities already at the policy's temperature. */
  const nn_abstain no_threshold = {.methods = pol.methods & NN_ABSTAIN_CLASS, .threshold = 0, .temperature = 1,
                                   .oos_index = pol.oos_index};
  for (size_t i = 0; !st && i < n; i++) {
    is_oos[i] = (oos_label && !strcmp(ex.labels[i], oos_label)) || (class_label && !strcmp(ex.labels[i], class_label));
    n_oos += is_oos[i];
    int g = nn_model_label_index(m, ex.labels[i]);
    if (g < 0) {
      unknown_rows++;
      size_t k = 0;
      while (k < n_unknown && strcmp(unknown[k], ex.labels[i]) != 0) k++;
      if (k == n_unknown) unknown[n_unknown++] = ex.labels[i];
      g = (int)(C + k);
    }
    gold[i] = g;
    double t0 = 1e3 * finch_clock_s();
    pred[i] = nn_model_predict(m, ex.texts[i], probs, 1.0f);
    lat[i] = 1e3 * finch_clock_s() - t0;
    if (pred[i] < 0) {
      st = finch_err_set(err, FINCH_ENOMEM, "prediction failed on row %zu", i + 1);
      break;
    }
    conf[i] = probs[pred[i]];
    memcpy(all + i * C, probs, C * sizeof *probs);
    if (!pol.methods) {
      nn_abstain_decide(&pol, probs, C, &score[i]); /* no policy: probs untouched, the arg-max */
      decided[i] = answer[i] = pred[i];
    } else {
      decided[i] = nn_abstain_decide(&pol, probs, C, &score[i]);
      answer[i] = nn_abstain_decide(&no_threshold, probs, C, NULL);
      conf[i] = probs[nn_abstain_decide(NULL, probs, C, NULL)]; /* the calibrated arg-max */
      /* A refusal is right on an out-of-scope row and wrong on any other
       * (the index past every label, fixed below once those are known). */
      pred[i] = decided[i] >= 0 ? decided[i] : is_oos[i] ? g : -1;
    }
    if (res_answers && decided[i] >= 0 && !(res_answers[i] = strdup(nn_model_label(m, (size_t)decided[i]))))
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    if (decided[i] == oos_answer && oos_answer >= 0) decided[i] = -1;
    if (answer[i] == oos_answer && oos_answer >= 0) answer[i] = -1;
  }
  const size_t refused_index = C + n_unknown; /* the plain metrics' label of an in-scope refusal */
  for (size_t i = 0; !st && pol.methods && i < n; i++)
    if (pred[i] < 0) pred[i] = (int)refused_index;
  const int has_oos = n_oos > 0 || pol.methods;
  if (!st && finch_metrics_compute(gold, pred, conf, n, refused_index + (pol.methods != 0), &mt))
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  if (!st && has_oos &&
      (finch_oos_compute(score, is_oos, decided, gold, n, &res->oos) ||
       finch_oos_curve(score, is_oos, answer, gold, n, EVAL_CURVE_POINTS, pts)))
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  if (!st) st = eval_statistics(m, unknown, n_unknown, pol.methods != 0, gold, pred, all, n, opts->seed, &stats, err);
  if (!st) {
    double mean = 0;
    for (size_t i = 0; i < n; i++) mean += lat[i];
    mean = n ? mean / (double)n : 0;
    double p50 = finch_quantile(lat, n, 0.50), p90 = finch_quantile(lat, n, 0.90), p99 = finch_quantile(lat, n, 0.99);
    res->latency_ms_p50 = p50;
    res->latency_ms_p99 = p99;
    snprintf(res->model_sha256, sizeof res->model_sha256, "%s", sha);
    snprintf(res->rows_sha256, sizeof res->rows_sha256, "%s", rows_sha);
    json_t *per = json_array();
    for (size_t l = 0; l < refused_index; l++) {
      const finch_label_metrics *pl = &mt.per_label[l];
      if (!pl->support && !pl->predicted) continue;
      json_array_append_new(per, json_pack("{s:s, s:I, s:I, s:f, s:f, s:f}", "intent",
                                           l < C ? nn_model_label(m, l) : unknown[l - C], "support",
                                           (json_int_t)pl->support, "predicted", (json_int_t)pl->predicted,
                                           "precision", pl->precision, "recall", pl->recall, "f1", pl->f1));
    }
    time_t now = time(NULL);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    out = json_pack("{s:{s:s, s:s, s:s}, s:s, s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:o, s:s}",
                    "model", "path", path, "sha256", sha, "kind", kind, "source", source, "source_sha256",
                    src_sha, "rows_sha256", rows_sha, "n", (json_int_t)n, "skipped", (json_int_t)ex.skipped,
                    "unknown_label_rows", (json_int_t)unknown_rows, "accuracy", mt.accuracy, "macro_f1", mt.macro_f1,
                    "ece", mt.ece, "latency_ms_p50", p50, "latency_ms_p90", p90, "latency_ms_p99", p99,
                    "latency_ms_mean", mean, "per_intent", per, "created_at", stamp);
    if (model_id) json_object_set_new(json_object_get(out, "model"), "id", json_integer(model_id));
    const char *built_on = pretrained_use(db, m, model_id);
    if (built_on)
      json_object_set_new(json_object_get(out, "model"), "pretrained",
                          json_pack("{s:s, s:s}", "weights", FINCH_PRETRAINED_MINILM_ORIGIN, "use", built_on));
    if (has_oos)
      json_object_set_new(out, "out_of_scope", oos_json(m, &pol, oos_label, &res->oos, pts, EVAL_CURVE_POINTS));
    res->has_oos = has_oos;
    res->n = (long long)n;
    res->accuracy = mt.accuracy;
    res->macro_f1 = mt.macro_f1;
    struct stat sb;
    finch_eval_body_in in = {.model = m, .model_id = model_id, .model_sha256 = sha, .kind = kind,
                             .model_bytes = stat(path, &sb) == 0 ? (long long)sb.st_size : 0,
                             .pretrained = json_object_get(json_object_get(out, "model"), "pretrained"),
                             .opts = opts, .texts = (const char *const *)ex.texts,
                             .labels = (const char *const *)ex.labels, .n = n, .skipped = ex.skipped,
                             .unknown_label_rows = unknown_rows, .source_sha256 = src_sha, .rows_sha256 = rows_sha,
                             .metrics = out, .statistics = stats};
    char abs[PATH_MAX] = "";
    if (opts->input && !realpath(opts->input, abs)) snprintf(abs, sizeof abs, "%s", opts->input);
    json_t *meas = json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:s, s:s, s:s}", "created_at", stamp,
                             "latency_ms_p50", p50, "latency_ms_p90", p90, "latency_ms_p99", p99, "latency_ms_mean",
                             mean, "cost_per_1000_requests", finch_eval_cpu_price(opts) * mean / 3600.0,
                             "model_path", path, "input_path", abs, "command_line",
                             opts->command_line ? opts->command_line : "");
    st = meas ? store_report(db, &in, meas, path, source, res, err)
              : finch_err_set(err, FINCH_ENOMEM, "out of memory");
    json_decref(meas);
    if (!st) {
      json_object_set_new(out, "report_id", json_integer(res->report_id));
      json_object_set_new(out, "report_path", json_string(res->report_path));
      json_object_set_new(out, "json_path", json_string(res->json_path));
      json_object_set_new(out, "html_path", json_string(res->html_path));
      json_object_set_new(out, "body_sha256", json_string(res->body_sha256));
      json_object_set_new(out, "unchanged", json_boolean(res->unchanged));
    }
    res->json = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  }
  if (!st && opts->keep_rows) {
    for (size_t i = 0; i < n; i++) res_correct[i] = pred[i] == gold[i];
    res->rows = ex;
    memset(&ex, 0, sizeof ex);
    res->answers = res_answers;
    res->correct = res_correct;
  } else {
    for (size_t i = 0; res_answers && i < n; i++) free(res_answers[i]);
    free(res_answers);
    free(res_correct);
  }
  json_decref(out);
  json_decref(stats);
  free(all);
  finch_metrics_free(&mt);
  free(gold), free(pred), free(decided), free(answer), free(conf), free(probs), free(score), free(is_oos);
  free(lat), free(unknown);
  finch_eval_rows_free(&ex);
  nn_model_free(m);
  return st;
}

void finch_eval_result_free(finch_eval_result *res) {
  free(res->json);
  res->json = NULL;
  for (size_t i = 0; res->answers && i < res->rows.n; i++) free(res->answers[i]);
  free(res->answers);
  free(res->correct);
  res->answers = NULL;
  res->correct = NULL;
  finch_eval_rows_free(&res->rows);
}
