/* Evaluation reports against a real database: the bundled BANKING77 sample
 * ingested, a bag-of-n-grams teacher and student distilled, the student
 * compiled to int8, and the compiled model evaluated.
 *   - The same evaluation twice gives the same body hash, one row, and a
 *     JSON file that stays byte for byte the same; its SHA-256 is the hash.
 *   - The body has every section; the software section names the commit.
 *   - The rows' hash ignores row order and changes when one label changes.
 *   - The lineage of the compiled student reaches the float student, the
 *     teacher, the dataset's ingest run and its source file's SHA-256.
 *   - The baseline is the engine handed in, measured on the same rows.
 *   - The database refuses to change or delete a report's body and to
 *     change or delete an approval; a file changed on disk is found, and a
 *     re-run refuses to overwrite it. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/version.h"
#include "distill/distill.h"
#include "evaluate/body.h"
#include "evaluate/evaluate.h"
#include "evaluate/store.h"
#include "ingest/ingest.h"
#include "tests/dbtest.h"
#include "tests/test.h"

static char *slurp(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, fp) != (size_t)n) n = 0;
  if (s) s[n] = '\0';
  fclose(fp);
  if (len) *len = (size_t)n;
  return s;
}

/* A stand-in for the rule pack: answers card_arrival on any text with "card". */
static long long g_answered;
static const char *card_rule(void *ctx, const char *text) {
  (void)ctx;
  if (!strstr(text, "card")) return NULL;
  g_answered++;
  return "card_arrival";
}

/* 1 when the statement fails at the database. */
static int refused(finch_db *db, const char *sql) {
  finch_err err;
  finch_status st = finch_db_exec(db, sql, &err);
  if (st) printf("refused as expected: %.160s\n", err.msg);
  return st != FINCH_OK;
}

static void check_rows_hash(void) {
  const char *texts[] = {"My card has not arrived", "What is the exchange rate?", "PIN blocked"};
  const char *labels[] = {"card_arrival", "exchange_rate", "pin_blocked"};
  const char *shuffled_t[] = {texts[2], texts[0], texts[1]}, *shuffled_l[] = {labels[2], labels[0], labels[1]};
  const char *relabelled[] = {"card_arrival", "exchange_rate", "change_pin"};
  const char *recased[] = {"MY CARD has not arrived", texts[1], texts[2]};
  char a[FINCH_SHA256_HEX_LEN], b[FINCH_SHA256_HEX_LEN], c[FINCH_SHA256_HEX_LEN], d[FINCH_SHA256_HEX_LEN];
  finch_err err;
  CHECK_INT_EQ(finch_eval_rows_sha256(texts, labels, 3, a, &err), FINCH_OK);
  CHECK_INT_EQ(finch_eval_rows_sha256(shuffled_t, shuffled_l, 3, b, &err), FINCH_OK);
  CHECK_STR_EQ(a, b);
  CHECK_INT_EQ(finch_eval_rows_sha256(texts, relabelled, 3, c, &err), FINCH_OK);
  CHECK(strcmp(a, c) != 0);
  /* Content hashes are over the case-folded text, as ingest stores them. */
  CHECK_INT_EQ(finch_eval_rows_sha256(recased, labels, 3, d, &err), FINCH_OK);
  CHECK_STR_EQ(a, d);
  CHECK_INT_EQ(finch_eval_rows_sha256(texts, labels, 2, d, &err), FINCH_OK);
  CHECK(strcmp(a, d) != 0);
}

static const json_t *find_model(const json_t *models, long long id) {
  size_t i;
  const json_t *m;
  json_array_foreach(models, i, m) if (json_integer_value(json_object_get(m, "id")) == id) return m;
  return NULL;
}

