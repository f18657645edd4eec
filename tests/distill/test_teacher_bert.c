/* The teacher's "bert" member on the bundled sample in a real database:
 *   - listing it without installed weights fails before anything trains,
 *     with finch_pretrained_dir's one line naming the fetch script, and a
 *     second bert is refused;
 *   - with a tiny random checkpoint written here (1 layer, width 8, a
 *     letters-only WordPiece vocabulary), "bert,slr" trains, the member has
 *     the encoder's parameters plus its head, the teacher file loads and
 *     predicts, and the member figures come on both holdout halves;
 *   - the weights' identity is the SHA-256 of the two files' hashes, and
 *     the member cache keys it by them: a second run reuses it with
 *     the same figures, and other weights at the same path train anew;
 *   - fine-tuned for one epoch (bert_epochs), the member trains anew, differs
 *     from the frozen one, logs its steps, and a second run reuses it;
 *   - the holdout halves partition the dev rows, balanced within one row,
 *     the same for the same seed;
 *   - distilled into the bow student: the teacher's soft labels are computed
 *     once and stored in teacher_outputs, a second distill reads them all
 *     back and trains the same student, a malformed stored row is
 *     recomputed and replaced; the student starts from the encoder's word
 *     vectors and a general stage on its sentence vectors when asked, and
 *     both are refused for a teacher without the encoder;
 *   - `test_teacher_bert pretrained`: with the real all-MiniLM-L6-v2 under
 *     FINCH_PRETRAINED_DIR, the frozen member is far above chance on the
 *     sample (skipped, saying so, without it). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/paths.h"
#include "distill/distill.h"
#include "distill/teacher.h"
#include "distill/teacher_bert.h"
#include "distill/teacher_select.h"
#include "ingest/ingest.h"
#include "nn/halves.h"
#include "nn/bert.h"
#include "nn/model_arch.h"
#include "nn/rng.h"
#include "tests/dbtest.h"

enum { D = 8, F = 12, P = 128, L = 1 };

static void put_tensor(json_t *hdr, FILE *body, size_t *off, nn_rng *r, const char *name, int rows, int cols,
                       float scale, float shift) {
  size_t n = (size_t)rows * (cols ? cols : 1);
  json_t *shape = cols ? json_pack("[ii]", rows, cols) : json_pack("[i]", rows);
  json_object_set_new(hdr, name, json_pack("{s:s,s:o,s:[II]}", "dtype", "F32", "shape", shape, "data_offsets",
                                           (json_int_t)*off, (json_int_t)(*off + 4 * n)));
  for (size_t i = 0; i < n; i++) {
    float x = shift + scale * nn_rng_normal(r);
    fwrite(&x, 4, 1, body);
  }
  *off += 4 * n;
}

/* A checkpoint directory d whose weights depend on seed. Vocabulary: the
 * five specials, a..z, ##a..##z, 0..9, so every lower-case word encodes. */
