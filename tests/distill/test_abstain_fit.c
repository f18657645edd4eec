/* Out of scope, end to end below the server, on the bundled sample and a
 * small general dataset in a real database:
 *   - a teacher and a student trained with negatives carry one more label,
 *     "oos", and the student learns it from the teacher's soft labels over
 *     C+1 classes;
 *   - finch compile --abstain chooses the policy on the selection half of the
 *     holdout and the negatives' dev rows, writes it into the compiled file
 *     and meets its target there: in-scope recall for the threshold, refusing
 *     the negatives for the class;
 *   - the policy read back from the file is the one chosen, and finch eval
 *     --half selection on the compiled file decides the same rows alike
 *     (its in-scope coverage is the compile's figure); the two halves
 *     partition the holdout;
 *   - refusals, each naming its cause: the class without an oos label, an
 *     out-of-scope recall target without out-of-scope rows, two targets,
 *     negatives from a dataset that does not exist, a dataset that already
 *     has the label the negatives would take. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/paths.h"
#include "distill/distill.h"
#include "distill/teacher.h"
#include "evaluate/evaluate.h"
#include "ingest/ingest.h"
#include "nn/abstain.h"
#include "nn/model_arch.h"
#include "tests/dbtest.h"

/* A general dataset "chat" of 60 non-banking rows, 40 train and 20 dev,
 * and 4 rows of a banking domain the negatives must leave out. */
static void make_chat(finch_db *db) {
  static const char *const topics[] = {"the weather in paris", "a song by the beatles", "a recipe for pancakes",
                                       "the score of the match", "a flight to tokyo", "the nearest cinema",
                                       "a joke about cats", "my dentist appointment", "the capital of peru",
                                       "how tall is everest"};
  static const char *const frames[] = {"tell me about %s", "what do you know about %s", "can you find %s",
                                       "i want %s", "search for %s", "remind me of %s"};
  test_exec(db, "INSERT INTO datasets (name, format) VALUES ('chat', 'clinc150')");
  int k = 0;
  for (int t = 0; t < 10; t++)
    for (int f = 0; f < 6; f++, k++) {
      char text[160];
      snprintf(text, sizeof text, frames[f], topics[t]);
      char sql[512];
      snprintf(sql, sizeof sql, "INSERT INTO utterances (dataset_id, text, text_norm, label, split, meta, content_hash)"
               " SELECT id, '%s', '%s', 'chat_%d', '%s', '{\"domain\": \"misc\"}', 'chat-%d' FROM datasets"
               " WHERE name = 'chat'", text, text, t, k % 3 == 2 ? "dev" : "train", k);
      test_exec(db, sql);
    }
  test_exec(db, "INSERT INTO utterances (dataset_id, text, text_norm, label, split, meta, content_hash) SELECT id,"
                " v.t, v.t, 'transfer', v.s, '{\"domain\": \"banking\"}', 'chat-b-' || v.t FROM datasets,"
                " (VALUES ('send money to my mum', 'train'), ('move cash to savings', 'train'),"
                " ('wire funds abroad', 'dev'), ('pay my friend back', 'dev')) v(t, s) WHERE name = 'chat'");
}

