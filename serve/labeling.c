/* Assisted labelling (serve/labeling.h). */
#include "serve/labeling.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/text.h"
#include "core/db.h"

finch_status finch_labeling_task_create(PGconn *c, const finch_labeling_new *t, long long *id, finch_err *err) {
  char conf[32], turn[32];
  snprintf(conf, sizeof conf, "%.6f", t->suggested_confidence);
  snprintf(turn, sizeof turn, "%lld", t->turn_id);
  const char *p[11] = {t->deployment, t->conversation_id, t->turn_id ? turn : NULL, t->text, t->suggested_label,
                       conf, t->model_sha256, t->rule_label, t->stage, t->reason, t->out_of_scope ? "true" : "false"};
  PGresult *r = finch_db_query_on(c,
                                  "INSERT INTO labeling_tasks (deployment, conversation_id, turn_id, text, suggested_label,"
                                  " suggested_confidence, model_sha256, rule_label, stage, reason, out_of_scope)"
                                  " VALUES ($1, $2, $3::bigint, $4, $5, $6::real, $7, $8, $9, $10, $11::boolean)"
                                  " RETURNING id",
                                  11, p, err);
  if (!r) return FINCH_EDB;
  if (id) *id = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  return FINCH_OK;
}

#define TASK_COLS                                                                                                     \
  "id, conversation_id, text, suggested_label, suggested_confidence, model_sha256, rule_label, stage, reason,"       \
  " status, final_label, labeler, second_label, second_labeler,"                                                      \
  " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"                                         \
  " to_char(resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), utterance_id, out_of_scope"

static json_t *opt_str(PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? json_null() : json_string(PQgetvalue(r, row, col));
}

static json_t *task_json(PGresult *r, int i) {
  json_t *sugg = json_pack("{s:o, s:o, s:o, s:b}", "label", opt_str(r, i, 3), "confidence",
                           PQgetisnull(r, i, 4) ? json_null() : json_real(atof(PQgetvalue(r, i, 4))), "model",
                           opt_str(r, i, 5), "out_of_scope", strcmp(PQgetvalue(r, i, 17), "t") == 0);
  return json_pack("{s:I, s:o, s:s, s:o, s:o, s:o, s:o, s:s, s:o, s:o, s:o, s:o, s:s, s:o, s:o}", "id",
                   (json_int_t)atoll(PQgetvalue(r, i, 0)), "conversation_id", opt_str(r, i, 1), "text",
                   PQgetvalue(r, i, 2), "suggestion", sugg ? sugg : json_null(), "rule_label", opt_str(r, i, 6),
                   "stage", opt_str(r, i, 7), "reason", opt_str(r, i, 8), "status", PQgetvalue(r, i, 9),
                   "final_label", opt_str(r, i, 10), "labeler", opt_str(r, i, 11), "second_label", opt_str(r, i, 12),
                   "second_labeler", opt_str(r, i, 13), "created_at", PQgetvalue(r, i, 14), "resolved_at",
                   opt_str(r, i, 15), "utterance_id",
                   PQgetisnull(r, i, 16) ? json_null() : json_integer(atoll(PQgetvalue(r, i, 16))));
}

finch_status finch_labeling_list(PGconn *c, const finch_labeling_filter *f, json_t **out, finch_err *err) {
  *out = NULL;
  const char *status = f->status && *f->status ? f->status : "open";
  if (strcmp(status, "open") && strcmp(status, "resolved") && strcmp(status, "needs_second") && strcmp(status, "all"))
    return finch_err_set(err, FINCH_EINVAL, "status must be open, resolved, needs_second or all");
  long limit = f->limit ? f->limit : 50;
  if (limit < 1 || limit > 500) return finch_err_set(err, FINCH_EINVAL, "limit must be 1..500");
  char lim[32], after[32], minc[32], maxc[32];
  snprintf(lim, sizeof lim, "%ld", limit);
  snprintf(after, sizeof after, "%lld", f->after_id);
  snprintf(minc, sizeof minc, "%.9g", f->min_confidence);
  snprintf(maxc, sizeof maxc, "%.9g", f->max_confidence);
  const char *p[8] = {f->deployment, status, f->intent, f->stage, f->min_confidence >= 0 ? minc : NULL,
                      f->max_confidence >= 0 ? maxc : NULL, after, lim};
  PGresult *r = finch_db_query_on(c,
                                  "SELECT " TASK_COLS " FROM labeling_tasks WHERE deployment = $1"
                                  " AND CASE $2 WHEN 'open' THEN status = 'open'"
                                  "             WHEN 'resolved' THEN status IN ('accepted', 'corrected')"
                                  "             WHEN 'needs_second' THEN status IN ('accepted', 'corrected') AND second_label IS NULL"
                                  "             ELSE true END"
                                  " AND ($3::text IS NULL OR suggested_label = $3 OR rule_label = $3 OR final_label = $3)"
                                  " AND ($4::text IS NULL OR stage = $4)"
                                  " AND ($5::real IS NULL OR suggested_confidence >= $5::real)"
                                  " AND ($6::real IS NULL OR suggested_confidence <= $6::real)"
                                  " AND id > $7::bigint ORDER BY id LIMIT $8::bigint",
                                  8, p, err);
  if (!r) return FINCH_EDB;
  json_t *tasks = json_array();
  long long last = 0;
  for (int i = 0; tasks && i < PQntuples(r); i++) {
    json_array_append_new(tasks, task_json(r, i));
    last = atoll(PQgetvalue(r, i, 0));
  }
  int full = PQntuples(r) == limit;
  PQclear(r);
  *out = json_pack("{s:o, s:o}", "tasks", tasks ? tasks : json_array(), "next_after",
                   full ? json_integer(last) : json_null());
  return *out ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "labeling: out of memory");
}

