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

#include "core/db.h"
#include "core/status.h"

typedef struct {
  const char *dataset;
  unsigned long long seed;
  float alpha;          /* a fixed soft-label weight; 0 = per example from its complexity */
  const char *general;  /* general-domain datasets (comma-separated) for the domain term; NULL =
                           $FINCH_DATA_DIR/clinc150/wiki_sents.txt when present */
  float temperature;    /* default 2 */
  const char *teacher;  /* a trained teacher to distil: registered id, model file, or "latest" (the
                           newest registered teacher of the dataset); NULL = train the bag-of-n-grams
                           teacher here */
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
  const char *device;   /* cpu, cuda or auto */
  int quiet;            /* no per-epoch progress */
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
} finch_distill_result;

finch_status finch_distill_run(finch_db *db, const finch_distill_opts *opts, finch_distill_result *res,
                               finch_err *err);

typedef struct {
  const char *model; /* registered id or file path */
  const char *out;   /* output file path */
  const char *dtype; /* "f32" or "q8" */
} finch_compile_opts;

typedef struct {
  long long model_id; /* registered id of the compiled file */
  long long bytes;
  char sha256[65];
} finch_compile_result;

finch_status finch_compile_run(finch_db *db, const finch_compile_opts *opts, finch_compile_result *res,
                               finch_err *err);

#endif
