/* The "slr" architecture behind nn_model: a sparse TF-IDF logistic
 * regression (nn/sparse_lr.h). File sections after the head: "SLR", the
 * sparse model blob. */
#include <stdlib.h>

#include "nn/model_arch.h"
#include "nn/model_impl.h"
#include "nn/sparse_lr.h"

finch_status nn_model_from_sparse_lr(nn_model **out, nn_sparse_lr *slr, const char *const *labels,
                                     size_t n_labels, finch_err *err) {
  finch_status st = nn__model_new(out, &nn__slr_vt, slr, labels, n_labels, err);
  if (st) nn_sparse_lr_free(slr);
  return st;
}

static int slr_predict(const nn_model *m, const char *text, float *probs, float temperature) {
  return nn_sparse_lr_predict(m->impl, text, probs, temperature);
}

static size_t slr_n_params(const nn_model *m) { return nn_sparse_lr_n_params(m->impl); }

static finch_status slr_write(const nn_model *m, nn_dtype dtype, nn_file_writer *w, finch_err *err) {
  (void)dtype; /* the blob is F32 whatever the dtype */
  unsigned char *blob = NULL;
  size_t len = 0;
  finch_status st = nn_sparse_lr_save(m->impl, &blob, &len, err);
  if (st != FINCH_OK) return st;
  nn__model_write_head(w, m);
  nn__file_section(w, "SLR", blob, len);
  free(blob);
  return FINCH_OK;
}

static finch_status slr_load(nn_model **out, const nn_blob *secs, size_t n, const char *path, finch_err *err) {
  nn_model_head h;
  finch_status st = nn__model_read_head(secs, n, path, &h, err);
  if (st != FINCH_OK) return st;
  const nn_blob *slr = nn__file_find(secs, n, "SLR");
  nn_sparse_lr *s = NULL;
  if (!slr) st = finch_err_set(err, FINCH_EFORMAT, "%s: an slr model needs an SLR section", path);
  else if ((st = nn_sparse_lr_load(&s, slr->data, slr->size, err)) != FINCH_OK ||
           (st = nn_model_from_sparse_lr(out, s, (const char *const *)h.labels, h.n_labels, err)) != FINCH_OK) {
    finch_err_prefix(err, "%s", path);
    if (err) err->code = st;
  } else {
    (*out)->meta = h.meta;
    h.meta = NULL;
  }
  nn__model_head_free(&h);
  return st;
}

static void slr_free(void *impl) { nn_sparse_lr_free(impl); }

const nn_model_vt nn__slr_vt = {
    .id = NN_ARCH_SLR, .name = "slr", .predict = slr_predict, .predict_many = NULL, .n_params = slr_n_params,
    .config = NULL, .write = slr_write, .load = slr_load, .free_impl = slr_free,
};
