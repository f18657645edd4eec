#include "evaluate/compare.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/text.h"
#include "evaluate/metrics.h"
#include "evaluate/store.h"

/* One model of a comparison while it is made: a real model's evaluation
 * (its rows, answers and correctness) or the rule pack's answers on the
 * first model's rows. */
typedef struct {
  const char *name;
  int is_rules;
  finch_eval_result res;      /* a real model's, with keep_rows */
  json_t *report;             /* its report's body (NULL for rules) */
  const char **answers;       /* n: the answer (NULL: none); into res or the rule engine's strings */
  const unsigned char *correct;
  unsigned char *own_correct; /* rules: owned */
  const char **own_answers;   /* rules: owned array */
  double accuracy, macro_f1, acc_ci[2], f1_ci[2], p50, p99;
  int on_front;
} entry;

size_t finch_compare_count(const char *refs) {
  size_t n = 0;
  for (const char *p = refs; p && *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    n += len > 0;
    p = e ? e + 1 : p + len;
  }
  return n;
}

/* Splits refs into names (each malloc'd into *buf as one block). */
static finch_status split_refs(const char *refs, const char **names, size_t *n, char **buf, finch_err *err) {
  *n = 0;
  size_t count = finch_compare_count(refs);
  if (count > FINCH_COMPARE_MAX_MODELS)
    return finch_err_set(err, FINCH_EINVAL, "--model: %zu models given; at most %d can be compared in one report",
                         count, FINCH_COMPARE_MAX_MODELS);
  if (count < 2)
    return finch_err_set(err, FINCH_EINVAL, "--model: a comparison needs 2 to %d models, %zu given",
                         FINCH_COMPARE_MAX_MODELS, count);
  if (!(*buf = strdup(refs))) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (char *p = *buf, *save = NULL, *t; (t = strtok_r(p, ",", &save)); p = NULL) names[(*n)++] = t;
  for (size_t i = 0; i < *n; i++) {
    if (strlen(names[i]) >= sizeof ((finch_compare_model *)0)->name)
      return finch_err_set(err, FINCH_EINVAL, "--model '%.40s...': name too long", names[i]);
    for (size_t j = 0; j < i; j++)
      if (!strcmp(names[i], names[j]))
        return finch_err_set(err, FINCH_EINVAL, "--model %s is given twice: each model is compared once", names[i]);
  }
  return FINCH_OK;
}

finch_status finch_compare_check_rows(const char *first_name, const finch_eval_result *first, const char *name,
                                      const finch_eval_result *r, finch_err *err) {
  if (strcmp(first->rows_sha256, r->rows_sha256) != 0 || first->rows.n != r->rows.n)
    return finch_err_set(err, FINCH_EINVAL,
                         "models %s and %s were measured on different rows (%zu rows, hash %.12s, against %zu rows, "
                         "hash %.12s): a comparison needs the same rows for every model",
                         first_name, name, first->rows.n, first->rows_sha256, r->rows.n, r->rows_sha256);
  for (size_t i = 0; i < r->rows.n; i++)
    if (strcmp(first->rows.texts[i], r->rows.texts[i]) || strcmp(first->rows.labels[i], r->rows.labels[i]))
      return finch_err_set(err, FINCH_EINVAL,
                           "models %s and %s were measured on the same rows in another order (row %zu differs)",
                           first_name, name, i + 1);
  return FINCH_OK;
}

static const char *const RULES_LATENCY_METHOD =
    "wall time of one call of the rule engine per row, one query at a time on one thread";

