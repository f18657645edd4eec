/* finch teacher train: the engine's ensemble teacher (distill/teacher.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/config.h"
#include "distill/teacher.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

int finch_cmd_teacher(int argc, char **argv) {
  cli_opt opts[] = {
      {"dataset", 'd', "NAME", "dataset to train on (split train; split dev selects and measures)", NULL},
      {"members", 0, "LIST", "ensemble members, at most 12: slr, bow, tfm (repeat bow or tfm for several seeds), ktfm (an"
       " encoder taught by the members before it, on augmented rows too); default slr,bow,tfm",
       NULL},
      {"reuse-members", 0, NULL, "keep trained members under $FINCH_HOME/member-cache and reuse those trained before on the"
       " same rows with the same options instead of training them again", NULL},
      {"pretrain-epochs", 0, "N", "masked-token pre-training epochs of the encoders on the general corpus "
                                  "(clinc150/wiki_sents.txt and --general datasets; default 0 = none)", NULL},
      {"general", 0, "LIST", "general-domain datasets added to the pre-training corpus", NULL},
      {"epochs", 0, "N", "encoder fine-tuning epochs (default 30)", NULL},
      {"no-ngrams", 0, NULL, "no hashed character n-grams in the encoders' token embeddings", NULL},
      {"no-augmented", 0, NULL, "train on source rows only (default: slr and bow see augmented rows too)", NULL},
      {"tfm-augmented", 0, NULL, "let the encoders see augmented rows too", NULL},
      {"dim", 0, "D", "encoder width (default 128)", NULL},
      {"layers", 0, "L", "encoder layers (default 2)", NULL},
      {"heads", 0, "H", "attention heads (default 4)", NULL},
      {"ff", 0, "F", "feed-forward width (default 512)", NULL},
      {"seq-len", 0, "T", "tokens per text, [CLS] included (default 48)", NULL},
      {"vocab", 0, "V", "tokenizer vocabulary size (default 8000)", NULL},
      {"lr", 0, "LR", "encoder peak learning rate (default 1e-3, 5e-4 after pre-training)", NULL},
      {"seed", 0, "N", "seed for initialisation, dropout and shuffling (default 42)", NULL},
      {"resume", 0, NULL, "continue the encoders from their checkpoints after a crash (same options)", NULL},
      {"device", 0, "DEV", "cpu, cuda or auto (default: setting device, auto)", NULL},
      {"quiet", 'q', NULL, "no progress output", NULL},
      {"json", 0, NULL, "print the summary as JSON", NULL},
  };
  cli_cmd cmd = {"teacher", "train --dataset NAME [options]",
                 "Train the ensemble teacher: each member on the training split, calibrated and\n"
                 "selected on the holdout; register it in models.",
                 NULL, opts, N(opts)};
  const char *pos[1];
  size_t npos;
  int rc = cli_parse(&cmd, argc, argv, pos, 1, &npos);
  if (rc != 0) return rc == 1 ? 0 : 2;
  if (npos != 1 || strcmp(pos[0], "train") != 0 || !cli_get(&cmd, "dataset")) {
    cli_usage(&cmd, stderr);
    return 2;
  }
  long long pe = 0, ep = 0, dim = 0, layers = 0, heads = 0, ff = 0, T = 0, V = 0, seed = finch_config_int("seed");
  double lr = 0;
  if (cli_get_long(&cmd, "pretrain-epochs", &pe) || cli_get_long(&cmd, "epochs", &ep) ||
      cli_get_long(&cmd, "dim", &dim) || cli_get_long(&cmd, "layers", &layers) || cli_get_long(&cmd, "heads", &heads) ||
      cli_get_long(&cmd, "ff", &ff) || cli_get_long(&cmd, "seq-len", &T) || cli_get_long(&cmd, "vocab", &V) ||
      cli_get_long(&cmd, "seed", &seed) || cli_get_double(&cmd, "lr", &lr))
    return 2;
  if (pe < 0 || ep < 0 || dim < 0 || layers < 0 || heads < 0 || ff < 0 || T < 0 || T > 255 || V < 0 || lr < 0 ||
      (V && V < 300)) {
    fprintf(stderr, "finch teacher: sizes and epochs must be positive, --seq-len at most 255, --vocab at least 300\n");
    return 2;
  }
  finch_teacher_opts o = {.dataset = cli_get(&cmd, "dataset"), .members = cli_get(&cmd, "members"),
                          .seed = (unsigned long long)seed, .augmented = !cli_get(&cmd, "no-augmented"),
                          .tfm_augmented = cli_get(&cmd, "tfm-augmented") != NULL, .general = cli_get(&cmd, "general"),
                          .pretrain_epochs = (int)pe, .tfm_epochs = (int)ep, .ngrams = !cli_get(&cmd, "no-ngrams"),
                          .dim = (unsigned)dim, .layers = (unsigned)layers, .heads = (unsigned)heads,
                          .ff = (unsigned)ff, .seq_len = (unsigned)T, .vocab = (unsigned)V, .lr = (float)lr,
                          .device = cli_get(&cmd, "device") ? cli_get(&cmd, "device") : finch_config_get("device"),
                          .quiet = cli_get(&cmd, "quiet") != NULL, .resume = cli_get(&cmd, "resume") != NULL,
                          .reuse_members = cli_get(&cmd, "reuse-members") != NULL};
  finch_db *db = cli_db_open();
  if (!db) return 1;
  finch_teacher_result r;
  finch_err err;
  finch_status st = finch_teacher_train(db, &o, &r, &err);
  finch_db_close(db);
  if (st) return cli_fail(&err);
  if (cli_get(&cmd, "json")) {
    json_t *ms = json_array();
    for (size_t i = 0; i < r.n_members; i++)
      json_array_append_new(ms, json_pack("{s:s, s:f, s:f, s:f, s:I, s:f, s:b}", "name", r.members[i].name,
                                          "dev_accuracy", r.members[i].dev_acc, "dev_nll", r.members[i].dev_nll,
                                          "temperature", r.members[i].temperature, "params",
                                          (json_int_t)r.members[i].params, "train_seconds", r.members[i].seconds,
                                          "reused", r.members[i].cached));
    cli_print_json(json_pack("{s:I, s:s, s:s, s:f, s:f, s:I, s:I, s:I, s:I, s:o, s:f}", "id", (json_int_t)r.model_id,
                             "path", r.path, "chosen", r.chosen, "dev_accuracy", r.dev_acc, "dev_nll", r.dev_nll,
                             "params", (json_int_t)r.params, "n_train", (json_int_t)r.n_train, "n_dev",
                             (json_int_t)r.n_dev, "n_general", (json_int_t)r.n_general, "members", ms,
                             "train_seconds", r.seconds));
  } else {
    for (size_t i = 0; i < r.n_members; i++)
      printf("member %-6s holdout accuracy %.4f  NLL %.4f  T %.2f  %lld parameters  %.1f s%s\n", r.members[i].name,
             r.members[i].dev_acc, r.members[i].dev_nll, r.members[i].temperature, r.members[i].params,
             r.members[i].seconds, r.members[i].cached ? " (reused)" : "");
    printf("teacher: model %lld (%s), %lld parameters, holdout accuracy %.4f\n", r.model_id, r.chosen, r.params,
           r.dev_acc);
  }
  return 0;
}
