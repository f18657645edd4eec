#include "core/models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/paths.h"

finch_status finch_models_register(finch_db *db, const finch_model_rec *rec, long long *id, finch_err *err) {
  char parent[32], params[32], bytes[32];
  snprintf(parent, sizeof parent, "%lld", rec->parent_id);
  snprintf(params, sizeof params, "%lld", rec->params);
  snprintf(bytes, sizeof bytes, "%lld", rec->bytes);
  const char *p[] = {rec->kind, rec->stage, rec->arch, rec->dtype ? rec->dtype : "f32",
                     rec->dataset, rec->parent_id ? parent : NULL, rec->path, rec->sha256, params,
                     bytes, rec->config_json ? rec->config_json : "{}",
                     rec->metrics_json ? rec->metrics_json : "{}", rec->status ? rec->status : "ok"};
  PGresult *r = finch_db_query(db,
      "INSERT INTO models (kind, stage, arch, dtype, dataset_id, parent_model_id, path, sha256,"
      " params, bytes, config, metrics, status)"
      " VALUES ($1, $2, $3, $4, (SELECT id FROM datasets WHERE name = $5), $6, $7, $8, $9, $10,"
      " $11::jsonb, $12::jsonb, $13) RETURNING id", 13, p, err);
  if (!r) return FINCH_EDB;
  *id = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  return FINCH_OK;
}

int finch_models_ref_is_file(const char *ref) { return finch_file_exists(ref); }

