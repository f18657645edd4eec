/* The finance teacher: an ensemble trained on a dataset's training split
 * (source and, optionally, augmented rows), selected on one half of its
 * holdout and reported on the other.
 *
 * Members, each trained by finch's own engine:
 *   "slr"  sparse TF-IDF word + character n-gram logistic regression;
 *   "bow"  the wide bag-of-n-grams network with a hidden layer;
 *   "tfm"  a transformer encoder over WordPiece tokens (trained on the same
 *          corpus), optionally with hashed character n-grams added to each
 *          token and optionally pre-trained with masked tokens (MLM) on the
 *          general-domain corpora before fine-tuning. Several "tfm" members
 *          differ by seed;
 *   "ktfm" the same encoder taught by the members listed before it: trained
 *          on every training row, augmented variants included, on their
 *          calibrated average probabilities at tau = 2 (weight 0.7) and the
 *          labels (0.3), for as many steps as a "tfm" member on the source
 *          rows. The augmented rows carry the sparse models' knowledge into
 *          the encoder, which on its own sees too few examples;
 *   "bert" the pretrained encoder all-MiniLM-L6-v2 (nn/bert.h), frozen, with
 *          a softmax-regression head (nn/bert_head.h) fitted on its mean-
 *          pooled vectors of the training rows the encoders see (source rows
 *          unless tfm_augmented), embedded on the run's device; with
 *          bert_epochs > 0 encoder and head are then fine-tuned together
 *          (nn/bert_train.h), each step logged like an encoder's. At most one
 *          (its fit is deterministic);
 *   "bertft" the same encoder fine-tuned for bert_epochs (default 3), listed
 *          beside a frozen "bert": the two err on different rows, and their
 *          average beats either. With "bertft" listed, "bert" stays frozen. The weights come from the
 *          pretrained_dir setting (scripts/fetch-pretrained.sh installs
 *          them); when they are missing, a run listing bert fails before any
 *          member trains, with finch_pretrained_dir's one line. The vectors
 *          are held in memory for the member's fit only.
 *
 * Selection that does not see the reported figures: the holdout (dev) rows
 * are split once per run, seeded by `seed` and stratified by label (each
 * label's rows shuffled and dealt alternately, nn_split_halves in
 * distill/teacher_select.h), into a selection half and a report half. Each
 * member's temperature is fitted on the selection half (NLL); the ensemble
 * averages calibrated probabilities; every non-empty subset of the members
 * is scored on the selection half and the most accurate one (ties: fewer
 * members, then lower NLL) becomes the teacher. The report half takes no
 * part in any choice: its accuracy and NLL (dev_acc, dev_nll) are what the
 * teacher and each member are reported with; the selection half's figures
 * (sel_acc) are reported beside them, and are optimistic by construction.
 * The teacher is written under $FINCH_HOME/models and registered in
 * `models` (arch "ensemble", config listing its members with both
 * figures). The encoders' per-step metrics go to training_metrics under the
 * run's id (a row of training_runs, tied to the teacher once it is
 * registered).
 *
 * Member cache (reuse_members = 1): each trained member is kept under
 * $FINCH_HOME/member-cache/<key>.fnm, the key a SHA-256 over the training
 * rows in order (text, label, source or augmented), the label set, the
 * general corpus, every option that changes what a member learns, the
 * member's name with its ordinal (hence its seed), for a ktfm member the
 * keys of the members before it, and for the bert member the SHA-256 of the
 * pretrained model.safetensors and tokenizer.json (hashed each run that
 * reuses members: about 0.2 s for the 90 MB) with its recipe. A later run
 * that lists the same member over the same rows loads it instead of
 * training it; its holdout figures
 * and temperature are computed afresh, so the choice is the same as if it
 * had been trained again (a loaded member predicts exactly what it did when
 * saved). Runs that add members after the listed ones pay only for those. */
#ifndef FINCH_DISTILL_TEACHER_H
#define FINCH_DISTILL_TEACHER_H