/* Writes the task's final label into utterances (dataset <deployment>_labels)
 * and links the task to the row. */
static finch_status labeling_to_utterances(PGconn *c, const char *deployment, const char *task_id, const char *text,
                                           const char *label, const char *conversation_id, const char *labeler,
                                           const char *status, long long *utt_id, finch_err *err) {
  char dataset[256];
  snprintf(dataset, sizeof dataset, "%s_labels", deployment);
  const char *dp[1] = {dataset};
  finch_status st = finch_db_run_on(
      c, "INSERT INTO datasets (name, format) VALUES ($1, 'labeling') ON CONFLICT (name) DO NOTHING", 1, dp, err);
  if (st) return st;
  char *norm = NULL;
  if ((st = finch_text_normalize(text, strlen(text), FINCH_TEXT_FOLD, &norm, err))) return st;
  char hash[FINCH_SHA256_HEX_LEN];
  finch_utterance_hash(norm, label, "", hash);
  json_t *meta = json_pack("{s:I, s:s, s:s}", "labeling_task", (json_int_t)atoll(task_id), "labeler", labeler,
                           "decision", status);
  char *mtext = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
  json_decref(meta);
  if (!mtext) {
    free(norm);
    return finch_err_set(err, FINCH_ENOMEM, "labeling: out of memory");
  }
  const char *p[7] = {dataset, text, norm, label, conversation_id, hash, mtext};
  PGresult *r = finch_db_query_on(c,
                                  "WITH d AS (SELECT id FROM datasets WHERE name = $1),"
                                  " ins AS (INSERT INTO utterances (dataset_id, text, text_norm, label, split,"
                                  "   dialogue_id, speaker, origin, content_hash, meta)"
                                  "   SELECT d.id, $2, $3, $4, 'train', $5, 'user', 'source', $6, $7::jsonb FROM d"
                                  "   ON CONFLICT (dataset_id, content_hash) DO NOTHING RETURNING id)"
                                  " SELECT id FROM ins UNION ALL"
                                  " SELECT u.id FROM utterances u, d WHERE u.dataset_id = d.id AND u.content_hash = $6"
                                  " LIMIT 1",
                                  7, p, err);
  free(norm);
  free(mtext);
  if (!r) return FINCH_EDB;
  *utt_id = PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : 0;
  PQclear(r);
  char uid[32];
  snprintf(uid, sizeof uid, "%lld", *utt_id);
  const char *up[2] = {uid, task_id};
  return finch_db_run_on(c, "UPDATE labeling_tasks SET utterance_id = $1::bigint WHERE id = $2::bigint", 2, up, err);
}

