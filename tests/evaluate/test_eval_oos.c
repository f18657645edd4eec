/* finch eval with out-of-scope rows and abstention policies, against a real
 * database: the bundled BANKING77 sample plus rows labelled "oos", a tiny bow
 * model with a threshold policy and another with an explicit out-of-scope
 * class. The out-of-scope figures must equal those computed here from the
 * same decisions (nn_abstain_decide); a model without a policy on rows
 * without an out-of-scope label keeps the metrics and report of before; a
 * malformed policy and an --oos-label the rows lack fail with errors that
 * name them. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dataset.h"
#include "evaluate/evaluate.h"
#include "ingest/ingest.h"
#include "nn/abstain.h"
#include "nn/model.h"
#include "tests/dbtest.h"
#include "tests/test.h"

static const char *const oos_texts[] = {
    "what is the weather like tomorrow", "hello",
    "tell me a joke",                    "who won the football last night",
    "play some jazz music",              "how tall is the eiffel tower",
    "set an alarm for seven",            "what is the capital of peru",
    "translate good morning to french",  "how do i bake sourdough bread",
    "good evening how are you",          "recommend a film for tonight",
    "what time is it in tokyo",          "how many calories in an apple",
    "book a table for two",              "is it going to rain",
    "thanks bye",                        "what is your favourite colour",
    "how far is the moon",               "spell necessary",
};

static char *slurp(const char *path) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, fp) != (size_t)n) n = 0;
  if (s) s[n] = '\0';
  fclose(fp);
  return s;
}

/* A bow model on the dataset's train rows; with_oos keeps the "oos" rows
 * (an explicit class), else they are left out. Saved to path. */
static nn_model *train(finch_db *db, int with_oos) {
  finch_dataset_split *s = NULL;
  finch_dataset_query q = {.dataset = "oosd", .split = "train"};
  finch_err err;
  CHECK(finch_dataset_split_load(db, &q, &s, &err) == FINCH_OK);
  if (!s) exit(1);
  const char **texts = malloc(s->n * sizeof *texts), *names[64];
  int32_t *y = malloc(s->n * sizeof *y), map[64];
  size_t n = 0, C = 0;
  for (size_t l = 0; l < s->n_labels && l < 64; l++) {
    map[l] = -1;
    if (with_oos || strcmp(s->label_names[l], "oos") != 0) {
      map[l] = (int32_t)C;
      names[C++] = s->label_names[l];
    }
  }
  for (size_t i = 0; i < s->n; i++)
    if (s->labels[i] >= 0 && map[s->labels[i]] >= 0) {
      texts[n] = s->texts[i];
      y[n++] = map[s->labels[i]];
    }
  nn_dataset ds = {.texts = texts, .labels = y, .n = n};
  nn_train_config cfg = nn_train_config_student();
  cfg.epochs = 8;
  cfg.buckets = 4096;
  cfg.min_count = 1;
  cfg.seed = 11;
  nn_model *m = NULL;
  CHECK(nn_model_train(&m, &ds, names, C, &cfg, NULL, NULL, NULL, NULL, &err) == FINCH_OK);
  free(texts);
  free(y);
  finch_dataset_split_free(s);
  if (!m) exit(1);
  return m;
}

static void save(const nn_model *m, const char *path) {
  finch_err err;
  char sha[65];
  if (nn_model_save(m, path, NN_DTYPE_F32, sha, &err) != FINCH_OK) {
    fprintf(stderr, "%s: %s\n", path, err.msg);
    exit(1);
  }
}

