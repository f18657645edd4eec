/* The CLI of the batch stages: ingest, augment, distill, compile, eval, models. */
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "augment/augment.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/hash.h"
#include "core/models.h"
#include "distill/distill.h"
#include "evaluate/body.h"
#include "evaluate/compare.h"
#include "evaluate/evaluate.h"
#include "ingest/ingest.h"
#include "serve/monitor.h"
#include "serve/rules.h"

#define ANY_INT .min = 0, .max = 0  /* no bounds beyond the field's type */
#define NON_NEG .min = 0, .max = 1e308

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) {
  (void)sig;
  g_stop = 1;
}

typedef struct {
  finch_ingest_opts s;
  const char *pii_rules;
  int json;
} ingest_args;

#define F(m) FINCH_OPT_FIELD(ingest_args, s.m)
static const finch_opt ingest_opts[] = {
    {"format", 'f', FINCH_OPT_STRING, F(format), .arg = "FMT", .help = "input format: banking77, csv, clinc150, sgd, jsonl"},
    {"dataset", 'd', FINCH_OPT_STRING, F(dataset), .arg = "NAME", .help = "dataset to load into (created on first use)"},
    {"holdout", 0, FINCH_OPT_FLOAT, F(holdout), .setting = "holdout", .arg = "F",
     .help = "when the source has no splits: share marked 'dev', seeded, stratified by label (by dialogue for dialogues)"},
    {"seed", 0, FINCH_OPT_INT, F(seed), .setting = "seed", ANY_INT, .arg = "N", .help = "seed of the holdout"},
    {"text-col", 0, FINCH_OPT_STRING, F(text_col), .arg = "COL", .help = "csv: the text column, by name or 0-based index"},
    {"label-col", 0, FINCH_OPT_STRING, F(label_col), .arg = "COL", .help = "csv: the label column, by name or 0-based index (default: the column named label, category or "
             "intent, case-insensitive; a header without one is refused); none loads unlabelled text"},
    {"domains", 0, FINCH_OPT_STRING, F(domains_path), .arg = "PATH", .help = "clinc150: domains.json, to record each intent's domain"},
    {"labels", 0, FINCH_OPT_STRING, F(labels_path), .arg = "PATH",
     .help = "fix the label set (JSON array or one label a line): other labels are rejected"},
    {"pii-rules", 0, FINCH_OPT_STRING, FINCH_OPT_FIELD(ingest_args, pii_rules), .arg = "PATH",
     .help = "extra redaction rules, after the built-in core/pii_rules.conf"},
    {"max-text", 0, FINCH_OPT_INT, F(max_text_bytes), NON_NEG, .arg = "BYTES", .help = "reject texts longer than this (default 16384)"},
    {"batch", 0, FINCH_OPT_INT, F(batch_rows), NON_NEG, .arg = "ROWS", .help = "rows per COPY batch and transaction (default 5000)"},
    {"jobs", 0, FINCH_OPT_INT, F(load_jobs), .min = 1, .max = 16, .arg = "N",
     .help = "connections loading batches in parallel, committed in order (default 2)"},
    {"resume", 0, FINCH_OPT_INT, F(resume_run_id), ANY_INT, .arg = "RUN_ID",
     .help = "continue a run that was stopped or killed (same source)"},
    {"json", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(ingest_args, json), .help = "print the run summary as JSON"},
};
#undef F

static int ingest_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_ingest = {
    "ingest", "load labelled utterances into PostgreSQL",
    "--format FMT --dataset NAME [options] SOURCE   |   --resume RUN_ID [SOURCE]",
    "Load utterances and dialogues into PostgreSQL: normalised (NFKC), personal data redacted,\n"
    "deduplicated by content hash, split, bulk-loaded with COPY in batches that commit with the\n"
    "run's progress. SOURCE is a path, - (standard input), file:// or http(s):// URL; gzip is\n"
    "detected. Rows that cannot be used go to ingest_rejects with line, field and reason.",
    "Ctrl-C stops at the next batch boundary; --resume RUN_ID continues. Re-running the same source\n"
    "inserts nothing new.",
    ingest_opts, CLI_N(ingest_opts), sizeof(ingest_args), NULL, 1, ingest_run, 0};