finch_status finch_labeling_submit(PGconn *c, const char *deployment, long long id, const char *labeler,
                                   const char *decision, const char *label, finch_labeling_outcome *outcome,
                                   json_t **out, finch_err *err) {
  *out = NULL;
  *outcome = FINCH_LABELING_INVALID;
  int accept = decision && strcmp(decision, "accept") == 0, correct = decision && strcmp(decision, "correct") == 0;
  if (!accept && !correct) return finch_err_set(err, FINCH_EINVAL, "\"decision\" must be \"accept\" or \"correct\"");
  if (correct && (!label || !*label || strlen(label) > 200))
    return finch_err_set(err, FINCH_EINVAL, "\"correct\" needs a \"label\" (1 to 200 bytes)");
  if (!labeler || !*labeler) return finch_err_set(err, FINCH_EINVAL, "no labeller");
  char ids[32];
  snprintf(ids, sizeof ids, "%lld", id);
  finch_status st = finch_db_begin_on(c, err);
  if (st) return st;
  const char *p[2] = {ids, deployment};
  PGresult *r = finch_db_query_on(c,
                                  "SELECT status, suggested_label, labeler, second_label, text, conversation_id"
                                  " FROM labeling_tasks WHERE id = $1::bigint AND deployment = $2 FOR UPDATE",
                                  2, p, err);
  if (!r) goto dbfail;
  if (PQntuples(r) != 1) {
    PQclear(r);
    finch_db_rollback_on(c);
    *outcome = FINCH_LABELING_NOT_FOUND;
    return finch_err_set(err, FINCH_EINVAL, "no labelling task %lld", id);
  }
  char status[32], suggested[256], first[256];
  snprintf(status, sizeof status, "%s", PQgetvalue(r, 0, 0));
  int has_sugg = !PQgetisnull(r, 0, 1);
  snprintf(suggested, sizeof suggested, "%s", PQgetvalue(r, 0, 1));
  snprintf(first, sizeof first, "%s", PQgetvalue(r, 0, 2));
  int has_second = !PQgetisnull(r, 0, 3);
  char *text = strdup(PQgetvalue(r, 0, 4));
  char *conv = PQgetisnull(r, 0, 5) ? NULL : strdup(PQgetvalue(r, 0, 5));
  PQclear(r);
  if (!text) {
    free(conv);
    finch_db_rollback_on(c);
    return finch_err_set(err, FINCH_ENOMEM, "labeling: out of memory");
  }
  if (accept && !has_sugg) {
    free(text);
    free(conv);
    finch_db_rollback_on(c);
    return finch_err_set(err, FINCH_EINVAL, "task %lld has no suggestion to accept; use \"correct\"", id);
  }
  const char *given = accept ? suggested : label;
  int open = strcmp(status, "open") == 0;
  if (!open && (strcmp(first, labeler) == 0 || has_second || strcmp(status, "skipped") == 0)) {
    free(text);
    free(conv);
    finch_db_rollback_on(c);
    *outcome = FINCH_LABELING_CONFLICT;
    return finch_err_set(err, FINCH_EINVAL, strcmp(first, labeler) == 0
                                                 ? "task %lld is already labelled by %s"
                                                 : "task %lld already has its labels%s",
                         id, strcmp(first, labeler) == 0 ? labeler : "");
  }
  if (open) {
    const char *new_status = has_sugg && strcmp(given, suggested) == 0 ? "accepted" : "corrected";
    const char *up[4] = {ids, new_status, given, labeler};
    if ((st = finch_db_run_on(c,
                              "UPDATE labeling_tasks SET status = $2, final_label = $3, labeler = $4, resolved_at = now()"
                              " WHERE id = $1::bigint",
                              4, up, err)))
      goto fail_free;
    long long utt = 0;
    if ((st = labeling_to_utterances(c, deployment, ids, text, given, conv, labeler, new_status, &utt, err)))
      goto fail_free;
  } else {
    const char *up[3] = {ids, given, labeler};
    if ((st = finch_db_run_on(c,
                              "UPDATE labeling_tasks SET second_label = $2, second_labeler = $3, second_at = now()"
                              " WHERE id = $1::bigint",
                              3, up, err)))
      goto fail_free;
  }
  free(text);
  free(conv);
  r = finch_db_query_on(c, "SELECT " TASK_COLS " FROM labeling_tasks WHERE id = $1::bigint", 1, p, err);
  if (!r) goto dbfail;
  json_t *task = task_json(r, 0);
  PQclear(r);
  if ((st = finch_db_commit_on(c, err))) {
    json_decref(task);
    goto fail;
  }
  *outcome = FINCH_LABELING_OK;
  *out = task;
  return task ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "labeling: out of memory");
fail_free:
  free(text);
  free(conv);
  goto fail;
dbfail:
  st = FINCH_EDB;
fail:
  finch_db_rollback_on(c);
  return st;
}

