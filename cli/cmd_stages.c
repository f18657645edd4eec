/* The CLI of the batch stages: ingest, augment, distill, compile, eval, models. */
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "augment/augment.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/models.h"
#include "distill/distill.h"
#include "evaluate/evaluate.h"
#include "ingest/ingest.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Parses; returns -1 to go on, else the exit code. */
static int parse(cli_cmd *cmd, int argc, char **argv, const char **pos, size_t maxpos, size_t *npos) {
  int rc = cli_parse(cmd, argc, argv, pos, maxpos, npos);
  return rc == 0 ? -1 : rc == 1 ? 0 : 2;
}

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) {
  (void)sig;
  g_stop = 1;
}

int finch_cmd_ingest(int argc, char **argv) {
  cli_opt opts[] = {
      {"format", 'f', "FMT", "input format: banking77, csv, clinc150, sgd, jsonl", NULL},
      {"dataset", 'd', "NAME", "dataset to load into (created on first use)", NULL},
      {"holdout", 0, "F", "when the source has no splits: share marked 'dev', seeded, stratified by label "
                          "(by dialogue for dialogues); default 0.1", NULL},
      {"seed", 0, "N", "seed of the holdout (default: setting seed, 42)", NULL},
      {"text-col", 0, "COL", "csv: the text column, by name or 0-based index", NULL},
      {"label-col", 0, "COL", "csv: the label column, by name or 0-based index", NULL},
      {"domains", 0, "PATH", "clinc150: domains.json, to record each intent's domain", NULL},
      {"labels", 0, "PATH", "fix the label set (JSON array or one label a line): other labels are rejected", NULL},
      {"pii-rules", 0, "PATH", "extra redaction rules, after the built-in core/pii_rules.conf", NULL},
      {"max-text", 0, "BYTES", "reject texts longer than this (default 16384)", NULL},
      {"batch", 0, "ROWS", "rows per COPY batch and transaction (default 5000)", NULL},
      {"jobs", 0, "N", "connections loading batches in parallel, committed in order (default 2)", NULL},
      {"resume", 0, "RUN_ID", "continue a run that was stopped or killed (same source)", NULL},
      {"json", 0, NULL, "print the run summary as JSON", NULL},
  };
  cli_cmd cmd = {"ingest", "--format FMT --dataset NAME [options] SOURCE   |   --resume RUN_ID [SOURCE]",
                 "Load utterances and dialogues into PostgreSQL: normalised (NFKC), personal data redacted,\n"
                 "deduplicated by content hash, split, bulk-loaded with COPY in batches that commit with the\n"
                 "run's progress. SOURCE is a path, - (standard input), file:// or http(s):// URL; gzip is\n"
                 "detected. Rows that cannot be used go to ingest_rejects with line, field and reason.",
                 "Ctrl-C stops at the next batch boundary; --resume RUN_ID continues. Re-running the same source\n"
                 "inserts nothing new.",
                 opts, N(opts)};
  const char *pos[1];
  size_t npos;
  int rc = parse(&cmd, argc, argv, pos, 1, &npos);
  if (rc >= 0) return rc;
  double holdout = finch_config_float("holdout");
  long long seed = finch_config_int("seed"), batch = 0, resume = 0, max_text = 0, jobs = 0;
  if (cli_get_double(&cmd, "holdout", &holdout) || cli_get_long(&cmd, "seed", &seed) ||
      cli_get_long(&cmd, "batch", &batch) || cli_get_long(&cmd, "jobs", &jobs) || cli_get_long(&cmd, "resume", &resume) ||
      cli_get_long(&cmd, "max-text", &max_text))
    return 2;
  if (cli_get(&cmd, "jobs") && (jobs < 1 || jobs > 16)) {
    fprintf(stderr, "finch ingest: --jobs %lld is outside [1, 16]\n", jobs);
    return 2;
  }
  if (!resume && (npos != 1 || !cli_get(&cmd, "format") || !cli_get(&cmd, "dataset"))) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  const char *rules[1] = {cli_get(&cmd, "pii-rules")};
  finch_ingest_opts o = {.source = npos ? pos[0] : NULL, .format = cli_get(&cmd, "format"),
                         .dataset = cli_get(&cmd, "dataset"), .holdout = holdout, .seed = (unsigned long long)seed,
                         .batch_rows = batch > 0 ? (size_t)batch : 0, .load_jobs = (int)jobs,
                         .max_text_bytes = max_text > 0 ? (size_t)max_text : 0,
                         .text_col = cli_get(&cmd, "text-col"), .label_col = cli_get(&cmd, "label-col"),
                         .domains_path = cli_get(&cmd, "domains"), .labels_path = cli_get(&cmd, "labels"),
                         .pii_rules = rules, .n_pii_rules = rules[0] ? 1 : 0, .resume_run_id = resume,
                         .progress = isatty(2), .stop = &g_stop};
  finch_db *db = cli_db_open();
  if (!db) return 1;
  struct sigaction sa = {.sa_handler = on_sigint};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  finch_ingest_result r;
  finch_err err;
  finch_status st = finch_ingest_run(db, &o, &r, &err);
  finch_db_close(db);
  if (st) return cli_fail(&err);
  if (cli_get(&cmd, "json")) {
    json_t *red = json_object();
    for (size_t i = 0; i < r.n_pii_types; i++) json_object_set_new(red, r.pii_types[i], json_integer((json_int_t)r.pii_counts[i]));
    json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:f, s:b}", "run_id", (json_int_t)r.run_id, "read",
                          (json_int_t)r.read, "inserted", (json_int_t)r.inserted, "duplicates",
                          (json_int_t)r.duplicate, "rejected", (json_int_t)r.rejected, "dev", (json_int_t)r.dev,
                          "redactions", red, "seconds", r.seconds, "stopped", r.stopped);
    cli_print_json(j);
  } else {
    uint64_t redacted = 0;
    for (size_t i = 0; i < r.n_pii_types; i++) redacted += r.pii_counts[i];
    printf("ingest run %lld: %lld rows read, %lld inserted (%lld dev), %lld already present, %lld rejected, "
           "%llu redactions, %.1f s%s\n", r.run_id, r.read, r.inserted, r.dev, r.duplicate, r.rejected,
           (unsigned long long)redacted, r.seconds,
           r.stopped ? " - stopped" : r.inserted == 0 && r.read > 0 ? " - nothing new to load" : "");
  }
  return r.stopped ? 130 : 0;
}