/* The rule pack's answers on rows, each call timed. */
static finch_status run_rules(const finch_eval_baseline *b, const finch_eval_rows *rows, entry *e, finch_err *err) {
  size_t n = rows->n;
  double *lat = calloc(n + 1, sizeof *lat);
  e->own_answers = calloc(n + 1, sizeof *e->own_answers);
  e->own_correct = calloc(n + 1, 1);
  if (!lat || !e->own_answers || !e->own_correct) {
    free(lat);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    double t0 = 1e3 * finch_clock_s();
    e->own_answers[i] = b->answer(b->ctx, rows->texts[i]);
    lat[i] = 1e3 * finch_clock_s() - t0;
    e->own_correct[i] = e->own_answers[i] && !strcmp(e->own_answers[i], rows->labels[i]);
  }
  e->answers = e->own_answers;
  e->correct = e->own_correct;
  e->p50 = finch_quantile(lat, n, 0.50);
  e->p99 = finch_quantile(lat, n, 0.99);
  free(lat);
  return FINCH_OK;
}

/* The rules' accuracy and macro-F1 with bootstrap intervals, as the
 * baseline section of a model's report counts them: the labels are the gold
 * ones and the answers, one more index for "no rule fired". */
static finch_status rules_stats(const finch_eval_rows *rows, entry *e, unsigned long long seed, finch_err *err) {
  size_t n = rows->n, nl = 0;
  const char **names = malloc((2 * n + 1) * sizeof *names);
  int32_t *gold = malloc((n + 1) * sizeof *gold), *pred = malloc((n + 1) * sizeof *pred);
  finch_status st = names && gold && pred ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; !st && i < n; i++) {
    names[nl++] = rows->labels[i];
    if (e->answers[i]) names[nl++] = e->answers[i];
  }
  if (!st) {
    nl = finch_str_sort_unique(names, nl);
    for (size_t i = 0; i < n; i++) {
      gold[i] = finch_str_index(names, nl, rows->labels[i]);
      pred[i] = e->answers[i] ? finch_str_index(names, nl, e->answers[i]) : (int32_t)nl;
    }
    finch_bootstrap bs;
    if (finch_stats_bootstrap(gold, pred, n, nl + 1, 0, seed, &bs))
      st = finch_err_set(err, FINCH_ENOMEM, "bootstrap of the rules' figures failed (%zu rows)", n);
    else {
      e->accuracy = bs.accuracy.value, e->acc_ci[0] = bs.accuracy.lo, e->acc_ci[1] = bs.accuracy.hi;
      e->macro_f1 = bs.macro_f1.value, e->f1_ci[0] = bs.macro_f1.lo, e->f1_ci[1] = bs.macro_f1.hi;
    }
  }
  free(names), free(gold), free(pred);
  return st;
}

/* A real model's figures from its own report (the intervals its body holds). */
static finch_status model_stats(finch_db *db, entry *e, finch_err *err) {
  finch_report rep;
  finch_status st = finch_report_load(db, e->res.report_id, &rep, err);
  if (st) return st;
  e->report = json_incref(rep.body);
  finch_report_free(&rep);
  const json_t *r = json_object_get(e->report, "results");
  const json_t *a = json_object_get(r, "accuracy_ci95"), *f = json_object_get(r, "macro_f1_ci95");
  e->accuracy = e->res.accuracy;
  e->macro_f1 = e->res.macro_f1;
  e->acc_ci[0] = json_number_value(json_array_get(a, 0)), e->acc_ci[1] = json_number_value(json_array_get(a, 1));
  e->f1_ci[0] = json_number_value(json_array_get(f, 0)), e->f1_ci[1] = json_number_value(json_array_get(f, 1));
  e->p50 = e->res.latency_ms_p50;
  e->p99 = e->res.latency_ms_p99;
  e->answers = (const char **)e->res.answers;
  e->correct = e->res.correct;
  return FINCH_OK;
}

static json_t *ci_json(const double ci[2]) { return json_pack("[f, f]", ci[0], ci[1]); }

