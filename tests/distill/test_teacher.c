/* finch teacher train and a transformer student, end to end on the bundled
 * sample in a real database:
 *   - the ensemble teacher is trained, calibrated, selected on the holdout,
 *     registered with its members, and its file loads and predicts;
 *   - the encoder's per-step metrics land in training_metrics, tied to it;
 *   - bad member names and datasets without a holdout are refused clearly;
 *   - a transformer student distils it with intermediate layers and head
 *     gates, is registered with its parent, and reports heads open by
 *     complexity; a bow student on hard labels only trains too;
 *   - an external teacher's soft labels drive a student, rows it never
 *     scored falling back to their hard label. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/paths.h"
#include "distill/distill.h"
#include "distill/external.h"
#include "distill/teacher.h"
#include "ingest/ingest.h"
#include "nn/model_arch.h"
#include "tests/dbtest.h"

int main(void) {
  finch_db *db = test_db_open();
  finch_err err;
  char sample[1024];
  snprintf(sample, sizeof sample, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
  finch_ingest_result ir;
  finch_ingest_opts io = {.source = sample, .format = "banking77", .dataset = "sample", .holdout = 0.2, .seed = 42};
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  CHECK(ir.dev > 20);

  /* Refusals first: they must leave nothing registered. */
  finch_teacher_opts bad = {.dataset = "sample", .members = "slr,xgboost", .seed = 1, .ngrams = 1};
  finch_teacher_result r;
  CHECK_INT_EQ(finch_teacher_train(db, &bad, &r, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "xgboost");
  bad.members = "ktfm,slr";
  CHECK_INT_EQ(finch_teacher_train(db, &bad, &r, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "before it");
  bad.members = "slr,slr,slr,slr,slr,slr,slr,slr,slr,slr,slr,slr,slr";
  CHECK_INT_EQ(finch_teacher_train(db, &bad, &r, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "at most 12");
  finch_teacher_opts none = {.dataset = "nosuch", .seed = 1, .ngrams = 1};
  CHECK_INT_EQ(finch_teacher_train(db, &none, &r, &err), FINCH_ENOTFOUND);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models"), 0);

  finch_teacher_opts o = {.dataset = "sample", .members = "slr,bow,tfm", .seed = 7, .augmented = 1, .ngrams = 1,
                          .tfm_epochs = 4, .dim = 16, .layers = 2, .heads = 2, .ff = 32, .seq_len = 24,
                          .vocab = 400, .lr = 3e-3f, .device = "cpu", .quiet = 1};
  finch_status st = finch_teacher_train(db, &o, &r, &err);
  if (st) fprintf(stderr, "teacher: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_INT_EQ(r.n_members, 3);
  CHECK_STR_EQ(r.members[2].name, "tfm1");
  CHECK(strlen(r.chosen) > 0);
  CHECK(r.dev_acc > 0.3); /* 59 intents: far above chance */
  double best_member = 0;
  for (size_t i = 0; i < r.n_members; i++) {
    CHECK(r.members[i].temperature > 0);
    CHECK(r.members[i].params > 0);
    if (r.members[i].dev_acc > best_member) best_member = r.members[i].dev_acc;
  }
  /* Chosen on the holdout's selection half: never below the best single
   * member there (the report half took no part in the choice). */
  double best_sel = 0;
  for (size_t i = 0; i < r.n_members; i++)
    if (r.members[i].sel_acc > best_sel) best_sel = r.members[i].sel_acc;
  CHECK(r.sel_acc >= best_sel - 1e-9);
  CHECK(best_member > 0);
  CHECK_INT_EQ(r.n_sel + r.n_report, r.n_dev);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models WHERE kind = 'teacher' AND arch = 'ensemble'"), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT jsonb_array_length(config->'members') FROM models"), 3);
  CHECK(test_scalar(db, "SELECT count(*) FROM training_metrics WHERE phase = 'finetune'") > 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM training_metrics WHERE model_id IS NULL"), 0);
  /* One run, by id, tied to the teacher with every step of its encoder. */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM training_runs"), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM training_metrics m JOIN training_runs r ON r.id = m.run_id"
                               " WHERE r.kind = 'teacher' AND r.model_id = m.model_id"),
               test_scalar(db, "SELECT count(*) FROM training_metrics"));
  nn_model *t = NULL;
  CHECK_INT_EQ(nn_model_load(&t, r.path, &err), FINCH_OK);
  if (t) {
    CHECK_STR_EQ(nn_model_arch_name(t), "ensemble");
    CHECK(nn_model_n_members(t) >= 1);
    CHECK(nn_model_predict(t, "my card has not arrived", NULL, 1.0f) >= 0);
    nn_model_free(t);
  }

  /* Transformer student: layers matched, gates on, complexity-weighted alpha. */
  char tref[32];
  snprintf(tref, sizeof tref, "%lld", r.model_id);
  int has_tfm = strstr(r.chosen, "tfm") != NULL;
  finch_distill_opts d = {.dataset = "sample", .seed = 7, .teacher = has_tfm ? tref : NULL, .student = "tfm",
                          .student_epochs = 3, .intermediate = 1, .progressive = 1, .head_gates = 1,
                          .device = "cpu", .quiet = 1};
  finch_distill_result dr;
  if (!has_tfm) {
    /* The encoder lost the selection: distil from a teacher that keeps it. */
    finch_teacher_opts o2 = o;
    o2.members = "tfm";
    CHECK_INT_EQ(finch_teacher_train(db, &o2, &r, &err), FINCH_OK);
    snprintf(tref, sizeof tref, "%lld", r.model_id);
    d.teacher = tref;
  }
  st = finch_distill_run(db, &d, &dr, &err);
  if (st) fprintf(stderr, "distill: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_STR_EQ(dr.student_arch, "tfm");
  CHECK_STR_EQ(dr.stage, "vertical");
  CHECK(dr.student_dev_acc > 0.1);
  CHECK(dr.gated);
  long long binned = 0;
  for (int b = 0; b < 10; b++) {
    binned += dr.gate_n[b];
    if (dr.gate_n[b]) CHECK(dr.gate_share[b] >= 0 && dr.gate_share[b] <= 1);
  }
  CHECK_INT_EQ(binned, dr.n_train);
  CHECK(test_scalar(db, "SELECT count(*) FROM training_metrics t JOIN models m ON m.id = t.model_id"
                        " WHERE t.phase = 'vertical' AND m.kind = 'student'") > 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM training_metrics t JOIN training_runs r ON r.id = t.run_id"
                               " WHERE r.kind = 'student' AND r.model_id = t.model_id AND t.phase = 'vertical'"),
               test_scalar(db, "SELECT count(*) FROM training_metrics WHERE phase = 'vertical'"));
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models WHERE kind = 'student' AND arch = 'tfm'"
                               " AND parent_model_id IS NOT NULL"), 1);
  nn_model *s = NULL;
  CHECK_INT_EQ(nn_model_load(&s, dr.student_path, &err), FINCH_OK);
  if (s) {
    CHECK_STR_EQ(nn_model_arch_name(s), "tfm");
    CHECK(nn_model_n_params(s) > 0);
    nn_model_free(s);
  }

  /* --stage alone implies the transformer student and the latest teacher with an encoder. */
  long long last_teacher = test_scalar(db, "SELECT max(id) FROM models WHERE kind = 'teacher'");
  finch_distill_opts d2 = {.dataset = "sample", .seed = 7, .stage = "vertical", .student_epochs = 1,
                           .intermediate = 1, .device = "cpu", .quiet = 1};
  st = finch_distill_run(db, &d2, &dr, &err);
  if (st) fprintf(stderr, "distill --stage: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_STR_EQ(dr.student_arch, "tfm");
  CHECK_INT_EQ(dr.teacher_id, last_teacher);

  /* bow student on hard labels only. */
  finch_distill_opts d3 = {.dataset = "sample", .seed = 7, .teacher = "latest", .hard_only = 1, .student_epochs = 3,
                           .device = "cpu", .quiet = 1};
  CHECK_INT_EQ(finch_distill_run(db, &d3, &dr, &err), FINCH_OK);
  CHECK_STR_EQ(dr.student_arch, "bow");
  CHECK(!dr.dynamic_alpha);

  /* An external teacher: soft labels for some training rows from a JSONL file. */
  {
    char jl[1024];
    snprintf(jl, sizeof jl, "%s/teacher-ext-%d.jsonl", test_tmpdir(), (int)getpid());
    PGresult *q = finch_db_query(db, "SELECT u.id, u.label FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                                     " WHERE d.name = 'sample' AND u.split = 'train' ORDER BY u.id LIMIT 40", 0, NULL,
                                 &err);
    CHECK(q != NULL);
    FILE *fp = fopen(jl, "w");
    CHECK(fp != NULL);
    for (int i = 0; q && fp && i < PQntuples(q); i++)
      fprintf(fp, "{\"utterance_id\": %s, \"probs\": {\"%s\": 1.0}}\n", PQgetvalue(q, i, 0), PQgetvalue(q, i, 1));
    if (fp) fclose(fp);
    PQclear(q);
    finch_external_import_opts eo = {.dataset = "sample", .path = jl, .name = "stub-llm"};
    finch_external_result er;
    CHECK_INT_EQ(finch_external_import(db, &eo, &er, &err), FINCH_OK);
    CHECK_INT_EQ(er.n_labelled, 40);
    char eref[32];
    snprintf(eref, sizeof eref, "%lld", er.model_id);
    finch_distill_opts d4 = {.dataset = "sample", .seed = 7, .teacher = eref, .student_epochs = 3, .device = "cpu",
                             .quiet = 1};
    st = finch_distill_run(db, &d4, &dr, &err);
    if (st) fprintf(stderr, "external: %s\n", err.msg);
    CHECK_INT_EQ(st, FINCH_OK);
    CHECK(dr.external_teacher);
    CHECK_INT_EQ(dr.teacher_id, er.model_id);
    /* Rows without an external output learn from their label alone. */
    CHECK(test_scalar(db, "SELECT count(*) FROM complexity_scores c JOIN models m ON m.id = c.model_id"
                          " WHERE m.kind = 'student' AND m.parent_model_id = (SELECT max(id) FROM models"
                          " WHERE arch = 'external') AND c.alpha = 0") > 0);
    d4.student = "tfm";
    CHECK_INT_EQ(finch_distill_run(db, &d4, &dr, &err), FINCH_EINVAL);
    unlink(jl);
  }

  /* An encoder taught by the member before it. */
  {
    finch_teacher_opts ok = o;
    ok.members = "bow,ktfm";
    st = finch_teacher_train(db, &ok, &r, &err);
    if (st) fprintf(stderr, "ktfm: %s\n", err.msg);
    CHECK_INT_EQ(st, FINCH_OK);
    CHECK_INT_EQ(r.n_members, 2);
    CHECK_STR_EQ(r.members[1].name, "ktfm1");
    CHECK(r.members[1].dev_acc > 0.1); /* 59 intents: chance is under 0.02 */
    CHECK(test_scalar(db, "SELECT count(*) FROM training_metrics WHERE run LIKE 'sample-ktfm1-%'") > 0);
  }

  /* The member cache: a second run reuses what the first trained, pays only
   * for the members it adds, and chooses exactly as a fresh run would. */
  {
    finch_teacher_opts oc = o;
    oc.members = "bow,tfm,ktfm";
    oc.reuse_members = 1;
    finch_teacher_result r1, r2, r3;
    char dir[1024], path[1200];
    CHECK_INT_EQ(finch_home_subdir("member-cache", dir, sizeof dir, &err), FINCH_OK);
    snprintf(path, sizeof path, "rm -f %s/*.fnm", dir); /* the test home outlives a run */
    CHECK_INT_EQ(system(path), 0);
    CHECK_INT_EQ(finch_teacher_train(db, &oc, &r1, &err), FINCH_OK);
    for (size_t i = 0; i < r1.n_members; i++) CHECK(!r1.members[i].cached);
    snprintf(path, sizeof path, "ls %s/*.fnm | wc -l", dir);
    FILE *ls = popen(path, "r");
    int n_files = -1;
    CHECK(ls && fscanf(ls, "%d", &n_files) == 1);
    if (ls) pclose(ls);
    CHECK_INT_EQ(n_files, 3);
    oc.members = "bow,tfm,ktfm,bow";
    CHECK_INT_EQ(finch_teacher_train(db, &oc, &r2, &err), FINCH_OK);
    CHECK_INT_EQ(r2.n_members, 4);
    for (size_t i = 0; i < 3; i++) {
      CHECK(r2.members[i].cached);
      CHECK_STR_EQ(r2.members[i].name, r1.members[i].name);
      CHECK(r2.members[i].dev_acc == r1.members[i].dev_acc);
      CHECK(r2.members[i].dev_nll == r1.members[i].dev_nll);
      CHECK(r2.members[i].temperature == r1.members[i].temperature);
    }
    CHECK(!r2.members[3].cached);
    CHECK_STR_EQ(r2.members[3].name, "bow2");
    CHECK(r2.members[3].dev_nll != r2.members[0].dev_nll); /* another seed */
    CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models WHERE metrics->'members' @> '[{\"reused\": true}]'"), 1);
    /* A damaged file is trained again, to the same member. */
    char key_glob[1200];
    snprintf(key_glob, sizeof key_glob, "for f in %s/*.fnm; do printf 'xx' | dd of=$f bs=1 seek=100 conv=notrunc 2>/dev/null; done", dir);
    CHECK_INT_EQ(system(key_glob), 0);
    oc.members = "bow";
    CHECK_INT_EQ(finch_teacher_train(db, &oc, &r3, &err), FINCH_OK);
    CHECK(!r3.members[0].cached);
    CHECK(r3.members[0].dev_nll == r1.members[0].dev_nll);
    /* Another seed shares nothing. */
    oc.seed = 8;
    CHECK_INT_EQ(finch_teacher_train(db, &oc, &r3, &err), FINCH_OK);
    CHECK(!r3.members[0].cached);
  }

  finch_db_close(db);
  TEST_DONE();
}