int finch_cmd_augment(int argc, char **argv) {
  cli_opt opts[] = {
      {"dataset", 'd', "NAME", "dataset whose training rows are the parents", NULL},
      {"target", 'n', "N", "augmented rows the dataset should hold, earlier runs included (default 2 per parent)", NULL},
      {"methods", 'm', "LIST", "comma-separated: eda, synonyms, entities, noise, templates (default all)", NULL},
      {"proportional", 0, NULL, "share the target by intent size (default: the same for every intent)", NULL},
      {"teacher", 0, "ID|FILE", "label guard: this teacher (default: the dataset's latest; 'none' for no guard)", NULL},
      {"guard-threshold", 0, "P", "drop a candidate the teacher gives another intent with probability >= P "
                                  "(default 0.5)", NULL},
      {"temperature", 0, "T", "temperature of the teacher probabilities stored for kept rows (default 2)", NULL},
      {"seed", 0, "N", "seed (default: setting seed, 42)", NULL},
      {"json", 0, NULL, "print the summary as JSON", NULL},
  };
  cli_cmd cmd = {"augment", "--dataset NAME [--target N] [--methods LIST] [options]",
                 "Add label-preserving variants of the training rows, each linked to its parent, method and\n"
                 "parameters. Dev and test rows are never parents. Deterministic for a seed.",
                 NULL, opts, N(opts)};
  const char *pos[1];
  size_t npos;
  int rc = parse(&cmd, argc, argv, pos, 0, &npos);
  if (rc >= 0) return rc;
  long long target = 0, seed = finch_config_int("seed");
  double guard = 0, tau = 0;
  if (cli_get_long(&cmd, "target", &target) || cli_get_long(&cmd, "seed", &seed) ||
      cli_get_double(&cmd, "guard-threshold", &guard) || cli_get_double(&cmd, "temperature", &tau))
    return 2;
  if (!cli_get(&cmd, "dataset")) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  finch_augment_opts o = {.dataset = cli_get(&cmd, "dataset"), .target = target, .seed = (unsigned long long)seed,
                          .methods = cli_get(&cmd, "methods"), .proportional = cli_get(&cmd, "proportional") != NULL,
                          .progress = isatty(2), .teacher = cli_get(&cmd, "teacher"), .guard_threshold = guard,
                          .temperature = tau};
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_augment_result r;
  finch_err err;
  finch_status st = finch_augment_run(db, &o, &r, &err);
  /* Rows per intent and method: what the dataset holds after the run. */
  PGresult *by_intent = NULL;
  if (!st) {
    finch_dataset_query q = {.dataset = o.dataset, .origin = FINCH_DATASET_AUGMENTED, .unlabelled = 1};
    by_intent = finch_dataset_counts(db, &q, 1, &err);
    if (!by_intent) st = FINCH_EDB;
  }
  finch_db_close(db);
  if (st) return cli_fail(&err);
  json_t *intents = json_object();
  long long lo = -1, hi = 0;
  for (int i = 0; i < PQntuples(by_intent); i++) {
    const char *label = PQgetvalue(by_intent, i, 0);
    json_t *row = json_object_get(intents, label);
    if (!row) json_object_set_new(intents, label, row = json_object());
    json_object_set_new(row, PQgetvalue(by_intent, i, 1), json_integer(atoll(PQgetvalue(by_intent, i, 2))));
  }
  PQclear(by_intent);
  const char *key;
  json_t *row;
  json_object_foreach(intents, key, row) {
    long long total = 0;
    const char *mk;
    json_t *mv;
    json_object_foreach(row, mk, mv) total += json_integer_value(mv);
    lo = lo < 0 || total < lo ? total : lo;
    hi = total > hi ? total : hi;
  }
  if (cli_get(&cmd, "json")) {
    json_t *by = json_object(), *drop = json_object();
    for (size_t m = 0; m < r.n_methods; m++) {
      json_object_set_new(by, r.method_names[m], json_integer((json_int_t)r.method_inserted[m]));
      json_object_set_new(drop, r.method_names[m], json_integer((json_int_t)r.method_dropped[m]));
    }
    json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:I, s:f}", "run_id", (json_int_t)r.run_id, "parents",
                          (json_int_t)r.parents, "generated", (json_int_t)r.generated, "inserted",
                          (json_int_t)r.inserted, "duplicates_skipped", (json_int_t)r.duplicates, "inserted_by_method", by, "dropped_by_guard", drop, "teacher_id",
                          (json_int_t)r.teacher_id, "seconds", r.seconds);
    json_object_set_new(j, "augmented_by_intent", intents);
    intents = NULL;
    cli_print_json(j);
  } else {
    printf("augment run %lld: %lld parents, %lld variants generated, %lld new rows stored in %.1f s (", r.run_id,
           r.parents, r.generated, r.inserted, r.seconds);
    for (size_t m = 0; m < r.n_methods; m++)
      printf("%s%s %lld", m ? ", " : "", r.method_names[m], r.method_inserted[m]);
    printf(")\n");
    printf("the dataset holds %lld to %lld augmented rows per intent (--json gives each intent by method)\n",
           lo < 0 ? 0 : lo, hi);
    if (r.teacher_id) {
      printf("label guard (teacher %lld) dropped:", r.teacher_id);
      for (size_t m = 0; m < r.n_methods; m++) printf(" %s %lld", r.method_names[m], r.method_dropped[m]);
      printf("\n");
    }
  }
  json_decref(intents);
  return 0;
}