static json_t *model_json(const entry *e, const finch_eval_baseline *b) {
  if (e->is_rules)
    return json_pack("{s:s, s:s, s:s, s:n, s:I, s:n, s:n, s:n, s:s, s:s, s:f, s:o, s:f, s:o}", "name", e->name,
                     "kind", "rules", "arch", "legacy PCRE2 rule pack", "dtype", "params", (json_int_t)b->n_rules,
                     "bytes", "model_sha256", "report_id", "rules_file", b->name, "rules_sha256", b->sha256,
                     "accuracy", e->accuracy, "accuracy_ci95", ci_json(e->acc_ci), "macro_f1", e->macro_f1,
                     "macro_f1_ci95", ci_json(e->f1_ci));
  const json_t *m = json_object_get(e->report, "model");
  return json_pack("{s:s, s:O, s:O, s:O, s:O, s:O, s:O, s:I, s:n, s:n, s:f, s:o, s:f, s:o}", "name", e->name, "kind",
                   json_object_get(m, "kind"), "arch", json_object_get(m, "arch"), "dtype", json_object_get(m, "dtype"),
                   "params", json_object_get(m, "params"), "bytes", json_object_get(m, "bytes"), "model_sha256",
                   json_object_get(m, "sha256"), "report_id", (json_int_t)e->res.report_id, "rules_file",
                   "rules_sha256", "accuracy", e->accuracy, "accuracy_ci95", ci_json(e->acc_ci), "macro_f1",
                   e->macro_f1, "macro_f1_ci95", ci_json(e->f1_ci));
}

/* Per gold intent, each model's F1, and its difference from the first
 * model's. A row's prediction is its gold intent where the model is counted
 * right (a refusal on an out-of-scope row included), else its answer (none:
 * a refusal, no intent), so that the F1 is the one the model's own report
 * gives. */
static json_t *per_intent_json(const finch_eval_rows *rows, const entry *es, size_t k) {
  size_t n = rows->n, nl = 0;
  const char **names = malloc((n + 1) * sizeof *names);
  long long *tp = calloc((n + 1) * k, sizeof *tp), *sup = calloc(n + 1, sizeof *sup);
  long long *pr = calloc((n + 1) * k, sizeof *pr);
  json_t *out = NULL;
  if (!names || !tp || !sup || !pr) goto done;
  for (size_t i = 0; i < n; i++) names[nl++] = rows->labels[i];
  nl = finch_str_sort_unique(names, nl);
  for (size_t i = 0; i < n; i++) {
    int g = finch_str_index(names, nl, rows->labels[i]);
    sup[g]++;
    for (size_t m = 0; m < k; m++) {
      int p = es[m].correct[i] ? g : finch_str_index(names, nl, es[m].answers[i]);
      tp[g * k + m] += es[m].correct[i];
      if (p >= 0) pr[(size_t)p * k + m]++;
    }
  }
  out = json_array();
  for (size_t l = 0; out && l < nl; l++) {
    json_t *f1 = json_object(), *delta = json_object();
    double first = 0;
    for (size_t m = 0; m < k; m++) {
      finch_label_metrics lm;
      finch_label_prf(tp[l * k + m], sup[l], pr[l * k + m], &lm);
      if (!m) first = lm.f1;
      json_object_set_new(f1, es[m].name, json_real(lm.f1));
      if (m) json_object_set_new(delta, es[m].name, json_real(lm.f1 - first));
    }
    json_array_append_new(out, json_pack("{s:s, s:I, s:o, s:o}", "intent", names[l], "support", (json_int_t)sup[l],
                                         "f1", f1, "delta_vs_first", delta));
  }
done:
  free(names), free(tp), free(sup), free(pr);
  return out;
}

static const char *const MCNEMAR_METHOD =
    "McNemar's test on the paired rows of each pair of models (a, b): a_right_b_wrong (b) and a_wrong_b_right (c) "
    "count the discordant rows. p_exact is the exact two-sided binomial test, min(1, 2 P[X <= min(b, c)]) with X ~ "
    "Binomial(b + c, 1/2); chi2 is McNemar's chi-square with continuity correction, (|b - c| - 1)^2 / (b + c), and "
    "p_chi2 its upper tail at 1 degree of freedom. b + c = 0 gives p 1. A row is right as each model's accuracy "
    "counts it.";