static int ingest_run(void *opts, const char **pos, size_t npos) {
  ingest_args a = *(ingest_args *)opts;
  finch_ingest_opts o = a.s;
  if (!o.resume_run_id && (npos != 1 || !o.format || !o.dataset)) return cli_usage_error(&cli_ingest, &a);
  const char *rules[1] = {a.pii_rules};
  o.source = npos ? pos[0] : NULL;
  o.pii_rules = rules;
  o.n_pii_rules = rules[0] ? 1 : 0;
  o.progress = isatty(2);
  o.stop = &g_stop;
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
  if (a.json) {
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

typedef struct {
  finch_augment_opts s;
  int json;
} augment_args;

#define F(m) FINCH_OPT_FIELD(augment_args, s.m)
static const finch_opt augment_opts[] = {
    {"dataset", 'd', FINCH_OPT_STRING, F(dataset), .arg = "NAME", .help = "dataset whose training rows are the parents"},
    {"target", 'n', FINCH_OPT_INT, F(target), ANY_INT, .arg = "N",
     .help = "augmented rows the dataset should hold, earlier runs included (default 2 per parent)"},
    {"methods", 'm', FINCH_OPT_LIST, F(methods), .arg = "LIST",
     .help = "comma-separated: eda, synonyms, entities, noise, templates (default all)"},
    {"proportional", 0, FINCH_OPT_BOOL, F(proportional),
     .help = "share the target by intent size (default: the same for every intent)"},
    {"teacher", 0, FINCH_OPT_STRING, F(teacher), .arg = "REF",
     .help = "label guard: this teacher: id, file, alias, best or latest (default: the dataset's best that passed "
             "the quality gate; 'none' for no guard)"},
    {"guard-threshold", 0, FINCH_OPT_FLOAT, F(guard_threshold), .arg = "P",
     .help = "drop a candidate the teacher gives another intent with probability >= P (default 0.5)"},
    {"temperature", 0, FINCH_OPT_FLOAT, F(temperature), .arg = "T",
     .help = "temperature of the teacher probabilities stored for kept rows (default 2)"},
    {"seed", 0, FINCH_OPT_INT, F(seed), .setting = "seed", ANY_INT, .arg = "N", .help = "seed"},
    {"json", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(augment_args, json), .help = "print the summary as JSON"},
};
#undef F

static int augment_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_augment = {
    "augment", "add label-preserving variants of training rows",
    "--dataset NAME [--target N] [--methods LIST] [options]",
    "Add label-preserving variants of the training rows, each linked to its parent, method and\n"
    "parameters. Dev and test rows are never parents. Deterministic for a seed.",
    NULL, augment_opts, CLI_N(augment_opts), sizeof(augment_args), NULL, 0, augment_run, 0};

static int augment_run(void *opts, const char **pos, size_t npos) {
  augment_args a = *(augment_args *)opts;
  if (!a.s.dataset) return cli_usage_error(&cli_augment, &a);
  finch_augment_opts o = a.s;
  o.progress = isatty(2);
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
  if (a.json) {
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

typedef struct {
  finch_distill_opts s;
  int json;
} distill_args;

#define F(m) FINCH_OPT_FIELD(distill_args, s.m)
static const finch_opt distill_opts[] = {
    {"dataset", 'd', FINCH_OPT_STRING, F(dataset), .arg = "NAME", .help = "dataset to train on (split train; split dev measures)"},
    {"alpha", 0, FINCH_OPT_FLOAT, F(alpha), .min = 0, .max = 1, .flags = FINCH_OPT_MIN_OPEN, .arg = "A",
     .help = "a fixed weight of the teacher's soft labels (default: per example, 0.4 for simple inputs rising to 0.7 "
             "for the most complex)"},
    {"general", 0, FINCH_OPT_LIST, F(general), .arg = "LIST",
     .help = "general-domain datasets for the complexity score's domain term (default: clinc150/wiki_sents.txt in the "
             "data directory)"},
    {"temperature", 0, FINCH_OPT_FLOAT, F(temperature), .def = "2", .min = 0, .max = 1e308,
     .flags = FINCH_OPT_MIN_OPEN, .arg = "T", .help = "softmax temperature of the soft labels"},
    {"teacher", 0, FINCH_OPT_STRING, F(teacher), .arg = "REF",
     .help = "distil this trained teacher: id, file, alias, best (highest holdout accuracy that passed the quality "
             "gate) or latest (default: best; a bag-of-n-grams teacher is trained here when the dataset has none)"},
    {"teacher-epochs", 0, FINCH_OPT_INT, F(teacher_epochs), ANY_INT, .arg = "N",
     .help = "teacher training epochs (default: model default)"},
    {"student", 0, FINCH_OPT_ENUM, F(student), .choices = "bow|tfm", .arg = "ARCH",
     .help = "student architecture: bow (bag of n-grams, default) or tfm (a small encoder that can match the teacher "
             "encoder's layers)"},
    {"stage", 0, FINCH_OPT_STRING, F(stage), .arg = "STAGE",
     .help = "vertical (finance data, default) or both: a general stage on general-domain text first (tfm: the "
             "teacher encoder's layers; bow: the pretrained encoder's sentence vectors); tfm also general alone"},
    {"teacher-init", 0, FINCH_OPT_BOOL, F(teacher_init),
     .help = "bow student: start the word rows (and the n-gram rows they contain) from the teacher's pretrained "
             "encoder, projected on its principal axes"},
    {"init", 0, FINCH_OPT_STRING, F(init_student), .arg = "ID|FILE",
     .help = "tfm student: start from this student (e.g. a general-stage one)"},
    {"hard", 0, FINCH_OPT_BOOL, F(hard_only), .help = "no soft labels: train the student on the hard labels only"},
    {"no-intermediate", 0, FINCH_OPT_BOOL, F(intermediate), .def = "false", .flags = FINCH_OPT_INVERT,
     .help = "tfm student: do not match the teacher encoder's hidden states and attention"},
    {"no-progressive", 0, FINCH_OPT_BOOL, F(progressive), .def = "false", .flags = FINCH_OPT_INVERT,
     .help = "tfm student: match every layer from the start (default: shallow layers first)"},
    {"inter-weight", 0, FINCH_OPT_FLOAT, F(inter_weight), NON_NEG, .arg = "W",
     .help = "weight of each intermediate-layer loss (default 0.4)"},
    {"general-max", 0, FINCH_OPT_INT, F(general_max), NON_NEG, .arg = "N", .help = "general stage: at most N texts (default 50000)"},
    {"general-epochs", 0, FINCH_OPT_INT, F(general_epochs), NON_NEG, .arg = "N", .help = "general stage epochs (default 2)"},
    {"head-gates", 0, FINCH_OPT_BOOL, F(head_gates),
     .help = "tfm student: input-dependent attention-head gates with a sparsity penalty; the share of heads open per "
             "complexity bin is reported"},
    {"resume", 0, FINCH_OPT_BOOL, F(resume),
     .help = "tfm student: continue from the checkpoints of an interrupted run (same options)"},
    {"gate-penalty", 0, FINCH_OPT_FLOAT, F(gate_penalty), NON_NEG, .arg = "L",
     .help = "weight of the gates' sparsity penalty lambda * mean(gate) (default 0.02)"},
    CLI_NEGATIVES_OPTIONS,
    {"student-dim", 0, FINCH_OPT_INT, F(student_dim), .min = 0, .max = 4096, .arg = "D",
     .help = "student width: the bow student's embedding (default 48), the tfm student's (default 64)"},
    {"student-buckets", 0, FINCH_OPT_INT, F(student_buckets), .min = 0, .max = 1 << 26, .arg = "N",
     .help = "bow student: hashed n-gram rows (default 32768)"},
    {"student-epochs", 0, FINCH_OPT_INT, F(student_epochs), ANY_INT, .arg = "N",
     .help = "student training epochs (default: model default)"},
    {"seed", 0, FINCH_OPT_INT, F(seed), .setting = "seed", ANY_INT, .arg = "N",
     .help = "seed for initialisation, dropout and shuffling"},
    {"device", 0, FINCH_OPT_STRING, F(device), .setting = "device", .arg = "DEV", .help = "cpu, cuda or auto"},
    CLI_GATE_TEACHER_OPTIONS,
    CLI_GATE_STUDENT_OPTION,
    {"json", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(distill_args, json), .help = "print the summary as JSON"},
};
#undef F

static int distill_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_distill = {
    "distill", "distil a teacher into a smaller student (bow or transformer)", "--dataset NAME [options]",
    "Train a teacher, then a smaller student on the teacher's temperature-softened\n"
    "probabilities and the hard labels; register both models with their dev accuracy.",
    NULL, distill_opts, CLI_N(distill_opts), sizeof(distill_args), NULL, 0, distill_run, 0};

static int distill_run(void *opts, const char **pos, size_t npos) {
  distill_args a = *(distill_args *)opts;
  if (!a.s.dataset) return cli_usage_error(&cli_distill, &a);
  finch_distill_opts o = a.s;
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_distill_result r;
  finch_err err;
  finch_status st = finch_distill_run(db, &o, &r, &err);
  finch_db_close(db);
  if (st) return cli_fail(&err);
  if (a.json) {
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
  if (r.teacher_failed || r.student_failed)
    fprintf(stderr, "finch: warning: failed the quality gate: %s (registered as failed; allowed by --allow-failed)\n",
            r.gate);
  return 0;
}

#define F(m) FINCH_OPT_FIELD(finch_compile_opts, m)
static const finch_opt compile_opts[] = {
    {"model", 'm', FINCH_OPT_STRING, F(model), .arg = "ID|FILE", .help = "registered model id or model file"},
    {"output", 'o', FINCH_OPT_STRING, F(out), .arg = "FILE", .help = "where to write the compiled model file"},
    {"dtype", 0, FINCH_OPT_STRING, F(dtype), .arg = "TYPE", .help = "weight storage: q8 (int8, a scale per row; default) or f32"},
    {"abstain", 0, FINCH_OPT_ENUM, F(abstain.method), .choices = "threshold|class|both|none", .arg = "METHOD",
     .help = "out-of-scope policy to compile in: threshold (refuse below a calibrated in-scope probability chosen on "
             "the holdout's selection half), class (the model's out-of-scope class), both, or none (remove it); "
             "default: keep the model's"},
    {"abstain-dataset", 0, FINCH_OPT_STRING, F(abstain.dataset), .arg = "NAME",
     .help = "dataset whose holdout the threshold is chosen on (default: the model's)"},
    {"oos-label", 0, FINCH_OPT_STRING, F(abstain.oos_label), .arg = "LABEL",
     .help = "the out-of-scope label of the holdout and the model (default oos)"},
    {"negatives", 0, FINCH_OPT_LIST, F(abstain.negatives), .arg = "LIST",
     .help = "datasets whose dev rows are out-of-scope examples for the threshold (e.g. clinc150,sgd_general)"},
    {"negatives-exclude", 0, FINCH_OPT_LIST, F(abstain.negatives_exclude), .arg = "LIST",
     .help = "leave out negatives of these domains or intents (e.g. banking,credit_cards,exchange_rate: CLINC150's "
             "finance intents)"},
    {"negatives-max", 0, FINCH_OPT_INT, F(abstain.negatives_max), NON_NEG, .arg = "N",
     .help = "at most N negatives, a seeded sample (default all)"},
    {"in-scope-recall", 0, FINCH_OPT_FLOAT, F(abstain.in_scope_recall), .min = 0, .max = 1,
     .flags = FINCH_OPT_MIN_OPEN, .arg = "R", .help = "threshold target: answer at least this share of in-scope rows "
                                                      "(default 0.99)"},
    {"oos-recall", 0, FINCH_OPT_FLOAT, F(abstain.oos_recall), .min = 0, .max = 1, .flags = FINCH_OPT_MIN_OPEN,
     .arg = "R", .help = "threshold target instead: refuse at least this share of out-of-scope rows"},
    {"seed", 0, FINCH_OPT_INT, F(abstain.seed), .setting = "seed", ANY_INT, .arg = "N",
     .help = "seed of the holdout's selection/report halves and of the negatives' sample"},
};
#undef F

static int compile_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_compile = {
    "compile", "write a model as a deployable (quantised) file",
    "--model ID -o FILE [--dtype q8|f32] [--abstain threshold|class|both|none ...]",
    "Write a model as a single deployable file (format: nn/modelfile.h) with its SHA-256,\n"
    "and register it as stage 'compiled'.",
    NULL, compile_opts, CLI_N(compile_opts), sizeof(finch_compile_opts), NULL, 0, compile_run, 0};

static int compile_run(void *opts, const char **pos, size_t npos) {
  finch_compile_opts o = *(finch_compile_opts *)opts;
  if (!o.model || !o.out) return cli_usage_error(&cli_compile, &o);
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_compile_result r;
  finch_err err;
  finch_status st = finch_compile_run(db, &o, &r, &err);
  finch_db_close(db);
  if (st) return cli_fail(&err);
  printf("compiled model %lld: %s (%lld bytes, sha256 %s)\n", r.model_id, o.out, r.bytes, r.sha256);
  if (r.abstain)
    printf("out of scope: %s, temperature %.3f, threshold %.4f (%s); on the selection half it answers %.4f of %lld "
           "in-scope rows and refuses %.4f of %lld out-of-scope rows (%lld negatives)\n",
           o.abstain.method, (double)r.abstain_fit.temperature, (double)r.abstain_fit.threshold, r.abstain_fit.target,
           r.abstain_fit.sel_in_scope_recall, r.abstain_fit.n_in, r.abstain_fit.sel_oos_recall, r.abstain_fit.n_out,
           r.abstain_fit.n_negatives);
  return 0;
}

typedef struct {
  finch_eval_opts s;
  const char *rules, *deployment, *since, *until;
  int json, require_first_best;
} eval_args;

#define F(m) FINCH_OPT_FIELD(eval_args, s.m)
static const finch_opt eval_opts[] = {
    {"model", 'm', FINCH_OPT_LIST, F(model), .arg = "ID|FILE", .flags = FINCH_OPT_REPEAT,
     .help = "registered model id, alias or model file (teacher or student); given several times (or as a "
             "comma-separated list, \"rules\" naming the legacy rule pack), the models are compared on the same rows "
             "in one report"},
    {"format", 'f', FINCH_OPT_STRING, F(format), .arg = "FMT", .help = "format of --input: banking77"},
    {"input", 'i', FINCH_OPT_STRING, F(input), .arg = "FILE", .help = "labelled file to evaluate on"},
    {"dataset", 'd', FINCH_OPT_STRING, F(dataset), .arg = "NAME", .help = "evaluate on rows of this dataset instead of a file"},
    {"split", 0, FINCH_OPT_STRING, F(split), .arg = "SPLIT", .help = "with --dataset: train, dev or test (default dev)"},
    {"oos-label", 0, FINCH_OPT_STRING, F(oos_label), .arg = "LABEL", .help = "the rows' out-of-scope label (default oos, when the rows have it)"},
    {"half", 0, FINCH_OPT_ENUM, F(half), .choices = "selection|report", .arg = "HALF",
     .help = "only this half of the rows, halved by label and --seed as the teacher's holdout: report = the rows no "
             "choice was made on"},
    {"seed", 0, FINCH_OPT_INT, F(seed), .setting = "seed", ANY_INT, .arg = "N", .help = "seed of the halves"},
    {"cpu-price-hour", 0, FINCH_OPT_FLOAT, F(cpu_price_hour), .def = FINCH_OPT_DEF(FINCH_EVAL_DEFAULT_CPU_PRICE_HOUR),
     .min = 0, .max = 1e308, .arg = "USD", .help = "price of one CPU core-hour for the report's cost per 1,000 requests"},
    {"rules", 0, FINCH_OPT_STRING, FINCH_OPT_FIELD(eval_args, rules), .def = CLI_DEFAULT_RULES,
     .arg = "FILE", .help = "the legacy rule pack measured on the same rows as the baseline (\"\" for none)"},
    {"deployment", 0, FINCH_OPT_STRING, FINCH_OPT_FIELD(eval_args, deployment), .arg = "NAME",
     .help = "add this deployment's serving record (finch monitor, by day) to the report as its monitoring section"},
    {"since", 0, FINCH_OPT_STRING, FINCH_OPT_FIELD(eval_args, since), .arg = "TIME",
     .help = "with --deployment: from this time (as finch monitor --since; default: all that was recorded)"},
    {"until", 0, FINCH_OPT_STRING, FINCH_OPT_FIELD(eval_args, until), .arg = "TIME",
     .help = "with --deployment: up to this time (as finch monitor --until)"},
    {"require-first-best", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(eval_args, require_first_best),
     .help = "with several models: after the report, exit 1 unless the first model is more accurate than every "
             "other (a pipeline's gate before promoting a new model over the deployed one)"},
    {"json", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(eval_args, json), .help = "print the metrics as one JSON object"},
};
#undef F

static const char *eval_rules_answer(void *ctx, const char *text) {
  return finch_rules_match(ctx, text, strlen(text), NULL, NULL);
}

finch_status cli_eval_baseline(const char *path, finch_rules **rules, char sha[FINCH_SHA256_HEX_LEN],
                               finch_eval_baseline *b, finch_err *err) {
  *rules = NULL;
  finch_status st = finch_rules_load(rules, path, err);
  if (!st) st = finch_sha256_file(path, sha, err);
  if (st) {
    finch_rules_free(*rules);
    *rules = NULL;
    return st;
  }
  const char *slash = strrchr(path, '/');
  *b = (finch_eval_baseline){.name = slash ? slash + 1 : path, .sha256 = sha,
                             .n_rules = (long long)finch_rules_count(*rules), .answer = eval_rules_answer,
                             .ctx = *rules};
  return FINCH_OK;
}

/* finch eval with several models: one comparison report (evaluate/compare.h). */
static int eval_compare(finch_db *db, const finch_eval_opts *o, int json, int require_first_best) {
  finch_err err;
  finch_compare_result r;
  finch_status st = finch_compare_run(db, o, &r, &err);
  if (st) {
    finch_compare_result_free(&r);
    return cli_fail(&err);
  }
  if (json) {
    printf("%s\n", r.json);
  } else {
    printf("n %lld, %zu models on the same rows\n", r.n, r.n_models);
    for (size_t m = 0; m < r.n_models; m++) {
      const finch_compare_model *cm = &r.models[m];
      printf("%s (%s): accuracy %.4f (95%% CI %.4f-%.4f), macro-F1 %.4f, latency p50 %.4f ms, %s", cm->name,
             cm->kind, cm->accuracy, cm->accuracy_lo, cm->accuracy_hi, cm->macro_f1, cm->latency_ms_p50,
             cm->on_front ? "on the front" : "not on the front");
      if (cm->report_id) printf(", report %lld", cm->report_id);
      printf("\n");
    }
    for (size_t j = 0; j < r.n_pairs; j++) {
      const finch_compare_pair *p = &r.pairs[j];
      printf("McNemar %s vs %s: %lld against %lld discordant rows, p exact %.4g, p chi-square %.4g\n",
             r.models[p->a].name, r.models[p->b].name, p->test.b, p->test.c, p->test.p_exact, p->test.p_chi2);
    }
    if (r.unchanged) printf("unchanged: report %lld (the same comparison was reported before)\n", r.report_id);
    printf("report %lld: %s, %s (body sha256 %s)\n", r.report_id, r.report_path, r.html_path, r.body_sha256);
  }
  int rc = 0;
  for (size_t m = 1; require_first_best && m < r.n_models; m++)
    if (!(r.models[0].accuracy > r.models[m].accuracy)) {
      fprintf(stderr, "finch eval: %s is not more accurate than %s (%.4f against %.4f on the same rows): "
              "--require-first-best fails\n", r.models[0].name, r.models[m].name, r.models[0].accuracy,
              r.models[m].accuracy);
      rc = 1;
    }
  finch_compare_result_free(&r);
  return rc;
}

static int eval_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_eval = {
    "eval", "measure a model on labelled rows; store and write a report",
    "--model M [--model M2 ... | --model rules] (--format banking77 --input FILE | --dataset NAME [--split dev])\n"
    "            [--oos-label L] [--rules FILE] [--cpu-price-hour USD] [--json]",
    "Measure accuracy, macro-F1, calibration and latency, with the legacy rules on the same rows as\n"
    "the baseline, and write one immutable report (eval_reports; report-ID-HASH.json and .md under\n"
    "$FINCH_HOME/reports): the same evaluation again finds that report ('unchanged: report N')\n"
    "instead of adding another; finch report list|show|approve reads and signs them. Rows are\n"
    "decided by the model's abstention policy; with out-of-scope rows or a policy, the run also\n"
    "measures in-scope accuracy and coverage, out-of-scope recall and precision, AUROC and FPR at 95% in-scope recall.\n"
    "With 2 to 8 models (\"rules\" naming the --rules pack), each gets its own report and one more compares\n"
    "them on the same rows: accuracy and macro-F1 with intervals, McNemar's test for every pair, per-intent\n"
    "F1 differences, and the accuracy-latency Pareto front of the run.",
    NULL, eval_opts, CLI_N(eval_opts), sizeof(eval_args), NULL, 0, eval_run, 0};

static int eval_run(void *opts, const char **pos, size_t npos) {
  eval_args a = *(eval_args *)opts;
  finch_eval_opts o = a.s;
  if (!o.model || !o.input == !o.dataset) return cli_usage_error(&cli_eval, &a);
  o.command_line = cli_command_line();
  finch_err err;
  finch_rules *rules = NULL;
  char rules_sha[FINCH_SHA256_HEX_LEN];
  finch_eval_baseline base;
  if (a.rules && *a.rules) {
    if (cli_eval_baseline(a.rules, &rules, rules_sha, &base, &err)) return cli_fail(&err);
    o.baseline = &base;
  }
  finch_db *db = cli_db_open();
  if (!db) {
    finch_rules_free(rules);
    return 1;
  }
  json_t *mon = NULL;
  if ((a.since || a.until) && !a.deployment) {
    finch_db_close(db);
    finch_rules_free(rules);
    fprintf(stderr, "finch eval: --since and --until need --deployment\n");
    return 2;
  }
  if (a.deployment) {
    serve_monitor_opts mo = {.deployment = a.deployment, .bucket = SERVE_MONITOR_DAY};
    time_t now = time(NULL);
    if ((a.since && serve_monitor_parse_time(a.since, now, &mo.since, &err)) ||
        (a.until && serve_monitor_parse_time(a.until, now, &mo.until, &err)) ||
        serve_monitor_json(db, &mo, &mon, &err)) {
      finch_db_close(db);
      finch_rules_free(rules);
      return cli_fail(&err);
    }
    o.monitoring = mon;
  }
  if (a.require_first_best && finch_compare_count(o.model) < 2) {
    finch_db_close(db);
    finch_rules_free(rules);
    json_decref(mon);
    fprintf(stderr, "finch eval: --require-first-best needs several models\n");
    return 2;
  }
  if (finch_compare_count(o.model) > 1) {
    int rc = eval_compare(db, &o, a.json, a.require_first_best);
    finch_db_close(db);
    finch_rules_free(rules);
    json_decref(mon);
    return rc;
  }
  finch_eval_result r;
  finch_status st = finch_eval_run(db, &o, &r, &err);
  finch_db_close(db);
  finch_rules_free(rules);
  json_decref(mon);
  if (st) {
    finch_eval_result_free(&r);
    return cli_fail(&err);
  }
  if (a.json) {
    printf("%s\n", r.json);
  } else {
    printf("n %lld, accuracy %.4f, macro-F1 %.4f\n", r.n, r.accuracy, r.macro_f1);
    if (r.has_oos)
      printf("in scope %lld: accuracy %.4f, coverage %.4f; out of scope %lld: recall %.4f, precision %.4f, "
             "AUROC %.4f, FPR@95 %.4f\n", r.oos.n_in, r.oos.in_accuracy, r.oos.in_coverage, r.oos.n_oos,
             r.oos.oos_recall, r.oos.oos_precision, r.oos.auroc, r.oos.fpr_at_95);
    if (r.unchanged) printf("unchanged: report %lld (the same evaluation was reported before)\n", r.report_id);
    printf("report %lld: %s, %s (body sha256 %s)\n", r.report_id, r.report_path, r.html_path, r.body_sha256);
  }
  finch_eval_result_free(&r);
  return 0;
}