int finch_cmd_distill(int argc, char **argv) {
  cli_opt opts[] = {
      {"dataset", 'd', "NAME", "dataset to train on (split train; split dev measures)", NULL},
      {"alpha", 0, "A", "a fixed weight of the teacher's soft labels (default: per example, 0.4 for simple inputs "
                        "rising to 0.7 for the most complex)", NULL},
      {"general", 0, "LIST", "general-domain datasets for the complexity score's domain term (default: "
                             "clinc150/wiki_sents.txt in the data directory)", NULL},
      {"temperature", 0, "T", "softmax temperature of the soft labels (default 2)", NULL},
      {"teacher", 0, "ID|FILE|latest", "distil this trained teacher (e.g. from finch teacher train) instead of "
                                       "training a bag-of-n-grams teacher here", NULL},
      {"teacher-epochs", 0, "N", "teacher training epochs (default: model default)", NULL},
      {"student", 0, "ARCH", "student architecture: bow (bag of n-grams, default) or tfm (a small encoder that "
                             "can match the teacher encoder's layers)", NULL},
      {"stage", 0, "STAGE", "tfm student: vertical (finance data, default), general (general-domain text) or both "
                            "(general, then vertical)", NULL},
      {"init", 0, "ID|FILE", "tfm student: start from this student (e.g. a general-stage one)", NULL},
      {"hard", 0, NULL, "no soft labels: train the student on the hard labels only", NULL},
      {"no-intermediate", 0, NULL, "tfm student: do not match the teacher encoder's hidden states and attention", NULL},
      {"no-progressive", 0, NULL, "tfm student: match every layer from the start (default: shallow layers first)",
       NULL},
      {"inter-weight", 0, "W", "weight of each intermediate-layer loss (default 0.4)", NULL},
      {"general-max", 0, "N", "general stage: at most N texts (default 50000)", NULL},
      {"general-epochs", 0, "N", "general stage epochs (default 2)", NULL},
      {"head-gates", 0, NULL, "tfm student: input-dependent attention-head gates with a sparsity penalty; the share "
                              "of heads open per complexity bin is reported", NULL},
      {"resume", 0, NULL, "tfm student: continue from the checkpoints of an interrupted run (same options)", NULL},
      {"gate-penalty", 0, "L", "weight of the gates' sparsity penalty lambda * mean(gate) (default 0.02)", NULL},
      {"student-epochs", 0, "N", "student training epochs (default: model default)", NULL},
      {"seed", 0, "N", "seed for initialisation, dropout and shuffling (default 42)", NULL},
      {"device", 0, "DEV", "cpu, cuda or auto (default: setting device, auto)", NULL},
      {"json", 0, NULL, "print the summary as JSON", NULL},
  };
  cli_cmd cmd = {"distill", "--dataset NAME [options]",
                 "Train a teacher, then a smaller student on the teacher's temperature-softened\n"
                 "probabilities and the hard labels; register both models with their dev accuracy.",
                 NULL, opts, N(opts)};
  const char *pos[1];
  size_t npos;
  int rc = parse(&cmd, argc, argv, pos, 0, &npos);
  if (rc >= 0) return rc;
  double alpha = 0, tau = 2.0, iw = 0, gp = 0;
  long long te = 0, se = 0, seed = finch_config_int("seed"), gmax = 0, gep = 0;
  if (cli_get_double(&cmd, "inter-weight", &iw) || cli_get_double(&cmd, "gate-penalty", &gp) ||
      cli_get_long(&cmd, "general-max", &gmax) ||
      cli_get_long(&cmd, "general-epochs", &gep))
    return 2;
  const char *student = cli_get(&cmd, "student");
  if (student && strcmp(student, "bow") && strcmp(student, "tfm")) {
    fprintf(stderr, "finch distill: --student must be bow or tfm\n");
    return 2;
  }
  if (iw < 0 || gp < 0 || gmax < 0 || gep < 0) {
    fprintf(stderr, "finch distill: --inter-weight, --general-max and --general-epochs must not be negative\n");
    return 2;
  }
  if (cli_get_double(&cmd, "alpha", &alpha) || cli_get_double(&cmd, "temperature", &tau) ||
      cli_get_long(&cmd, "teacher-epochs", &te) || cli_get_long(&cmd, "student-epochs", &se) ||
      cli_get_long(&cmd, "seed", &seed))
    return 2;
  if (!cli_get(&cmd, "dataset")) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  if (alpha < 0 || alpha > 1 || tau <= 0 || (cli_get(&cmd, "alpha") && alpha == 0)) {
    fprintf(stderr, "finch distill: --alpha must be in (0,1] and --temperature above 0\n");
    return 2;
  }
  finch_distill_opts o = {.dataset = cli_get(&cmd, "dataset"), .seed = (unsigned long long)seed,
                          .alpha = (float)alpha, .temperature = (float)tau, .teacher_epochs = (int)te,
                          .student_epochs = (int)se, .general = cli_get(&cmd, "general"),
                          .teacher = cli_get(&cmd, "teacher"), .student = student,
                          .stage = cli_get(&cmd, "stage"), .init_student = cli_get(&cmd, "init"),
                          .hard_only = cli_get(&cmd, "hard") != NULL,
                          .intermediate = cli_get(&cmd, "no-intermediate") == NULL,
                          .progressive = cli_get(&cmd, "no-progressive") == NULL, .inter_weight = (float)iw,
                          .general_max = (int)gmax, .general_epochs = (int)gep,
                          .head_gates = cli_get(&cmd, "head-gates") != NULL, .gate_penalty = (float)gp,
                          .resume = cli_get(&cmd, "resume") != NULL,
                          .device = cli_get(&cmd, "device") ? cli_get(&cmd, "device") : finch_config_get("device")};
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_distill_result r;
  finch_err err;
  finch_status st = finch_distill_run(db, &o, &r, &err);
  finch_db_close(db);
  if (st) return cli_fail(&err);
  if (cli_get(&cmd, "json")) {
    json_t *j = json_pack("{s:{s:I, s:s, s:I, s:f, s:f}, s:{s:I, s:s, s:I, s:f, s:f}, s:I, s:I}",
                          "teacher", "id", (json_int_t)r.teacher_id, "path", r.teacher_path, "params",
                          (json_int_t)r.teacher_params, "dev_accuracy", r.teacher_dev_acc, "train_seconds",
                          r.teacher_seconds, "student", "id", (json_int_t)r.student_id, "path", r.student_path,
                          "params", (json_int_t)r.student_params, "dev_accuracy", r.student_dev_acc,
                          "train_seconds", r.student_seconds, "n_train", (json_int_t)r.n_train, "n_dev",
                          (json_int_t)r.n_dev);
    json_object_set_new(json_object_get(j, "student"), "arch", json_string(r.student_arch));
    json_object_set_new(json_object_get(j, "student"), "stage", json_string(r.stage));
    if (r.gated) {
      json_t *g = json_array();
      for (int b = 0; b < 10; b++)
        json_array_append_new(g, r.gate_n[b] ? json_real(r.gate_share[b]) : json_null());
      json_object_set_new(j, "heads_open_by_complexity", g);
    }
    if (r.dynamic_alpha) {
      json_t *h = json_array();
      for (int b = 0; b < 10; b++) json_array_append_new(h, json_integer((json_int_t)r.complexity_hist[b]));
      json_object_set_new(j, "complexity_histogram", h);
      json_object_set_new(j, "mean_alpha", json_real(r.mean_alpha));
      json_object_set_new(j, "general_texts", json_integer((json_int_t)r.n_general));
    }
    cli_print_json(j);
  }
  else
    printf("teacher: model %lld, %lld parameters, dev accuracy %.4f\n"
           "student: model %lld, %lld parameters, dev accuracy %.4f\n",
           r.teacher_id, r.teacher_params, r.teacher_dev_acc, r.student_id, r.student_params, r.student_dev_acc);
  return 0;
}

