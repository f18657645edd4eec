/* The teacher's soft labels over the transfer set, computed once: rows
 * already in teacher_outputs for this teacher and temperature (written by
 * augment's label guard or an earlier distill) are read back; the others are
 * computed in chunks, each chunk committed to teacher_outputs before the
 * next, so a distill killed while labelling 200,000 rows keeps what it did
 * and a second student distilled from the same teacher labels nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "distill/internal.h"
#include "nn/model_arch.h"

enum { SOFT_CHUNK = 8192 };

/* Parses "{p0,p1,...}" of exactly C values into row; 0 when malformed. */
static int parse_probs(const char *s, float *row, size_t C) {
  size_t j = 0;
  if (*s++ != '{') return 0;
  while (*s && *s != '}' && j < C) {
    char *end;
    float v = strtof(s, &end);
    if (end == s || !(v >= 0.0f && v <= 1.0f)) return 0;
    row[j++] = v;
    s = *end == ',' ? end + 1 : end;
  }
  return j == C && *s == '}';
}

/* Reads the stored rows into soft, marking them in have. */
static finch_status read_stored(finch_db *db, long long teacher_id, float tau, const finch_dataset_split *train,
                                size_t C, float *soft, unsigned char *have, size_t *n_have, finch_err *err) {
  char mid[32], ts[32];
  snprintf(mid, sizeof mid, "%lld", teacher_id);
  snprintf(ts, sizeof ts, "%.9g", (double)tau);
  const char *p[] = {mid, ts};
  PGresult *r = finch_db_query(db, "SELECT utterance_id, probs FROM teacher_outputs"
                                   " WHERE model_id = $1 AND temperature = $2::real", 2, p, err);
  if (!r) return FINCH_EDB;
  /* train->ids ascend, so a binary search finds each stored row's index. */
  size_t bad = 0;
  for (int t = 0; t < PQntuples(r); t++) {
    long long id = strtoll(PQgetvalue(r, t, 0), NULL, 10);
    size_t lo = 0, hi = train->n;
    while (lo < hi) {
      size_t m = (lo + hi) / 2;
      if (train->ids[m] < id) lo = m + 1;
      else hi = m;
    }
    if (lo == train->n || train->ids[lo] != id || have[lo]) continue;
    if (!parse_probs(PQgetvalue(r, t, 1), soft + lo * C, C)) {
      bad++; /* recomputed below, and the stored row replaced */
      continue;
    }
    have[lo] = 1;
    (*n_have)++;
  }
  PQclear(r);
  if (bad) finch_warn("teacher %lld: %zu stored soft labels are malformed or of another label count; recomputing them",
                      teacher_id, bad);
  return FINCH_OK;
}

/* Stores rows idx[0..k) of soft in one transaction, replacing what was there. */
static finch_status store_chunk(finch_db *db, long long teacher_id, float tau, const finch_dataset_split *train,
                                const size_t *idx, size_t k, size_t C, const float *soft, finch_err *err) {
  char *line = malloc(64 + C * 16);
  if (!line) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  char mid[32], ts[32];
  snprintf(mid, sizeof mid, "%lld", teacher_id);
  snprintf(ts, sizeof ts, "%.9g", (double)tau);
  finch_status st = finch_db_exec(db, "BEGIN", err);
  if (!st) st = finch_db_exec(db, "CREATE TEMP TABLE IF NOT EXISTS soft_stage (LIKE teacher_outputs INCLUDING DEFAULTS)"
                                  " ON COMMIT DELETE ROWS", err);
  int copying = 0;
  if (!st) st = finch_db_copy_begin(db, "COPY soft_stage (model_id, utterance_id, temperature, probs) FROM STDIN", err);
  copying = !st;
  for (size_t q = 0; !st && q < k; q++) {
    size_t i = idx[q];
    size_t o = (size_t)sprintf(line, "%s\t%lld\t%s\t{", mid, train->ids[i], ts);
    for (size_t c = 0; c < C; c++) o += (size_t)sprintf(line + o, "%s%.9g", c ? "," : "", (double)soft[i * C + c]);
    o += (size_t)sprintf(line + o, "}\n");
    st = finch_db_copy_put(db, line, o, err);
  }
  if (copying) {
    finch_status end = finch_db_copy_end(db, err);
    if (!st) st = end;
  }
  if (!st) st = finch_db_exec(db, "INSERT INTO teacher_outputs (model_id, utterance_id, temperature, probs)"
                                  " SELECT model_id, utterance_id, temperature, probs FROM soft_stage"
                                  " ON CONFLICT (model_id, utterance_id, temperature) DO UPDATE SET probs = EXCLUDED.probs",
                              err);
  if (!st) st = finch_db_exec(db, "COMMIT", err);
  if (st) finch_db_rollback(db);
  free(line);
  return st;
}

finch_status finch_distill__teacher_soft(finch_db *db, long long teacher_id, const nn_model *teacher,
                                         const finch_dataset_split *train, float tau, int quiet, float *soft,
                                         long long *n_stored, long long *n_computed, finch_err *err) {
  const size_t n = train->n, C = train->n_labels;
  unsigned char *have = calloc(n + 1, 1);
  size_t *todo = malloc((n + 1) * sizeof *todo);
  const char **texts = malloc((SOFT_CHUNK + 1) * sizeof *texts);
  float *buf = malloc((size_t)SOFT_CHUNK * C * sizeof *buf);
  finch_status st = have && todo && texts && buf ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  size_t n_have = 0;
  if (!st && teacher_id > 0) st = read_stored(db, teacher_id, tau, train, C, soft, have, &n_have, err);
  size_t m = 0;
  for (size_t i = 0; !st && i < n; i++)
    if (!have[i]) todo[m++] = i;
  if (!st)
    finch_info("teacher soft labels at temperature %.2f: %zu of %zu rows stored in teacher_outputs, %zu to compute",
               (double)tau, n_have, n, m);
  double t0 = finch_clock_s(), last = t0;
  for (size_t s = 0; !st && s < m; s += SOFT_CHUNK) {
    size_t k = m - s < SOFT_CHUNK ? m - s : SOFT_CHUNK;
    for (size_t q = 0; q < k; q++) texts[q] = train->texts[todo[s + q]];
    st = nn_model_predict_many(teacher, texts, k, buf, NULL, tau, err);
    if (st) break;
    for (size_t q = 0; q < k; q++) memcpy(soft + todo[s + q] * C, buf + q * C, C * sizeof *buf);
    if (teacher_id > 0) st = store_chunk(db, teacher_id, tau, train, todo + s, k, C, soft, err);
    double now = finch_clock_s();
    if (!quiet && (now - last > 15 || s + k == m)) {
      finch_info("teacher soft labels: %zu of %zu computed (%.0f rows/s)", s + k, m, (double)(s + k) / (now - t0));
      last = now;
    }
  }
  if (!st) *n_stored = (long long)n_have, *n_computed = (long long)m;
  free(have);
  free(todo);
  free(texts);
  free(buf);
  return st;
}