int main(void) {
  finch_db *db = test_db_open();
  finch_err err;
  char sample[1024];
  snprintf(sample, sizeof sample, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
  finch_ingest_result ir;
  finch_ingest_opts io = {.source = sample, .format = "banking77", .dataset = "sample", .holdout = 0.2, .seed = 42};
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  make_chat(db);

  /* The teacher and the student with negatives. */
  finch_negatives_query neg = {.names = "chat", .negatives_exclude = "banking"};
  finch_teacher_opts to = {.dataset = "sample", .members = "slr", .seed = 7, .augmented = 1, .device = "cpu",
                           .quiet = 1, .negatives = neg};
  finch_teacher_result tr;
  finch_status st = finch_teacher_train(db, &to, &tr, &err);
  if (st) fprintf(stderr, "teacher: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  nn_model *t = NULL;
  CHECK_INT_EQ(nn_model_load(&t, tr.path, &err), FINCH_OK);
  CHECK(t && nn_model_label_index(t, "oos") >= 0);
  const size_t C = t ? nn_model_n_labels(t) : 0;
  CHECK_INT_EQ((long long)C, test_scalar(db, "SELECT count(DISTINCT label) + 1 FROM utterances u JOIN datasets d ON"
                                             " d.id = u.dataset_id WHERE d.name = 'sample' AND split = 'train'"));
  CHECK(t && nn_model_predict(t, "tell me about the weather in paris", NULL, 1.0f) == nn_model_label_index(t, "oos"));
  nn_model_free(t);
  char tid[32];
  snprintf(tid, sizeof tid, "%lld", tr.model_id);
  finch_distill_opts d = {.dataset = "sample", .seed = 3, .teacher = tid, .student = "bow", .device = "cpu",
                          .quiet = 1, .negatives = neg};
  finch_distill_result dr;
  st = finch_distill_run(db, &d, &dr, &err);
  if (st) fprintf(stderr, "distill: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  /* 40 train rows of chat outside banking, with the sample's training rows. */
  CHECK_INT_EQ(dr.n_train, test_scalar(db, "SELECT count(*) + 40 FROM utterances u JOIN datasets d ON d.id ="
                                           " u.dataset_id WHERE d.name = 'sample' AND split = 'train'"));
  /* Without the same negatives the teacher's labels are not the student's. */
  d.negatives.names = NULL;
  CHECK_INT_EQ(finch_distill_run(db, &d, &dr, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "labels that do not match");
  CHECK_CONTAINS(err.msg, "need the same --negatives");
  d.negatives = neg;
  CHECK_INT_EQ(finch_distill_run(db, &d, &dr, &err), FINCH_OK);

  /* Compiled with a threshold for 0.95 in-scope recall, negatives from chat's dev rows. */
  char sid[32], out[1200];
  snprintf(sid, sizeof sid, "%lld", dr.student_id);
  snprintf(out, sizeof out, "%s/abstain-%d.fnm", test_tmpdir(), (int)getpid());
  finch_compile_opts co = {.model = sid, .out = out, .dtype = "q8",
                           .abstain = {.method = "threshold", .negatives = "chat", .negatives_exclude = "banking",
                                       .in_scope_recall = 0.95, .seed = 42}};
  finch_compile_result cr;
  st = finch_compile_run(db, &co, &cr, &err);
  if (st) fprintf(stderr, "compile: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK(cr.abstain);
  CHECK_INT_EQ(cr.abstain_fit.n_negatives, 20);
  CHECK(cr.abstain_fit.n_in > 0 && cr.abstain_fit.n_out >= 9 && cr.abstain_fit.n_out <= 11); /* half of 20 */
  CHECK(cr.abstain_fit.sel_in_scope_recall >= 0.95 - 1e-9);
  CHECK(cr.abstain_fit.temperature > 0);
  printf("sample + chat negatives: threshold %.4f at T %.3f answers %.3f of %lld in-scope rows, refuses %.3f of %lld\n",
         (double)cr.abstain_fit.threshold, (double)cr.abstain_fit.temperature, cr.abstain_fit.sel_in_scope_recall,
         cr.abstain_fit.n_in, cr.abstain_fit.sel_oos_recall, cr.abstain_fit.n_out);
  nn_model *m = NULL;
  nn_abstain a;
  CHECK_INT_EQ(nn_model_load(&m, out, &err), FINCH_OK);
  CHECK_INT_EQ(nn_abstain_read(m, &a, &err), FINCH_OK);
  CHECK_INT_EQ(a.methods, NN_ABSTAIN_THRESHOLD);
  CHECK(a.threshold == cr.abstain_fit.threshold && a.temperature == cr.abstain_fit.temperature);
  CHECK(a.oos_index == nn_model_label_index(m, "oos") && a.oos_index >= 0);
  CHECK_CONTAINS(nn_model_meta(m), "in-scope recall 0.950");
  nn_model_free(m);
  {
    finch_eval_opts eo = {.model = out, .dataset = "sample", .split = "dev", .half = "selection", .seed = 42};
    finch_eval_result es = {0}, er = {0}, ea = {0};
    st = finch_eval_run(db, &eo, &es, &err);
    if (st) fprintf(stderr, "eval: %s\n", err.msg);
    CHECK_INT_EQ(st, FINCH_OK);
    CHECK_INT_EQ(es.n, cr.abstain_fit.n_in); /* the sample's holdout has no oos rows */
    CHECK(es.has_oos);
    CHECK_NEAR(es.oos.in_coverage, cr.abstain_fit.sel_in_scope_recall, 1e-12);
    eo.half = "report";
    CHECK_INT_EQ(finch_eval_run(db, &eo, &er, &err), FINCH_OK);
    eo.half = NULL;
    CHECK_INT_EQ(finch_eval_run(db, &eo, &ea, &err), FINCH_OK);
    CHECK_INT_EQ(es.n + er.n, ea.n);
    CHECK(llabs(es.n - er.n) <= 1);
    finch_eval_result_free(&es);
    finch_eval_result_free(&er);
    finch_eval_result_free(&ea);
    eo.half = "middle";
    CHECK_INT_EQ(finch_eval_run(db, &eo, &er, &err), FINCH_EINVAL);
    CHECK_CONTAINS(err.msg, "--half middle");
    finch_eval_result_free(&er);
  }
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM models WHERE id = %lld AND parent_model_id = %lld AND stage = 'compiled'"
                             " AND config->'abstain'->>'method' = 'threshold'", cr.model_id, dr.student_id), 1);

  /* The class alone; then an out-of-scope recall target. */
  co.abstain.method = "class";
  CHECK_INT_EQ(finch_compile_run(db, &co, &cr, &err), FINCH_OK);
  CHECK(cr.abstain_fit.sel_oos_recall > 0.5);
  co.abstain.method = "both";
  co.abstain.in_scope_recall = 0;
  co.abstain.oos_recall = 0.9;
  CHECK_INT_EQ(finch_compile_run(db, &co, &cr, &err), FINCH_OK);
  CHECK(cr.abstain_fit.sel_oos_recall >= 0.9 - 1e-9);
  /* none removes the policy. */
  co.abstain = (finch_abstain_opts){.method = "none"};
  CHECK_INT_EQ(finch_compile_run(db, &co, &cr, &err), FINCH_OK);
  CHECK_INT_EQ(nn_model_load(&m, out, &err), FINCH_OK);
  CHECK_INT_EQ(nn_abstain_read(m, &a, &err), FINCH_OK);
  CHECK_INT_EQ(a.methods, 0);
  nn_model_free(m);

  /* Refusals. */
  co.abstain = (finch_abstain_opts){.method = "class", .oos_label = "nothing_like_it"};
  CHECK_INT_EQ(finch_compile_run(db, &co, &cr, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "no out-of-scope class 'nothing_like_it'");
  co.abstain = (finch_abstain_opts){.method = "threshold", .oos_recall = 0.9};
  CHECK_INT_EQ(finch_compile_run(db, &co, &cr, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "no out-of-scope rows to choose on");
  co.abstain = (finch_abstain_opts){.method = "threshold", .oos_recall = 0.9, .in_scope_recall = 0.9};
  CHECK_INT_EQ(finch_compile_run(db, &co, &cr, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "give one");
  co.abstain = (finch_abstain_opts){.method = "threshold", .negatives = "chat,nosuch"};
  CHECK_INT_EQ(finch_compile_run(db, &co, &cr, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "dataset 'nosuch' does not exist");
  to.negatives.label = "card_arrival";
  CHECK_INT_EQ(finch_teacher_train(db, &to, &tr, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "already has a label 'card_arrival'");
  remove(out);
  finch_db_close(db);
  TEST_DONE();
}