int finch_cmd_compile(int argc, char **argv) {
  cli_opt opts[] = {
      {"model", 'm', "ID|FILE", "registered model id or model file", NULL},
      {"output", 'o', "FILE", "where to write the compiled model file", NULL},
      {"dtype", 0, "TYPE", "weight storage: q8 (int8, a scale per row; default) or f32", NULL},
  };
  cli_cmd cmd = {"compile", "--model ID -o FILE [--dtype q8|f32]",
                 "Write a model as a single deployable file (format: nn/modelfile.h) with its SHA-256,\n"
                 "and register it as stage 'compiled'.",
                 NULL, opts, N(opts)};
  const char *pos[1];
  size_t npos;
  int rc = parse(&cmd, argc, argv, pos, 0, &npos);
  if (rc >= 0) return rc;
  if (!cli_get(&cmd, "model") || !cli_get(&cmd, "output")) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  finch_compile_opts o = {cli_get(&cmd, "model"), cli_get(&cmd, "output"), cli_get(&cmd, "dtype")};
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_compile_result r;
  finch_err err;
  finch_status st = finch_compile_run(db, &o, &r, &err);
  finch_db_close(db);
  if (st) return cli_fail(&err);
  printf("compiled model %lld: %s (%lld bytes, sha256 %s)\n", r.model_id, o.out, r.bytes, r.sha256);
  return 0;
}

