/* The bag-of-n-grams student: soft + hard labels from the teacher and, when
 * the teacher holds the pretrained encoder, its two optional starts (word
 * rows from the encoder, a general stage on its sentence vectors: nn/model.h,
 * nn_bow_prior). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/dataset.h"
#include "core/log.h"
#include "distill/internal.h"
#include "nn/bert.h"
#include "nn/model_arch.h"

enum { BOW_GENERAL_MAX = 20000, BOW_GENERAL_EPOCHS = 5, EMBED_BATCH = 64 };

const nn_model *finch_distill__find_bert(const nn_model *m) {
  if (!m) return NULL;
  if (nn_model_bert(m)) return m;
  for (size_t i = 0; i < nn_model_n_members(m); i++)
    if (nn_model_bert(nn_model_member(m, i))) return nn_model_member(m, i);
  return NULL;
}

typedef struct {
  const nn_model *bert;
  nn_backend *be;
} embed_ctx;

static finch_status word_vectors(void *ctx, const char *const *words, size_t n, uint32_t *dim, float **vectors,
                                 finch_err *err) {
  const embed_ctx *c = ctx;
  const uint32_t D = nn_bert_get_config(nn_model_bert(c->bert))->dim;
  float *v = malloc((n ? n : 1) * D * sizeof *v);
  if (!v) return finch_err_set(err, FINCH_ENOMEM, "out of memory for %zu word vectors", n);
  double t0 = finch_clock_s();
  finch_status st = nn_model_bert_embed(c->bert, c->be, words, n, EMBED_BATCH, v, err);
  if (st) {
    free(v);
    return st;
  }
  finch_info("bow student: %zu vocabulary words embedded by the teacher's encoder in %.1f s", n, finch_clock_s() - t0);
  *dim = D;
  *vectors = v;
  return FINCH_OK;
}

finch_status finch_distill__bow_student(const finch_distill__bow_args *a, nn_model **out, finch_err *err) {
  *out = NULL;
  const finch_distill_opts *o = a->opts;
  const int general = o->stage && (!strcmp(o->stage, "both") || !strcmp(o->stage, "general"));
  if (o->stage && *o->stage && strcmp(o->stage, "both") && strcmp(o->stage, "vertical"))
    return finch_err_set(err, FINCH_EINVAL, "--stage %s: a bow student has the stages vertical (default) or both "
                         "(general, then vertical)", o->stage);
  const nn_model *bert = finch_distill__find_bert(a->teacher);
  if ((general || o->teacher_init) && !bert)
    return finch_err_set(err, FINCH_EINVAL, "%s needs a teacher with the pretrained encoder (finch teacher train "
                         "--members bert,...)", general ? "--stage both" : "--teacher-init");
  embed_ctx ec = {.bert = bert, .be = a->be};
  nn_bow_prior prior = {0};
  finch_dataset_texts *gen = NULL;
  float *targets = NULL;
  const char **texts = NULL;
  finch_status st = FINCH_OK;
  if (o->teacher_init) {
    prior.word_vectors = word_vectors;
    prior.ctx = &ec;
  }
  if (general) {
    size_t k = 0;
    if ((st = finch_distill__general_sample(a->db, o->general,
                                            o->general_max > 0 ? (size_t)o->general_max : BOW_GENERAL_MAX, "both",
                                            &gen, &texts, &k, err)) != FINCH_OK)
      goto out;
    const uint32_t E = nn_bert_get_config(nn_model_bert(bert))->dim;
    if (!(targets = malloc(k * E * sizeof *targets))) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory for %zu sentence vectors", k);
      goto out;
    }
    double t0 = finch_clock_s();
    if ((st = nn_model_bert_embed(bert, a->be, texts, k, EMBED_BATCH, targets, err)) != FINCH_OK) goto out;
    finch_info("bow student, general stage: %zu general-domain texts embedded by the teacher's encoder in %.1f s", k,
               finch_clock_s() - t0);
    prior.gen_texts = texts;
    prior.gen_targets = targets;
    prior.n_gen = k;
    prior.gen_dim = E;
    prior.gen_epochs = o->general_epochs > 0 ? (uint32_t)o->general_epochs : BOW_GENERAL_EPOCHS;
  }
  prior.gen_cb = a->gen_cb;
  prior.gen_ctx = a->gen_ctx;
  st = nn_model_train_watched(out, a->ds, a->labels, a->nl, a->cfg, a->kd, (o->teacher_init || general) ? &prior : NULL,
                              a->be, a->cb, a->cb_ctx, err);
  if (st) goto out;
  if (o->teacher_init)
    finch_info("bow student: %zu word rows and %zu n-gram rows started from the teacher's encoder (%u principal axes "
               "keep %.1f%% of its word vectors' variance)", prior.words_init, prior.rows_init, a->cfg->dim,
               100.0 * prior.words_explained);
  if (general)
    finch_info("bow student, general stage: %u epochs on %zu texts, unexplained variance of the teacher's sentence "
               "vectors %.3f after the first epoch, %.3f after the last", prior.gen_epochs, prior.n_gen,
               prior.gen_loss_first, prior.gen_loss_last);
  if (a->res) {
    a->res->n_general_stage = (long long)prior.n_gen;
    a->res->general_loss = prior.gen_loss_last;
    a->res->teacher_init = o->teacher_init;
  }
out:
  free(texts);
  free(targets);
  finch_dataset_texts_free(gen);
  return st;
}
