/* The model registry: the `models` table, shared by the stages that make
 * models (distill, compile) and those that use them (eval, serve). */
#ifndef FINCH_CORE_MODELS_H
#define FINCH_CORE_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/db.h"
#include "core/status.h"

typedef struct {
  const char *kind;     /* "teacher" or "student" */
  const char *stage;    /* "finance", "compiled", ... */
  const char *arch;     /* "bow" */
  const char *dtype;    /* "f32", "q8" */
  const char *dataset;  /* dataset name, may be NULL */
  long long parent_id;  /* 0 = none */
  const char *path;     /* absolute path of the model file */
  const char *sha256;   /* of the file */
  long long params;
  long long bytes;
  const char *config_json;  /* may be NULL */
  const char *metrics_json; /* may be NULL */
  const char *status;       /* "ok" (NULL) or "failed": the quality gate's verdict (below) */
} finch_model_rec;

finch_status finch_models_register(finch_db *db, const finch_model_rec *rec, long long *id, finch_err *err);

/* Resolves a model reference: an existing file path, a registered id, an
 * alias (finch_models_tag), or "best" / "latest" (finch_models_pick). path
 * receives the file; *id the registered id (0 when the file is not
 * registered); kind (may be NULL, 16 bytes) the registered kind or "".
 * finch_models_resolve is finch_models_resolve_in with no scope: an alias
 * bound in one dataset only, and best/latest refused (they need a dataset). */
finch_status finch_models_resolve(finch_db *db, const char *ref, char *path, size_t n, long long *id,
                                  char *kind, finch_err *err);
/* The same within a scope the caller knows: want_kind ("teacher",
 * "student" or NULL) and dataset (or NULL) choose among aliases and scope
 * best/latest. */
finch_status finch_models_resolve_in(finch_db *db, const char *ref, const char *want_kind, const char *dataset,
                                     char *path, size_t n, long long *id, char *kind, finch_err *err);

/* The registered id a reference that is not a file names: an id (checked
 * to be registered), best, latest or an alias, within the scope as above. */
finch_status finch_models_lookup(finch_db *db, const char *ref, const char *want_kind, const char *dataset,
                                 long long *id, finch_err *err);

/* "best": the model of that kind (NULL = any) and dataset with the highest
 * metrics.dev_accuracy (the accuracy each trainer registers: a teacher's on
 * its holdout's report half, a student's on the holdout), the newest among
 * equals; "latest": the newest. Neither picks a model whose status is
 * 'failed'. FINCH_ENOTFOUND says whether none is registered or every one
 * failed the quality gate. */
finch_status finch_models_pick(finch_db *db, const char *which, const char *kind, const char *dataset, long long *id,
                               finch_err *err);

/* Up to max ids of the models of that kind (NULL = any) and dataset that
 * passed the quality gate, best first (the order of "best" above), in ids;
 * *n how many. */
finch_status finch_models_ranked(finch_db *db, const char *kind, const char *dataset, long long *ids, size_t max,
                                 size_t *n, finch_err *err);

/* An alias name: a letter, then up to 63 letters, digits, '_', '.' or '-';
 * not "best", "latest" or "none". 1 when valid, else 0 with the reason in err. */
int finch_models_alias_valid(const char *alias, finch_err *err);
/* Binds alias to model id within the model's dataset, moving it from the
 * model it named before; the move is appended to model_alias_history. */
finch_status finch_models_tag(finch_db *db, long long id, const char *alias, finch_err *err);
/* Removes alias from dataset (FINCH_ENOTFOUND when it is not bound). */
finch_status finch_models_untag(finch_db *db, const char *alias, const char *dataset, finch_err *err);

/* The quality gate. A teacher passes when its accuracy is above the
 * majority-class rate of the rows it was measured on by more than margin
 * (absolute); a student when its accuracy is at least ratio times its
 * teacher's on the same rows. Return 1 = passed; 0 = failed, with the
 * reason, one sentence naming the figures, in reason (n bytes). */
#define FINCH_GATE_MIN_MARGIN "0.10"
#define FINCH_GATE_MIN_TEACHER_RATIO "0.9"
int finch_models_gate_teacher(double acc, double majority, double margin, char *reason, size_t n);
int finch_models_gate_student(double acc, double teacher_acc, double ratio, char *reason, size_t n);
/* The majority-class rate of labels[0..n): the share of the most frequent
 * label (labels < 0 are counted as their own class). 0 when n is 0. */
double finch_models_majority_rate(const int32_t *labels, size_t n);
/* The status ("ok" or "failed") and metrics.gate reason of model id; the
 * reason is "" when none was recorded. */
finch_status finch_models_status(finch_db *db, long long id, char *status, size_t sn, char *reason, size_t rn,
                                 finch_err *err);

/* 1 when ref names an existing file rather than a registered id. */
int finch_models_ref_is_file(const char *ref);

/* Every registered model as a JSON array (malloc'd, caller frees), each
 * with its status and aliases. */
finch_status finch_models_list_json(finch_db *db, char **json, finch_err *err);

#endif