/* Fills res's models and pairs and builds the body and measurements. */
static finch_status build(const finch_eval_opts *opts, entry *es, size_t k, finch_compare_result *res,
                          json_t **body_out, json_t **meas_out, finch_err *err) {
  const entry *first = NULL;
  for (size_t m = 0; m < k && !first; m++)
    if (!es[m].is_rules) first = &es[m];
  const finch_eval_rows *rows = &first->res.rows;
  const size_t n = rows->n;
  res->n = (long long)n;
  double acc[FINCH_COMPARE_MAX_MODELS], lat[FINCH_COMPARE_MAX_MODELS];
  size_t front[FINCH_COMPARE_MAX_MODELS];
  for (size_t m = 0; m < k; m++) acc[m] = es[m].accuracy, lat[m] = es[m].p50;
  size_t nf = finch_stats_pareto(acc, lat, k, front);
  if (nf == (size_t)-1) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t j = 0; j < nf; j++) es[front[j]].on_front = 1;
  json_t *models = json_array(), *tests = json_array(), *pareto = json_array();
  for (size_t m = 0; m < k; m++) {
    finch_compare_model *cm = &res->models[m];
    snprintf(cm->name, sizeof cm->name, "%s", es[m].name);
    snprintf(cm->kind, sizeof cm->kind, "%s",
             es[m].is_rules ? "rules" : json_string_value(json_object_get(json_object_get(es[m].report, "model"), "kind")));
    cm->report_id = es[m].is_rules ? 0 : es[m].res.report_id;
    cm->accuracy = es[m].accuracy, cm->accuracy_lo = es[m].acc_ci[0], cm->accuracy_hi = es[m].acc_ci[1];
    cm->macro_f1 = es[m].macro_f1, cm->macro_f1_lo = es[m].f1_ci[0], cm->macro_f1_hi = es[m].f1_ci[1];
    cm->latency_ms_p50 = es[m].p50, cm->latency_ms_p99 = es[m].p99, cm->on_front = es[m].on_front;
    json_array_append_new(models, model_json(&es[m], opts->baseline));
    json_array_append_new(pareto, json_pack("{s:s, s:f, s:f, s:f, s:b}", "name", es[m].name, "accuracy",
                                            es[m].accuracy, "latency_ms_p50", es[m].p50, "latency_ms_p99",
                                            es[m].p99, "on_front", es[m].on_front));
  }
  res->n_models = k;
  for (size_t a = 0; a < k; a++)
    for (size_t b = a + 1; b < k; b++) {
      long long nb = 0, nc = 0;
      for (size_t i = 0; i < n; i++) {
        nb += es[a].correct[i] && !es[b].correct[i];
        nc += !es[a].correct[i] && es[b].correct[i];
      }
      finch_compare_pair *p = &res->pairs[res->n_pairs++];
      *p = (finch_compare_pair){.a = a, .b = b, .n = (long long)n};
      finch_stats_mcnemar(nb, nc, &p->test);
      json_array_append_new(tests, json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f}", "a", es[a].name, "b",
                                             es[b].name, "n", (json_int_t)n, "a_right_b_wrong", (json_int_t)nb,
                                             "a_wrong_b_right", (json_int_t)nc, "p_exact", p->test.p_exact, "chi2",
                                             p->test.chi2, "p_chi2", p->test.p_chi2));
    }
  const unsigned long long seed = opts->seed ? opts->seed : 42;
  json_t *method = json_pack(
      "{s:s, s:s, s:s, s:I, s:i, s:s}", "mcnemar", MCNEMAR_METHOD, "per_intent",
      "F1 of each model on each gold intent of the rows (finch_label_prf), a row counted as predicting its gold "
      "intent where the model is right, else its answer; delta_vs_first is the model's F1 minus the first model's",
      "bootstrap",
      "accuracy_ci95 and macro_f1_ci95 are 95% percentile bootstrap intervals over the rows, from each model's own "
      "report; the rules' are computed the same way on the same rows",
      "bootstrap_seed", (json_int_t)seed, "bootstrap_resamples", FINCH_STATS_BOOTSTRAP_DEFAULT, "rules",
      "the legacy rule pack's answer on each row; a row no rule fires on has no intent and counts as wrong");
  json_t *per = per_intent_json(rows, es, k);
  char title[512];
  int len = snprintf(title, sizeof title, "Comparison of %zu models:", k);
  for (size_t m = 0; m < k && len > 0 && (size_t)len < sizeof title; m++)
    len += snprintf(title + len, sizeof title - (size_t)len, "%s %s", m ? "," : "", es[m].name);
  const json_t *fb = first->report;
  json_t *body = json_pack("{s:s, s:O, s:O, s:O, s:{s:o, s:o, s:o, s:o}}", "title", title,
                           "purpose_and_intended_use", json_object_get(fb, "purpose_and_intended_use"), "software",
                           json_object_get(fb, "software"), "data", json_object_get(fb, "data"), "comparison",
                           "models", models, "mcnemar", tests, "per_intent", per ? per : json_null(), "method",
                           method);
  time_t now = time(NULL);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  const char *model_latency = json_string_value(json_object_get(json_object_get(fb, "latency"), "method"));
  json_t *meas = json_pack(
      "{s:s, s:s, s:{s:s, s:s}, s:{s:o, s:s}}", "created_at", stamp, "command_line",
      opts->command_line ? opts->command_line : "", "latency_method", "models", model_latency ? model_latency : "",
      "rules", RULES_LATENCY_METHOD, "pareto", "models", pareto, "method",
      "accuracy on the rows against the median latency of one query (ms) in this run; a model is on the front when "
      "no other is at least as accurate and at least as fast, and better on one of the two (finch_stats_pareto). "
      "Latencies are this run's on its machine: compare them only within one run");
  if (!body || !meas || !per) {
    json_decref(body);
    json_decref(meas);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory building the comparison");
  }
  *body_out = body;
  *meas_out = meas;
  return FINCH_OK;
}

