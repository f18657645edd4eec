/* Comparison of models on the same rows (evaluate/compare.h) against a real
 * database: the bundled BANKING77 sample ingested, a bag-of-n-grams teacher
 * and student distilled, and the two compared with a stand-in rule pack.
 *   - Each model's accuracy in the comparison is its single evaluation's;
 *     the rules' is the baseline section's of those reports.
 *   - McNemar's discordant counts are recounted here from predictions made
 *     independently (nn_model_predict on each row, the rule engine called
 *     through the same struct), and the exact p-value is checked against a
 *     binomial tail summed here in long double; every pair is present.
 *   - The same comparison twice: the same body hash, "unchanged", one row.
 *   - Models measured on different rows are refused, naming both.
 *   - More than 8 models, a model given twice, and "rules" without a rule
 *     pack are refused with errors that say so.
 *   - Through the binary ($FINCH_BIN): --model X --model Y --model rules
 *     prints the McNemar lines and exits 0; one model still gives the
 *     single report; 9 models and --rules '' with rules fail. */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/models.h"
#include "distill/distill.h"
#include "evaluate/compare.h"
#include "evaluate/evaluate.h"
#include "evaluate/store.h"
#include "ingest/ingest.h"
#include "nn/model.h"
#include "tests/dbtest.h"
#include "tests/test.h"

/* A stand-in for the rule pack: card_arrival on any text with "card",
 * exchange_rate on any with "rate". */
static const char *two_rules(void *ctx, const char *text) {
  (void)ctx;
  if (strstr(text, "card")) return "card_arrival";
  if (strstr(text, "rate")) return "exchange_rate";
  return NULL;
}

/* min(1, 2 sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c)), in long double. */
static long double binomial_p(long long b, long long c) {
  long long n = b + c, m = b < c ? b : c;
  if (n == 0) return 1.0L;
  long double term = ldexpl(1.0L, (int)-n), sum = 0;
  for (long long k = 0; k <= m; k++) {
    sum += term;
    term = term * (long double)(n - k) / (long double)(k + 1);
  }
  long double p = 2 * sum;
  return p > 1 ? 1.0L : p;
}

/* Each row right (1) or not by m's arg-max, or by the rule engine when m is NULL. */
static unsigned char *rights(const nn_model *m, const finch_eval_baseline *b, const finch_eval_rows *rows) {
  unsigned char *r = calloc(rows->n + 1, 1);
  float *probs = m ? calloc(nn_model_n_labels(m), sizeof *probs) : NULL;
  for (size_t i = 0; r && i < rows->n; i++) {
    const char *ans;
    if (m) {
      int p = nn_model_predict(m, rows->texts[i], probs, 1.0f);
      ans = p >= 0 ? nn_model_label(m, (size_t)p) : NULL;
    } else {
      ans = b->answer(b->ctx, rows->texts[i]);
    }
    r[i] = ans && !strcmp(ans, rows->labels[i]);
  }
  free(probs);
  return r;
}

static nn_model *load(finch_db *db, long long id) {
  char ref[32], path[PATH_MAX], kind[16];
  long long got;
  finch_err err;
  snprintf(ref, sizeof ref, "%lld", id);
  nn_model *m = NULL;
  if (finch_models_resolve(db, ref, path, sizeof path, &got, kind, &err) || nn_model_load(&m, path, &err)) {
    fprintf(stderr, "model %lld: %s\n", id, err.msg);
    return NULL;
  }
  return m;
}

static const char *bin;

/* Runs the finch command line args, stderr folded into the output (malloc'd). */
static char *finch(int *status, const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, args);
  return test_run(cmd, status);
}

static void expect(const char *args, int want_ok, const char *needle, const char *absent) {
  int status;
  char *out = finch(&status, args);
  if ((status == 0) != want_ok) fprintf(stderr, "finch %s: exit %d\n%s\n", args, status, out);
  CHECK_INT_EQ(status == 0, want_ok);
  if (needle) CHECK_CONTAINS(out, needle);
  if (absent) CHECK(strstr(out, absent) == NULL);
  free(out);
}

