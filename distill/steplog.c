/* Per-step training metrics of the engine's encoders: a progress line on the
 * terminal and rows buffered for training_metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "distill/internal.h"

void finch_distill__on_step(void *ctx, const nn_tfm_progress *p) {
  finch_distill__steplog *s = ctx;
  char line[512], run_id[32] = "\\N"; /* no run row: NULL */
  if (s->run_id) snprintf(run_id, sizeof run_id, "%lld", s->run_id);
  int k = snprintf(line, sizeof line, "%s\t%s\t%s\t%llu\t%u\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.1f\n", run_id,
                   s->run, s->phase, (unsigned long long)p->step, p->epoch, (double)p->loss, (double)p->cls_loss,
                   (double)p->mlm_loss, (double)p->hidden_loss, (double)p->attn_loss, (double)p->lr,
                   (double)p->grad_norm, p->ex_per_s);
  if (k > 0 && s->len + (size_t)k + 1 > s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 1 << 16;
    char *nb = realloc(s->buf, nc);
    if (nb) s->buf = nb, s->cap = nc;
  }
  if (k > 0 && s->len + (size_t)k + 1 <= s->cap) memcpy(s->buf + s->len, line, (size_t)k), s->len += (size_t)k;
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
                                            " mlm_loss, hidden_loss, attn_loss, lr, grad_norm, ex_per_s) FROM STDIN", err);
  if (st) return st;
  st = finch_db_copy_put(db, s->buf, s->len, err);
  finch_status end = finch_db_copy_end(db, err);
  s->len = 0;
  return st ? st : end;
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
