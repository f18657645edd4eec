/* The model registry: the `models` table, shared by the stages that make
 * models (distill, compile) and those that use them (eval, serve). */
#ifndef FINCH_CORE_MODELS_H
#define FINCH_CORE_MODELS_H

#include <stddef.h>

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
} finch_model_rec;

finch_status finch_models_register(finch_db *db, const finch_model_rec *rec, long long *id, finch_err *err);

/* Resolves a model reference: an existing file path, or a registered id.
 * path receives the file; *id the registered id (0 when the file is not
 * registered); kind (may be NULL, 16 bytes) the registered kind or "". */
finch_status finch_models_resolve(finch_db *db, const char *ref, char *path, size_t n, long long *id,
                                  char *kind, finch_err *err);

/* 1 when ref names an existing file rather than a registered id. */
int finch_models_ref_is_file(const char *ref);

/* Every registered model as a JSON array (malloc'd, caller frees). */
finch_status finch_models_list_json(finch_db *db, char **json, finch_err *err);

#endif
