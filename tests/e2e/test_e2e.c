/* End to end through the real binary on the embedded PostgreSQL: the demo
 * (ingest, augment, distill, compile, eval, serve) on the bundled sample, or
 * on BANKING77 when run as test_e2e_banking77 and the data is present
 * (`test_e2e banking77 K`: every K-th row of it, every intent kept, as the
 * sanitizer build runs it). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/paths.h"
#include "tests/chromium.h"
#include "tests/dbtest.h"
#include "tests/test.h"

static json_t *last_json_line(const char *out) {
  const char *last = NULL;
  for (const char *p = out; (p = strchr(p, '{')); p++)
    if (p == out || p[-1] == '\n') last = p;
  return last ? json_loads(last, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
}

int main(int argc, char **argv) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin) TEST_SKIP("FINCH_BIN is not set (run through ctest)");
  int real = argc > 1 && strcmp(argv[1], "banking77") == 0;
  char input[1024] = "";
  if (real) {
    finch_data_dir(input, sizeof input);
    strncat(input, "/banking77/train.csv", sizeof input - strlen(input) - 1);
    if (!finch_file_exists(input)) TEST_SKIP("BANKING77 not found at %s (set FINCH_DATA_DIR)", input);
    int every = argc > 2 ? atoi(argv[2]) : 1;
    if (every > 1) {
      /* The header and every K-th row: its intents come in runs, so each keeps about 1/K of its rows. */
      const char *tmp = getenv("FINCH_TEST_TMP");
      char slice[1024];
      snprintf(slice, sizeof slice, "%s/test_e2e_banking77_slice.csv", tmp ? tmp : ".");
      FILE *in = fopen(input, "r"), *sl = fopen(slice, "w");
      CHECK(in != NULL && sl != NULL);
      if (!in || !sl) return 1;
      char line[8192];
      for (long k = 0; fgets(line, sizeof line, in); k++)
        if (k == 0 || (k - 1) % every == 0) fputs(line, sl);
      fclose(in);
      fclose(sl);
      snprintf(input, sizeof input, "%s", slice);
    }
  }
  finch_db *db = test_db_open();
  char cmd[4096];
  int status;
  if (real)
    snprintf(cmd, sizeof cmd, "'%s' demo --input '%s' --dataset banking77 --json", bin, input);
  else
    snprintf(cmd, sizeof cmd, "'%s' demo --sample --dataset sample --json", bin);
  char *out = test_run(cmd, &status);
  printf("%s", out);
  CHECK_INT_EQ(status, 0);
  json_t *j = last_json_line(out);
  CHECK(j != NULL);
  if (!j) return 1;
  double student = json_real_value(json_object_get(j, "student_accuracy"));
  double teacher = json_real_value(json_object_get(j, "teacher_accuracy"));
  double majority = json_real_value(json_object_get(j, "majority_accuracy"));
  printf("teacher %.4f student %.4f majority %.4f\n", teacher, student, majority);
  /* A wide margin over the majority class, for both models. */
  CHECK(student > majority + 0.4);
  CHECK(teacher > majority + 0.4);
  CHECK(json_integer_value(json_object_get(j, "n_dev")) > 0);
  CHECK_STR_EQ(json_string_value(json_object_get(j, "served_intent")), "card_arrival");
  /* With CLINC150 and the SGD turns beside BANKING77, the student abstains:
   * it refuses most held-out out-of-domain rows and answers most banking ones. */
  json_t *refused = json_object_get(j, "out_of_domain_refused");
  if (refused) {
    printf("out of domain refused %.4f of %lld; in-scope coverage %.4f\n", json_real_value(refused),
           (long long)json_integer_value(json_object_get(j, "out_of_domain_rows")),
           json_real_value(json_object_get(j, "in_scope_coverage")));
    CHECK(json_integer_value(json_object_get(j, "out_of_domain_rows")) > 100);
    CHECK(json_real_value(refused) > 0.5);
    CHECK(json_real_value(json_object_get(j, "in_scope_coverage")) > 0.9);
  }
  const char *model = json_string_value(json_object_get(j, "student_model"));
  const char *report = json_string_value(json_object_get(j, "report"));
  CHECK(model && finch_file_exists(model));
  CHECK(report && finch_file_exists(report));

  /* The student's report page, as a reviewer opens it: in headless
   * Chromium, no broken image, no request, the charts drawn; a screenshot
   * of it is kept under the test directory. */
  const char *page = json_string_value(json_object_get(j, "report_html"));
  CHECK(page && finch_file_exists(page));
  if (page && chromium_installed()) {
    const char *tmp = getenv("FINCH_TEST_TMP");
    char dir[4096], png[4200], mk[8400];
    snprintf(dir, sizeof dir, "%s/e2e-%s-report", tmp && *tmp ? tmp : "/tmp", argc > 1 ? argv[1] : "sample");
    snprintf(mk, sizeof mk, "mkdir -p '%s'", dir);
    CHECK_INT_EQ(system(mk), 0);
    snprintf(png, sizeof png, "%s/student-report.png", dir);
    chromium_view v;
    CHECK_INT_EQ(chromium_view_page(page, dir, png, 1200, 8000, &v), 0);
    printf("student report in chromium: %d charts, %d images (%d broken), %d requests; screenshot %s (%u x %u, "
           "%ld bytes)\n", v.charts, v.images, v.broken, v.resources, png, v.png_w, v.png_h, v.png_bytes);
    CHECK_INT_EQ(v.broken, 0);
    CHECK_INT_EQ(v.resources, 0);
    CHECK(v.charts >= 3);
    CHECK(v.png_bytes > 50000);
  } else if (page) {
    printf("SKIP the report page in chromium: %s is not installed (scripts/install-deps.sh installs it)\n",
           CHROMIUM_BIN);
  }

  /* The student's model card names the pretrained weights exactly when its
   * teacher chose the pretrained encoder (found through the registry). */
  if (report) {
    FILE *fp = fopen(report, "r");
    char card[1 << 16];
    size_t len = fp ? fread(card, 1, sizeof card - 1, fp) : 0;
    card[len] = '\0';
    if (fp) fclose(fp);
    long long chose = test_scalar(db, "SELECT count(*) FROM models WHERE kind = 'teacher'"
                                      " AND config->'members' @> '[{\"name\": \"bert\", \"chosen\": true}]'");
    printf("teacher chose the pretrained encoder: %s\n", chose ? "yes" : "no");
    if (chose)
      CHECK_CONTAINS(card, "| Pretrained weights | all-MiniLM-L6-v2 (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0");
    else
      CHECK(strstr(card, "Pretrained weights") == NULL);
  }

  /* Every training row's complexity and soft-label weight is on record. */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM complexity_scores"), json_integer_value(json_object_get(j, "n_train")));
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM complexity_scores WHERE alpha < 0.4 - 1e-6 OR alpha > 0.7 + 1e-6"
                               " OR c < 0 OR c > 1"), 0);
  CHECK(test_scalar(db, "SELECT count(DISTINCT round(alpha::numeric, 2)) FROM complexity_scores") > 3);

  /* The compiled student is registered, with its size and checksum. */
  snprintf(cmd, sizeof cmd, "'%s' models list --json", bin);
  char *list = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  json_t *models = json_loads(list, 0, NULL);
  CHECK(json_is_array(models));
  int found = 0;
  size_t i;
  json_t *m;
  json_array_foreach(models, i, m) {
    const char *path = json_string_value(json_object_get(m, "path"));
    if (model && path && strcmp(path, model) == 0) {
      found = 1;
      CHECK_STR_EQ(json_string_value(json_object_get(m, "kind")), "student");
      CHECK_INT_EQ(strlen(json_string_value(json_object_get(m, "sha256"))), 64);
      CHECK(json_integer_value(json_object_get(m, "bytes")) > 0);
      CHECK(json_integer_value(json_object_get(m, "params")) > 0);
      CHECK(json_object_get(m, "created_at") != NULL);
    }
  }
  CHECK(found);

  /* eval on a file, by model file, as JSON; recorded in eval_reports. */
  long long reports = test_scalar(db, "SELECT count(*) FROM eval_reports");
  char sample[1024];
  if (real)
    snprintf(sample, sizeof sample, "%s", input);
  else
    snprintf(sample, sizeof sample, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
  snprintf(cmd, sizeof cmd, "'%s' eval --model '%s' --format banking77 --input '%s' --json", bin, model, sample);
  char *ev = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  json_t *e = json_loads(ev, 0, NULL);
  CHECK(e != NULL);
  static const char *keys[] = {"n", "accuracy", "macro_f1", "latency_ms_p50", "latency_ms_p99", "ece", "per_intent"};
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
    if (!json_object_get(e, keys[k])) fprintf(stderr, "eval JSON lacks %s\n", keys[k]);
    CHECK(json_object_get(e, keys[k]) != NULL);
  }
  CHECK(json_integer_value(json_object_get(e, "n")) > 100);
  CHECK(json_real_value(json_object_get(e, "accuracy")) > 0.5);
  CHECK(json_real_value(json_object_get(e, "latency_ms_p99")) >= json_real_value(json_object_get(e, "latency_ms_p50")));
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM eval_reports"), reports + 1);

  /* A model that does not exist is a clear error, not a crash. */
  snprintf(cmd, sizeof cmd, "'%s' eval --model 424242 --dataset sample 2>&1", bin);
  char *bad = test_run(cmd, &status);
  CHECK_INT_EQ(status, 1);
  CHECK_CONTAINS(bad, "model 424242 is not registered");

  /* The legacy rule pack, checked and measured like a model on the same holdout. */
  snprintf(cmd, sizeof cmd, "'%s' rules check '%s/serve/rules/banking77.rules'", bin, FINCH_SOURCE_DIR);
  char *chk = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  CHECK_CONTAINS(chk, "0 problem(s)");
  snprintf(cmd, sizeof cmd, "'%s' rules eval --rules '%s/serve/rules/banking77.rules' --dataset %s --json", bin,
           FINCH_SOURCE_DIR, real ? "banking77" : "sample");
  char *rev = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  json_t *rj = json_loads(rev, 0, NULL);
  CHECK(rj != NULL);
  double rules_acc = json_real_value(json_object_get(rj, "accuracy"));
  printf("rules accuracy %.4f, coverage %.4f\n", rules_acc, json_real_value(json_object_get(rj, "coverage")));
  CHECK(rules_acc > 0.2 && rules_acc < 1.0);
  CHECK(json_real_value(json_object_get(rj, "coverage")) > 0.3);
  json_decref(rj);
  free(chk);
  free(rev);

  /* Help for every command; usage errors exit 2. */
  static const char *cmds[] = {"db", "ingest", "augment", "distill", "compile", "eval", "serve", "models", "demo",
                               "rules"};
  for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++) {
    snprintf(cmd, sizeof cmd, "'%s' %s --help", bin, cmds[k]);
    char *help = test_run(cmd, &status);
    CHECK_INT_EQ(status, 0);
    CHECK_CONTAINS(help, "usage: finch");
    free(help);
  }
  snprintf(cmd, sizeof cmd, "'%s' ingest --no-such-flag 2>&1", bin);
  char *usage = test_run(cmd, &status);
  CHECK_INT_EQ(status, 2);
  CHECK_CONTAINS(usage, "unknown option '--no-such-flag'");

  /* Ingest from standard input: the same rows, already present. */
  snprintf(cmd, sizeof cmd, "'%s' ingest --format banking77 --dataset %s --json - < '%s'", bin,
           real ? "banking77" : "sample", sample);
  char *stdin_run = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  CHECK_CONTAINS(stdin_run, "\"inserted\":0,");

  free(out), free(list), free(ev), free(bad), free(usage), free(stdin_run);
  json_decref(j), json_decref(models), json_decref(e);
  finch_db_close(db);
  TEST_DONE();
}
