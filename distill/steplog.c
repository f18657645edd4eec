/* Training metrics: the encoders' per step (a progress line on the terminal
 * and rows buffered for training_metrics), the other trainers' per epoch or
 * optimiser iteration, with dev figures where the trainer has a model to
 * measure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "distill/internal.h"
#include "nn/halves.h"

/* Adds one COPY row; a row that finds no memory is dropped, and the
 * training goes on (the figures are a record, not an input). */
static void append(finch_distill__steplog *s, const char *line, int k) {
  if (k > 0 && s->len + (size_t)k + 1 > s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 1 << 16;
    while (nc < s->len + (size_t)k + 1) nc *= 2;
    char *nb = realloc(s->buf, nc);
    if (nb) s->buf = nb, s->cap = nc;
  }
  if (k > 0 && s->len + (size_t)k + 1 <= s->cap) memcpy(s->buf + s->len, line, (size_t)k), s->len += (size_t)k;
}

void finch_distill__on_step(void *ctx, const nn_tfm_progress *p) {
  finch_distill__steplog *s = ctx;
  char line[512], run_id[32] = "\\N"; /* no run row: NULL */
  if (s->run_id) snprintf(run_id, sizeof run_id, "%lld", s->run_id);
  int k = snprintf(line, sizeof line, "%s\t%s\t%s\t%llu\t%u\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.1f\t\\N\t\\N\n", run_id,
                   s->run, s->phase, (unsigned long long)p->step, p->epoch, (double)p->loss, (double)p->cls_loss,
                   (double)p->mlm_loss, (double)p->hidden_loss, (double)p->attn_loss, (double)p->lr,
                   (double)p->grad_norm, p->ex_per_s);
  append(s, line, k);
  if (s->quiet) return;
  double t = finch_clock_s();
  if (p->step != p->total && t - s->last_print < (s->tty ? 0.2 : 15.0)) return;
  s->last_print = t;
  int eta = (int)p->eta_s;
  if (s->tty)
    fprintf(stderr, "\r%s %s: epoch %u/%u step %llu/%llu loss %.4f lr %.2e %.0f ex/s ETA %d:%02d   ", s->member,
            s->phase, p->epoch, p->epochs, (unsigned long long)p->step, (unsigned long long)p->total,
            (double)p->loss, (double)p->lr, p->ex_per_s, eta / 60, eta % 60);
  else
    finch_info("%s %s: epoch %u/%u step %llu/%llu loss %.4f lr %.2e %.0f ex/s ETA %d:%02d", s->member, s->phase,
               p->epoch, p->epochs, (unsigned long long)p->step, (unsigned long long)p->total, (double)p->loss,
               (double)p->lr, p->ex_per_s, eta / 60, eta % 60);
  if (s->tty && p->step == p->total) fputc('\n', stderr);
}

finch_status finch_distill__flush_steps(finch_db *db, finch_distill__steplog *s, finch_err *err) {
  if (!s->len) return FINCH_OK;
  finch_status st = finch_db_copy_begin(db, "COPY training_metrics (run_id, run, phase, step, epoch, loss, cls_loss,"
                                            " mlm_loss, hidden_loss, attn_loss, lr, grad_norm, ex_per_s, dev_accuracy, dev_loss)"
                                            " FROM STDIN", err);
  if (st) return st;
  st = finch_db_copy_put(db, s->buf, s->len, err);
  finch_status end = finch_db_copy_end(db, err);
  s->len = 0;
  return st ? st : end;
}

void finch_distill__log_epoch(finch_distill__steplog *s, uint64_t step, uint32_t epoch, double loss, double lr,
                              double dev_acc, double dev_loss) {
  char line[512], run_id[32] = "\\N", acc[32] = "\\N", dl[32] = "\\N";
  if (s->run_id) snprintf(run_id, sizeof run_id, "%lld", s->run_id);
  if (dev_acc >= 0) snprintf(acc, sizeof acc, "%.6g", dev_acc);
  if (dev_loss >= 0) snprintf(dl, sizeof dl, "%.6g", dev_loss);
  int k = snprintf(line, sizeof line, "%s\t%s\t%s\t%llu\t%u\t%.6g\t\\N\t\\N\t\\N\t\\N\t%.6g\t\\N\t\\N\t%s\t%s\n",
                   run_id, s->run, s->phase, (unsigned long long)step, epoch, loss, lr, acc, dl);
  append(s, line, k);
}

