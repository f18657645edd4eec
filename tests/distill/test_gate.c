/* The registry's quality gate, aliases and best/latest, and the trainers'
 * per-epoch figures, on the bundled sample in a real database:
 *   - the gate's arithmetic and the majority-class rate;
 *   - a good teacher registers 'ok' with its sparse LR iterations and the
 *     fitted member's selection-half accuracy in training_metrics;
 *   - a crippled teacher (an encoder of width 8 after one epoch at a
 *     learning rate of 1e-7) registers 'failed' with the reason and the call
 *     fails; best and latest then pick the good teacher, and distil from it;
 *     naming the failed one is refused unless allowed;
 *   - a teacher trained by distill under an unreachable margin, and a
 *     1-epoch student held to 0.99 of its teacher, register 'failed';
 *   - the bow student logs per epoch with dev figures, tied to its model;
 *   - aliases move and untag with an append-only history, and bad names,
 *     ambiguous aliases and ties are handled;
 *   - the CLI: exit codes of the gate, runs list/show, models tag/untag. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/models.h"
#include "distill/distill.h"
#include "distill/teacher.h"
#include "ingest/ingest.h"
#include "tests/dbtest.h"

static void test_arithmetic(void) {
  char why[256] = "";
  CHECK_INT_EQ(finch_models_gate_teacher(0.30, 0.10, 0.10, why, sizeof why), 1);
  CHECK_INT_EQ(finch_models_gate_teacher(0.20, 0.10, 0.10, why, sizeof why), 0); /* not above: equal fails */
  CHECK_CONTAINS(why, "majority-class rate 0.1000");
  CHECK_INT_EQ(finch_models_gate_student(0.90, 1.00, 0.9, why, sizeof why), 1);
  CHECK_INT_EQ(finch_models_gate_student(0.80, 0.95, 0.9, why, sizeof why), 0);
  CHECK_CONTAINS(why, "0.90 of its teacher's 0.9500");
  const int32_t y[] = {3, 1, 3, 2, 3, -1, 1, 3};
  CHECK_NEAR(finch_models_majority_rate(y, 8), 0.5, 1e-12);
  CHECK_NEAR(finch_models_majority_rate(y, 0), 0.0, 1e-12);
  finch_err err;
  const char *bad[] = {"", "1abc", "best", "latest", "none", "a b", "pro;duction",
                       "x123456789012345678901234567890123456789012345678901234567890abcd"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) CHECK_INT_EQ(finch_models_alias_valid(bad[i], &err), 0);
  CHECK_INT_EQ(finch_models_alias_valid("production", &err), 1);
  CHECK_INT_EQ(finch_models_alias_valid("staging-2.b_c", &err), 1);
}

static void expect(const char *bin, const char *args, int code, const char *needle) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, args);
  int status = -1;
  char *out = test_run(cmd, &status);
  if (status != code) TEST_FAIL_("%s: exit %d, expected %d:\n%s", args, status, code, out);
  CHECK_CONTAINS(out, needle);
  free(out);
}

static long long pick(finch_db *db, const char *which, const char *dataset) {
  long long id = -1;
  finch_err err;
  if (finch_models_pick(db, which, "teacher", dataset, &id, &err)) return -1;
  return id;
}