finch_status finch_labeling_stats(PGconn *c, const char *deployment, json_t **out, finch_err *err) {
  *out = NULL;
  const char *p[1] = {deployment};
  PGresult *r = finch_db_query_on(c,
                                  "SELECT count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE status = 'accepted'),"
                                  " count(*) FILTER (WHERE status = 'corrected'), count(*) FILTER (WHERE status = 'skipped')"
                                  " FROM labeling_tasks WHERE deployment = $1",
                                  1, p, err);
  if (!r) return FINCH_EDB;
  long long open = atoll(PQgetvalue(r, 0, 0)), acc = atoll(PQgetvalue(r, 0, 1)), cor = atoll(PQgetvalue(r, 0, 2)),
            skip = atoll(PQgetvalue(r, 0, 3));
  PQclear(r);
  json_t *o = json_pack("{s:s, s:{s:I, s:I, s:I, s:I}, s:o}", "deployment", deployment, "tasks", "open",
                        (json_int_t)open, "accepted", (json_int_t)acc, "corrected", (json_int_t)cor, "skipped",
                        (json_int_t)skip, "acceptance_rate",
                        acc + cor ? json_real((double)acc / (double)(acc + cor)) : json_null());
  if (!o) return finch_err_set(err, FINCH_ENOMEM, "labeling: out of memory");

  r = finch_db_query_on(c,
                        "SELECT l, sum(n)::bigint FROM ("
                        " SELECT labeler AS l, count(*) AS n FROM labeling_tasks WHERE deployment = $1 AND labeler IS NOT NULL"
                        "  GROUP BY labeler UNION ALL"
                        " SELECT second_labeler, count(*) FROM labeling_tasks WHERE deployment = $1"
                        "  AND second_labeler IS NOT NULL GROUP BY second_labeler) x GROUP BY l ORDER BY l",
                        1, p, err);
  if (!r) goto dbfail;
  json_t *labelers = json_array();
  for (int i = 0; i < PQntuples(r); i++)
    json_array_append_new(labelers, json_pack("{s:s, s:I}", "labeler", PQgetvalue(r, i, 0), "labels",
                                              (json_int_t)atoll(PQgetvalue(r, i, 1))));
  PQclear(r);
  json_object_set_new(o, "labelers", labelers);

  r = finch_db_query_on(c,
                        "SELECT final_label, second_label FROM labeling_tasks WHERE deployment = $1"
                        " AND final_label IS NOT NULL AND second_label IS NOT NULL",
                        1, p, err);
  if (!r) goto dbfail;
  size_t n = (size_t)PQntuples(r);
  const char **a = calloc(n ? n : 1, sizeof *a), **b = calloc(n ? n : 1, sizeof *b);
  if (!a || !b) {
    free(a);
    free(b);
    PQclear(r);
    json_decref(o);
    return finch_err_set(err, FINCH_ENOMEM, "labeling: out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    a[i] = PQgetvalue(r, (int)i, 0);
    b[i] = PQgetvalue(r, (int)i, 1);
  }
  double po = NAN, kappa = finch_cohen_kappa(a, b, n, &po);
  long long agree = 0;
  for (size_t i = 0; i < n; i++) agree += strcmp(a[i], b[i]) == 0;
  free(a);
  free(b);
  PQclear(r);
  json_object_set_new(o, "agreement",
                      json_pack("{s:I, s:I, s:o, s:o}", "double_labelled", (json_int_t)n, "agreeing",
                                (json_int_t)agree, "percent_agreement", n ? json_real(100.0 * po) : json_null(),
                                "cohen_kappa", isfinite(kappa) ? json_real(kappa) : json_null()));
  *out = o;
  return FINCH_OK;
dbfail:
  json_decref(o);
  return FINCH_EDB;
}

double finch_cohen_kappa(const char *const *a, const char *const *b, size_t n, double *p_observed) {
  if (p_observed) *p_observed = NAN;
  if (n == 0) return NAN;
  /* Distinct labels and each rater's count of them. */
  size_t k = 0, cap = 16;
  const char **names = malloc(cap * sizeof *names);
  double *ca = calloc(cap, sizeof *ca), *cb = calloc(cap, sizeof *cb);
  double agree = 0, kappa = NAN;
  if (!names || !ca || !cb) goto out;
  for (size_t i = 0; i < n; i++) {
    agree += strcmp(a[i], b[i]) == 0;
    for (int side = 0; side < 2; side++) {
      const char *l = side ? b[i] : a[i];
      size_t j = 0;
      while (j < k && strcmp(names[j], l) != 0) j++;
      if (j == k) {
        if (k == cap) {
          cap *= 2;
          const char **nn = realloc(names, cap * sizeof *nn);
          if (nn) names = nn;
          double *na = nn ? realloc(ca, cap * sizeof *na) : NULL;
          if (na) ca = na;
          double *nb = na ? realloc(cb, cap * sizeof *nb) : NULL;
          if (!nb) goto out;
          cb = nb;
        }
        names[k] = l;
        ca[k] = cb[k] = 0;
        k++;
      }
      if (side) cb[j] += 1;
      else ca[j] += 1;
    }
  }
  double po = agree / (double)n, pe = 0;
  for (size_t j = 0; j < k; j++) pe += (ca[j] / (double)n) * (cb[j] / (double)n);
  if (p_observed) *p_observed = po;
  kappa = pe >= 1.0 ? (po >= 1.0 ? 1.0 : 0.0) : (po - pe) / (1.0 - pe);
out:
  free(names);
  free(ca);
  free(cb);
  return kappa;
}