int finch_cmd_eval(int argc, char **argv) {
  cli_opt opts[] = {
      {"model", 'm', "ID|FILE", "registered model id or model file (teacher or student)", NULL},
      {"format", 'f', "FMT", "format of --input: banking77", NULL},
      {"input", 'i', "FILE", "labelled file to evaluate on", NULL},
      {"dataset", 'd', "NAME", "evaluate on rows of this dataset instead of a file", NULL},
      {"split", 0, "SPLIT", "with --dataset: train, dev or test (default dev)", NULL},
      {"json", 0, NULL, "print the metrics as one JSON object", NULL},
  };
  cli_cmd cmd = {"eval", "--model M (--format banking77 --input FILE | --dataset NAME [--split dev]) [--json]",
                 "Measure accuracy, macro-F1, calibration and latency; store the run in eval_reports and\n"
                 "write a Markdown report under $FINCH_HOME/reports.",
                 NULL, opts, N(opts)};
  const char *pos[1];
  size_t npos;
  int rc = parse(&cmd, argc, argv, pos, 0, &npos);
  if (rc >= 0) return rc;
  if (!cli_get(&cmd, "model") || (!cli_get(&cmd, "input") == !cli_get(&cmd, "dataset"))) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  finch_eval_opts o = {.model = cli_get(&cmd, "model"), .format = cli_get(&cmd, "format"),
                       .input = cli_get(&cmd, "input"), .dataset = cli_get(&cmd, "dataset"),
                       .split = cli_get(&cmd, "split"), .command_line = cli_command_line()};
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_eval_result r;
  finch_err err;
  finch_status st = finch_eval_run(db, &o, &r, &err);
  finch_db_close(db);
  if (st) {
    finch_eval_result_free(&r);
    return cli_fail(&err);
  }
  if (cli_get(&cmd, "json"))
    printf("%s\n", r.json);
  else
    printf("n %lld, accuracy %.4f, macro-F1 %.4f\nreport %lld: %s\n", r.n, r.accuracy, r.macro_f1, r.report_id,
           r.report_path);
  finch_eval_result_free(&r);
  return 0;
}