/* The result's JSON for finch eval --json. */
static char *result_json(const finch_compare_result *res, const char *rows_sha) {
  json_t *models = json_array(), *tests = json_array();
  for (size_t m = 0; m < res->n_models; m++) {
    const finch_compare_model *cm = &res->models[m];
    json_array_append_new(models, json_pack("{s:s, s:s, s:o, s:f, s:[f, f], s:f, s:[f, f], s:f, s:f, s:b}", "name",
                                            cm->name, "kind", cm->kind, "report_id",
                                            cm->report_id ? json_integer(cm->report_id) : json_null(), "accuracy",
                                            cm->accuracy, "accuracy_ci95", cm->accuracy_lo, cm->accuracy_hi,
                                            "macro_f1", cm->macro_f1, "macro_f1_ci95", cm->macro_f1_lo,
                                            cm->macro_f1_hi, "latency_ms_p50", cm->latency_ms_p50, "latency_ms_p99",
                                            cm->latency_ms_p99, "on_front", cm->on_front));
  }
  for (size_t j = 0; j < res->n_pairs; j++) {
    const finch_compare_pair *p = &res->pairs[j];
    json_array_append_new(tests, json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f}", "a", res->models[p->a].name,
                                           "b", res->models[p->b].name, "n", (json_int_t)p->n, "a_right_b_wrong",
                                           (json_int_t)p->test.b, "a_wrong_b_right", (json_int_t)p->test.c,
                                           "p_exact", p->test.p_exact, "chi2", p->test.chi2, "p_chi2",
                                           p->test.p_chi2));
  }
  json_t *o = json_pack("{s:I, s:b, s:s, s:s, s:s, s:s, s:I, s:s, s:o, s:o}", "report_id", (json_int_t)res->report_id,
                        "unchanged", res->unchanged, "body_sha256", res->body_sha256, "report_path",
                        res->report_path, "json_path", res->json_path, "html_path", res->html_path, "n",
                        (json_int_t)res->n, "rows_sha256", rows_sha, "models", models, "mcnemar", tests);
  char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
  json_decref(o);
  return s;
}

