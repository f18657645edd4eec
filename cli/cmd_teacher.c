/* finch teacher train: the engine's ensemble teacher (distill/teacher.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "distill/teacher.h"

typedef struct {
  finch_teacher_opts s;
  int json;
} teacher_args;

#define F(m) FINCH_OPT_FIELD(teacher_args, s.m)
#define SIZE(name_, m, arg_, help_) {name_, 0, FINCH_OPT_INT, F(m), .min = 0, .max = 1e308, .arg = arg_, .help = help_}
static const finch_opt teacher_opts[] = {
    {"dataset", 'd', FINCH_OPT_STRING, F(dataset), .arg = "NAME",
     .help = "dataset to train on (split train; split dev, halved by --seed and label: one half selects, the "
             "other measures)"},
    {"members", 0, FINCH_OPT_LIST, F(members), .arg = "LIST",
     .help = "ensemble members, at most 12: slr, bow, tfm (repeat bow or tfm for several seeds), ktfm (an encoder "
             "taught by the members before it, on augmented rows too), bert (the pretrained all-MiniLM-L6-v2, frozen, "
             "with a fitted head, or fine-tuned with --bert-epochs; needs scripts/fetch-pretrained.sh), bertft (that "
             "encoder fine-tuned for --bert-epochs, default 3, beside a frozen bert); default "
             "bert,bertft,slr,bow when that encoder is installed, "
             "else slr,bow,tfm"},
    CLI_NEGATIVES_OPTIONS,
    {"reuse-members", 0, FINCH_OPT_BOOL, F(reuse_members),
     .help = "keep trained members under $FINCH_HOME/member-cache and reuse those trained before on the same rows "
             "with the same options instead of training them again"},
    SIZE("pretrain-epochs", pretrain_epochs, "N",
         "masked-token pre-training epochs of the encoders on the general corpus (clinc150/wiki_sents.txt and "
         "--general datasets; default 0 = none)"),
    {"general", 0, FINCH_OPT_LIST, F(general), .arg = "LIST", .help = "general-domain datasets added to the pre-training corpus"},
    SIZE("epochs", tfm_epochs, "N", "encoder fine-tuning epochs (default 30)"),
    SIZE("bert-epochs", bert_epochs, "N",
         "fine-tune the bert member's encoder and head together for N epochs, from the head fitted on the frozen "
         "vectors (about 20 s per 1,000 rows and epoch on 2 cores; default 0 = the encoder stays frozen)"),
    {"no-ngrams", 0, FINCH_OPT_BOOL, F(ngrams), .def = "false", .flags = FINCH_OPT_INVERT,
     .help = "no hashed character n-grams in the encoders' token embeddings"},
    {"no-augmented", 0, FINCH_OPT_BOOL, F(augmented), .def = "false", .flags = FINCH_OPT_INVERT,
     .help = "train on source rows only (default: slr and bow see augmented rows too)"},
    {"tfm-augmented", 0, FINCH_OPT_BOOL, F(tfm_augmented),
     .help = "let the encoders (tfm, bert) see augmented rows too"},
    SIZE("dim", dim, "D", "encoder width (default 128)"),
    SIZE("layers", layers, "L", "encoder layers (default 2)"),
    SIZE("heads", heads, "H", "attention heads (default 4)"),
    SIZE("ff", ff, "F", "feed-forward width (default 512)"),
    {"seq-len", 0, FINCH_OPT_INT, F(seq_len), .min = 0, .max = 255, .arg = "T",
     .help = "tokens per text, [CLS] included (default 48)"},
    SIZE("vocab", vocab, "V", "tokenizer vocabulary size, at least 300 (default 8000)"),
    {"lr", 0, FINCH_OPT_FLOAT, F(lr), .min = 0, .max = 1e308, .arg = "LR",
     .help = "encoder peak learning rate (default 1e-3, 5e-4 after pre-training)"},
    {"seed", 0, FINCH_OPT_INT, F(seed), .setting = "seed", .arg = "N",
     .help = "seed for initialisation, dropout, shuffling and the holdout's selection/report halves"},
    {"resume", 0, FINCH_OPT_BOOL, F(resume), .help = "continue the encoders from their checkpoints after a crash (same options)"},
    {"device", 0, FINCH_OPT_STRING, F(device), .setting = "device", .arg = "DEV", .help = "cpu, cuda or auto"},
    {"quiet", 'q', FINCH_OPT_BOOL, F(quiet), .help = "no progress output"},
    CLI_GATE_TEACHER_OPTIONS,
    {"json", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(teacher_args, json), .help = "print the summary as JSON"},
};

static int teacher_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_teacher = {
    "teacher", "train the ensemble teacher and select it on the holdout", "train --dataset NAME [options]",
    "Train the ensemble teacher: each member on the training split; register it in\n"
    "models. The holdout is split (seeded, stratified by label) into a selection\n"
    "half, where each member's temperature is fitted and the subset of members is\n"
    "chosen, and a report half, which takes no part in either and gives the\n"
    "accuracy reported (dev_accuracy; selection_accuracy is the optimistic one).",
    NULL, teacher_opts, CLI_N(teacher_opts), sizeof(teacher_args), NULL, 1, teacher_run, 0};

static int teacher_run(void *opts, const char **pos, size_t npos) {
  teacher_args a = *(teacher_args *)opts;
  if (npos != 1 || strcmp(pos[0], "train") != 0 || !a.s.dataset) return cli_usage_error(&cli_teacher, &a);
  if (a.s.vocab && a.s.vocab < 300) { /* 0 is the default */
    fprintf(stderr, "finch teacher: --vocab: %u is out of range: 0 (the default) or >= 300\n", a.s.vocab);
    return 2;
  }
  finch_teacher_opts o = a.s;
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_teacher_result r;
  finch_err err;
  finch_status st = finch_teacher_train(db, &o, &r, &err);
  finch_db_close(db);
  if (st) return cli_fail(&err);
  if (a.json) {
    json_t *ms = json_array();
    for (size_t i = 0; i < r.n_members; i++)
      json_array_append_new(ms, json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:I, s:f, s:b}", "name", r.members[i].name,
                                          "dev_accuracy", r.members[i].dev_acc, "dev_nll", r.members[i].dev_nll,
                                          "selection_accuracy", r.members[i].sel_acc, "selection_nll",
                                          r.members[i].sel_nll, "temperature", r.members[i].temperature, "params",
                                          (json_int_t)r.members[i].params, "train_seconds", r.members[i].seconds,
                                          "reused", r.members[i].cached));
    cli_print_json(json_pack("{s:I, s:s, s:s, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:f}", "id",
                             (json_int_t)r.model_id, "path", r.path, "chosen", r.chosen, "dev_accuracy", r.dev_acc,
                             "dev_nll", r.dev_nll, "selection_accuracy", r.sel_acc, "selection_nll", r.sel_nll,
                             "params", (json_int_t)r.params, "n_train", (json_int_t)r.n_train, "n_dev",
                             (json_int_t)r.n_dev, "n_selection", (json_int_t)r.n_sel, "n_report",
                             (json_int_t)r.n_report, "n_general", (json_int_t)r.n_general, "members", ms,
                             "train_seconds", r.seconds));
  } else {
    for (size_t i = 0; i < r.n_members; i++)
      printf("member %-6s report accuracy %.4f  NLL %.4f  selection accuracy %.4f  T %.2f  %lld parameters  %.1f s%s\n",
             r.members[i].name, r.members[i].dev_acc, r.members[i].dev_nll, r.members[i].sel_acc,
             r.members[i].temperature, r.members[i].params, r.members[i].seconds, r.members[i].cached ? " (reused)" : "");
    printf("teacher: model %lld (%s), %lld parameters, report accuracy %.4f on %lld holdout rows (selection accuracy "
           "%.4f on the other %lld)\n", r.model_id, r.chosen, r.params, r.dev_acc, r.n_report, r.sel_acc, r.n_sel);
  }
  if (r.failed)
    fprintf(stderr, "finch: warning: teacher %lld failed the quality gate: %s (registered as failed; allowed by "
            "--allow-failed)\n", r.model_id, r.gate);
  return 0;
}
