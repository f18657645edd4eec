/* finch demo: every stage in order, on BANKING77 when the public data is
 * present, else on the project's bundled sample. */
#include <curl/curl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "augment/augment.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/paths.h"
#include "distill/distill.h"
#include "evaluate/evaluate.h"
#include "distill/teacher.h"
#include "ingest/ingest.h"
#include "nn/abstain.h"
#include "nn/halves.h"
#include "nn/model.h"
#include "serve/serve.h"

/* CLINC150's domains and intents that a bank's own intents share: never
 * negatives (BANKING77 has exchange rates, travel and salary questions). */
#define FINCH_DEMO_FINANCE_DOMAINS "banking,credit_cards,exchange_rate,travel_notification,direct_deposit,payday"

#ifndef FINCH_SOURCE_DIR
#define FINCH_SOURCE_DIR "."
#endif

typedef struct {
  char buf[4096];
  size_t len;
} body;

static size_t on_body(char *p, size_t size, size_t n, void *ctx) {
  body *b = ctx;
  size_t k = size * n, room = sizeof b->buf - 1 - b->len;
  memcpy(b->buf + b->len, p, k < room ? k : room);
  b->len += k < room ? k : room;
  b->buf[b->len] = '\0';
  return k;
}

/* POSTs {"text": text} to the server and prints the answer. */
static int ask(unsigned port, const char *text, char *intent, size_t n) {
  CURL *c = curl_easy_init();
  if (!c) return -1;
  json_t *req = json_pack("{s:s}", "text", text);
  char *payload = json_dumps(req, JSON_COMPACT);
  json_decref(req);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/intent", port);
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  body b = {.len = 0};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  free(payload);
  if (rc != CURLE_OK) {
    fprintf(stderr, "finch demo: request failed: %s\n", curl_easy_strerror(rc));
    return -1;
  }
  printf("  POST /v1/intent {\"text\": \"%s\"}\n  -> %ld %s\n", text, status, b.buf);
  json_t *ans = json_loads(b.buf, 0, NULL);
  const char *got = json_string_value(json_object_get(ans, "intent"));
  snprintf(intent, n, "%s", got ? got : "");
  json_decref(ans);
  return status == 200 ? 0 : -1;
}

/* The share of the held-out negatives (CLINC150's dev rows outside the
 * finance domains, the report half: the compile chose on the other) that
 * the compiled model at path refuses. */
static finch_status held_out_refusals(finch_db *db, const char *path, unsigned long long seed, long long *n,
                                      double *share, finch_err *err) {
  finch_negatives_query q = {.names = "clinc150", .split = "dev", .negatives_exclude = FINCH_DEMO_FINANCE_DOMAINS,
                             .seed = seed};
  finch_dataset_split *rows = NULL;
  nn_model *m = NULL;
  nn_abstain pol;
  finch_status st = finch_dataset_negatives_load(db, &q, &rows, err);
  if (!st) st = nn_model_load(&m, path, err);
  if (!st) st = nn_abstain_read(m, &pol, err);
  uint8_t *half = rows ? calloc(rows->n + 1, 1) : NULL;
  int32_t *zero = rows ? calloc(rows->n + 1, sizeof *zero) : NULL;
  float *p = m ? malloc(nn_model_n_labels(m) * sizeof *p) : NULL;
  if (!st && (!half || !zero || !p)) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  long long k = 0, refused = 0;
  if (!st) {
    nn_split_halves(zero, rows->n, 1, seed, half); /* as finch compile --abstain halves them */
    for (size_t i = 0; i < rows->n; i++) {
      if (!half[i]) continue;
      k++;
      nn_model_predict(m, rows->texts[i], p, 1.0f);
      refused += nn_abstain_decide(&pol, p, nn_model_n_labels(m), NULL) < 0;
    }
  }
  *n = k;
  *share = k ? (double)refused / (double)k : 0;
  free(half);
  free(zero);
  free(p);
  nn_model_free(m);
  finch_dataset_split_free(rows);
  return st;
}

typedef struct {
  const char *input, *dataset, *members;
  int sample, json, student_epochs, no_negatives;
  unsigned long long seed;
} demo_args;

