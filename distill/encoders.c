/* What the teacher's encoder members and the transformer student both do
 * with an encoder: copy a tokenizer, carry tensors over from another. */
#include <stdlib.h>
#include <string.h>

#include "distill/internal.h"

finch_status finch_distill__tokenizer_copy(const nn_tokenizer *t, nn_tokenizer **out, finch_err *err) {
  unsigned char *b = NULL;
  size_t n = 0;
  finch_status st = nn_tokenizer_save(t, &b, &n, err);
  if (!st) st = nn_tokenizer_load(out, b, n, err);
  free(b);
  return st;
}

size_t finch_distill__copy_tensors(nn_tfm *dst, const nn_tfm *src, int with_head) {
  size_t copied = 0;
  for (size_t i = 0; i < nn_tfm_n_tensors(dst); i++) {
    const nn_tfm_tensor *t = nn_tfm_tensor_at(dst, i), *s = nn_tfm_tensor_find(src, t->name);
    if (!s || s->rows != t->rows || s->cols != t->cols) continue;
    if (!with_head && (!strcmp(t->name, "cls_w") || !strcmp(t->name, "cls_b"))) continue;
    memcpy(nn_tfm_params(dst) + t->off, nn_tfm_params_const(src) + s->off, (size_t)t->rows * t->cols * sizeof(float));
    copied++;
  }
  return copied;
}