static void make_tiny(const char *d, uint64_t seed) {
  char path[1024], vocab[4096] = "{\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,\"[SEP]\":3,\"[MASK]\":4";
  int V = 5;
  for (char ch = 'a'; ch <= 'z'; ch++) snprintf(vocab + strlen(vocab), 64, ",\"%c\":%d,\"##%c\":%d", ch, V, ch, V + 1), V += 2;
  for (char ch = '0'; ch <= '9'; ch++) snprintf(vocab + strlen(vocab), 64, ",\"%c\":%d", ch, V++);
  strcat(vocab, "}");
  mkdir(d, 0755);
  nn_rng r;
  nn_rng_seed(&r, seed, 0);
  json_t *hdr = json_object();
  size_t off = 0;
  snprintf(path, sizeof path, "%s/body.tmp", d);
  FILE *body = fopen(path, "wb+");
  CHECK(body != NULL);
  put_tensor(hdr, body, &off, &r, "embeddings.word_embeddings.weight", V, D, 1.0f, 0);
  put_tensor(hdr, body, &off, &r, "embeddings.position_embeddings.weight", P, D, 0.1f, 0);
  put_tensor(hdr, body, &off, &r, "embeddings.token_type_embeddings.weight", 2, D, 0.1f, 0);
  put_tensor(hdr, body, &off, &r, "embeddings.LayerNorm.weight", D, 0, 0.1f, 1);
  put_tensor(hdr, body, &off, &r, "embeddings.LayerNorm.bias", D, 0, 0.1f, 0);
  static const char *const lin[6] = {"attention.self.query", "attention.self.key", "attention.self.value",
                                     "attention.output.dense", "intermediate.dense", "output.dense"};
  static const char *const lns[2] = {"attention.output.LayerNorm", "output.LayerNorm"};
  char name[128];
  for (int l = 0; l < L; l++) {
    for (int k = 0; k < 6; k++) {
      snprintf(name, sizeof name, "encoder.layer.%d.%s.weight", l, lin[k]);
      put_tensor(hdr, body, &off, &r, name, k == 4 ? F : D, k == 5 ? F : D, 0.4f, 0);
      snprintf(name, sizeof name, "encoder.layer.%d.%s.bias", l, lin[k]);
      put_tensor(hdr, body, &off, &r, name, k == 4 ? F : D, 0, 0.1f, 0);
    }
    for (int k = 0; k < 2; k++) {
      snprintf(name, sizeof name, "encoder.layer.%d.%s.weight", l, lns[k]);
      put_tensor(hdr, body, &off, &r, name, D, 0, 0.1f, 1);
      snprintf(name, sizeof name, "encoder.layer.%d.%s.bias", l, lns[k]);
      put_tensor(hdr, body, &off, &r, name, D, 0, 0.1f, 0);
    }
  }
  char *text = json_dumps(hdr, JSON_COMPACT);
  size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
  uint64_t n64 = padded;
  snprintf(path, sizeof path, "%s/model.safetensors", d);
  FILE *fp = fopen(path, "wb");
  CHECK(fp != NULL);
  fwrite(&n64, 8, 1, fp);
  fwrite(text, 1, n, fp);
  for (size_t i = n; i < padded; i++) fputc(' ', fp);
  rewind(body);
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, body)) > 0) fwrite(buf, 1, got, fp);
  fclose(fp);
  fclose(body);
  snprintf(path, sizeof path, "%s/body.tmp", d);
  unlink(path);
  free(text);
  json_decref(hdr);
  char cfg[1024];
  snprintf(cfg, sizeof cfg,
           "{\"architectures\":[\"BertModel\"],\"hidden_act\":\"gelu\",\"hidden_size\":%d,\"intermediate_size\":%d,"
           "\"layer_norm_eps\":1e-12,\"max_position_embeddings\":%d,\"model_type\":\"bert\","
           "\"num_attention_heads\":2,\"num_hidden_layers\":%d,\"type_vocab_size\":2,\"vocab_size\":%d}",
           D, F, P, L, V);
  snprintf(path, sizeof path, "%s/config.json", d);
  test_write_file(path, cfg, strlen(cfg));
  char tok[8192];
  snprintf(tok, sizeof tok,
           "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[],"
           "\"normalizer\":{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":true,"
           "\"strip_accents\":null,\"lowercase\":true},\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},"
           "\"post_processor\":null,\"decoder\":null,\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\","
           "\"continuing_subword_prefix\":\"##\",\"max_input_chars_per_word\":100,\"vocab\":%s}}",
           vocab);
  snprintf(path, sizeof path, "%s/tokenizer.json", d);
  test_write_file(path, tok, strlen(tok));
}

static void use_pretrained(const char *root) {
  finch_err err;
  CHECK_INT_EQ(finch_config_set("pretrained_dir", root, FINCH_CFG_SRC_FLAG, &err), FINCH_OK);
}