static double jnum(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Evaluates the model file on the dev split and checks every out-of-scope
 * figure against the decisions recomputed here, the out-of-scope rows being
 * those labelled "oos". */
static void check_against_hand(finch_db *db, const char *path) {
  finch_err err;
  finch_eval_opts o = {.model = path, .dataset = "oosd", .split = "dev"};
  finch_eval_result r;
  CHECK_INT_EQ(finch_eval_run(db, &o, &r, &err), FINCH_OK);
  CHECK_INT_EQ(r.has_oos, 1);
  /* The two halves split the out-of-scope rows too, and add up. */
  {
    finch_eval_opts oh = o;
    finch_eval_result hs, hr;
    oh.half = "selection";
    CHECK_INT_EQ(finch_eval_run(db, &oh, &hs, &err), FINCH_OK);
    oh.half = "report";
    CHECK_INT_EQ(finch_eval_run(db, &oh, &hr, &err), FINCH_OK);
    CHECK(hs.has_oos && hr.has_oos);
    CHECK(hs.oos.n_oos > 0 && hr.oos.n_oos > 0);
    CHECK_INT_EQ(hs.oos.n_oos + hr.oos.n_oos, r.oos.n_oos);
    CHECK_INT_EQ(hs.n + hr.n, r.n);
    finch_eval_result_free(&hs);
    finch_eval_result_free(&hr);
  }

  finch_eval_rows rows;
  CHECK_INT_EQ(finch_eval_rows_load(db, &o, &rows, &err), FINCH_OK);
  nn_model *m = NULL;
  CHECK_INT_EQ(nn_model_load(&m, path, &err), FINCH_OK);
  nn_abstain pol;
  CHECK_INT_EQ(nn_abstain_read(m, &pol, &err), FINCH_OK);
  size_t C = nn_model_n_labels(m), n = rows.n;
  float *probs = malloc(C * sizeof *probs), *score = malloc(n * sizeof *score);
  unsigned char *oos = malloc(n);
  long long n_in = 0, n_oos = 0, in_right = 0, in_answered = 0, oos_refused = 0, in_refused = 0, right = 0;
  for (size_t i = 0; i < n; i++) {
    nn_model_predict(m, rows.texts[i], probs, 1.0f);
    int d = nn_abstain_decide(&pol, probs, C, &score[i]);
    int g = nn_model_label_index(m, rows.labels[i]);
    oos[i] = !strcmp(rows.labels[i], "oos");
    if (oos[i]) {
      n_oos++;
      oos_refused += d < 0;
      right += d < 0 || d == g; /* a refusal of an out-of-scope row is right */
    } else {
      n_in++;
      in_refused += d < 0;
      in_answered += d >= 0;
      in_right += d >= 0 && d == g;
      right += d >= 0 && d == g;
    }
  }
  /* AUROC by every pair; FPR at the 95% in-scope threshold by counting. */
  double wins = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++)
      if (!oos[i] && oos[j]) wins += score[i] > score[j] ? 1 : score[i] == score[j] ? 0.5 : 0;
  float t95 = 0;
  for (size_t i = 0; i < n; i++) { /* the highest in-scope score with >= 95% of in-scope rows at or above it */
    long long kept = 0;
    for (size_t j = 0; j < n; j++) kept += !oos[j] && score[j] >= score[i];
    if (!oos[i] && kept >= (long long)ceil(0.95 * (double)n_in - 1e-9) && score[i] > t95) t95 = score[i];
  }
  long long above = 0;
  for (size_t j = 0; j < n; j++) above += oos[j] && score[j] >= t95;

  CHECK(n_oos > 0 && n_in > 0);
  CHECK_INT_EQ(r.oos.n_in, n_in);
  CHECK_INT_EQ(r.oos.n_oos, n_oos);
  CHECK_INT_EQ(r.oos.in_correct, in_right);
  CHECK_INT_EQ(r.oos.oos_refused, oos_refused);
  CHECK_INT_EQ(r.oos.in_refused, in_refused);
  CHECK_NEAR(r.accuracy, (double)right / (double)n, 1e-12);
  CHECK_NEAR(r.oos.in_accuracy, (double)in_right / (double)n_in, 1e-12);
  CHECK_NEAR(r.oos.in_coverage, (double)in_answered / (double)n_in, 1e-12);
  CHECK_NEAR(r.oos.oos_recall, (double)oos_refused / (double)n_oos, 1e-12);
  if (oos_refused + in_refused)
    CHECK_NEAR(r.oos.oos_precision, (double)oos_refused / (double)(oos_refused + in_refused), 1e-12);
  CHECK_NEAR(r.oos.auroc, wins / ((double)n_in * (double)n_oos), 1e-12);
  CHECK(r.oos.threshold_at_95 == t95);
  CHECK_NEAR(r.oos.fpr_at_95, (double)above / (double)n_oos, 1e-12);

  /* The same figures in the JSON, in eval_reports, and in the report. */
  json_t *j = json_loads(r.json, 0, NULL), *s = json_object_get(j, "out_of_scope");
  CHECK(s != NULL);
  CHECK_STR_EQ(json_string_value(json_object_get(s, "label")), "oos");
  CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(s, "policy"), "method")),
               nn_abstain_method_name(pol.methods));
  CHECK_NEAR(jnum(s, "in_scope_accuracy"), r.oos.in_accuracy, 1e-12);
  CHECK_NEAR(jnum(s, "oos_recall"), r.oos.oos_recall, 1e-12);
  CHECK_NEAR(jnum(s, "auroc"), r.oos.auroc, 1e-12);
  CHECK_NEAR(jnum(s, "fpr_at_95_in_scope_recall"), r.oos.fpr_at_95, 1e-12);
  const json_t *curve = json_object_get(s, "curve");
  CHECK_INT_EQ(json_array_size(curve), 20);
  for (size_t k = 1; k < json_array_size(curve); k++)
    CHECK(jnum(json_array_get(curve, k), "coverage") <= jnum(json_array_get(curve, k - 1), "coverage"));
  json_decref(j);
  CHECK_INT_EQ(test_sqlf(db, "SELECT round(1e6 * (metrics->'out_of_scope'->>'oos_recall')::float8) FROM eval_reports"
                             " WHERE id = %lld", r.report_id),
               llround(1e6 * r.oos.oos_recall));
  char *md = slurp(r.report_path);
  CHECK_CONTAINS(md, "## Out of scope");
  CHECK_CONTAINS(md, "counts a refusal as wrong on an in-scope row");
  CHECK_CONTAINS(md, "### Accuracy and coverage over thresholds");
  free(md);

  free(probs), free(score), free(oos);
  nn_model_free(m);
  finch_eval_rows_free(&rows);
  finch_eval_result_free(&r);
}