int main(void) {
  test_arithmetic();
  finch_db *db = test_db_open();
  finch_err err;
  long long id = 0;
  char sample[1024];
  snprintf(sample, sizeof sample, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
  finch_ingest_result ir;
  finch_ingest_opts io = {.source = sample, .format = "banking77", .dataset = "sample", .holdout = 0.2, .seed = 42};
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  io.dataset = "sample2";
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  CHECK_INT_EQ(pick(db, "best", "sample"), -1); /* nothing registered */

  /* A good teacher: the sparse LR, well above the majority class. */
  finch_teacher_opts good = {.dataset = "sample", .members = "slr", .seed = 7, .ngrams = 1, .device = "cpu",
                             .quiet = 1, .min_margin = 0.10};
  finch_teacher_result g;
  finch_status st = finch_teacher_train(db, &good, &g, &err);
  if (st) fprintf(stderr, "good teacher: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_INT_EQ(g.failed, 0);
  CHECK(g.majority > 0 && g.majority < 0.2);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM models WHERE id = %lld AND status = 'ok'", g.model_id), 1);
  /* Its L-BFGS iterations, tied to it; the last carries the fitted member's selection-half figures. */
  CHECK(test_sqlf(db, "SELECT count(*) FROM training_metrics WHERE run_id = %lld AND phase = 'lbfgs'"
                      " AND model_id = %lld", g.run_id, g.model_id) > 5);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM training_metrics WHERE run_id = %lld AND dev_accuracy > 0.3"
                             " AND dev_loss > 0", g.run_id), 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM training_runs WHERE id = %lld AND model_id = %lld", g.run_id,
                         g.model_id), 1);

  /* The crippled teacher: registered failed, with the reason, and refused. */
  finch_teacher_opts bad = {.dataset = "sample", .members = "tfm", .seed = 7, .ngrams = 1, .tfm_epochs = 1,
                            .dim = 8, .layers = 1, .heads = 1, .ff = 8, .seq_len = 16, .vocab = 300, .lr = 1e-7f,
                            .device = "cpu", .quiet = 1, .min_margin = 0.10};
  finch_teacher_result b;
  st = finch_teacher_train(db, &bad, &b, &err);
  CHECK_INT_EQ(st, FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "failed the quality gate");
  CHECK_CONTAINS(err.msg, "majority-class rate");
  CHECK_INT_EQ(b.failed, 1);
  CHECK(b.model_id > g.model_id);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM models WHERE id = %lld AND status = 'failed'"
                             " AND metrics->>'gate' LIKE 'holdout accuracy %%'", b.model_id), 1);
  char status[16], why[256];
  CHECK_INT_EQ(finch_models_status(db, b.model_id, status, sizeof status, why, sizeof why, &err), FINCH_OK);
  CHECK_STR_EQ(status, "failed");
  /* best and latest pass it over. */
  CHECK_INT_EQ(pick(db, "best", "sample"), g.model_id);
  CHECK_INT_EQ(pick(db, "latest", "sample"), g.model_id);
  char path[4096], kind[16];
  CHECK_INT_EQ(finch_models_resolve_in(db, "best", "teacher", "sample", path, sizeof path, &id, kind, &err), FINCH_OK);
  CHECK_INT_EQ(id, g.model_id);
  CHECK_STR_EQ(kind, "teacher");
  CHECK_INT_EQ(finch_models_resolve(db, "best", path, sizeof path, &id, kind, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "needs a dataset");

  /* distill --teacher best picks the good one; the failed one by id is refused unless allowed. */
  finch_distill_opts d = {.dataset = "sample", .seed = 7, .teacher = "best", .hard_only = 1, .student_epochs = 3,
                          .device = "cpu", .quiet = 1, .min_margin = 0.10};
  finch_distill_result dr;
  st = finch_distill_run(db, &d, &dr, &err);
  if (st) fprintf(stderr, "distill best: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_INT_EQ(dr.teacher_id, g.model_id);
  /* The bow student's epochs, each with dev figures, tied to it through its run. */
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM training_metrics t JOIN training_runs r ON r.id = t.run_id"
                             " WHERE r.id = %lld AND r.kind = 'student' AND t.model_id = %lld AND t.phase = 'vertical'"
                             " AND t.dev_accuracy IS NOT NULL AND t.lr > 0", dr.run_id, dr.student_id), 3);
  const long long student_run = dr.run_id;
  char ref[32];
  snprintf(ref, sizeof ref, "%lld", b.model_id);
  d.teacher = ref;
  CHECK_INT_EQ(finch_distill_run(db, &d, &dr, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "failed the quality gate");
  d.allow_failed = 1;
  st = finch_distill_run(db, &d, &dr, &err);
  if (st) fprintf(stderr, "distill failed teacher: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_INT_EQ(dr.teacher_id, b.model_id);

  /* A student held to 0.99 of its teacher after one epoch: failed, registered, refused. */
  long long students = test_scalar(db, "SELECT count(*) FROM models WHERE kind = 'student'");
  finch_distill_opts s1 = {.dataset = "sample", .seed = 7, .teacher = "best", .hard_only = 1, .student_epochs = 1,
                           .device = "cpu", .quiet = 1, .min_teacher_ratio = 0.99};
  CHECK_INT_EQ(finch_distill_run(db, &s1, &dr, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "of its teacher's");
  CHECK_INT_EQ(dr.student_failed, 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models WHERE kind = 'student'"), students + 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM models WHERE id = %lld AND status = 'failed'", dr.student_id), 1);
  s1.allow_failed = 1;
  CHECK_INT_EQ(finch_distill_run(db, &s1, &dr, &err), FINCH_OK);
  CHECK_INT_EQ(dr.student_failed, 1);
  CHECK_CONTAINS(dr.gate, "student: ");

  /* A teacher trained here (no teacher registered for sample2) under an unreachable margin. */
  finch_distill_opts t2 = {.dataset = "sample2", .seed = 7, .teacher_epochs = 1, .student_epochs = 1,
                           .hard_only = 1, .device = "cpu", .quiet = 1, .min_margin = 0.99};
  CHECK_INT_EQ(finch_distill_run(db, &t2, &dr, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "failed the quality gate");
  CHECK_INT_EQ(dr.teacher_failed, 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM models m JOIN datasets d ON d.id = m.dataset_id"
                             " WHERE d.name = 'sample2' AND m.status = 'failed' AND m.kind = 'teacher'"), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models m JOIN datasets d ON d.id = m.dataset_id"
                               " WHERE d.name = 'sample2' AND m.kind = 'student'"), 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM training_metrics t JOIN training_runs r ON r.id = t.run_id"
                               " WHERE r.dataset = 'sample2' AND r.kind = 'teacher' AND t.dev_accuracy IS NOT NULL"), 1);
  CHECK_INT_EQ(finch_models_pick(db, "best", "teacher", "sample2", &id, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "every registered teacher of dataset 'sample2' failed the quality gate");

  /* Aliases: bind, move (recorded), resolve, untag. */
  CHECK_INT_EQ(finch_models_tag(db, g.model_id, "production", &err), FINCH_OK);
  CHECK_INT_EQ(finch_models_lookup(db, "production", "teacher", "sample", &id, &err), FINCH_OK);
  CHECK_INT_EQ(id, g.model_id);
  CHECK_INT_EQ(finch_models_tag(db, b.model_id, "production", &err), FINCH_OK);
  CHECK_INT_EQ(finch_models_lookup(db, "production", NULL, NULL, &id, &err), FINCH_OK);
  CHECK_INT_EQ(id, b.model_id);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM model_aliases"), 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM model_alias_history WHERE alias = 'production' AND action = 'tag'"
                             " AND model_id = %lld AND previous_model_id = %lld", b.model_id, g.model_id), 1);
  CHECK_INT_EQ(finch_models_tag(db, g.model_id, "best", &err), FINCH_EINVAL);
  CHECK_INT_EQ(finch_models_tag(db, 999999, "staging", &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "999999");
  /* The same alias in a second dataset: a lookup without one is ambiguous. */
  long long t2id = test_scalar(db, "SELECT m.id FROM models m JOIN datasets d ON d.id = m.dataset_id"
                                   " WHERE d.name = 'sample2' LIMIT 1");
  CHECK_INT_EQ(finch_models_tag(db, t2id, "production", &err), FINCH_OK);
  CHECK_INT_EQ(finch_models_lookup(db, "production", NULL, NULL, &id, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "name the dataset");
  CHECK_INT_EQ(finch_models_untag(db, "production", "sample", &err), FINCH_OK);
  CHECK_INT_EQ(finch_models_untag(db, "production", "sample", &err), FINCH_ENOTFOUND);
  CHECK_INT_EQ(finch_models_lookup(db, "production", NULL, "sample", &id, &err), FINCH_ENOTFOUND);
  CHECK_INT_EQ(finch_models_lookup(db, "no such model!", NULL, "sample", &id, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "no such model!");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM model_alias_history"), 4);
  CHECK(finch_db_exec(db, "DELETE FROM model_alias_history", &err) != FINCH_OK);
  CHECK_CONTAINS(err.msg, "append-only");
  CHECK(finch_db_exec(db, "UPDATE model_alias_history SET alias = 'x'", &err) != FINCH_OK);

  /* best: ties go to the newest. */
  long long tie1 = 0, tie2 = 0;
  finch_model_rec rec = {.kind = "teacher", .stage = "finance", .arch = "bow", .dataset = "sample2", .path = sample,
                         .sha256 = "0", .metrics_json = "{\"dev_accuracy\": 0.5}"};
  CHECK_INT_EQ(finch_models_register(db, &rec, &tie1, &err), FINCH_OK);
  CHECK_INT_EQ(finch_models_register(db, &rec, &tie2, &err), FINCH_OK);
  CHECK_INT_EQ(pick(db, "best", "sample2"), tie2);

  /* The CLI: the gate's exit codes, runs, models. */
  const char *bin = getenv("FINCH_BIN");
  if (bin && *bin) {
    expect(bin, "teacher train --dataset sample --members slr --quiet --min-margin 0.99", 1,
           "failed the quality gate");
    expect(bin, "teacher train --dataset sample --members slr --quiet --min-margin 0.99 --allow-failed", 0,
           "failed the quality gate");
    expect(bin, "teacher train --dataset sample --min-margin 2", 2, "--min-margin: 2 is out of range");
    expect(bin, "distill --dataset sample --min-teacher-ratio x", 2, "--min-teacher-ratio: 'x' is not a number");
    expect(bin, "distill --dataset sample --teacher nosuch", 1, "'nosuch'");
    expect(bin, "runs list", 0, "best_dev");
    expect(bin, "runs list --dataset sample --json", 0, "\"best_dev_accuracy\"");
    expect(bin, "runs show abc", 2, "run 'abc' is not a run id");
    expect(bin, "runs show 99999999", 1, "run 99999999 does not exist");
    expect(bin, "runs show", 2, "usage");
    char args[256];
    snprintf(args, sizeof args, "runs show %lld --json", g.run_id);
    expect(bin, args, 0, "\"dev_accuracy\"");
    snprintf(args, sizeof args, "runs show %lld", g.run_id);
    expect(bin, args, 0, "lbfgs");
    snprintf(args, sizeof args, "runs show %lld --steps --json", student_run);
    expect(bin, args, 0, "\"steps\":[{\"step\"");
    /* Learning curves as SVG: the loss chart names every series, the dev
     * chart only those that measured it; both are well-formed pages. */
    const char *tmp = getenv("FINCH_TEST_TMP");
    char dir[1024], svgp[1200];
    snprintf(dir, sizeof dir, "%s/gate-svg", tmp && *tmp ? tmp : "/tmp");
    snprintf(args, sizeof args, "mkdir -p '%s'", dir);
    CHECK_INT_EQ(system(args), 0);
    snprintf(args, sizeof args, "runs show %lld --svg '%s'", g.run_id, dir);
    expect(bin, args, 0, "run-");
    snprintf(svgp, sizeof svgp, "%s/run-%lld-loss.svg", dir, g.run_id);
    int rc = 0;
    snprintf(args, sizeof args, "cat '%s'", svgp);
    char *svg = test_run(args, &rc);
    CHECK_INT_EQ(rc, 0);
    CHECK(svg && !strncmp(svg, "<svg", 4) && strstr(svg, "</svg>") && strstr(svg, "lbfgs") &&
          strstr(svg, "mean training loss") && !strstr(svg, "<script"));
    free(svg);
    snprintf(svgp, sizeof svgp, "%s/run-%lld-dev.svg", dir, g.run_id);
    CHECK(access(svgp, R_OK) == 0);
    snprintf(args, sizeof args, "runs show %lld --svg /nonexistent/dir", g.run_id);
    expect(bin, args, 1, "cannot write /nonexistent/dir/run-");
    snprintf(args, sizeof args, "models tag %lld staging", g.model_id);
    expect(bin, args, 0, "is now 'staging'");
    expect(bin, "models list", 0, "staging");
    expect(bin, "models list", 0, "failed");
    expect(bin, "models tag 1 latest", 2, "reserved");
    expect(bin, "models tag 1 '9x'", 2, "must start with a letter");
    expect(bin, "models untag staging", 2, "needs --dataset");
    expect(bin, "models untag staging --dataset sample", 0, "removed");
    expect(bin, "models untag staging --dataset sample", 1, "not bound");
    expect(bin, "models frob", 2, "usage");
  }
  finch_db_close(db);
  TEST_DONE();
}