/* Stores the comparison's report; the legacy columns name the first real
 * model's file hash, the list of models and the rows. */
static finch_status store(finch_db *db, const finch_eval_opts *opts, const entry *first, const json_t *body,
                          const json_t *meas, finch_compare_result *res, finch_err *err) {
  json_t *fj = json_loads(first->res.json, 0, NULL);
  const char *src = json_string_value(json_object_get(fj, "source"));
  char source[PATH_MAX + 128];
  snprintf(source, sizeof source, "comparison on %s", src ? src : "the rows");
  json_t *metrics = json_pack("{s:O}", "models", json_object_get(json_object_get(body, "comparison"), "models"));
  finch_report_row row = {.model_sha256 = first->res.model_sha256, .model_path = opts->model, .source = source,
                          .n = res->n, .metrics = metrics};
  finch_report_ref ref;
  finch_status st = metrics ? finch_report_store(db, body, meas, &row, &ref, err)
                            : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  json_decref(metrics);
  json_decref(fj);
  if (st) return st;
  res->report_id = ref.id;
  res->unchanged = ref.unchanged;
  snprintf(res->body_sha256, sizeof res->body_sha256, "%s", ref.body_sha256);
  snprintf(res->report_path, sizeof res->report_path, "%s", ref.md_path);
  snprintf(res->json_path, sizeof res->json_path, "%s", ref.json_path);
  snprintf(res->html_path, sizeof res->html_path, "%s", ref.html_path);
  return FINCH_OK;
}

finch_status finch_compare_run(finch_db *db, const finch_eval_opts *opts, finch_compare_result *res, finch_err *err) {
  memset(res, 0, sizeof *res);
  const char *names[FINCH_COMPARE_MAX_MODELS];
  size_t k = 0;
  char *buf = NULL;
  entry es[FINCH_COMPARE_MAX_MODELS];
  memset(es, 0, sizeof es);
  finch_status st = split_refs(opts->model ? opts->model : "", names, &k, &buf, err);
  const entry *first = NULL;
  size_t n_real = 0;
  for (size_t m = 0; !st && m < k; m++) {
    es[m].name = names[m];
    es[m].is_rules = !strcmp(names[m], FINCH_COMPARE_RULES);
    n_real += !es[m].is_rules;
    if (es[m].is_rules && !opts->baseline)
      st = finch_err_set(err, FINCH_EINVAL, "--model %s: no rule pack was given (--rules FILE) to compare",
                         FINCH_COMPARE_RULES);
  }
  if (!st && !n_real)
    st = finch_err_set(err, FINCH_EINVAL, "--model: a comparison needs at least one model besides the rules");
  for (size_t m = 0; !st && m < k; m++) {
    if (es[m].is_rules) continue;
    finch_eval_opts o = *opts;
    o.model = names[m];
    o.keep_rows = 1;
    st = finch_eval_run(db, &o, &es[m].res, err);
    if (st) {
      finch_err_prefix(err, "--model %s", names[m]);
      break;
    }
    if (!first) first = &es[m];
    else st = finch_compare_check_rows(first->name, &first->res, es[m].name, &es[m].res, err);
    if (!st) st = model_stats(db, &es[m], err);
  }
  const unsigned long long seed = opts->seed ? opts->seed : 42;
  for (size_t m = 0; !st && m < k; m++)
    if (es[m].is_rules) {
      st = run_rules(opts->baseline, &first->res.rows, &es[m], err);
      if (!st) st = rules_stats(&first->res.rows, &es[m], seed, err);
    }
  json_t *body = NULL, *meas = NULL;
  if (!st) st = build(opts, es, k, res, &body, &meas, err);
  if (!st) st = store(db, opts, first, body, meas, res, err);
  if (!st && !(res->json = result_json(res, first->res.rows_sha256)))
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  json_decref(body);
  json_decref(meas);
  for (size_t m = 0; m < FINCH_COMPARE_MAX_MODELS; m++) {
    finch_eval_result_free(&es[m].res);
    json_decref(es[m].report);
    free(es[m].own_answers);
    free(es[m].own_correct);
  }
  free(buf);
  return st;
}

