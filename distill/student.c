/* The transformer student: a small encoder distilled from the teacher's
 * soft labels and, when the teacher holds an encoder, from its hidden states
 * and attention maps, in up to two stages (general domain, then finance). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/dataset.h"
#include "core/log.h"
#include "distill/internal.h"
#include "nn/model_arch.h"
#include "nn/tfm_train.h"

/* Encodes texts for the student and, when matching layers, for the teacher. */
static finch_status encode_pair(const finch_distill__tfm_args *a, const nn_tokenizer *tok, const char *const *texts,
                                size_t n, int T, const nn_model *tt, nn_tfm_corpus *xs, nn_tfm_corpus *xt,
                                finch_err *err) {
  finch_status st = nn_tfm_corpus_encode(xs, tok, texts, n, T, a->buckets, 3, 5, err);
  if (st || !tt) return st;
  uint32_t minn = 0, maxn = 0;
  nn_model_tfm_seq_len(tt, &minn, &maxn);
  st = nn_tfm_corpus_encode(xt, nn_model_tokenizer(tt), texts, n, T, nn_tfm_get_config(nn_model_tfm(tt))->buckets,
                            minn, maxn, err);
  if (st) nn_tfm_corpus_free(xs);
  return st;
}

finch_status finch_distill__tfm_student(const finch_distill__tfm_args *a, nn_model **out, finch_err *err) {
  *out = NULL;
  const finch_distill_opts *o = a->opts;
  const nn_model *tt = nn_model_find_tfm(a->teacher);
  if (!tt)
    return finch_err_set(err, FINCH_EINVAL, "a transformer student needs a teacher with an encoder member (the "
                         "tokenizer and the layers to match come from it): train one with finch teacher train "
                         "--members ...,tfm and pass it with --teacher");
  const nn_tfm_config *tc = nn_tfm_get_config(nn_model_tfm(tt));
  const int T = nn_model_tfm_seq_len(tt, NULL, NULL);
  const int match = o->intermediate != 0;
  const char *stage = o->stage && *o->stage ? o->stage : "vertical";
  const int do_general = !strcmp(stage, "general") || !strcmp(stage, "both");
  const int do_vertical = !strcmp(stage, "vertical") || !strcmp(stage, "both");
  if (!do_general && !do_vertical)
    return finch_err_set(err, FINCH_EINVAL, "--stage %s: expected general, vertical or both", stage);
  nn_tfm_config sc = {.vocab = tc->vocab, .buckets = a->buckets, .max_len = (uint32_t)T, .dim = a->dim,
                      .layers = a->layers, .heads = a->heads, .ff = a->ff, .n_labels = (uint32_t)a->nl,
                      .pool = NN_POOL_MEAN, .dropout = 0.1f, .head_gates = a->head_gates ? 1u : 0u};
  if (tc->heads % sc.heads) sc.heads = 1;
  /* Student layer l matches teacher layer round((l+1) * Lt / Ls) - 1: the
   * last student layer the last teacher layer. */
  int32_t map[64];
  for (uint32_t l = 0; l < sc.layers && l < 64; l++)
    map[l] = (int32_t)(((uint64_t)(l + 1) * tc->layers + sc.layers / 2) / sc.layers) - 1;
  nn_tfm *s = NULL;
  nn_tfm_corpus xs = {0}, xt = {0};
  finch_dataset_texts *gen = NULL;
  finch_distill__steplog pg = {.member = "student", .tty = isatty(2), .quiet = o->quiet, .run_id = a->run_id};
  snprintf(pg.run, sizeof pg.run, "%s", a->run ? a->run : "student");
  char ck[4200];
  finch_status st = nn_tfm_create(&s, &sc, o->seed, err);
  if (st) return st;
  if (o->init_student && *o->init_student && a->init) {
    /* Start from a general-stage student: every tensor of the same name and shape. */
    const nn_tfm *src = nn_model_tfm(a->init);
    size_t copied = src ? finch_distill__copy_tensors(s, src, 0) : 0;
    if (!src || !copied) {
      st = finch_err_set(err, FINCH_EINVAL, "--init %s: not a transformer student of this shape", o->init_student);
      goto out;
    }
    finch_info("student initialised from %s (%zu tensors)", o->init_student, copied);
  }
  double t0 = finch_clock_s();
  if (do_general) {
    /* General stage: the teacher encoder's hidden states and attention on
     * general-domain text (no labels there for the finance head). */
    const char **texts = NULL;
    size_t k = 0;
    if ((st = finch_distill__general_sample(a->db, o->general, o->general_max > 0 ? (size_t)o->general_max : 50000,
                                            stage, &gen, &texts, &k, err)) != FINCH_OK)
      goto out;
    st = encode_pair(a, nn_model_tokenizer(tt), texts, k, T, match ? tt : NULL, &xs, &xt, err);
    free(texts);
    if (st) goto out;
    nn_tfm_train_config trc = nn_tfm_train_defaults();
    trc.epochs = o->general_epochs > 0 ? (uint32_t)o->general_epochs : 2;
    trc.batch = 64;
    trc.lr = 2e-3f;
    trc.cls_weight = 0;
    trc.seed = o->seed;
    /* Without layer matching the general stage learns by masked tokens. */
    if (!match) trc.mlm_prob = 0.15f;
    nn_tfm_data d = {.x = &xs, .teacher = match ? nn_model_tfm(tt) : NULL, .tx = match ? &xt : NULL,
                     .layer_map = map, .hidden_weight = a->hidden_weight, .attn_weight = a->attn_weight,
                     .progressive = o->progressive};
    pg.phase = "general";
    if (a->checkpoint) {
      snprintf(ck, sizeof ck, "%s-general", a->checkpoint);
      trc.checkpoint = ck;
      trc.resume = a->resume;
    }
    finch_info("general stage: %zu texts, %s, %u epochs", k, match ? "teacher layers matched" : "masked tokens",
               trc.epochs);
    if ((st = nn_tfm_train(s, a->be, &d, &trc, finch_distill__on_step, &pg, err)) != FINCH_OK) goto out;
    if (a->checkpoint) unlink(ck);
    if ((st = finch_distill__flush_steps(a->db, &pg, err)) != FINCH_OK) goto out;
    nn_tfm_corpus_free(&xs);
    nn_tfm_corpus_free(&xt);
  }
  if (do_vertical) {
    if ((st = encode_pair(a, nn_model_tokenizer(tt), a->texts, a->n, T, match ? tt : NULL, &xs, &xt, err)) != FINCH_OK)
      goto out;
    nn_tfm_train_config trc = nn_tfm_train_defaults();
    trc.epochs = a->epochs;
    trc.batch = 64;
    trc.lr = (do_general || (o->init_student && *o->init_student)) ? 1e-3f : 2e-3f;
    trc.tau = a->tau;
    trc.alpha = a->fixed_alpha;
    trc.gate_penalty = a->gate_penalty;
    trc.seed = o->seed;
    nn_tfm_data d = {.x = &xs, .labels = a->y, .soft = a->soft, .alpha = a->alpha,
                     .teacher = match ? nn_model_tfm(tt) : NULL, .tx = match ? &xt : NULL, .layer_map = map,
                     .hidden_weight = a->hidden_weight, .attn_weight = a->attn_weight, .progressive = o->progressive};
    pg.phase = "vertical";
    if (a->checkpoint) {
      snprintf(ck, sizeof ck, "%s-vertical", a->checkpoint);
      trc.checkpoint = ck;
      trc.resume = a->resume;
    }
    finch_info("vertical stage: %zu rows, student %u layers x %u wide, %u heads, ff %u, %u n-gram rows; %s; %u epochs",
               a->n, sc.layers, sc.dim, sc.heads, sc.ff, sc.buckets,
               match ? "teacher layers matched" : "no layer matching", trc.epochs);
    if ((st = nn_tfm_train(s, a->be, &d, &trc, finch_distill__on_step, &pg, err)) != FINCH_OK) goto out;
    if (a->checkpoint) unlink(ck);
    if ((st = finch_distill__flush_steps(a->db, &pg, err)) != FINCH_OK) goto out;
  }
  *a->seconds = finch_clock_s() - t0;
  if (sc.head_gates && do_vertical && a->complexity && a->gate_share) {
    /* Heads open per complexity bin, over the training rows. */
    float *share = malloc((a->n ? a->n : 1) * sizeof *share);
    if (!share) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      goto out;
    }
    if ((st = nn_tfm_gate_share(s, a->be, &xs, share, err)) != FINCH_OK) {
      free(share);
      goto out;
    }
    for (int b = 0; b < 10; b++) a->gate_share[b] = 0, a->gate_n[b] = 0;
    for (size_t i = 0; i < a->n; i++) {
      int b = (int)(a->complexity[i] * 10);
      b = b < 0 ? 0 : b > 9 ? 9 : b;
      a->gate_share[b] += share[i];
      a->gate_n[b]++;
    }
    for (int b = 0; b < 10; b++)
      if (a->gate_n[b]) a->gate_share[b] /= (double)a->gate_n[b];
    free(share);
    finch_info("heads open by complexity (bins of 0.1): %.2f %.2f %.2f %.2f %.2f %.2f %.2f %.2f %.2f %.2f",
               a->gate_share[0], a->gate_share[1], a->gate_share[2], a->gate_share[3], a->gate_share[4],
               a->gate_share[5], a->gate_share[6], a->gate_share[7], a->gate_share[8], a->gate_share[9]);
  }
  nn_tokenizer *tk = NULL;
  if ((st = finch_distill__tokenizer_copy(nn_model_tokenizer(tt), &tk, err)) != FINCH_OK) goto out;
  st = nn_model_from_tfm(out, s, tk, T, 3, 5, a->labels, a->nl, err);
  s = NULL;
out:
  free(pg.buf);
  nn_tfm_free(s);
  nn_tfm_corpus_free(&xs);
  nn_tfm_corpus_free(&xt);
  finch_dataset_texts_free(gen);
  return st;
}
