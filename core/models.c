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
                     rec->metrics_json ? rec->metrics_json : "{}"};
  PGresult *r = finch_db_query(db,
      "INSERT INTO models (kind, stage, arch, dtype, dataset_id, parent_model_id, path, sha256,"
      " params, bytes, config, metrics)"
      " VALUES ($1, $2, $3, $4, (SELECT id FROM datasets WHERE name = $5), $6, $7, $8, $9, $10,"
      " $11::jsonb, $12::jsonb) RETURNING id", 12, p, err);
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
  if (!all_digits(ref))
    return finch_err_set(err, FINCH_ENOTFOUND, "model '%s': no such file, and not a model id", ref);
  if (!db) return finch_err_set(err, FINCH_EINVAL, "model '%s': a model id needs the database", ref);
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
      " 'metrics', m.metrics, 'created_at', m.created_at) ORDER BY m.id), '[]'::json)"
      " FROM models m LEFT JOIN datasets d ON d.id = m.dataset_id", 0, NULL, err);
  if (!r) return FINCH_EDB;
  *json = strdup(PQgetvalue(r, 0, 0));
  PQclear(r);
  return *json ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "out of memory");
}