static void test_split(void) {
  enum { N = 101, C = 7 };
  int32_t y[N];
  uint8_t h1[N], h2[N], h3[N];
  for (int i = 0; i < N; i++) y[i] = (i * 5) % C;
  y[3] = -1;
  nn_split_halves(y, N, C, 42, h1);
  nn_split_halves(y, N, C, 42, h2);
  nn_split_halves(y, N, C, 43, h3);
  CHECK(!memcmp(h1, h2, N));
  CHECK(memcmp(h1, h3, N) != 0);
  CHECK_INT_EQ(h1[3], 1);
  int sel = 0;
  for (int c = 0; c < C; c++) {
    int a = 0, b = 0;
    for (int i = 0; i < N; i++)
      if (y[i] == c) *(h1[i] ? &b : &a) += 1;
    CHECK(abs(a - b) <= 1);
    sel += a;
  }
  CHECK(abs(sel - (N - 1 - sel)) <= 1);
}

static int test_pretrained(void);

static void test_distill(finch_db *db, const finch_teacher_opts *to) {
  finch_err err;
  char tid[32], sql[512];
  /* The encoder alone, so that the teacher surely holds it. */
  finch_teacher_opts bo = *to;
  bo.members = "bert";
  finch_teacher_result br;
  CHECK_INT_EQ(finch_teacher_train(db, &bo, &br, &err), FINCH_OK);
  const long long teacher_id = br.model_id;
  snprintf(tid, sizeof tid, "%lld", teacher_id);
  finch_distill_opts d = {.dataset = "sample", .seed = 3, .teacher = tid, .student = "bow", .device = "cpu",
                          .quiet = 1, .student_epochs = 3};
  finch_distill_result a, b, c, e;
  finch_status st = finch_distill_run(db, &d, &a, &err);
  if (st) fprintf(stderr, "distill: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK(a.n_train > 0 && a.soft_computed == a.n_train && a.soft_stored == 0);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM teacher_outputs WHERE model_id = %lld AND temperature = 2", teacher_id);
  CHECK_INT_EQ(test_scalar(db, sql), a.n_train);
  CHECK_INT_EQ(finch_distill_run(db, &d, &b, &err), FINCH_OK);
  CHECK(b.soft_stored == a.n_train && b.soft_computed == 0);
  CHECK(b.student_dev_acc == a.student_dev_acc);
  snprintf(sql, sizeof sql, "SELECT count(DISTINCT sha256) FROM models WHERE id IN (%lld, %lld)", a.student_id,
           b.student_id);
  CHECK_INT_EQ(test_scalar(db, sql), 1); /* the same bytes: stored labels are the computed ones */
  snprintf(sql, sizeof sql, "UPDATE teacher_outputs SET probs = '{0.5}' WHERE model_id = %lld AND utterance_id ="
           " (SELECT min(utterance_id) FROM teacher_outputs WHERE model_id = %lld)", teacher_id, teacher_id);
  CHECK_INT_EQ(finch_db_exec(db, sql, &err), FINCH_OK);
  CHECK_INT_EQ(finch_distill_run(db, &d, &c, &err), FINCH_OK);
  CHECK(c.soft_stored == a.n_train - 1 && c.soft_computed == 1);
  CHECK(c.student_dev_acc == a.student_dev_acc);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM teacher_outputs WHERE model_id = %lld AND array_length(probs, 1) < 2",
           teacher_id);
  CHECK_INT_EQ(test_scalar(db, sql), 0);
  /* The encoder's start: word rows, then a general stage on its sentence vectors. */
  d.teacher_init = 1;
  d.stage = "both";
  d.general = "sample";
  d.general_max = 100;
  st = finch_distill_run(db, &d, &e, &err);
  if (st) fprintf(stderr, "distill (teacher init, both stages): %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK(e.teacher_init && e.n_general_stage == 100);
  CHECK(e.general_loss > 0 && e.general_loss < 10);
  CHECK_STR_EQ(e.student_arch, "bow");
  CHECK_STR_EQ(e.stage, "both");
  snprintf(sql, sizeof sql, "SELECT count(*) FROM models WHERE id = %lld AND stage = 'both'", e.student_id);
  CHECK_INT_EQ(test_scalar(db, sql), 1);
  printf("sample, bow student from the tiny encoder: %.3f plain, %.3f with its start (general loss %.3f)\n",
         a.student_dev_acc, e.student_dev_acc, e.general_loss);
  d.stage = "general";
  CHECK_INT_EQ(finch_distill_run(db, &d, &e, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "vertical (default) or both");
  /* A teacher without the encoder cannot give either start. */
  finch_teacher_opts so = *to;
  so.members = "slr";
  finch_teacher_result sr;
  CHECK_INT_EQ(finch_teacher_train(db, &so, &sr, &err), FINCH_OK);
  snprintf(tid, sizeof tid, "%lld", sr.model_id);
  d.stage = NULL;
  CHECK_INT_EQ(finch_distill_run(db, &d, &e, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "--teacher-init needs a teacher with the pretrained encoder");
  /* Models saved by one process within one second keep their own files. */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) - count(DISTINCT path) FROM models"), 0);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "pretrained")) return test_pretrained();
  test_split();
  finch_db *db = test_db_open();
  finch_err err;
  char sample[1024], root[1024], tiny[1200], cmd[2600];
  snprintf(sample, sizeof sample, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
  finch_ingest_result ir;
  finch_ingest_opts io = {.source = sample, .format = "banking77", .dataset = "sample", .holdout = 0.2, .seed = 42};
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);

  /* A member cache left by an earlier run of this test would answer its
   * first runs: it starts empty. */
  char mc[1024];
  CHECK_INT_EQ(finch_home_subdir("member-cache", mc, sizeof mc, &err), FINCH_OK);
  snprintf(cmd, sizeof cmd, "rm -rf %s", mc);
  CHECK_INT_EQ(system(cmd), 0);

  /* No weights: one line naming the script, nothing registered. */
  snprintf(root, sizeof root, "%s/teacher-bert-%d", test_tmpdir(), (int)getpid());
  snprintf(cmd, sizeof cmd, "rm -rf %s", root);
  CHECK_INT_EQ(system(cmd), 0);
  mkdir(root, 0755);
  use_pretrained(root);
  finch_teacher_opts o = {.dataset = "sample", .members = "slr,bert", .seed = 7, .augmented = 1, .ngrams = 1,
                          .device = "cpu", .quiet = 1, .reuse_members = 1};
  finch_teacher_result r, r2;
  CHECK_INT_EQ(finch_teacher_train(db, &o, &r, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "scripts/fetch-pretrained.sh");
  CHECK(!strchr(err.msg, '\n'));
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models"), 0);

  /* The tiny checkpoint. */
  snprintf(tiny, sizeof tiny, "%s/all-minilm-l6-v2", root);
  make_tiny(tiny, 1);
  /* The weights' identity: SHA-256 of "<model.safetensors hex>|<tokenizer.json hex>". */
  {
    char a[FINCH_SHA256_HEX_LEN], b[FINCH_SHA256_HEX_LEN], id[FINCH_SHA256_HEX_LEN], want[FINCH_SHA256_HEX_LEN];
    char both[2 * FINCH_SHA256_HEX_LEN + 2], path[1400];
    snprintf(path, sizeof path, "%s/model.safetensors", tiny);
    CHECK_INT_EQ(finch_sha256_file(path, a, &err), FINCH_OK);
    snprintf(path, sizeof path, "%s/tokenizer.json", tiny);
    CHECK_INT_EQ(finch_sha256_file(path, b, &err), FINCH_OK);
    snprintf(both, sizeof both, "%s|%s", a, b);
    finch_sha256_hex(both, strlen(both), want);
    CHECK_INT_EQ(finch_teacher__bert_identity(tiny, id, &err), FINCH_OK);
    CHECK_STR_EQ(id, want);
  }
  o.members = "bert,slr,bert";
  CHECK_INT_EQ(finch_teacher_train(db, &o, &r, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "twice");
  o.members = "bert,slr";
  finch_status st = finch_teacher_train(db, &o, &r, &err);
  if (st) fprintf(stderr, "teacher: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_INT_EQ(r.n_members, 2);
  CHECK_STR_EQ(r.members[0].name, "bert");
  CHECK(!r.members[0].cached);
  CHECK(r.members[0].temperature > 0);
  /* The encoder's parameters and a head of C x (8 + 1). */
  nn_model *enc = NULL;
  const char *one[1] = {"x"};
  CHECK_INT_EQ(nn_model_bert_from_dir(&enc, tiny, 128, one, 1, NULL, NULL, &err), FINCH_OK);
  long long n_enc = enc ? (long long)nn_bert_n_params(nn_model_bert(enc)) : 0;
  nn_model_free(enc);
  CHECK(n_enc > 0);
  printf("sample: %lld holdout rows, %lld selection + %lld report; bert %.3f/%.3f, slr %.3f/%.3f, teacher %s "
         "%.3f/%.3f (selection/report)\n", r.n_dev, r.n_sel, r.n_report, r.members[0].sel_acc, r.members[0].dev_acc,
         r.members[1].sel_acc, r.members[1].dev_acc, r.chosen, r.sel_acc, r.dev_acc);
  CHECK_INT_EQ(r.n_sel + r.n_report, r.n_dev);
  CHECK(llabs(r.n_sel - r.n_report) <= 1);
  CHECK(r.members[0].params > n_enc);
  CHECK(r.members[0].dev_acc >= 0 && r.members[0].dev_acc <= 1); /* a random encoder: the plumbing only */
  /* Chosen on the selection half: never below its best single member there. */
  CHECK(r.sel_acc >= r.members[0].sel_acc - 1e-9 && r.sel_acc >= r.members[1].sel_acc - 1e-9);
  nn_model *t = NULL;
  CHECK_INT_EQ(nn_model_load(&t, r.path, &err), FINCH_OK);
  if (t) {
    CHECK(nn_model_predict(t, "my card has not arrived", NULL, 1.0f) >= 0);
    nn_model_free(t);
  }
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models WHERE kind = 'teacher' AND "
                               "(config->>'n_selection')::int + (config->>'n_report')::int = (config->>'n_dev')::int"
                               " AND config->'selection_accuracy' IS NOT NULL"), 1);

  /* The member cache: the same weights are reused, other weights are not. */
  CHECK_INT_EQ(finch_teacher_train(db, &o, &r2, &err), FINCH_OK);
  CHECK(r2.members[0].cached && r2.members[1].cached);
  CHECK(r2.members[0].dev_acc == r.members[0].dev_acc && r2.members[0].sel_nll == r.members[0].sel_nll);
  CHECK_STR_EQ(r2.chosen, r.chosen);
  make_tiny(tiny, 2);
  CHECK_INT_EQ(finch_teacher_train(db, &o, &r2, &err), FINCH_OK);
  CHECK(!r2.members[0].cached && r2.members[1].cached);
  CHECK(r2.members[0].sel_nll != r.members[0].sel_nll);

  /* Fine-tuned for one epoch: trained anew (the epochs are in the key), not
   * the frozen member, its steps in training_metrics, and reused from the
   * cache by a second run with the same figures. */
  finch_teacher_result f, f2;
  o.bert_epochs = 1;
  st = finch_teacher_train(db, &o, &f, &err);
  if (st) fprintf(stderr, "teacher (bert fine-tuned): %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK_STR_EQ(f.members[0].name, "bert");
  CHECK(!f.members[0].cached && f.members[1].cached);
  CHECK(f.members[0].sel_nll != r2.members[0].sel_nll);
  CHECK(f.members[0].params == r2.members[0].params);
  printf("sample, tiny encoder: frozen bert %.3f/%.4f, fine-tuned 1 epoch %.3f/%.4f (selection accuracy/nll)\n",
         r2.members[0].sel_acc, r2.members[0].sel_nll, f.members[0].sel_acc, f.members[0].sel_nll);
  CHECK(test_scalar(db, "SELECT count(*) FROM training_metrics WHERE run LIKE 'sample-bert-%' AND phase = 'finetune'"
                        " AND run_id IS NOT NULL") > 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models WHERE kind = 'teacher' AND config->>'bert_epochs' = '1'"),
               1);
  CHECK_INT_EQ(finch_teacher_train(db, &o, &f2, &err), FINCH_OK);
  CHECK(f2.members[0].cached && f2.members[1].cached);
  CHECK(f2.members[0].dev_acc == f.members[0].dev_acc && f2.members[0].sel_nll == f.members[0].sel_nll);
  /* "bertft" beside "bert": the frozen member and the fine-tuned one, each
   * the same model as before (both from the cache, same figures). */
  finch_teacher_result g;
  o.members = "bertft,slr,bertft";
  CHECK_INT_EQ(finch_teacher_train(db, &o, &g, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "bertft is listed twice");
  o.members = "bert,bertft,slr";
  CHECK_INT_EQ(finch_teacher_train(db, &o, &g, &err), FINCH_OK);
  CHECK_INT_EQ(g.n_members, 3);
  CHECK_STR_EQ(g.members[1].name, "bertft");
  CHECK(g.members[0].cached && g.members[1].cached && g.members[2].cached);
  CHECK(g.members[0].sel_nll == r2.members[0].sel_nll);
  CHECK(g.members[1].sel_nll == f.members[0].sel_nll);
  o.members = "bert,slr";
  o.bert_epochs = 0;
  test_distill(db, &o);
  snprintf(cmd, sizeof cmd, "rm -rf %s", root);
  CHECK_INT_EQ(system(cmd), 0);
  finch_db_close(db);
  TEST_DONE();
}

/* The real encoder, when installed (ctest's test_teacher_bert_pretrained). */
static int test_pretrained(void) {
  const char *real = getenv("FINCH_PRETRAINED_DIR");
  char rdir[1200];
  snprintf(rdir, sizeof rdir, "%s/all-minilm-l6-v2/model.safetensors", real ? real : "");
  if (!real || !*real || !finch_file_exists(rdir))
    TEST_SKIP("all-minilm-l6-v2 is not under FINCH_PRETRAINED_DIR (%s): run scripts/fetch-pretrained.sh",
              real && *real ? real : "unset");
  finch_db *db = test_db_open();
  finch_err err;
  char sample[1024];
  snprintf(sample, sizeof sample, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
  finch_ingest_result ir;
  finch_ingest_opts io = {.source = sample, .format = "banking77", .dataset = "sample", .holdout = 0.2, .seed = 42};
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  finch_teacher_opts o = {.dataset = "sample", .members = "bert", .seed = 7, .augmented = 1, .device = "cpu",
                          .quiet = 1};
  finch_teacher_result r;
  finch_status st = finch_teacher_train(db, &o, &r, &err);
  if (st) fprintf(stderr, "teacher (all-minilm-l6-v2): %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  printf("sample, all-MiniLM-L6-v2 frozen: selection %.3f, report %.3f on %lld + %lld rows\n", r.members[0].sel_acc,
         r.members[0].dev_acc, r.n_sel, r.n_report);
  CHECK(r.members[0].dev_acc > 0.7); /* 12 intents, 1.000 when written */
  finch_db_close(db);
  TEST_DONE();
}