void finch_compare_result_free(finch_compare_result *res) {
  free(res->json);
  res->json = NULL;
}

/* ---- Markdown ------------------------------------------------------------------- */

static const char *jstr(const json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "-";
}
static double jnum(const json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

/* A name in a table cell: '|' escaped. */
static void md_cell(FILE *fp, const char *s) {
  for (; s && *s; s++) {
    if (*s == '|') fputs("\\|", fp);
    else fputc(*s == '\n' ? ' ' : *s, fp);
  }
}

static void md_ci(FILE *fp, const json_t *m, const char *key) {
  char k[64];
  snprintf(k, sizeof k, "%s_ci95", key);
  const json_t *ci = json_object_get(m, k);
  fprintf(fp, "%.4f (%.4f-%.4f)", jnum(m, key), json_number_value(json_array_get(ci, 0)),
          json_number_value(json_array_get(ci, 1)));
}

typedef struct {
  const char *intent, *model;
  long long support;
  double first, f1, delta;
} md_delta;

static int by_abs_delta(const void *a, const void *b) {
  const md_delta *x = a, *y = b;
  double dx = fabs(x->delta), dy = fabs(y->delta);
  if (dx != dy) return dx < dy ? 1 : -1;
  int c = strcmp(x->intent, y->intent);
  return c ? c : strcmp(x->model, y->model);
}

/* The 15 per-intent differences from the first model largest in size. */
static void md_deltas(FILE *fp, const json_t *per, const char *first) {
  enum { SHOWN = 15 };
  size_t cap = 0, nd = 0, i;
  const json_t *p;
  json_array_foreach(per, i, p) cap += json_object_size(json_object_get(p, "delta_vs_first"));
  md_delta *d = calloc(cap + 1, sizeof *d);
  if (!d) return;
  json_array_foreach(per, i, p) {
    const char *k;
    const json_t *v, *f1 = json_object_get(p, "f1");
    json_object_foreach((json_t *)json_object_get(p, "delta_vs_first"), k, v)
      d[nd++] = (md_delta){.intent = jstr(p, "intent"), .model = k,
                           .support = (long long)json_integer_value(json_object_get(p, "support")),
                           .first = jnum(f1, first), .f1 = jnum(f1, k), .delta = json_number_value(v)};
  }
  qsort(d, nd, sizeof *d, by_abs_delta);
  fprintf(fp, "### Per-intent F1 against %s (the %d largest differences)\n\n", first, SHOWN);
  if (!nd) fprintf(fp, "No intent to compare.\n\n");
  else fprintf(fp, "| intent | support | model | F1 of %s | F1 of the model | difference |\n|---|---:|---|---:|---:|---:|\n",
               first);
  for (size_t j = 0; j < nd && j < SHOWN; j++) {
    fputs("| ", fp);
    md_cell(fp, d[j].intent);
    fprintf(fp, " | %lld | ", d[j].support);
    md_cell(fp, d[j].model);
    fprintf(fp, " | %.3f | %.3f | %+.3f |\n", d[j].first, d[j].f1, d[j].delta);
  }
  fputs("\n", fp);
  free(d);
}

void finch_compare_write_markdown(FILE *fp, const json_t *body, const json_t *measurements) {
  const json_t *c = json_object_get(body, "comparison"), *models = json_object_get(c, "models");
  const json_t *method = json_object_get(c, "method"), *m;
  size_t i;
  fprintf(fp, "## Comparison\n\nEvery model on the same rows (rows SHA-256 `%s`).\n\n",
          jstr(json_object_get(body, "data"), "rows_sha256"));
  fprintf(fp, "| model | kind | architecture | weights | parameters | bytes | accuracy (95%% CI) | macro-F1 (95%% CI) "
              "| own report |\n|---|---|---|---|---:|---:|---:|---:|---:|\n");
  json_array_foreach(models, i, m) {
    fputs("| ", fp);
    md_cell(fp, jstr(m, "name"));
    fprintf(fp, " | %s | %s | %s | ", jstr(m, "kind"), jstr(m, "arch"), jstr(m, "dtype"));
    if (json_is_integer(json_object_get(m, "params")))
      fprintf(fp, "%lld%s", (long long)json_integer_value(json_object_get(m, "params")),
              json_is_null(json_object_get(m, "report_id")) ? " rules" : "");
    else fputs("-", fp);
    fputs(" | ", fp);
    if (json_is_integer(json_object_get(m, "bytes")))
      fprintf(fp, "%lld", (long long)json_integer_value(json_object_get(m, "bytes")));
    else fputs("-", fp);
    fputs(" | ", fp);
    md_ci(fp, m, "accuracy");
    fputs(" | ", fp);
    md_ci(fp, m, "macro_f1");
    if (json_is_integer(json_object_get(m, "report_id")))
      fprintf(fp, " | %lld |\n", (long long)json_integer_value(json_object_get(m, "report_id")));
    else fprintf(fp, " | - |\n");
  }
  fprintf(fp, "\nIntervals: %s (seed %lld, %lld resamples). Rules: %s.\n\n", jstr(method, "bootstrap"),
          (long long)json_integer_value(json_object_get(method, "bootstrap_seed")),
          (long long)json_integer_value(json_object_get(method, "bootstrap_resamples")), jstr(method, "rules"));
  fprintf(fp, "### McNemar's test\n\n| a | b | rows | a right, b wrong | a wrong, b right | p (exact) | chi-square "
              "| p (chi-square) |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
  json_array_foreach(json_object_get(c, "mcnemar"), i, m) {
    fputs("| ", fp);
    md_cell(fp, jstr(m, "a"));
    fputs(" | ", fp);
    md_cell(fp, jstr(m, "b"));
    fprintf(fp, " | %lld | %lld | %lld | %.4g | %.4f | %.4g |\n",
            (long long)json_integer_value(json_object_get(m, "n")),
            (long long)json_integer_value(json_object_get(m, "a_right_b_wrong")),
            (long long)json_integer_value(json_object_get(m, "a_wrong_b_right")), jnum(m, "p_exact"), jnum(m, "chi2"),
            jnum(m, "p_chi2"));
  }
  fprintf(fp, "\n%s\n\n", jstr(method, "mcnemar"));
  md_deltas(fp, json_object_get(c, "per_intent"), jstr(json_array_get(models, 0), "name"));
  const json_t *pareto = json_object_get(measurements, "pareto");
  fprintf(fp, "### Accuracy and latency: the Pareto front of this run\n\n");
  if (!json_array_size(json_object_get(pareto, "models"))) {
    fprintf(fp, "No latency was measured with this report.\n\n");
    return;
  }
  fprintf(fp, "| model | accuracy | latency p50 (ms) | latency p99 (ms) | on the front |\n|---|---:|---:|---:|---|\n");
  json_array_foreach(json_object_get(pareto, "models"), i, m) {
    fputs("| ", fp);
    md_cell(fp, jstr(m, "name"));
    fprintf(fp, " | %.4f | %.4f | %.4f | %s |\n", jnum(m, "accuracy"), jnum(m, "latency_ms_p50"),
            jnum(m, "latency_ms_p99"), json_is_true(json_object_get(m, "on_front")) ? "yes" : "no");
  }
  fprintf(fp, "\n%s.\n\n", jstr(pareto, "method"));
}