#define F(m) FINCH_OPT_FIELD(demo_args, m)
static const finch_opt demo_opts[] = {
    {"input", 'i', FINCH_OPT_STRING, F(input), .arg = "FILE",
     .help = "banking77-format CSV to use (default: BANKING77 from the data directory, else "
             "data/sample/banking_sample.csv)"},
    {"sample", 0, FINCH_OPT_BOOL, F(sample), .help = "use the bundled sample even when BANKING77 is present"},
    {"dataset", 'd', FINCH_OPT_STRING, F(dataset), .arg = "NAME",
     .help = "dataset name (default banking77, or sample for the bundled sample)"},
    {"seed", 0, FINCH_OPT_INT, F(seed), .setting = "seed", .arg = "N",
     .help = "seed for the holdout, augmentation and training"},
    {"teacher-members", 0, FINCH_OPT_LIST, F(members), .arg = "LIST",
     .help = "teacher ensemble members: slr, bow, tfm (tfm trains an encoder, minutes on a CPU), bert (the "
             "pretrained encoder, frozen); default bert,slr,bow when scripts/fetch-pretrained.sh installed it, else "
             "slr,bow"},
    {"student-epochs", 0, FINCH_OPT_INT, F(student_epochs), .arg = "N", .help = "student epochs (default: model default)"},
    {"no-negatives", 0, FINCH_OPT_BOOL, F(no_negatives),
     .help = "no out-of-scope class: do not train on CLINC150 and SGD rows as negatives, even when present"},
    {"json", 0, FINCH_OPT_BOOL, F(json), .help = "print a JSON summary as the last line"},
};
#undef F

static int demo_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_demo = {
    "demo", "run every stage on BANKING77 (or the bundled sample)", "[options]",
    "Run every stage in order on the embedded database: ingest (10% stratified holdout),\n"
    "augment, distill (teacher, then student), compile (int8), eval of teacher and student on\n"
    "the holdout (Markdown reports), and serve, answering one request over HTTP.",
    NULL, demo_opts, CLI_N(demo_opts), sizeof(demo_args), NULL, 0, demo_run, 0};

