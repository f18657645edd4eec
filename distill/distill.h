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
  int teacher_epochs;   /* 0 = the model defaults */
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
