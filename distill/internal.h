/* Shared by the distill stage's files; not for other rooms. */
#ifndef FINCH_DISTILL_INTERNAL_H
#define FINCH_DISTILL_INTERNAL_H

#include <libpq-fe.h>
#include <stddef.h>

#include "core/dataset.h"
#include "core/db.h"
#include "core/status.h"
#include "distill/distill.h"
#include "nn/backend.h"
#include "nn/model.h"
#include "nn/tfm_train.h"

/* Per-step progress of an encoder's training: a line on the terminal (a
 * bar on a TTY, a log line every 15 s otherwise) and one training_metrics row
 * a step, buffered until finch_distill__flush_steps. */
typedef struct {
  const char *member; /* shown in the progress line */
  const char *phase;  /* "pretrain", "finetune", "general", "vertical" */
  int tty, quiet;
  double last_print;
  char *buf; /* COPY text rows */
  size_t len, cap;
  char run[128]; /* training_metrics.run: the member's name and the run's dataset, pid and time */
  long long run_id; /* training_metrics.run_id: the training_runs row (finch_distill__run_begin) */
} finch_distill__steplog;

/* nn_tfm_step_cb for a finch_distill__steplog. */
void finch_distill__on_step(void *ctx, const nn_tfm_progress *p);
/* COPYs the buffered rows into training_metrics and empties the buffer. */
finch_status finch_distill__flush_steps(finch_db *db, finch_distill__steplog *s, finch_err *err);

/* One training_metrics row of per-epoch figures (no per-step columns);
 * dev_acc or dev_loss < 0 = NULL. */
void finch_distill__log_epoch(finch_distill__steplog *s, uint64_t step, uint32_t epoch, double loss, double lr,
                              double dev_acc, double dev_loss);

/* Per-epoch figures of a trainer without per-step rows (a bag-of-n-grams
 * teacher member or student, the student's general stage, the sparse LR's
 * L-BFGS iterations): one training_metrics row an epoch into log, with the
 * accuracy and mean NLL on the dev rows when the trainer shows its model and
 * dev rows are given. The dev rows are the holdout's selection half, never
 * the report half, which takes no part in any choice. */
typedef struct {
  finch_distill__steplog *log;
  const char *const *dev_texts;
  const int32_t *dev_labels;
  size_t n_dev;
  int owned; /* dev_texts and dev_labels are this logger's (finch_distill__selection_rows) */
  uint32_t iters;            /* finch_distill__on_slr_iter: iterations so far, */
  double last_loss, last_lr; /* and the last one's objective and step length */
} finch_distill__epochlog;

/* nn_epoch_info_cb for a finch_distill__epochlog. */
void finch_distill__on_epoch(void *ctx, const nn_epoch_info *e);
/* nn_sparse_lr_iter_cb for a finch_distill__epochlog: the objective as the
 * loss, the step length as the learning rate. */
void finch_distill__on_slr_iter(void *ctx, uint32_t it, uint32_t max_iter, double objective, double step);
/* Sets el's dev rows to the selection half of the holdout rows texts, y (n;
 * labels indexed in a list of C labels) under seed, as nn_split_halves deals them; rows whose label
 * is unknown (-1) are left out. */
void finch_distill__selection_rows(const char *const *texts, const int32_t *y, size_t n, size_t C,
                                   unsigned long long seed, finch_distill__epochlog *el);
void finch_distill__epochlog_free(finch_distill__epochlog *el);

/* A training run: one finch teacher train or one transformer student's
 * training, a row of training_runs whose id every training_metrics row of
 * the run carries. kind is "teacher" or "student". */
finch_status finch_distill__run_begin(finch_db *db, const char *kind, const char *dataset, long long *run_id,
                                      finch_err *err);
/* Ties run run_id and its training_metrics rows to the registered model. */
finch_status finch_distill__run_finish(finch_db *db, long long run_id, long long model_id, finch_err *err);

/* A copy of tokenizer t (each model owns its own). */
finch_status finch_distill__tokenizer_copy(const nn_tokenizer *t, nn_tokenizer **out, finch_err *err);
/* Copies every tensor of src into the tensor of dst with the same name and
 * shape; the classifier head (cls_w, cls_b) too only when with_head. Returns
 * the number of tensors copied. */
size_t finch_distill__copy_tensors(nn_tfm *dst, const nn_tfm *src, int with_head);