int main(void) {
  check_rows_hash();
  finch_db *db = test_db_open();
  finch_err err;
  char sample[1024], sample_sha[FINCH_SHA256_HEX_LEN];
  snprintf(sample, sizeof sample, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
  if (access(sample, R_OK)) TEST_SKIP("%s is missing", sample);
  CHECK_INT_EQ(finch_sha256_file(sample, sample_sha, &err), FINCH_OK);
  finch_ingest_opts io = {.source = sample, .format = "banking77", .dataset = "sample", .holdout = 0.3, .seed = 11};
  finch_ingest_result ir;
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  finch_distill_opts d = {.dataset = "sample", .seed = 5, .teacher_epochs = 2, .student = "bow", .device = "cpu",
                          .quiet = 1};
  finch_distill_result dr;
  finch_status st = finch_distill_run(db, &d, &dr, &err);
  if (st) fprintf(stderr, "distill: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  char sid[32], out[1200];
  snprintf(sid, sizeof sid, "%lld", dr.student_id);
  snprintf(out, sizeof out, "%s/test_report-%d.fnm", test_tmpdir(), (int)getpid());
  finch_compile_opts co = {.model = sid, .out = out, .dtype = "q8"};
  finch_compile_result cr;
  CHECK_INT_EQ(finch_compile_run(db, &co, &cr, &err), FINCH_OK);

  /* The same evaluation twice: one report, the same bytes. */
  char cid[32];
  snprintf(cid, sizeof cid, "%lld", cr.model_id);
  finch_eval_baseline base = {.name = "card.rules", .sha256 = sample_sha, .n_rules = 1, .answer = card_rule};
  finch_eval_opts o = {.model = cid, .dataset = "sample", .split = "dev", .command_line = "test_report",
                       .baseline = &base};
  finch_eval_result r1, r2;
  st = finch_eval_run(db, &o, &r1, &err);
  if (st) fprintf(stderr, "eval: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_INT_EQ(r1.unchanged, 0);
  size_t len1, len2;
  char *file1 = slurp(r1.json_path, &len1);
  CHECK(file1 != NULL);
  char file_sha[FINCH_SHA256_HEX_LEN];
  finch_sha256_hex(file1, len1, file_sha);
  CHECK_STR_EQ(file_sha, r1.body_sha256);
  CHECK(strstr(r1.json_path, "/reports/report-") && strstr(r1.json_path, ".json"));
  char sha12[13];
  snprintf(sha12, sizeof sha12, "%.12s", r1.body_sha256);
  CHECK_CONTAINS(r1.json_path, sha12);
  CHECK_CONTAINS(r1.report_path, sha12);
  o.command_line = "test_report again"; /* measurements, not the body */
  CHECK_INT_EQ(finch_eval_run(db, &o, &r2, &err), FINCH_OK);
  CHECK_INT_EQ(r2.unchanged, 1);
  CHECK_INT_EQ(r2.report_id, r1.report_id);
  CHECK_STR_EQ(r2.body_sha256, r1.body_sha256);
  CHECK_STR_EQ(r2.json_path, r1.json_path);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM eval_reports"), 1);
  char *file2 = slurp(r1.json_path, &len2);
  CHECK(file2 && len1 == len2 && memcmp(file1, file2, len1) == 0);
  CHECK_CONTAINS(r2.json, "\"unchanged\": true");
  finch_eval_result_free(&r2);
  free(file2);

  /* Every section, from the file as hashed. */
  json_t *body = json_loads(file1, 0, NULL);
  CHECK(body != NULL);
  static const char *const sections[] = {"purpose_and_intended_use", "model", "software", "data", "lineage",
                                         "results", "latency", "cost", "baseline", "limitations"};
  for (size_t i = 0; i < sizeof sections / sizeof *sections; i++) {
    if (!json_object_get(body, sections[i])) fprintf(stderr, "body lacks %s\n", sections[i]);
    CHECK(json_object_get(body, sections[i]) != NULL);
  }
  CHECK(json_object_get(body, "signoff") == NULL && !strstr(file1, "created_at") && !strstr(file1, "latency_ms_p50"));
  CHECK(!strstr(file1, test_tmpdir())); /* no path of this machine */
  const json_t *sw = json_object_get(body, "software"), *data = json_object_get(body, "data");
  /* The commit compiled in: 40 hex digits (and "-dirty") in a git checkout, else "unknown". A commit
   * made after the last build is not in the binary yet, so only the form is checked against HEAD. */
  int in_git = system("git -C '" FINCH_SOURCE_DIR "' rev-parse HEAD >/dev/null 2>&1") == 0;
  const char *commit = json_string_value(json_object_get(sw, "source_commit"));
  CHECK_STR_EQ(commit, finch_source_commit());
  size_t hex = strspn(commit, "0123456789abcdef");
  if (in_git)
    CHECK(hex == 40 && (commit[40] == '\0' || !strcmp(commit + 40, "-dirty")));
  else
    CHECK_STR_EQ(commit, "unknown");
  CHECK_STR_EQ(json_string_value(json_object_get(sw, "finch_version")), finch_version());
  CHECK_STR_EQ(json_string_value(json_object_get(data, "source_sha256")), sample_sha);
  CHECK_INT_EQ(json_integer_value(json_object_get(data, "n")),
               test_scalar(db, "SELECT count(*) FROM utterances WHERE split = 'dev'"));
  CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(body, "model"), "sha256")), cr.sha256);
  CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(body, "purpose_and_intended_use"), "source")),
               "default");
  CHECK_CONTAINS(json_string_value(json_object_get(json_object_get(body, "purpose_and_intended_use"), "text")),
                 "not for credit");
  CHECK(json_is_number(json_object_get(json_object_get(body, "results"), "accuracy")));
  CHECK(json_is_number(json_object_get(json_object_get(body, "cost"), "cpu_price_per_core_hour")));
  CHECK(json_is_array(json_object_get(json_object_get(body, "limitations"), "weak_intents")));

  /* The baseline: the engine handed in, on the same rows. */
  const json_t *b = json_object_get(body, "baseline");
  CHECK(json_is_true(json_object_get(b, "available")));
  CHECK_STR_EQ(json_string_value(json_object_get(b, "rules_file")), "card.rules");
  long long n = json_integer_value(json_object_get(data, "n"));
  CHECK_NEAR(json_number_value(json_object_get(b, "coverage")), (double)g_answered / 2.0 / (double)n, 1e-9);

  /* The lineage: compiled <- student <- teacher, the ingest run and its source. */
  const json_t *lin = json_object_get(body, "lineage"), *models = json_object_get(lin, "models");
  CHECK_INT_EQ(json_array_size(models), 3);
  const json_t *mc = find_model(models, cr.model_id), *ms = find_model(models, dr.student_id),
               *mt = find_model(models, dr.teacher_id);
  CHECK(mc && ms && mt);
  CHECK_STR_EQ(json_string_value(json_object_get(mc, "derivation")), "compiled");
  CHECK_STR_EQ(json_string_value(json_object_get(ms, "derivation")), "distilled");
  CHECK_INT_EQ(json_integer_value(json_object_get(ms, "parent_model_id")), dr.teacher_id);
  CHECK_INT_EQ(json_integer_value(json_object_get(mt, "depth")), 2);
  CHECK(json_is_object(json_object_get(mt, "config")));
  CHECK_INT_EQ(json_integer_value(json_object_get(lin, "teacher_model_id")), dr.teacher_id);
  const json_t *set = json_array_get(json_object_get(lin, "datasets"), 0);
  CHECK_STR_EQ(json_string_value(json_object_get(set, "name")), "sample");
  const json_t *ing = json_array_get(json_object_get(set, "ingest_runs"), 0);
  CHECK_INT_EQ(json_integer_value(json_object_get(ing, "id")), ir.run_id);
  CHECK_STR_EQ(json_string_value(json_object_get(ing, "source_sha256")), sample_sha);
  CHECK_INT_EQ(json_integer_value(json_object_get(ing, "seed")), 11);
  json_decref(body);

  /* The Markdown: every section and the sign-off block. */
  char *md = slurp(r1.report_path, NULL);
  static const char *const heads[] = {"## Purpose and intended use", "## Model", "## Data", "## Summary",
                                      "## Baseline: the legacy rules", "## Per intent", "## Limitations",
                                      "## Measurements of the run", "## Lineage", "## Sign-off", "## Reproduce"};
  for (size_t i = 0; md && i < sizeof heads / sizeof *heads; i++) CHECK_CONTAINS(md, heads[i]);
  CHECK_CONTAINS(md, r1.body_sha256);
  free(md);
  /* The HTML page beside it: the body's statistics drawn (the interval,
   * the reliability diagram, the confusion matrix), the measurements and
   * the sign-off naming the body's hash. */
  CHECK_CONTAINS(r1.html_path, sha12);
  char *html = slurp(r1.html_path, NULL);
  CHECK(html != NULL);
  if (html) {
    CHECK_CONTAINS(html, "95% CI");
    CHECK_CONTAINS(html, "Reliability diagram");
    CHECK_CONTAINS(html, "Confusion matrix");
    CHECK_CONTAINS(html, "Measurements of this run");
    CHECK_CONTAINS(html, r1.body_sha256);
    CHECK(!strstr(html, "<script") && !strstr(html, "src="));
  }
  free(html);
  /* The body carries the statistics the page draws. */
  json_t *b1 = json_loads(file1 ? file1 : "{}", 0, NULL);
  const json_t *res1 = json_object_get(b1, "results");
  CHECK_INT_EQ(json_array_size(json_object_get(res1, "accuracy_ci95")), 2);
  CHECK(json_object_get(json_object_get(res1, "calibration"), "ece_after") != NULL);
  CHECK(json_array_size(json_object_get(json_object_get(res1, "confusion"), "matrix")) > 0);
  json_decref(b1);

  /* Another evaluation (another half of the rows) is another report. */
  o.half = "report";
  o.seed = 42;
  finch_eval_result r3;
  CHECK_INT_EQ(finch_eval_run(db, &o, &r3, &err), FINCH_OK);
  CHECK(strcmp(r3.body_sha256, r1.body_sha256) != 0 && !r3.unchanged);
  CHECK_INT_EQ(r3.report_id, r1.report_id + 1); /* the repeated evaluation took no id */
  finch_eval_result_free(&r3);
  o.half = NULL;

  /* Immutable at the database. */
  char sql[512];
  snprintf(sql, sizeof sql, "UPDATE eval_reports SET body = '{}' WHERE id = %lld", r1.report_id);
  CHECK(refused(db, sql));
  snprintf(sql, sizeof sql, "UPDATE eval_reports SET body_sha256 = repeat('0', 64) WHERE id = %lld", r1.report_id);
  CHECK(refused(db, sql));
  snprintf(sql, sizeof sql, "DELETE FROM eval_reports WHERE id = %lld", r1.report_id);
  CHECK(refused(db, sql));

  /* Approvals: append-only, naming the report's own hash. */
  long long aid;
  CHECK_INT_EQ(finch_report_approve(db, r1.report_id, "Ann Reviewer", "approve", "fit for assist", &aid, &err),
               FINCH_OK);
  CHECK_INT_EQ(finch_report_approve(db, r1.report_id, "Bo Risk", "reject", "", &aid, &err), FINCH_OK);
  CHECK_INT_EQ(finch_report_approve(db, r1.report_id, "  ", "approve", "", &aid, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "--reviewer");
  CHECK_INT_EQ(finch_report_approve(db, r1.report_id, "Cy", "approved", "", &aid, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "'approved'");
  CHECK_INT_EQ(finch_report_approve(db, 424242, "Cy", "reject", "", &aid, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "report 424242");
  CHECK(refused(db, "UPDATE report_approvals SET decision = 'approve'"));
  CHECK(refused(db, "DELETE FROM report_approvals"));
  CHECK(refused(db, "TRUNCATE report_approvals"));
  snprintf(sql, sizeof sql, "INSERT INTO report_approvals (report_id, body_sha256, reviewer, decision)"
                            " VALUES (%lld, repeat('0', 64), 'Eve', 'approve')", r1.report_id);
  CHECK(refused(db, sql));
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM report_approvals"), 2);
  finch_report rep;
  CHECK_INT_EQ(finch_report_load(db, r1.report_id, &rep, &err), FINCH_OK);
  CHECK_STR_EQ(rep.file_state, "intact");
  CHECK_INT_EQ(json_array_size(rep.approvals), 2);
  CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(rep.approvals, 0), "reviewer")), "Ann Reviewer");
  CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(rep.approvals, 0), "body_sha256")), r1.body_sha256);
  finch_report_free(&rep);

  /* Tampered on disk: found by load; a re-run does not overwrite it. */
  FILE *fp = fopen(r1.json_path, "r+b");
  CHECK(fp != NULL);
  if (fp) {
    fseek(fp, 10, SEEK_SET);
    fputc(file1[10] == 'x' ? 'y' : 'x', fp);
    fclose(fp);
  }
  CHECK_INT_EQ(finch_report_load(db, r1.report_id, &rep, &err), FINCH_OK);
  CHECK_STR_EQ(rep.file_state, "differs");
  CHECK(strcmp(rep.file_sha256, r1.body_sha256) != 0);
  finch_report_free(&rep);
  CHECK_INT_EQ(finch_eval_run(db, &o, &r2, &err), FINCH_ECHECKSUM);
  CHECK_CONTAINS(err.msg, "never overwritten");
  finch_eval_result_free(&r2);
  CHECK_INT_EQ(finch_report_load(db, 424242, &rep, &err), FINCH_ENOTFOUND);
  /* The next run of this test makes the same report under the shared test home: put the file back. */
  test_write_file(r1.json_path, file1, len1);

  free(file1);
  finch_eval_result_free(&r1);
  unlink(out);
  finch_db_close(db);
  TEST_DONE();
}
