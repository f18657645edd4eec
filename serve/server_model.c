/* The intent server's model handle (serve/server_internal.h): loading and
 * verifying a model file with its out-of-scope policy, reference counting,
 * hot reload, and the one decision every endpoint serves. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "serve/server_internal.h"

void serve__model_put(serve_model *m) {
  if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
    nn_model_free(m->nn);
    free(m);
  }
}

/* Loads and verifies path: hashed before and after loading, so that a file
 * replaced while it was read is refused rather than served under the wrong
 * hash. The handle starts with one reference. */
finch_status serve__model_load(serve_model **out, const char *path, finch_err *err) {
  *out = NULL;
  serve_model *m = calloc(1, sizeof *m);
  if (!m) return finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
  char before[FINCH_SHA256_HEX_LEN];
  finch_status st = finch_sha256_file(path, before, err);
  if (st != FINCH_OK) {
    finch_err_prefix(err, "serve: cannot hash model");
    free(m);
    return st;
  }
  st = nn_model_load(&m->nn, path, err);
  if (st != FINCH_OK) {
    if (err && !strstr(err->msg, path))
      finch_err_prefix(err, "serve: cannot load model %s", path);
    else
      finch_err_prefix(err, "serve: cannot load model");
    free(m);
    return st;
  }
  m->n_labels = nn_model_n_labels(m->nn);
  if (m->n_labels == 0)
    st = finch_err_set(err, FINCH_EFORMAT, "serve: model %s has no labels", path);
  else if ((st = nn_abstain_read(m->nn, &m->abstain, err)) != FINCH_OK)
    finch_err_prefix(err, "serve: model %s", path);
  else if ((st = finch_sha256_file(path, m->sha256, err)) != FINCH_OK)
    finch_err_prefix(err, "serve: cannot hash model");
  else if (strcmp(before, m->sha256) != 0)
    st = finch_err_set(err, FINCH_EIO, "serve: model %s changed while it was being loaded; try again", path);
  if (st != FINCH_OK) {
    nn_model_free(m->nn);
    free(m);
    return st;
  }
  atomic_init(&m->refs, 1);
  *out = m;
  return FINCH_OK;
}

/* A reference to the current model. Lock-free: `acquiring` tells a reload
 * that some thread may hold the old pointer without its reference yet, and
 * the reload waits for it before dropping its own (seq_cst throughout). */
static serve_model *serve_model_get(finch_server *s) {
  atomic_fetch_add(&s->acquiring, 1);
  serve_model *m = atomic_load(&s->model);
  atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
  atomic_fetch_sub(&s->acquiring, 1);
  return m;
}

/* The request's model, taken on first use. */
serve_model *serve__req_model(finch_server *s, serve_request *req) {
  if (!req->model) req->model = serve_model_get(s);
  return req->model;
}

/* Loads path (NULL: model_path), swaps it in; prev and now (may be NULL)
 * receive the hashes before and after. */
finch_status serve__reload(finch_server *s, const char *path, char *prev, char *now, finch_err *err) {
  pthread_mutex_lock(&s->reload_lock);
  const char *p = path ? path : s->model_path;
  serve_model *m = NULL, *cur = atomic_load(&s->model);
  if (prev) memcpy(prev, cur->sha256, FINCH_SHA256_HEX_LEN);
  finch_status st = serve__model_load(&m, p, err);
  char *keep = NULL;
  if (st == FINCH_OK && path && !(keep = strdup(path))) {
    st = finch_err_set(err, FINCH_ENOMEM, "serve: out of memory");
    serve__model_put(m);
  }
  if (st != FINCH_OK) {
    atomic_fetch_add_explicit(&s->metrics.reloads_failed, 1, memory_order_relaxed);
    finch_error("serve: model reload failed, still serving %s: %s", cur->sha256, err ? err->msg : "");
    pthread_mutex_unlock(&s->reload_lock);
    return st;
  }
  if (keep) {
    free(s->model_path);
    s->model_path = keep;
  }
  serve_model *old = atomic_exchange(&s->model, m);
  /* A request may have read `old` and not yet taken its reference: wait
   * for it (a few instructions) before dropping the server's. */
  while (atomic_load(&s->acquiring) != 0) sched_yield();
  finch_info("serve: model reloaded from %s: sha256 %s (was %s)", s->model_path, m->sha256, old->sha256);
  if (now) memcpy(now, m->sha256, FINCH_SHA256_HEX_LEN);
  serve__model_put(old);
  atomic_fetch_add_explicit(&s->metrics.reloads_ok, 1, memory_order_relaxed);
  pthread_mutex_unlock(&s->reload_lock);
  return FINCH_OK;
}

int serve__in_scope(const finch_server *s, const serve_model *m, size_t c) {
  if (m->abstain.methods && (int)c == m->abstain.oos_index) return 0;
  return !(s->oos_label && strcmp(nn_model_label(m->nn, c), s->oos_label) == 0);
}

size_t serve__n_in_scope(const finch_server *s, const serve_model *m) {
  size_t n = 0;
  for (size_t c = 0; c < m->n_labels; c++) n += (size_t)serve__in_scope(s, m, c);
  return n;
}

void serve__answer(const finch_server *s, const serve_model *m, float *probs, serve_answer *out) {
  const size_t C = m->n_labels;
  int k = nn_abstain_decide(&m->abstain, probs, C, NULL);
  size_t am = 0;
  for (size_t c = 1; c < C; c++)
    if (probs[c] > probs[am]) am = c;
  /* The in-scope score over the intents: the policy's own score, less the
   * server's oos_label when it names one of the model's labels. */
  float best_in = 0;
  for (size_t c = 0; c < C; c++)
    if (serve__in_scope(s, m, c) && probs[c] > best_in) best_in = probs[c];
  out->argmax = (int)am;
  if (k >= 0 && serve__in_scope(s, m, (size_t)k)) {
    out->label = k;
    out->confidence = probs[k];
    out->name = nn_model_label(m->nn, (size_t)k);
    out->name_prob = probs[k];
    return;
  }
  out->label = -1;
  out->confidence = best_in;
  if (!serve__in_scope(s, m, am)) {
    out->name = nn_model_label(m->nn, am);
    out->name_prob = probs[am];
  } else {
    out->name = m->abstain.oos_index >= 0 ? nn_model_label(m->nn, (size_t)m->abstain.oos_index)
                : s->oos_label            ? s->oos_label
                                          : SERVE_OOS_NAME;
    out->name_prob = best_in;
  }
}