static int all_digits(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

finch_status finch_models_resolve(finch_db *db, const char *ref, char *path, size_t n, long long *id,
                                  char *kind, finch_err *err) {
  return finch_models_resolve_in(db, ref, NULL, NULL, path, n, id, kind, err);
}

/* The id an alias names in dataset (NULL: the one dataset that binds it),
 * as decimal text in out. */
static finch_status alias_id(finch_db *db, const char *alias, const char *dataset, char *out, size_t n,
                             finch_err *err) {
  const char *p[] = {alias, dataset};
  PGresult *r = finch_db_query(db, "SELECT a.model_id, d.name FROM model_aliases a JOIN datasets d ON d.id = a.dataset_id"
                                   " WHERE a.alias = $1 AND ($2::text IS NULL OR d.name = $2) ORDER BY d.name", 2, p, err);
  if (!r) return FINCH_EDB;
  int k = PQntuples(r);
  finch_status st = FINCH_OK;
  if (k == 0 && dataset)
    st = finch_err_set(err, FINCH_ENOTFOUND, "model '%s': no such file, model id or alias in dataset '%s' (see "
                       "`finch models list`)", alias, dataset);
  else if (k == 0)
    st = finch_err_set(err, FINCH_ENOTFOUND, "model '%s': no such file, model id or alias (see `finch models list`)",
                       alias);
  else if (k > 1)
    st = finch_err_set(err, FINCH_EINVAL, "model '%s': the alias is bound in %d datasets (%s, %s%s); name the dataset",
                       alias, k, PQgetvalue(r, 0, 1), PQgetvalue(r, 1, 1), k > 2 ? ", ..." : "");
  else
    snprintf(out, n, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  return st;
}

/* The order of "best": passed the gate first, then the highest dev accuracy, then the newest. */
#define BEST_ORDER " ORDER BY m.status = 'ok' DESC, (m.metrics->>'dev_accuracy')::float8 DESC NULLS LAST, m.id DESC"

finch_status finch_models_ranked(finch_db *db, const char *kind, const char *dataset, long long *ids, size_t max,
                                 size_t *n, finch_err *err) {
  *n = 0;
  const char *p[] = {dataset, kind};
  PGresult *r = finch_db_query(db, "SELECT m.id FROM models m JOIN datasets d ON d.id = m.dataset_id"
                                   " WHERE d.name = $1 AND ($2::text IS NULL OR m.kind = $2) AND m.status = 'ok'"
                                   BEST_ORDER, 2, p, err);
  if (!r) return FINCH_EDB;
  for (int i = 0; i < PQntuples(r) && *n < max; i++) ids[(*n)++] = atoll(PQgetvalue(r, i, 0));
  PQclear(r);
  return FINCH_OK;
}

finch_status finch_models_pick(finch_db *db, const char *which, const char *kind, const char *dataset, long long *id,
                               finch_err *err) {
  *id = 0;
  int best = strcmp(which, "best") == 0;
  if (!best && strcmp(which, "latest") != 0)
    return finch_err_set(err, FINCH_EINVAL, "model '%s': only best or latest is picked", which);
  if (!dataset) return finch_err_set(err, FINCH_EINVAL, "model '%s' needs a dataset to choose in", which);
  const char *p[] = {dataset, kind};
  PGresult *r = finch_db_query(db, best
      ? "SELECT m.id, m.status FROM models m JOIN datasets d ON d.id = m.dataset_id"
        " WHERE d.name = $1 AND ($2::text IS NULL OR m.kind = $2)" BEST_ORDER " LIMIT 1"
      : "SELECT m.id, m.status FROM models m JOIN datasets d ON d.id = m.dataset_id"
        " WHERE d.name = $1 AND ($2::text IS NULL OR m.kind = $2) ORDER BY m.status = 'ok' DESC, m.id DESC LIMIT 1",
      2, p, err);
  if (!r) return FINCH_EDB;
  finch_status st = FINCH_OK;
  const char *what = kind ? kind : "model";
  if (PQntuples(r) == 0)
    st = finch_err_set(err, FINCH_ENOTFOUND, "no registered %s for dataset '%s'%s", what, dataset,
                       kind && !strcmp(kind, "teacher") ? " (run finch teacher train first)" : "");
  else if (strcmp(PQgetvalue(r, 0, 1), "ok") != 0)
    st = finch_err_set(err, FINCH_ENOTFOUND, "%s: every registered %s of dataset '%s' failed the quality gate "
                       "(see `finch models list`)", which, what, dataset);
  else
    *id = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  return st;
}

finch_status finch_models_lookup(finch_db *db, const char *ref, const char *want_kind, const char *dataset,
                                 long long *id, finch_err *err) {
  *id = 0;
  if (!*ref) return finch_err_set(err, FINCH_EINVAL, "model reference is empty");
  char idtext[32];
  finch_status st;
  if (all_digits(ref)) {
    if (strlen(ref) > 18) return finch_err_set(err, FINCH_EINVAL, "model id '%s' is out of range", ref);
    snprintf(idtext, sizeof idtext, "%s", ref);
  } else if (!strcmp(ref, "best") || !strcmp(ref, "latest")) {
    return finch_models_pick(db, ref, want_kind, dataset, id, err);
  } else {
    finch_err why;
    if (!finch_models_alias_valid(ref, &why))
      return finch_err_set(err, FINCH_ENOTFOUND, "model '%s': no such file, and not a model id, best, latest or an "
                           "alias", ref);
    if ((st = alias_id(db, ref, dataset, idtext, sizeof idtext, err)) != FINCH_OK) return st;
  }
  const char *p[] = {idtext};
  PGresult *r = finch_db_query(db, "SELECT id FROM models WHERE id = $1", 1, p, err);
  if (!r) return FINCH_EDB;
  int k = PQntuples(r);
  PQclear(r);
  if (!k) return finch_err_set(err, FINCH_ENOTFOUND, "model %s is not registered (see `finch models list`)", idtext);
  *id = atoll(idtext);
  return FINCH_OK;
}

finch_status finch_models_resolve_in(finch_db *db, const char *ref, const char *want_kind, const char *dataset,
                                     char *path, size_t n, long long *id, char *kind, finch_err *err) {
  *id = 0;
  if (kind) kind[0] = '\0';
  PGresult *r;
  if (finch_models_ref_is_file(ref)) {
    snprintf(path, n, "%s", ref);
    if (!db) return FINCH_OK;
    char sha[FINCH_SHA256_HEX_LEN];
    finch_status st = finch_sha256_file(ref, sha, err);
    if (st) return st;
    const char *p[] = {sha};
    r = finch_db_query(db, "SELECT id, kind FROM models WHERE sha256 = $1 ORDER BY id DESC LIMIT 1", 1, p, err);
    if (!r) return FINCH_EDB;
    if (PQntuples(r) > 0) {
      *id = atoll(PQgetvalue(r, 0, 0));
      if (kind) snprintf(kind, 16, "%s", PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return FINCH_OK;
  }
  if (!*ref) return finch_err_set(err, FINCH_EINVAL, "model reference is empty");
  if (!db) {
    if (!all_digits(ref))
      return finch_err_set(err, FINCH_ENOTFOUND, "model '%s': no such file, and not a model id", ref);
    return finch_err_set(err, FINCH_EINVAL, "model '%s': a model id needs the database", ref);
  }
  char idtext[32];
  if (!all_digits(ref)) {
    long long lid;
    finch_status st = finch_models_lookup(db, ref, want_kind, dataset, &lid, err);
    if (st) return st;
    snprintf(idtext, sizeof idtext, "%lld", lid);
    ref = idtext;
  }
  const char *p[] = {ref};
  r = finch_db_query(db, "SELECT path, kind FROM models WHERE id = $1", 1, p, err);
  if (!r) return FINCH_EDB;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return finch_err_set(err, FINCH_ENOTFOUND, "model %s is not registered (see `finch models list`)", ref);
  }
  snprintf(path, n, "%s", PQgetvalue(r, 0, 0));
  if (kind) snprintf(kind, 16, "%s", PQgetvalue(r, 0, 1));
  *id = atoll(ref);
  PQclear(r);
  if (!finch_file_exists(path))
    return finch_err_set(err, FINCH_ENOTFOUND, "model %s: its file %s is missing", ref, path);
  return FINCH_OK;
}

finch_status finch_models_list_json(finch_db *db, char **json, finch_err *err) {
  PGresult *r = finch_db_query(db,
      "SELECT coalesce(json_agg(json_build_object('id', m.id, 'kind', m.kind, 'stage', m.stage,"
      " 'arch', m.arch, 'dtype', m.dtype, 'dataset', d.name, 'parent_model_id', m.parent_model_id,"
      " 'path', m.path, 'params', m.params, 'bytes', m.bytes, 'sha256', m.sha256,"
      " 'metrics', m.metrics, 'status', m.status, 'created_at', m.created_at, 'aliases',"
      " (SELECT coalesce(json_agg(a.alias ORDER BY a.alias), '[]'::json) FROM model_aliases a"
      "  WHERE a.model_id = m.id)) ORDER BY m.id), '[]'::json)"
      " FROM models m LEFT JOIN datasets d ON d.id = m.dataset_id", 0, NULL, err);
  if (!r) return FINCH_EDB;
  *json = strdup(PQgetvalue(r, 0, 0));
  PQclear(r);
  return *json ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "out of memory");
}

int finch_models_alias_valid(const char *alias, finch_err *err) {
  size_t len = strlen(alias);
  if (!len || len > 64)
    return finch_err_set(err, FINCH_EINVAL, "alias '%s': 1 to 64 characters", alias), 0;
  if (!((alias[0] >= 'a' && alias[0] <= 'z') || (alias[0] >= 'A' && alias[0] <= 'Z')))
    return finch_err_set(err, FINCH_EINVAL, "alias '%s': must start with a letter", alias), 0;
  for (const char *c = alias; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
          *c == '.' || *c == '-'))
      return finch_err_set(err, FINCH_EINVAL, "alias '%s': character '%c' is not a letter, digit, '_', '.' or '-'",
                           alias, *c), 0;
  if (!strcmp(alias, "best") || !strcmp(alias, "latest") || !strcmp(alias, "none"))
    return finch_err_set(err, FINCH_EINVAL, "alias '%s' is reserved (best, latest and none are computed)", alias), 0;
  return 1;
}

finch_status finch_models_tag(finch_db *db, long long id, const char *alias, finch_err *err) {
  if (!finch_models_alias_valid(alias, err)) return FINCH_EINVAL;
  char ids[32];
  snprintf(ids, sizeof ids, "%lld", id);
  const char *p[] = {ids, alias};
  PGresult *r = finch_db_query(db, "SELECT d.name FROM models m LEFT JOIN datasets d ON d.id = m.dataset_id"
                                   " WHERE m.id = $1", 1, p, err);
  if (!r) return FINCH_EDB;
  finch_status st = FINCH_OK;
  if (PQntuples(r) == 0)
    st = finch_err_set(err, FINCH_ENOTFOUND, "model %lld is not registered (see `finch models list`)", id);
  else if (PQgetisnull(r, 0, 0))
    st = finch_err_set(err, FINCH_EINVAL, "model %lld has no dataset: an alias is bound within a dataset", id);
  PQclear(r);
  if (st) return st;
  /* One statement: the binding and its history row change together. */
  r = finch_db_query(db,
      "WITH m AS (SELECT id, dataset_id FROM models WHERE id = $1),"
      " old AS (SELECT a.model_id FROM model_aliases a, m WHERE a.dataset_id = m.dataset_id AND a.alias = $2),"
      " up AS (INSERT INTO model_aliases (dataset_id, alias, model_id) SELECT dataset_id, $2, id FROM m"
      "        ON CONFLICT (dataset_id, alias) DO UPDATE SET model_id = EXCLUDED.model_id, tagged_at = now()"
      "        RETURNING model_id)"
      " INSERT INTO model_alias_history (dataset, alias, action, model_id, previous_model_id)"
      " SELECT d.name, $2, 'tag', m.id, (SELECT model_id FROM old) FROM m JOIN datasets d ON d.id = m.dataset_id"
      " WHERE EXISTS (SELECT 1 FROM up) RETURNING id", 2, p, err);
  if (!r) return FINCH_EDB;
  PQclear(r);
  return FINCH_OK;
}

finch_status finch_models_untag(finch_db *db, const char *alias, const char *dataset, finch_err *err) {
  if (!finch_models_alias_valid(alias, err)) return FINCH_EINVAL;
  const char *p[] = {alias, dataset};
  PGresult *r = finch_db_query(db,
      "WITH del AS (DELETE FROM model_aliases a USING datasets d WHERE d.id = a.dataset_id AND a.alias = $1"
      "             AND d.name = $2 RETURNING a.model_id)"
      " INSERT INTO model_alias_history (dataset, alias, action, model_id, previous_model_id)"
      " SELECT $2, $1, 'untag', NULL, model_id FROM del RETURNING id", 2, p, err);
  if (!r) return FINCH_EDB;
  int k = PQntuples(r);
  PQclear(r);
  if (!k) return finch_err_set(err, FINCH_ENOTFOUND, "alias '%s' is not bound in dataset '%s'", alias, dataset);
  return FINCH_OK;
}

int finch_models_gate_teacher(double acc, double majority, double margin, char *reason, size_t n) {
  if (acc > majority + margin) return 1;
  snprintf(reason, n, "holdout accuracy %.4f is not above the majority-class rate %.4f by the margin %.4f", acc,
           majority, margin);
  return 0;
}

int finch_models_gate_student(double acc, double teacher_acc, double ratio, char *reason, size_t n) {
  if (acc >= ratio * teacher_acc) return 1;
  snprintf(reason, n, "holdout accuracy %.4f is below %.2f of its teacher's %.4f (%.4f)", acc, ratio, teacher_acc,
           ratio * teacher_acc);
  return 0;
}

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

double finch_models_majority_rate(const int32_t *labels, size_t n) {
  if (!n) return 0;
  /* Counting by sorting a copy keeps this free of a label bound. */
  int32_t *c = malloc(n * sizeof *c);
  if (!c) return 0;
  memcpy(c, labels, n * sizeof *c);
  qsort(c, n, sizeof *c, cmp_i32);
  size_t best = 0, run = 0;
  for (size_t i = 0; i < n; i++) {
    run = i && c[i] == c[i - 1] ? run + 1 : 1;
    if (run > best) best = run;
  }
  free(c);
  return (double)best / (double)n;
}

finch_status finch_models_status(finch_db *db, long long id, char *status, size_t sn, char *reason, size_t rn,
                                 finch_err *err) {
  char ids[32];
  snprintf(ids, sizeof ids, "%lld", id);
  const char *p[] = {ids};
  PGresult *r = finch_db_query(db, "SELECT status, coalesce(metrics->>'gate', '') FROM models WHERE id = $1", 1, p, err);
  if (!r) return FINCH_EDB;
  finch_status st = FINCH_OK;
  if (PQntuples(r) == 0) st = finch_err_set(err, FINCH_ENOTFOUND, "model %lld is not registered", id);
  else snprintf(status, sn, "%s", PQgetvalue(r, 0, 0)), snprintf(reason, rn, "%s", PQgetvalue(r, 0, 1));
  PQclear(r);
  return st;
}