#include "core/dataset.h"
#include "core/db.h"
#include "core/status.h"

/* Every subset of the members is scored on the selection half: 2^12
 * averages of calibrated probabilities, a second or two at BANKING77's size. */
#define FINCH_TEACHER_MAX_MEMBERS 12

typedef struct {
  const char *dataset;
  const char *members;      /* comma-separated: slr, bow, tfm, ktfm (repeatable; bow and tfm members after the
                               first differ by seed), bert (once), at most FINCH_TEACHER_MAX_MEMBERS; NULL or
                               "" = finch_teacher_default_members() */
  unsigned long long seed;  /* also splits the holdout into its selection and report halves */
  int augmented;            /* 1 = train slr/bow on augmented rows too (default 1) */
  int tfm_augmented;        /* 1 = the encoders (tfm, bert) too (default 0: source rows) */
  const char *general;      /* general datasets by name for pre-training (comma-separated), NULL = none */
  int pretrain_epochs;      /* MLM epochs over the general corpus + training texts; 0 = none */
  int tfm_epochs;           /* fine-tuning epochs; 0 = default 30 */
  int bert_epochs;          /* the bert member's fine-tuning epochs (encoder and head, from the fitted head,
                               seeded by seed); 0 = none, the encoder stays frozen */
  int ngrams;               /* 1 = hashed character n-grams into the encoder (default 1) */
  unsigned dim, layers, heads, ff, seq_len, vocab; /* 0 = defaults 128, 2, 4, 512, 48, 8000 */
  float lr;                 /* 0 = default */
  int resume;               /* 1 = continue the encoders' training from their checkpoints (after a crash or
                               SIGKILL): $FINCH_HOME/checkpoints/<dataset>-<member>-<seed>.ck, written every
                               200 steps and removed when the run completes */
  const char *device;       /* cpu, cuda or auto */
  int quiet;
  int reuse_members;        /* 1 = keep trained members in the member cache and reuse them (above) */
  finch_negatives_query negatives; /* names set: out-of-scope training rows from these datasets, one more label */
  double min_margin;        /* quality gate (core/models.h): the report-half accuracy must be above that half's
                               majority-class rate by more than this (absolute; the CLI's default 0.10) */
  int allow_failed;         /* 1 = a teacher that fails the gate is registered 'failed' and FINCH_OK returned;
                               0 = registered 'failed', and FINCH_EINVAL returned naming the reason */
} finch_teacher_opts;

typedef struct {
  char name[32];
  double dev_acc, dev_nll; /* on the report half */
  double sel_acc, sel_nll; /* on the selection half, where the temperature was fitted */
  double temperature, seconds; /* seconds: training, or loading when reused */
  long long params;
  int cached; /* 1 = reused from the member cache */
} finch_teacher_member;

typedef struct {
  long long model_id;
  char path[4096];
  double dev_acc, dev_nll; /* the chosen ensemble on the report half */
  double sel_acc, sel_nll; /* on the selection half, where it was chosen */
  long long params, n_train, n_dev, n_general;
  long long n_sel, n_report; /* the halves of the n_dev holdout rows */
  size_t n_members;
  finch_teacher_member members[16];
  char chosen[256]; /* names of the chosen members, "+"-joined */
  double seconds;
  double majority;  /* the report half's majority-class rate */
  int failed;       /* 1 = registered 'failed' by the quality gate; gate says why */
  char gate[256];
  long long run_id; /* the training_runs row of its members' figures */
} finch_teacher_result;

/* The members a run without a list trains: "bert,bertft,slr,bow" when the
 * pretrained encoder is installed (the best teacher measured on BANKING77),
 * else "slr,bow,tfm". */
const char *finch_teacher_default_members(void);
/* 1 when the bert member's weights are installed (finch_pretrained_dir). */
int finch_teacher_pretrained_installed(void);

finch_status finch_teacher_train(finch_db *db, const finch_teacher_opts *opts, finch_teacher_result *res,
                                 finch_err *err);

#endif
