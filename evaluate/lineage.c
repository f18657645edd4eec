#include "evaluate/lineage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Time stamps and durations of a row: left out of the lineage. */
#define LINEAGE_UNTIMED(row) "(to_jsonb(" row ") - 'created_at' - 'started_at' - 'finished_at' - 'seconds')"

/* The models of the chain with their depth; $1 = the evaluated model. */
#define LINEAGE_CHAIN                                                                                            \
  "WITH RECURSIVE up(id, depth) AS (SELECT id, 0 FROM models WHERE id = $1"                                       \
  " UNION SELECT m.parent_model_id, up.depth + 1 FROM models m JOIN up ON m.id = up.id"                           \
  "  WHERE m.parent_model_id IS NOT NULL AND up.depth < 64),"                                                     \
  " chain AS (SELECT id, min(depth) AS depth FROM up GROUP BY id)"

/* Runs sql (its one column a jsonb per row) and appends each row to an array. */
static finch_status rows_json(finch_db *db, const char *sql, int np, const char *const *p, json_t **out,
                              finch_err *err) {
  *out = NULL;
  PGresult *r = finch_db_query(db, sql, np, p, err);
  if (!r) return FINCH_EDB;
  json_t *a = json_array();
  finch_status st = a ? FINCH_OK : finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (int i = 0; !st && i < PQntuples(r); i++) {
    json_error_t je;
    json_t *v = json_loads(PQgetvalue(r, i, 0), JSON_DECODE_ANY, &je);
    if (!v || json_array_append_new(a, v))
      st = finch_err_set(err, FINCH_EFORMAT, "lineage: unreadable row from the database: %s", je.text);
  }
  PQclear(r);
  if (st) {
    json_decref(a);
    return st;
  }
  *out = a;
  return FINCH_OK;
}

finch_status finch_eval_lineage(finch_db *db, long long model_id, const char *dataset, json_t **out,
                                finch_err *err) {
  *out = NULL;
  char id[32];
  snprintf(id, sizeof id, "%lld", model_id);
  const char *p[] = {id, dataset};
  json_t *models = NULL, *runs = NULL, *sets = NULL;
  finch_status st = rows_json(db,
      LINEAGE_CHAIN
      " SELECT (" LINEAGE_UNTIMED("m") " - 'path') || jsonb_build_object('depth', c.depth, 'derivation',"
      "   CASE WHEN m.parent_model_id IS NULL THEN 'trained' WHEN m.stage = 'compiled' THEN 'compiled'"
      "        WHEN m.kind = 'student' THEN 'distilled' ELSE 'derived' END)"
      " FROM models m JOIN chain c ON c.id = m.id ORDER BY c.depth, m.id", 1, p, &models, err);
  if (!st)
    st = rows_json(db,
        LINEAGE_CHAIN
        " SELECT " LINEAGE_UNTIMED("t") " || jsonb_build_object('steps',"
        "   (SELECT count(*) FROM training_metrics s WHERE s.run_id = t.id))"
        " FROM training_runs t WHERE t.model_id IN (SELECT id FROM chain) ORDER BY t.id", 1, p, &runs, err);
  if (!st)
    st = rows_json(db,
        LINEAGE_CHAIN
        " SELECT jsonb_build_object('name', d.name, 'format', d.format,"
        "  'ingest_runs', coalesce((SELECT jsonb_agg(" LINEAGE_UNTIMED("r") " ORDER BY r.id)"
        "    FROM ingest_runs r WHERE r.dataset_id = d.id), '[]'::jsonb),"
        "  'augment_runs', coalesce((SELECT jsonb_agg(" LINEAGE_UNTIMED("a") " ORDER BY a.id)"
        "    FROM augment_runs a WHERE a.dataset_id = d.id), '[]'::jsonb))"
        " FROM datasets d WHERE d.id IN (SELECT m.dataset_id FROM models m JOIN chain c ON c.id = m.id)"
        "  OR d.name = $2 ORDER BY d.id", 2, p, &sets, err);
  if (st) {
    json_decref(models), json_decref(runs), json_decref(sets);
    return st;
  }
  json_t *teacher = json_null();
  for (size_t i = 1; i < json_array_size(models); i++) {
    const json_t *m = json_array_get(models, i);
    const char *kind = json_string_value(json_object_get(m, "kind"));
    if (kind && !strcmp(kind, "teacher")) {
      teacher = json_integer(json_integer_value(json_object_get(m, "id")));
      break;
    }
  }
  *out = json_pack("{s:o, s:o, s:o, s:o, s:s}", "models", models, "teacher_model_id", teacher, "training_runs", runs,
                   "datasets", sets, "method",
                   "models: the evaluated model and its parent_model_id chain through the registry (a compiled "
                   "model's parent is the model it was compiled from, a student's the teacher it was distilled "
                   "from), each once, with the options that trained it (config); training runs of those models; "
                   "the datasets they were trained on and the evaluated dataset, with their ingest and augment "
                   "runs. Time stamps, durations and file paths are left out.");
  if (!*out) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  return FINCH_OK;
}

finch_status finch_eval_dataset_source_sha256(finch_db *db, const char *dataset, char *buf, size_t n,
                                              finch_err *err) {
  buf[0] = '\0';
  const char *p[] = {dataset};
  PGresult *r = finch_db_query(db,
      "SELECT coalesce(string_agg(DISTINCT r.source_sha256, ',' ORDER BY r.source_sha256), '')"
      " FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
      " WHERE d.name = $1 AND r.status = 'done' AND coalesce(r.source_sha256, '') <> ''", 1, p, err);
  if (!r) return FINCH_EDB;
  snprintf(buf, n, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  return FINCH_OK;
}