int main(void) {
  finch_db *db = test_db_open();
  finch_err err;
  const char *tmp = test_tmpdir();
  char sample[1024], csv[1024], plain[1024], path[1024];
  snprintf(sample, sizeof sample, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
  snprintf(csv, sizeof csv, "%s/test_eval_oos.csv", tmp);
  snprintf(plain, sizeof plain, "%s/test_eval_oos_model.bin", tmp);
  snprintf(path, sizeof path, "%s/test_eval_oos_policy.bin", tmp);
  char *base = slurp(sample);
  if (!base) TEST_SKIP("%s is missing", sample);
  FILE *fp = fopen(csv, "wb");
  if (!fp) return 1;
  fputs(base, fp);
  for (size_t i = 0; i < sizeof oos_texts / sizeof *oos_texts; i++) fprintf(fp, "%s,oos\n", oos_texts[i]);
  fclose(fp);
  finch_ingest_opts io = {.source = csv, .format = "banking77", .dataset = "oosd", .holdout = 0.3, .seed = 5};
  finch_ingest_result ir;
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  CHECK(test_scalar(db, "SELECT count(*) FROM utterances WHERE split = 'dev' AND label = 'oos'") > 0);

  /* No policy, rows without an out-of-scope label: no section, no summary. */
  nn_model *m = train(db, 0);
  save(m, plain);
  finch_eval_opts o = {.model = plain, .format = "banking77", .input = sample};
  finch_eval_result r;
  CHECK_INT_EQ(finch_eval_run(db, &o, &r, &err), FINCH_OK);
  CHECK_INT_EQ(r.has_oos, 0);
  CHECK(r.json && !strstr(r.json, "out_of_scope"));
  char *md = slurp(r.report_path);
  CHECK(md && !strstr(md, "Out of scope") && !strstr(md, "refusal"));
  free(md);
  finch_eval_result_free(&r);

  /* No policy, rows with "oos": the section, and the plain accuracy of before. */
  check_against_hand(db, plain);
  /* --oos-label: any label of the rows, and an error naming one they lack. */
  o = (finch_eval_opts){.model = plain, .dataset = "oosd", .split = "dev", .oos_label = "card_arrival"};
  CHECK_INT_EQ(finch_eval_run(db, &o, &r, &err), FINCH_OK);
  /* Named, it replaces the default: the "oos" rows are in scope now. */
  CHECK_INT_EQ(r.oos.n_oos, test_scalar(db, "SELECT count(*) FROM utterances WHERE split = 'dev' AND label = 'card_arrival'"));
  CHECK_CONTAINS(r.json, "\"label\": \"card_arrival\"");
  finch_eval_result_free(&r);
  o.oos_label = "no_such_label";
  CHECK_INT_EQ(finch_eval_run(db, &o, &r, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "--oos-label 'no_such_label'");
  finch_eval_result_free(&r);

  /* A threshold policy at the median dev score, temperature 1.5. */
  nn_abstain pol = {.methods = NN_ABSTAIN_THRESHOLD, .threshold = 0, .temperature = 1.5f, .oos_index = -1};
  {
    finch_eval_rows rows;
    o = (finch_eval_opts){.model = plain, .dataset = "oosd", .split = "dev"};
    CHECK_INT_EQ(finch_eval_rows_load(db, &o, &rows, &err), FINCH_OK);
    size_t C = nn_model_n_labels(m);
    float *p = malloc(C * sizeof *p), *sc = malloc(rows.n * sizeof *sc);
    for (size_t i = 0; i < rows.n; i++) {
      nn_model_predict(m, rows.texts[i], p, 1.0f);
      nn_abstain_decide(&pol, p, C, &sc[i]);
    }
    for (size_t i = 0; i < rows.n; i++) { /* the median by counting */
      size_t below = 0;
      for (size_t j = 0; j < rows.n; j++) below += sc[j] < sc[i];
      if (below == rows.n / 2) pol.threshold = sc[i];
    }
    CHECK(pol.threshold > 0);
    free(p), free(sc);
    finch_eval_rows_free(&rows);
  }
  CHECK_INT_EQ(nn_abstain_write(m, &pol, "dev median", "test", &err), FINCH_OK);
  save(m, path);
  check_against_hand(db, path);
  /* With a policy, even rows without an out-of-scope label get the section. */
  o = (finch_eval_opts){.model = path, .format = "banking77", .input = sample};
  CHECK_INT_EQ(finch_eval_run(db, &o, &r, &err), FINCH_OK);
  CHECK_INT_EQ(r.has_oos, 1);
  CHECK_INT_EQ(r.oos.n_oos, 0);
  CHECK(r.oos.in_refused > 0);
  CHECK(isnan(r.oos.auroc));
  CHECK_CONTAINS(r.json, "\"auroc\": null");
  finch_eval_result_free(&r);

  /* A malformed policy fails the evaluation, naming the field. */
  CHECK_INT_EQ(nn_model_set_meta(m, "{\"abstain\": {\"method\": \"threshold\", \"threshold\": 2}}", &err), FINCH_OK);
  save(m, path);
  o = (finch_eval_opts){.model = path, .dataset = "oosd", .split = "dev"};
  CHECK_INT_EQ(finch_eval_run(db, &o, &r, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "abstain.threshold");
  CHECK_CONTAINS(err.msg, path);
  finch_eval_result_free(&r);
  nn_model_free(m);

  /* An explicit out-of-scope class: its label is the out-of-scope label. */
  m = train(db, 1);
  pol = (nn_abstain){.methods = NN_ABSTAIN_CLASS, .temperature = 1, .oos_index = nn_model_label_index(m, "oos")};
  CHECK(pol.oos_index >= 0);
  CHECK_INT_EQ(nn_abstain_write(m, &pol, NULL, NULL, &err), FINCH_OK);
  save(m, path);
  check_against_hand(db, path);
  nn_model_free(m);

  free(base);
  finch_db_close(db);
  TEST_DONE();
}
