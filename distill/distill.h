/* Distill: a teacher and a smaller student trained on a dataset's training
 * split (source and augmented rows), the student learning from the teacher's
 * temperature-softened probabilities and the hard labels (nn/model.h gives
 * the loss). Both are written as model files under $FINCH_HOME/models and
 * registered in `models` with their dev (holdout) accuracy. The weight of
 * the soft labels is set per example from its input complexity
 * (distill/complexity.h) unless a fixed alpha is given; every example's
 * scores and alpha are stored in complexity_scores.
 *
 * compile: a registered (or on-disk) model rewritten as a deployable file,
 * with weights stored in the chosen dtype, registered as stage 'compiled'. */
#ifndef FINCH_DISTILL_DISTILL_H
#define FINCH_DISTILL_DISTILL_H

#include "core/dataset.h"
#include "core/db.h"
#include "core/status.h"
#include "nn/model.h"

typedef struct {
  const char *dataset;
  unsigned long long seed;
  float alpha;          /* a fixed soft-label weight; 0 = per example from its complexity */
  const char *general;  /* general-domain datasets (comma-separated) for the domain term; NULL =
                           $FINCH_DATA_DIR/clinc150/wiki_sents.txt when present */
  float temperature;    /* default 2 */
  const char *teacher;  /* a trained teacher to distil: registered id, model file, alias, "best" (the
                           dataset's registered teacher with the highest dev accuracy that passed the quality
                           gate) or "latest" (the newest that passed); NULL = "best" when the dataset has
                           one, else a bag-of-n-grams teacher is trained here */
  int teacher_epochs;   /* 0 = the model defaults */
  const char *student;  /* "bow" (default: the bag-of-n-grams student) or "tfm" (a small encoder) */
  const char *stage;    /* "vertical" (default); "both": a general stage first (tfm: the teacher encoder's layers;
                           bow: the pretrained encoder's sentence vectors); tfm only: "general" */
  int teacher_init;     /* bow student: word rows from the teacher's pretrained encoder */
  const char *init_student; /* tfm student: start from this registered student (e.g. a general stage) */
  int hard_only;        /* 1 = no soft labels: the ablation's baseline */
  int intermediate;     /* tfm student: 1 = match the teacher encoder's hidden states and attention (default),
                           0 = soft and hard labels only */
  int progressive;      /* 1 = intermediate layers join shallow first (default) */
  float inter_weight;   /* weight of each intermediate loss (default 0.4) */
  int general_max;      /* general-stage texts at most (default 50000) */
  int general_epochs;   /* general-stage epochs (default 2) */
  int head_gates;       /* tfm student: input-dependent attention-head gates with a sparsity penalty */
  float gate_penalty;   /* their penalty lambda * mean(gate) (default 0.02) */
  int resume;           /* tfm student: continue from the stage checkpoints under $FINCH_HOME/checkpoints */
  int student_epochs;
  int student_dim;      /* the student's width (bow: embedding, default 48; tfm: default 64); 0 = default */
  int student_buckets;  /* bow student: hashed n-gram rows (default 32768); 0 = default */
  finch_negatives_query negatives; /* names set: out-of-scope training rows (label "oos"); the teacher must have
                                      been trained with the same ones */
  const char *device;   /* cpu, cuda or auto */
  int quiet;            /* no per-epoch progress */
  double min_margin;    /* quality gate of a teacher trained here (core/models.h): its dev accuracy must be above
                           the dev rows' majority-class rate by more than this (CLI default 0.10) */
  double min_teacher_ratio; /* quality gate of the student: its dev accuracy at least this times its teacher's
                               (CLI default 0.9; 0 = no gate); an external teacher has no accuracy to compare */
  int allow_failed;     /* 1 = a model that fails the gate is registered 'failed' and the run goes on (a failed
                           teacher named here is distilled); 0 = FINCH_EINVAL naming the reason, after the
                           failed model is registered */
} finch_distill_opts;

typedef struct {
  long long teacher_id, student_id;
  double teacher_dev_acc, student_dev_acc;
  long long n_train, n_dev;
  long long teacher_params, student_params;
  double teacher_seconds, student_seconds;
  char teacher_path[4096], student_path[4096];
  int dynamic_alpha;          /* alpha came from each example's complexity */
  long long complexity_hist[10]; /* training rows by complexity c, bins of 0.1 */
  double mean_alpha;
  long long n_general;        /* general-domain texts behind the domain term */
  char student_arch[16];      /* "bow" or "tfm" */
  char stage[16];             /* the student's stage: finance (bow), vertical, general or both */
  int gated;                  /* the student has head gates: gate_share is set */
  char run[128];              /* training_metrics.run of a tfm student's steps */
  int external_teacher;       /* the teacher was external: soft labels from teacher_outputs, no dev figures */
  double gate_share[10];      /* mean share of heads open, by complexity bin of 0.1 (training rows) */
  long long gate_n[10];
  long long n_general_stage;  /* bow student: general-stage texts (0 = none) */
  double general_loss;        /* bow student: its last epoch's unexplained variance */
  int teacher_init;           /* bow student: word rows started from the teacher's encoder */
  long long soft_stored, soft_computed; /* training rows whose soft labels were read from teacher_outputs, computed */
  int teacher_failed, student_failed; /* registered 'failed' by the quality gate; gate says why */
  char gate[256];
  long long run_id;           /* the student's training_runs row */
} finch_distill_result;

finch_status finch_distill_run(finch_db *db, const finch_distill_opts *opts, finch_distill_result *res,
                               finch_err *err);

/* Choosing the out-of-scope policy (nn/abstain.h) a model is compiled with. */
typedef struct {
  const char *method;          /* "threshold" (default), "class", "both" or "none" (remove the policy) */
  const char *dataset;         /* whose holdout (split dev) the threshold is chosen on: its selection half */
  const char *oos_label;       /* the out-of-scope label in that holdout and the model (default "oos") */
  const char *negatives;       /* datasets (comma-separated) whose dev rows are out-of-scope examples too */
  const char *negatives_exclude; /* negatives' meta domains left out (default: none) */
  size_t negatives_max;        /* at most this many negatives (0 = all) */
  double in_scope_recall;      /* target: answer at least this share of in-scope rows (default 0.99) */
  double oos_recall;           /* or: refuse at least this share of out-of-scope rows */
  unsigned long long seed;     /* the holdout's selection/report halves (the teacher's: same seed, same halves) */
} finch_abstain_opts;

typedef struct {
  long long n_in, n_out, n_negatives; /* selection rows: in scope, out of scope (of which negatives) */
  float temperature, threshold;
  double sel_in_scope_recall, sel_oos_recall; /* the policy's figures on those rows */
  char target[96];
} finch_abstain_result;

/* Chooses m's policy (options above) and writes it into m's metadata. */
finch_status finch_abstain_fit(finch_db *db, nn_model *m, const finch_abstain_opts *o,
                               finch_abstain_result *res, finch_err *err);

typedef struct {
  const char *model; /* registered id or file path */
  const char *out;   /* output file path */
  const char *dtype; /* "f32" or "q8" */
  finch_abstain_opts abstain; /* method NULL = keep the model's policy as it is */
} finch_compile_opts;

typedef struct {
  long long model_id; /* registered id of the compiled file */
  long long bytes;
  char sha256[65];
  int abstain;                  /* 1 = a policy was chosen: figures below */
  finch_abstain_result abstain_fit;
} finch_compile_result;

finch_status finch_compile_run(finch_db *db, const finch_compile_opts *opts, finch_compile_result *res,
                               finch_err *err);

#endif