static void check_cli(long long t, long long s) {
  bin = getenv("FINCH_BIN");
  if (!bin || !*bin) {
    printf("FINCH_BIN is not set: the command-line checks are skipped\n");
    return;
  }
  char args[1024];
  snprintf(args, sizeof args, "eval --model %lld --model %lld --model rules --dataset sample", t, s);
  expect(args, 1, "McNemar", NULL);
  expect(args, 1, "on the front", NULL);
  snprintf(args, sizeof args, "eval --model %lld,%lld --dataset sample --json", t, s);
  int status;
  char *out = finch(&status, args);
  CHECK_INT_EQ(status, 0);
  json_t *j = json_loads(out, 0, NULL);
  CHECK(j != NULL);
  CHECK_INT_EQ(json_array_size(json_object_get(j, "models")), 2);
  CHECK_INT_EQ(json_array_size(json_object_get(j, "mcnemar")), 1);
  long long cmp_id = (long long)json_integer_value(json_object_get(j, "report_id"));
  CHECK(cmp_id > 0);
  json_decref(j);
  free(out);
  /* report show summarises a comparison by its models. */
  snprintf(args, sizeof args, "report show %lld", cmp_id);
  expect(args, 1, "comparison of 2 models on", NULL);
  /* One model: the single report, as before. */
  snprintf(args, sizeof args, "eval --model %lld --dataset sample", t);
  expect(args, 1, "n ", "McNemar");
  /* --require-first-best: exit 1 unless the first model beats every other;
   * a model against itself never does; one model alone is a usage error. */
  snprintf(args, sizeof args, "eval --model %lld --model rules --dataset sample --require-first-best", t);
  expect(args, 1, "McNemar", "--require-first-best fails");
  snprintf(args, sizeof args, "eval --model rules --model %lld --dataset sample --require-first-best", t);
  expect(args, 0, "rules is not more accurate than", NULL);
  snprintf(args, sizeof args, "eval --model %lld --dataset sample --require-first-best", t);
  expect(args, 0, "--require-first-best needs several models", NULL);
  snprintf(args, sizeof args, "eval --model %lld --model rules --dataset sample --rules ''", t);
  expect(args, 0, "--rules", NULL);
  snprintf(args, sizeof args, "eval --model %lld,%lld,3,4,5,6,7,8,9 --dataset sample", t, s);
  expect(args, 0, "at most 8", NULL);
}

