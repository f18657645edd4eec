#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/models.h"
#include "distill/distill.h"
#include "nn/model.h"
#include "nn/model_arch.h"

finch_status finch_compile_run(finch_db *db, const finch_compile_opts *opts, finch_compile_result *res,
                               finch_err *err) {
  memset(res, 0, sizeof *res);
  const char *dt = opts->dtype ? opts->dtype : "q8";
  nn_dtype dtype;
  if (strcmp(dt, "f32") == 0)
    dtype = NN_DTYPE_F32;
  else if (strcmp(dt, "q8") == 0)
    dtype = NN_DTYPE_Q8;
  else
    return finch_err_set(err, FINCH_EINVAL, "unknown dtype '%s' (f32 or q8)", dt);
  char path[PATH_MAX], kind[16];
  long long src_id;
  finch_status st = finch_models_resolve(db, opts->model, path, sizeof path, &src_id, kind, err);
  if (st) return st;
  nn_model *m = NULL;
  st = nn_model_load(&m, path, err);
  if (st) return st;
  if (opts->abstain.method) {
    finch_abstain_opts ao = opts->abstain;
    char ds[256];
    if (!ao.dataset && nn_model_meta_string(m, "dataset", ds, sizeof ds)) ao.dataset = ds;
    st = finch_abstain_fit(db, m, &ao, &res->abstain_fit, err);
    if (st) {
      nn_model_free(m);
      return st;
    }
    res->abstain = 1;
  }
  /* An unregistered file: its own metadata says what it is. */
  if (!kind[0] && (!nn_model_meta_string(m, "kind", kind, sizeof kind) || strcmp(kind, "teacher") != 0))
    snprintf(kind, sizeof kind, "student");
  st = nn_model_save(m, opts->out, dtype, res->sha256, err);
  if (!st) {
    struct stat sb;
    stat(opts->out, &sb);
    res->bytes = (long long)sb.st_size;
    char abs[PATH_MAX];
    if (!realpath(opts->out, abs)) snprintf(abs, sizeof abs, "%s", opts->out);
    char dataset[256];
    nn_model_meta_string(m, "dataset", dataset, sizeof dataset);
    finch_model_rec rec = {.kind = kind, .stage = "compiled", .arch = nn_model_arch_name(m), .dtype = dt,
                           .dataset = dataset[0] ? dataset : NULL, .parent_id = src_id, .path = abs, .sha256 = res->sha256,
                           .params = (long long)nn_model_n_params(m), .bytes = res->bytes,
                           .config_json = nn_model_meta(m)};
    st = finch_models_register(db, &rec, &res->model_id, err);
  }
  nn_model_free(m);
  return st;
}