/* Accuracy and mean negative log-likelihood of m on the dev rows. */
static void dev_figures(const nn_model *m, const finch_distill__epochlog *e, double *acc, double *nll) {
  *acc = *nll = -1;
  size_t C = nn_model_n_labels(m);
  float *probs = malloc((C ? C : 1) * sizeof *probs);
  if (!probs || !e->n_dev) {
    free(probs);
    return;
  }
  size_t ok = 0;
  double sum = 0;
  for (size_t i = 0; i < e->n_dev; i++) {
    int32_t y = e->dev_labels[i];
    int pred = nn_model_predict(m, e->dev_texts[i], probs, 1.0f);
    ok += pred >= 0 && pred == y;
    double p = y >= 0 && (size_t)y < C ? (double)probs[y] : 0.0;
    sum += -log(p > 1e-12 ? p : 1e-12);
  }
  free(probs);
  *acc = (double)ok / (double)e->n_dev;
  *nll = sum / (double)e->n_dev;
}

void finch_distill__on_epoch(void *ctx, const nn_epoch_info *e) {
  finch_distill__epochlog *el = ctx;
  double acc = -1, nll = -1;
  if (e->model && el->n_dev) dev_figures(e->model, el, &acc, &nll);
  finch_distill__log_epoch(el->log, e->step, e->epoch, (double)e->loss, (double)e->lr, acc, nll);
  if (el->log->quiet) return;
  if (acc >= 0)
    finch_info("%s %s epoch %u/%u: loss %.4f lr %.2e, dev accuracy %.4f (%zu rows)", el->log->member, el->log->phase,
               e->epoch, e->epochs, (double)e->loss, (double)e->lr, acc, el->n_dev);
  else
    finch_info("%s %s epoch %u/%u: loss %.4f lr %.2e", el->log->member, el->log->phase, e->epoch, e->epochs,
               (double)e->loss, (double)e->lr);
}

void finch_distill__on_slr_iter(void *ctx, uint32_t it, uint32_t max_iter, double objective, double step) {
  (void)max_iter;
  finch_distill__epochlog *el = ctx;
  el->iters = it, el->last_loss = objective, el->last_lr = step;
  finch_distill__log_epoch(el->log, it, it, objective, step, -1, -1);
}

void finch_distill__selection_rows(const char *const *texts, const int32_t *y, size_t n, size_t C,
                                   unsigned long long seed, finch_distill__epochlog *el) {
  el->n_dev = 0;
  uint8_t *half = malloc(n + 1);
  const char **t = malloc((n + 1) * sizeof *t);
  int32_t *labels = malloc((n + 1) * sizeof *labels);
  el->dev_texts = t, el->dev_labels = labels, el->owned = 1;
  if (!half || !t || !labels) {
    free(half);
    return;
  }
  nn_split_halves(y, n, C, seed, half);
  for (size_t i = 0; i < n; i++) {
    if (half[i] != 0 || y[i] < 0) continue;
    t[el->n_dev] = texts[i];
    labels[el->n_dev++] = y[i];
  }
  free(half);
}

void finch_distill__epochlog_free(finch_distill__epochlog *el) {
  if (el->owned) free((void *)el->dev_texts), free((void *)el->dev_labels);
  el->dev_texts = NULL, el->dev_labels = NULL, el->n_dev = 0, el->owned = 0;
}

finch_status finch_distill__run_begin(finch_db *db, const char *kind, const char *dataset, long long *run_id,
                                      finch_err *err) {
  const char *p[] = {kind, dataset};
  PGresult *r = finch_db_query(db, "INSERT INTO training_runs (kind, dataset) VALUES ($1, $2) RETURNING id", 2, p, err);
  if (!r) return FINCH_EDB;
  *run_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return FINCH_OK;
}

finch_status finch_distill__run_finish(finch_db *db, long long run_id, long long model_id, finch_err *err) {
  char rid[32], mid[32];
  snprintf(rid, sizeof rid, "%lld", run_id);
  snprintf(mid, sizeof mid, "%lld", model_id);
  const char *p[] = {rid, mid};
  finch_status st = finch_db_run(db, "UPDATE training_runs SET model_id = $2 WHERE id = $1", 2, p, err);
  if (!st) st = finch_db_run(db, "UPDATE training_metrics SET model_id = $2 WHERE run_id = $1", 2, p, err);
  return st;
}