int finch_cmd_models(int argc, char **argv) {
  cli_opt opts[] = {{"json", 0, NULL, "print a JSON array", NULL}};
  cli_cmd cmd = {"models", "list [--json]", "List every registered model.", NULL, opts, N(opts)};
  const char *pos[1];
  size_t npos;
  int rc = parse(&cmd, argc, argv, pos, 1, &npos);
  if (rc >= 0) return rc;
  if (npos != 1 || strcmp(pos[0], "list") != 0) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_err err;
  if (cli_get(&cmd, "json")) {
    char *json;
    finch_status st = finch_models_list_json(db, &json, &err);
    finch_db_close(db);
    if (st) return cli_fail(&err);
    printf("%s\n", json);
    free(json);
    return 0;
  }
  PGresult *r = finch_db_query(db,
      "SELECT m.id, m.kind, m.stage, m.arch, m.dtype, m.params, m.bytes, coalesce(m.metrics->>'dev_accuracy', ''),"
      " m.path, coalesce((SELECT string_agg(format('%s %s (holdout %s, T %s)', x->>'name',"
      "   CASE WHEN (x->>'chosen')::boolean THEN 'in' ELSE 'out' END, round((x->>'dev_accuracy')::numeric, 4),"
      "   round((x->>'temperature')::numeric, 2)), '; ')"
      "   FROM jsonb_array_elements(CASE WHEN jsonb_typeof(m.config->'members') = 'array'"
      "                                  THEN m.config->'members' ELSE '[]'::jsonb END) x), '')"
      " FROM models m ORDER BY m.id", 0, NULL, &err);
  finch_db_close(db);
  if (!r) return cli_fail(&err);
  printf("%-5s %-8s %-9s %-8s %-5s %10s %10s %8s  %s\n", "id", "kind", "stage", "arch", "dtype", "params", "bytes",
         "dev_acc", "path");
  for (int i = 0; i < PQntuples(r); i++) {
    printf("%-5s %-8s %-9s %-8s %-5s %10s %10s %8.8s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
           PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6),
           PQgetvalue(r, i, 7), PQgetvalue(r, i, 8));
    if (*PQgetvalue(r, i, 9)) printf("      members: %s\n", PQgetvalue(r, i, 9));
  }
  PQclear(r);
  return 0;
}