int main(void) {
  finch_db *db = test_db_open();
  finch_err err;
  char sample[1024];
  snprintf(sample, sizeof sample, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
  if (access(sample, R_OK)) TEST_SKIP("%s is missing", sample);
  finch_ingest_opts io = {.source = sample, .format = "banking77", .dataset = "sample", .holdout = 0.3, .seed = 11};
  finch_ingest_result ir;
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  finch_distill_opts d = {.dataset = "sample", .seed = 5, .teacher_epochs = 2, .student = "bow", .device = "cpu",
                          .quiet = 1};
  finch_distill_result dr;
  finch_status st = finch_distill_run(db, &d, &dr, &err);
  if (st) fprintf(stderr, "distill: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  char tid[32], sid[32], list[128];
  snprintf(tid, sizeof tid, "%lld", dr.teacher_id);
  snprintf(sid, sizeof sid, "%lld", dr.student_id);
  snprintf(list, sizeof list, "%s,%s,rules", tid, sid);
  finch_eval_baseline base = {.name = "two.rules", .sha256 = "0123", .n_rules = 2, .answer = two_rules};

  /* The single evaluations first. */
  finch_eval_opts o = {.dataset = "sample", .split = "dev", .command_line = "test_compare", .baseline = &base};
  finch_eval_result rt, rs;
  o.model = tid;
  CHECK_INT_EQ(finch_eval_run(db, &o, &rt, &err), FINCH_OK);
  o.model = sid;
  CHECK_INT_EQ(finch_eval_run(db, &o, &rs, &err), FINCH_OK);
  finch_report rep;
  CHECK_INT_EQ(finch_report_load(db, rt.report_id, &rep, &err), FINCH_OK);
  double rules_acc = json_number_value(json_object_get(json_object_get(rep.body, "baseline"), "accuracy"));
  finch_report_free(&rep);

  finch_compare_result c1, c2;
  o.model = list;
  st = finch_compare_run(db, &o, &c1, &err);
  if (st) fprintf(stderr, "compare: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_INT_EQ(c1.unchanged, 0);
  CHECK_INT_EQ(c1.n_models, 3);
  CHECK_INT_EQ(c1.n, rt.n);
  CHECK_STR_EQ(c1.models[0].name, tid);
  CHECK_STR_EQ(c1.models[2].name, "rules");
  CHECK_STR_EQ(c1.models[2].kind, "rules");
  CHECK_NEAR(c1.models[0].accuracy, rt.accuracy, 1e-12);
  CHECK_NEAR(c1.models[1].accuracy, rs.accuracy, 1e-12);
  CHECK_NEAR(c1.models[0].macro_f1, rt.macro_f1, 1e-12);
  CHECK_NEAR(c1.models[2].accuracy, rules_acc, 1e-9);
  CHECK_INT_EQ(c1.models[0].report_id, rt.report_id); /* the same evaluation: its report, unchanged */
  CHECK_INT_EQ(c1.models[1].report_id, rs.report_id);
  CHECK_INT_EQ(c1.models[2].report_id, 0);
  CHECK(c1.models[0].accuracy_lo <= c1.models[0].accuracy && c1.models[0].accuracy <= c1.models[0].accuracy_hi);
  CHECK(c1.models[2].accuracy_lo <= c1.models[2].accuracy && c1.models[2].accuracy <= c1.models[2].accuracy_hi);
  int on_front = 0;
  for (size_t m = 0; m < c1.n_models; m++) on_front += c1.models[m].on_front;
  CHECK(on_front >= 1);

  /* McNemar from predictions made here. */
  finch_eval_rows rows;
  CHECK_INT_EQ(finch_eval_rows_load(db, &o, &rows, &err), FINCH_OK);
  CHECK_INT_EQ(rows.n, (size_t)c1.n);
  nn_model *mt = load(db, dr.teacher_id), *ms = load(db, dr.student_id);
  CHECK(mt && ms);
  unsigned char *right[3] = {rights(mt, NULL, &rows), rights(ms, NULL, &rows), rights(NULL, &base, &rows)};
  long long n_right[3] = {0, 0, 0};
  for (size_t i = 0; i < rows.n; i++)
    for (int m = 0; m < 3; m++) n_right[m] += right[m][i];
  CHECK_NEAR(c1.models[0].accuracy, (double)n_right[0] / (double)rows.n, 1e-12);
  CHECK_NEAR(c1.models[1].accuracy, (double)n_right[1] / (double)rows.n, 1e-12);
  CHECK_NEAR(c1.models[2].accuracy, (double)n_right[2] / (double)rows.n, 1e-12);
  CHECK_INT_EQ(c1.n_pairs, 3);
  static const size_t want[3][2] = {{0, 1}, {0, 2}, {1, 2}};
  for (size_t j = 0; j < 3 && j < c1.n_pairs; j++) {
    const finch_compare_pair *p = &c1.pairs[j];
    CHECK_INT_EQ(p->a, want[j][0]);
    CHECK_INT_EQ(p->b, want[j][1]);
    long long b = 0, c = 0;
    for (size_t i = 0; i < rows.n; i++) {
      b += right[p->a][i] && !right[p->b][i];
      c += !right[p->a][i] && right[p->b][i];
    }
    CHECK_INT_EQ(p->test.b, b);
    CHECK_INT_EQ(p->test.c, c);
    long double ref = binomial_p(b, c);
    CHECK_NEAR(p->test.p_exact, (double)ref, 1e-12 * (double)ref + 1e-300);
    printf("McNemar %s vs %s: b %lld, c %lld, p %.10g (reference %.10Lg)\n", c1.models[p->a].name,
           c1.models[p->b].name, b, c, p->test.p_exact, ref);
  }
  /* The rules answer few rows: they differ from the teacher on some. */
  CHECK(c1.pairs[1].test.b + c1.pairs[1].test.c > 0);

  /* The body as stored, and the run's Pareto front beside it. */
  CHECK_INT_EQ(finch_report_load(db, c1.report_id, &rep, &err), FINCH_OK);
  CHECK_STR_EQ(rep.file_state, "intact");
  static const char *const keys[] = {"title", "purpose_and_intended_use", "software", "data", "comparison"};
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) CHECK(json_object_get(rep.body, keys[k]) != NULL);
  const json_t *cmp = json_object_get(rep.body, "comparison");
  const json_t *models = json_object_get(cmp, "models"), *tests = json_object_get(cmp, "mcnemar");
  CHECK_INT_EQ(json_array_size(models), 3);
  CHECK_INT_EQ(json_array_size(tests), 3);
  CHECK(json_is_null(json_object_get(json_array_get(models, 2), "model_sha256")));
  CHECK(json_is_null(json_object_get(json_array_get(models, 2), "report_id")));
  CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(models, 0), "model_sha256")), rt.model_sha256);
  CHECK_INT_EQ(json_array_size(json_object_get(json_array_get(models, 1), "accuracy_ci95")), 2);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(tests, 1), "a_right_b_wrong")), c1.pairs[1].test.b);
  CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(rep.body, "data"), "rows_sha256")), rt.rows_sha256);
  CHECK(json_object_get(rep.body, "model") == NULL);
  const json_t *per = json_object_get(cmp, "per_intent");
  CHECK(json_array_size(per) > 0);
  const json_t *p0 = json_array_get(per, 0);
  CHECK_INT_EQ(json_object_size(json_object_get(p0, "f1")), 3);
  CHECK_INT_EQ(json_object_size(json_object_get(p0, "delta_vs_first")), 2);
  /* Each model's per-intent F1 is its own report's. */
  finch_report own;
  for (int m = 0; m < 2; m++) {
    CHECK_INT_EQ(finch_report_load(db, m ? rs.report_id : rt.report_id, &own, &err), FINCH_OK);
    const json_t *opi = json_object_get(json_object_get(own.body, "results"), "per_intent"), *a, *b;
    size_t i, j, matched = 0;
    json_array_foreach(per, i, a) json_array_foreach(opi, j, b) {
      if (strcmp(json_string_value(json_object_get(a, "intent")), json_string_value(json_object_get(b, "intent"))))
        continue;
      matched++;
      CHECK_NEAR(json_number_value(json_object_get(json_object_get(a, "f1"), m ? sid : tid)),
                 json_number_value(json_object_get(b, "f1")), 1e-9);
    }
    CHECK_INT_EQ(matched, json_array_size(per));
    finch_report_free(&own);
  }
  const json_t *meth = json_object_get(cmp, "method");
  CHECK_CONTAINS(json_string_value(json_object_get(meth, "mcnemar")), "continuity correction");
  CHECK_INT_EQ(json_integer_value(json_object_get(meth, "bootstrap_seed")), 42);
  char *dumped = json_dumps(rep.body, 0);
  CHECK(dumped && !strstr(dumped, "latency"));
  free(dumped);
  const json_t *pareto = json_object_get(json_object_get(rep.measurements, "pareto"), "models");
  CHECK_INT_EQ(json_array_size(pareto), 3);
  CHECK(json_is_number(json_object_get(json_array_get(pareto, 2), "latency_ms_p50")));
  finch_report_free(&rep);
  FILE *fp = fopen(c1.report_path, "r");
  CHECK(fp != NULL);
  static char md[1 << 20];
  size_t mdn = fp ? fread(md, 1, sizeof md - 1, fp) : 0;
  md[mdn] = '\0';
  if (fp) fclose(fp);
  CHECK_CONTAINS(md, "# Comparison report");
  CHECK_CONTAINS(md, "McNemar's test");
  CHECK_CONTAINS(md, "Pareto front");
  CHECK_CONTAINS(md, "largest differences");
  fp = fopen(c1.html_path, "r");
  CHECK(fp != NULL);
  mdn = fp ? fread(md, 1, sizeof md - 1, fp) : 0;
  md[mdn] = '\0';
  if (fp) fclose(fp);
  CHECK_CONTAINS(md, "Accuracy against latency");
  CHECK_CONTAINS(md, "<svg");
  CHECK_CONTAINS(md, "McNemar");

  /* The same comparison again: the same report. */
  o.command_line = "test_compare again";
  CHECK_INT_EQ(finch_compare_run(db, &o, &c2, &err), FINCH_OK);
  CHECK_INT_EQ(c2.unchanged, 1);
  CHECK_INT_EQ(c2.report_id, c1.report_id);
  CHECK_STR_EQ(c2.body_sha256, c1.body_sha256);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM eval_reports WHERE body ? 'comparison'"), 1);
  CHECK_CONTAINS(c2.json, "\"unchanged\": true");
  finch_compare_result_free(&c2);

  /* Models measured on different rows. */
  finch_eval_opts h = o;
  finch_eval_result ha, hb, hc;
  h.keep_rows = 1;
  h.half = "selection";
  h.model = tid;
  CHECK_INT_EQ(finch_eval_run(db, &h, &ha, &err), FINCH_OK);
  h.half = "report";
  h.model = sid;
  CHECK_INT_EQ(finch_eval_run(db, &h, &hb, &err), FINCH_OK);
  h.half = NULL;
  CHECK_INT_EQ(finch_eval_run(db, &h, &hc, &err), FINCH_OK);
  CHECK_INT_EQ(finch_compare_check_rows("T", &ha, "S", &hb, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "different rows");
  CHECK_CONTAINS(err.msg, "models T and S");
  CHECK_INT_EQ(finch_compare_check_rows("T", &ha, "S", &ha, &err), FINCH_OK);
  CHECK_INT_EQ(finch_compare_check_rows("S", &hc, "T", &ha, &err), FINCH_EINVAL);
  /* The same rows hash with another order is refused too. */
  CHECK_INT_EQ(hc.rows.n, rows.n);
  CHECK_INT_EQ(hc.rows.n > 1, 1);
  char *t0 = hc.rows.texts[0], *l0 = hc.rows.labels[0];
  hc.rows.texts[0] = hc.rows.texts[1], hc.rows.labels[0] = hc.rows.labels[1];
  hc.rows.texts[1] = t0, hc.rows.labels[1] = l0;
  finch_eval_result hd;
  h.model = tid;
  CHECK_INT_EQ(finch_eval_run(db, &h, &hd, &err), FINCH_OK);
  int same_pos = !strcmp(hd.rows.texts[0], hd.rows.texts[1]) && !strcmp(hd.rows.labels[0], hd.rows.labels[1]);
  CHECK_INT_EQ(finch_compare_check_rows("T", &hd, "S", &hc, &err), same_pos ? FINCH_OK : FINCH_EINVAL);
  if (!same_pos) CHECK_CONTAINS(err.msg, "another order");
  /* The answers handed back agree with the predictions made here. */
  for (size_t i = 0; i < hd.rows.n && i < rows.n; i++) CHECK_INT_EQ(hd.correct[i], right[0][i]);
  finch_eval_result_free(&ha);
  finch_eval_result_free(&hb);
  finch_eval_result_free(&hc);
  finch_eval_result_free(&hd);

  /* Malformed lists. */
  finch_compare_result bad;
  o.model = "1,2,3,4,5,6,7,8,9";
  CHECK_INT_EQ(finch_compare_run(db, &o, &bad, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "at most 8");
  finch_compare_result_free(&bad);
  char twice[80];
  snprintf(twice, sizeof twice, "%s,%s", tid, tid);
  o.model = twice;
  CHECK_INT_EQ(finch_compare_run(db, &o, &bad, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "twice");
  o.model = "rules,rules";
  CHECK_INT_EQ(finch_compare_run(db, &o, &bad, &err), FINCH_EINVAL);
  o.model = list;
  o.baseline = NULL;
  CHECK_INT_EQ(finch_compare_run(db, &o, &bad, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "--rules");
  o.model = "nosuchmodel,rules";
  o.baseline = &base;
  CHECK(finch_compare_run(db, &o, &bad, &err) != FINCH_OK);
  CHECK_CONTAINS(err.msg, "nosuchmodel");
  CHECK_INT_EQ(finch_compare_count("3,,7,"), 2);
  CHECK_INT_EQ(finch_compare_count("3"), 1);
  CHECK_INT_EQ(finch_compare_count(NULL), 0);

  check_cli(dr.teacher_id, dr.student_id);

  for (int m = 0; m < 3; m++) free(right[m]);
  nn_model_free(mt);
  nn_model_free(ms);
  finch_eval_rows_free(&rows);
  finch_compare_result_free(&c1);
  finch_eval_result_free(&rt);
  finch_eval_result_free(&rs);
  finch_db_close(db);
  TEST_DONE();
}