static int demo_run(void *opts, const char **pos, size_t npos) {
  demo_args a = *(demo_args *)opts;
  unsigned long long seed = a.seed;
  int se = a.student_epochs;

  double t_start = finch_clock_s();
  char input[PATH_MAX], data[PATH_MAX];
  const char *dataset = "banking77";
  finch_data_dir(data, sizeof data);
  if (a.input) {
    snprintf(input, sizeof input, "%s", a.input);
  } else {
    snprintf(input, sizeof input, "%s/banking77/train.csv", data);
    if (a.sample || !finch_file_exists(input)) {
      if (!a.sample)
        printf("BANKING77 not found at %s; using the bundled sample\n", input);
      snprintf(input, sizeof input, "%s/data/sample/banking_sample.csv", FINCH_SOURCE_DIR);
      dataset = "sample";
    }
  }
  if (a.dataset) dataset = a.dataset;

  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_err err;
  int code = 1;
  finch_server *srv = NULL;
  finch_rules *rules = NULL; /* the legacy pack, the reports' baseline */
  finch_eval_result ev_t = {0}, ev_s = {0};

  printf("[1/6] ingest %s -> dataset %s\n", input, dataset);
  finch_ingest_result ir;
  finch_ingest_opts io = {.source = input, .format = "banking77", .dataset = dataset,
                          .holdout = finch_config_float("holdout"), .seed = seed};
  if (finch_ingest_run(db, &io, &ir, &err)) goto fail;
  printf("  %lld rows read, %lld inserted (%lld dev), %lld already present, %lld rejected\n", ir.read, ir.inserted,
         ir.dev, ir.duplicate, ir.rejected);
  /* Out of scope: CLINC150 (its other domains and oos rows) and the SGD
   * general turns, when present, are the negatives of an abstaining model. */
  char clinc[PATH_MAX + 64], clinc_domains[PATH_MAX + 64], sgd[PATH_MAX + 64];
  snprintf(clinc, sizeof clinc, "%s/clinc150/train_val.json", data);
  snprintf(clinc_domains, sizeof clinc_domains, "%s/clinc150/domains.json", data);
  snprintf(sgd, sizeof sgd, "%s/sgd_general/turns.jsonl.gz", data);
  const int negatives = !a.no_negatives && strcmp(dataset, "sample") && finch_file_exists(clinc) &&
                        finch_file_exists(sgd);
  finch_negatives_query neg = {0};
  if (negatives) {
    finch_ingest_opts nio = {.source = clinc, .format = "clinc150", .dataset = "clinc150",
                             .domains_path = clinc_domains, .seed = seed};
    if (finch_ingest_run(db, &nio, &ir, &err)) goto fail;
    nio = (finch_ingest_opts){.source = sgd, .format = "jsonl", .dataset = "sgd_general", .seed = seed};
    if (finch_ingest_run(db, &nio, &ir, &err)) goto fail;
    neg = (finch_negatives_query){.names = "clinc150,sgd_general", .negatives_exclude = FINCH_DEMO_FINANCE_DOMAINS,
                                  .max = 1500, .seed = seed};
    printf("  negatives for the out-of-scope class: CLINC150 and the SGD general turns (CLINC150's %s "
           "left out)\n", FINCH_DEMO_FINANCE_DOMAINS);
  }

  printf("[2/6] augment (EDA, WordNet synonyms, finance entities, typing noise, intent templates:"
         " 2 variants per training row)\n");
  finch_augment_result ar;
  finch_augment_opts ao = {.dataset = dataset, .seed = seed};
  if (finch_augment_run(db, &ao, &ar, &err)) goto fail;
  printf("  %lld parents, %lld variants, %lld new rows\n", ar.parents, ar.generated, ar.inserted);

  const char *members = a.members ? a.members : finch_teacher_pretrained_installed() ? "bert,slr,bow" : "slr,bow";
  printf("[3/6] teacher (ensemble of %s, chosen on half the holdout), then the student distilled on soft + hard\n"
         "      labels weighted by input complexity\n", members);
  finch_teacher_result tr;
  finch_teacher_opts topt = {.dataset = dataset, .members = members, .seed = seed, .augmented = 1, .ngrams = 1,
                             .device = finch_config_get("device"), .quiet = 1, .negatives = neg};
  if (finch_teacher_train(db, &topt, &tr, &err)) goto fail;
  for (size_t i = 0; i < tr.n_members; i++)
    printf("  member %-5s holdout accuracy %.4f (report half), %lld parameters, %.1f s\n", tr.members[i].name,
           tr.members[i].dev_acc, tr.members[i].params, tr.members[i].seconds);
  printf("  teacher %s: holdout accuracy %.4f on the report half (%.4f on the selection half)\n", tr.chosen,
         tr.dev_acc, tr.sel_acc);
  char teacher_ref[32];
  snprintf(teacher_ref, sizeof teacher_ref, "%lld", tr.model_id);
  finch_distill_result dr;
  finch_distill_opts dopt = {.dataset = dataset, .seed = seed, .alpha = 0.0f,
                             .temperature = 2.0f, .teacher = teacher_ref,
                             .student_epochs = se, .device = finch_config_get("device"), .quiet = 1,
                             .negatives = neg};
  if (finch_distill_run(db, &dopt, &dr, &err)) goto fail;
  printf("  teacher: %s, %lld parameters, trained in %.1f s\n  student: %lld parameters, trained in %.1f s\n",
         tr.chosen, dr.teacher_params, tr.seconds, dr.student_params, dr.student_seconds);

  printf("[4/6] compile the student (int8 weights)\n");
  char models[PATH_MAX], out[PATH_MAX + 64], sid[32];
  if (finch_home_subdir("models", models, sizeof models, &err)) goto fail;
  snprintf(out, sizeof out, "%s/%s-student-q8.fnm", models, dataset);
  snprintf(sid, sizeof sid, "%lld", dr.student_id);
  finch_compile_result cr;
  finch_compile_opts co = {.model = sid, .out = out, .dtype = "q8"};
  if (negatives)
    co.abstain = (finch_abstain_opts){.method = "both", .dataset = dataset, .negatives = "clinc150",
                                      .negatives_exclude = FINCH_DEMO_FINANCE_DOMAINS, .seed = seed};
  if (finch_compile_run(db, &co, &cr, &err)) goto fail;
  printf("  %s (%lld bytes), model %lld\n", out, cr.bytes, cr.model_id);
  if (cr.abstain)
    printf("  out of scope: the oos class, and a threshold of %.3f on the in-scope probability (temperature %.2f),\n"
           "  chosen on the selection half: answers %.4f of its banking rows, refuses %.4f of %lld CLINC150 dev rows\n",
           (double)cr.abstain_fit.threshold, (double)cr.abstain_fit.temperature, cr.abstain_fit.sel_in_scope_recall,
           cr.abstain_fit.sel_oos_recall, cr.abstain_fit.n_out);

  printf("[5/6] eval on the holdout (split dev)\n");
  char tid[32], cid[32];
  snprintf(tid, sizeof tid, "%lld", dr.teacher_id);
  snprintf(cid, sizeof cid, "%lld", cr.model_id);
  char cmdline_t[256], cmdline_s[256];
  snprintf(cmdline_t, sizeof cmdline_t, "finch eval --model %s --dataset %s --split dev", tid, dataset);
  snprintf(cmdline_s, sizeof cmdline_s, "finch eval --model %s --dataset %s --split dev", cid, dataset);
  finch_eval_opts eo = {.model = tid, .dataset = dataset, .split = "dev", .command_line = cmdline_t};
  /* The reports measure the legacy rules on the same rows, as finch eval
   * does by default. */
  char rules_sha[FINCH_SHA256_HEX_LEN];
  finch_eval_baseline base;
  if (finch_file_exists(CLI_DEFAULT_RULES)) {
    if (cli_eval_baseline(CLI_DEFAULT_RULES, &rules, rules_sha, &base, &err)) goto fail;
    eo.baseline = &base;
  }
  if (finch_eval_run(db, &eo, &ev_t, &err)) goto fail;
  eo.model = cid;
  eo.command_line = cmdline_s;
  if (finch_eval_run(db, &eo, &ev_s, &err)) goto fail;
  long long majority = 0;
  {
    /* The most frequent holdout label's rows. */
    finch_dataset_query q = {.dataset = dataset, .split = "dev", .unlabelled = 1};
    PGresult *r = finch_dataset_counts(db, &q, 0, &err);
    if (!r) goto fail;
    for (int i = 0; i < PQntuples(r); i++)
      if (atoll(PQgetvalue(r, i, 1)) > majority) majority = atoll(PQgetvalue(r, i, 1));
    PQclear(r);
  }
  printf("  teacher accuracy %.4f (macro-F1 %.4f) on %lld holdout rows; report %s\n", ev_t.accuracy,
         ev_t.macro_f1, ev_t.n, ev_t.report_path);
  printf("  student accuracy %.4f (macro-F1 %.4f), int8, %lld bytes; report %s\n", ev_s.accuracy, ev_s.macro_f1,
         cr.bytes, ev_s.report_path);
  printf("  majority-class baseline %.4f\n", ev_s.n ? (double)majority / (double)ev_s.n : 0.0);
  long long n_refusal = 0;
  double refusal = 0;
  if (cr.abstain) {
    if (held_out_refusals(db, out, seed, &n_refusal, &refusal, &err)) goto fail;
    printf("  student answers %.4f of the banking holdout and refuses %.4f of %lld held-out out-of-domain rows\n"
           "  (CLINC150 dev outside its finance domains and its oos rows, the half the threshold was not chosen on)\n",
           ev_s.has_oos ? ev_s.oos.in_coverage : 1.0, refusal, n_refusal);
  }

  printf("[6/6] serve the student on loopback\n");
  finch_serve_opts so = {.model_path = out, .host = "127.0.0.1", .port = 0, .max_body = 65536, .threads = 2,
                         .access_log = "off"};
  if (finch_server_start(&srv, &so, &err)) goto fail;
  char intent[128];
  if (ask(finch_server_port(srv), "my card still hasn't arrived", intent, sizeof intent) != 0) {
    fprintf(stderr, "finch demo: the server did not answer\n");
    goto done;
  }
  if (cr.abstain) {
    char other[128];
    if (ask(finch_server_port(srv), "what is the weather like tomorrow", other, sizeof other) != 0 ||
        ask(finch_server_port(srv), "hello", other, sizeof other) != 0) {
      fprintf(stderr, "finch demo: the server did not answer\n");
      goto done;
    }
  }
  double wall = finch_clock_s() - t_start;
  printf("\nteacher holdout accuracy %.4f, student holdout accuracy %.4f\n", ev_t.accuracy, ev_s.accuracy);
  printf("student model file: %s (see finch models list)\nreport: %s\nreport page: %s\ndemo wall time: %.1f s\n",
         out, ev_s.report_path, ev_s.html_path, wall);
  if (a.json) {
    json_t *j = json_pack("{s:s, s:I, s:I, s:f, s:f, s:f, s:s, s:s, s:s, s:s, s:f}", "dataset", dataset, "n_train",
                          (json_int_t)dr.n_train, "n_dev", (json_int_t)ev_s.n, "teacher_accuracy", ev_t.accuracy,
                          "student_accuracy", ev_s.accuracy, "majority_accuracy",
                          ev_s.n ? (double)majority / (double)ev_s.n : 0.0, "student_model", out, "report",
                          ev_s.report_path, "report_html", ev_s.html_path, "served_intent", intent, "wall_seconds", wall);
    if (cr.abstain) {
      json_object_set_new(j, "in_scope_coverage", json_real(ev_s.has_oos ? ev_s.oos.in_coverage : 1.0));
      json_object_set_new(j, "out_of_domain_refused", json_real(refusal));
      json_object_set_new(j, "out_of_domain_rows", json_integer(n_refusal));
    }
    cli_print_json(j);
  }
  code = 0;
  goto done;
fail:
  cli_fail(&err);
done:
  if (srv) finch_server_stop(srv);
  finch_eval_result_free(&ev_t);
  finch_eval_result_free(&ev_s);
  finch_rules_free(rules);
  finch_db_close(db);
  return code;
}