/* The teacher's probabilities at tau for every row of train into soft
 * (n, n_labels; the teacher's labels are the dataset's, in order): rows
 * stored in teacher_outputs for (teacher_id, tau) are read, the rest
 * computed and stored chunk by chunk (distill/soft_store.c). teacher_id 0 =
 * an unregistered teacher: everything is computed, nothing stored. */
finch_status finch_distill__teacher_soft(finch_db *db, long long teacher_id, const nn_model *teacher,
                                         const finch_dataset_split *train, float tau, int quiet, float *soft,
                                         long long *n_stored, long long *n_computed, finch_err *err);

/* The training rows of dataset: its split train, plus, when neg names
 * datasets, their rows (split neg->split, default train; sampled with
 * neg->seed, default seed) under label neg->label (default "oos"), merged in
 * id order (distill/rows.c). */
finch_status finch_distill__train_rows(finch_db *db, const char *dataset, const finch_negatives_query *neg,
                                       unsigned long long seed, finch_dataset_split **out, finch_err *err);

/* The general stage's texts: the named general datasets, then the
 * Wikipedia sentences (finch_dataset_general_texts), at most cap of them
 * spread evenly and deterministically over the whole list. *gen owns the
 * strings (the caller frees it with finch_dataset_texts_free, also on
 * error), *texts (malloc'd) points into it, *k of them; FINCH_ENOTFOUND,
 * naming --stage stage, when there are none (distill/rows.c). */
finch_status finch_distill__general_sample(finch_db *db, const char *names, size_t cap, const char *stage,
                                           finch_dataset_texts **gen, const char ***texts, size_t *k,
                                           finch_err *err);

/* The pretrained encoder member of teacher m (m itself when it is one), or NULL. */
const nn_model *finch_distill__find_bert(const nn_model *m);

/* Everything the bag-of-n-grams student needs from finch_distill_run. */
typedef struct {
  finch_db *db;
  const finch_distill_opts *opts;
  nn_backend *be;
  const nn_model *teacher; /* NULL for an external teacher */
  const nn_dataset *ds;
  const char *const *labels;
  size_t nl;
  const nn_train_config *cfg;
  const nn_kd_config *kd; /* NULL = hard labels only */
  nn_epoch_info_cb cb;     /* after each labelled epoch */
  void *cb_ctx;
  nn_epoch_info_cb gen_cb; /* after each general-stage epoch */
  void *gen_ctx;
  finch_distill_result *res; /* n_general_stage, general_loss, teacher_init */
} finch_distill__bow_args;

/* Trains the bag-of-n-grams student (distill/student_bow.c). */
finch_status finch_distill__bow_student(const finch_distill__bow_args *a, nn_model **out, finch_err *err);

/* Everything the transformer student needs from finch_distill_run. */
typedef struct {
  finch_db *db;
  const finch_distill_opts *opts;
  nn_backend *be;
  const char *const *labels;
  size_t nl;
  const char *const *texts; /* training rows */
  const int32_t *y;
  size_t n;
  const float *soft;        /* (n,nl) teacher probabilities at tau, NULL = hard labels only */
  const float *alpha;       /* (n) per-row soft-label weight, NULL = fixed_alpha */
  float fixed_alpha, tau;
  const nn_model *teacher;  /* its first encoder gives the tokenizer and the layers to match */
  const nn_model *init;     /* a student to start from, or NULL */
  uint32_t dim, layers, heads, ff, buckets, epochs;
  float hidden_weight, attn_weight;
  int head_gates;           /* 1 = input-dependent head gates in the student */
  float gate_penalty;
  const float *complexity;  /* (n) each row's complexity c in [0,1], or NULL */
  double *seconds;          /* training time, out */
  double *gate_share;       /* (10) out: mean share of heads open per complexity bin of 0.1 */
  long long *gate_n;        /* (10) out: rows per bin */
  const char *run;          /* training_metrics.run of this training */
  long long run_id;         /* its training_runs id */
  const char *checkpoint;   /* checkpoint path of each stage's training ("-general" / "-vertical" appended) */
  int resume;
} finch_distill__tfm_args;

/* Trains the transformer student (distill/student.c). */
finch_status finch_distill__tfm_student(const finch_distill__tfm_args *a, nn_model **out, finch_err *err);

#endif
