/* The database side of ingest: the run's row, COPY batches committed with
 * the run's progress, rejects, and the run's final state. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "ingest/internal.h"

static json_t *run_params(const finch_ingest_opts *o) {
  json_t *p = json_object();
  json_object_set_new(p, "batch_rows", json_integer((json_int_t)(o->batch_rows ? o->batch_rows : 5000)));
  json_object_set_new(p, "max_text_bytes", json_integer((json_int_t)(o->max_text_bytes ? o->max_text_bytes : 16384)));
  if (o->text_col) json_object_set_new(p, "text_col", json_string(o->text_col));
  if (o->label_col) json_object_set_new(p, "label_col", json_string(o->label_col));
  if (o->domains_path) json_object_set_new(p, "domains", json_string(o->domains_path));
  if (o->labels_path) json_object_set_new(p, "labels", json_string(o->labels_path));
  json_t *rules = json_array();
  for (size_t i = 0; i < o->n_pii_rules; i++) json_array_append_new(rules, json_string(o->pii_rules[i]));
  json_object_set_new(p, "pii_rules", rules);
  return p;
}

finch_status ingest_run_create(finch_db *db, const finch_ingest_opts *o, const char *lineage, const char *sha,
                               const char *split_policy, size_t rows_total, ingest_run *run, finch_err *err) {
  char holdout[32], seed[32], total[32];
  snprintf(holdout, sizeof holdout, "%g", o->holdout);
  snprintf(seed, sizeof seed, "%llu", o->seed);
  snprintf(total, sizeof total, "%zu", rows_total);
  json_t *pj = run_params(o);
  char *params = json_dumps(pj, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(pj);
  const char *p[] = {o->dataset, o->format, lineage, sha[0] ? sha : NULL, holdout, seed, split_policy, total, params};
  PGresult *r = finch_db_query(db,
      "WITH ds AS (INSERT INTO datasets (name, format) VALUES ($1, $2)"
      " ON CONFLICT (name) DO UPDATE SET format = datasets.format RETURNING id)"
      " INSERT INTO ingest_runs (dataset_id, source, source_sha256, format, holdout, seed, split_policy,"
      " rows_total, params)"
      " SELECT id, $3, $4, $2, $5, $6, $7, $8, $9::jsonb FROM ds RETURNING id, dataset_id", 9, p, err);
  free(params);
  if (!r) return FINCH_EDB;
  run->id = atoll(PQgetvalue(r, 0, 0));
  run->dataset_id = atoll(PQgetvalue(r, 0, 1));
  run->rows_loaded = 0;
  PQclear(r);
  char ds[32];
  snprintf(ds, sizeof ds, "%lld", run->dataset_id);
  const char *p2[] = {ds};
  r = finch_db_query(db, "SELECT NOT EXISTS (SELECT 1 FROM utterances WHERE dataset_id = $1)", 1, p2, err);
  if (!r) return FINCH_EDB;
  run->dataset_was_empty = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  return FINCH_OK;
}

finch_status ingest_run_open(finch_db *db, long long id, const char *sha, size_t rows_total, ingest_run *run,
                             finch_err *err) {
  char ids[32];
  snprintf(ids, sizeof ids, "%lld", id);
  const char *p[] = {ids};
  PGresult *r = finch_db_query(db, "SELECT dataset_id, rows_loaded, coalesce(source_sha256, ''), rows_total, status"
                                   " FROM ingest_runs WHERE id = $1", 1, p, err);
  if (!r) return FINCH_EDB;
  finch_status st = FINCH_OK;
  if (PQntuples(r) == 0) {
    st = finch_err_set(err, FINCH_ENOTFOUND, "ingest run %lld does not exist", id);
  } else if (sha[0] && PQgetvalue(r, 0, 2)[0] && strcmp(sha, PQgetvalue(r, 0, 2)) != 0) {
    st = finch_err_set(err, FINCH_EINVAL, "run %lld: the source changed since the run started (sha256 %.12s…, "
                       "now %.12s…); start a new run instead", id, PQgetvalue(r, 0, 2), sha);
  } else if (!PQgetisnull(r, 0, 3) && (size_t)atoll(PQgetvalue(r, 0, 3)) != rows_total) {
    st = finch_err_set(err, FINCH_EINVAL, "run %lld: the source now gives %zu rows, the run planned %s", id,
                       rows_total, PQgetvalue(r, 0, 3));
  } else {
    run->id = id;
    run->dataset_id = atoll(PQgetvalue(r, 0, 0));
    run->rows_loaded = atoll(PQgetvalue(r, 0, 1));
    st = finch_db_run(db, "UPDATE ingest_runs SET status = 'running', error = NULL WHERE id = $1", 1, p, err);
  }
  PQclear(r);
  return st;
}

static int put_row(finch_copybuf *b, const ingest_row *r, long long id) {
  char turn[16], line[32], idtext[32];
  snprintf(idtext, sizeof idtext, "%lld", id);
  snprintf(turn, sizeof turn, "%d", r->turn);
  snprintf(line, sizeof line, "%lld", r->line);
  return finch_copybuf_field(b, idtext, 0) || finch_copybuf_field(b, r->text, 0) ||
         finch_copybuf_field(b, r->text_norm, 0) ||
         finch_copybuf_field(b, r->label, 0) || finch_copybuf_field(b, r->split, 0) ||
         finch_copybuf_field(b, r->dialogue_id, 0) || finch_copybuf_field(b, r->turn >= 0 ? turn : NULL, 0) ||
         finch_copybuf_field(b, r->speaker, 0) || finch_copybuf_field(b, r->meta, 0) ||
         finch_copybuf_field(b, r->hash, 0) || finch_copybuf_field(b, line, 1);
}

/* The general path: COPY into a staging table, then INSERT ... ON CONFLICT
 * DO NOTHING; safe against concurrent loads of the same dataset. Leaves the
 * transaction open (the caller commits it with the run's progress). */
static finch_status stage_batch_upsert(finch_db *db, const ingest_table *t, size_t from, size_t to,
                                       const long long *ids, const ingest_run *run, long long *inserted,
                                       long long *dev, finch_err *err) {
  finch_status st = finch_db_exec(db,
      "BEGIN;"
      "CREATE TEMP TABLE IF NOT EXISTS ingest_stage (id bigint, text text, text_norm text, label text, split text,"
      " dialogue_id text, turn_index integer, speaker text, meta jsonb, content_hash text, source_line bigint)"
      " ON COMMIT DELETE ROWS", err);
  if (st) return st;
  st = finch_db_copy_begin(db,
      "COPY ingest_stage (id, text, text_norm, label, split, dialogue_id, turn_index, speaker, meta, content_hash,"
      " source_line) FROM STDIN", err);
  finch_copybuf b = {0};
  for (size_t i = from; !st && i < to; i++) {
    if (put_row(&b, &t->rows[i], ids[i - from])) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    if (!st && b.len > (1u << 20)) {
      st = finch_db_copy_put(db, b.buf, b.len, err);
      finch_copybuf_reset(&b);
    }
  }
  if (!st) st = finch_db_copy_put(db, b.buf, b.len, err);
  finch_copybuf_free(&b);
  finch_status end = finch_db_copy_end(db, err);
  if (!st) st = end;
  char ds[32], runid[32];
  snprintf(ds, sizeof ds, "%lld", run->dataset_id);
  snprintf(runid, sizeof runid, "%lld", run->id);
  const char *p[] = {ds, runid};
  PGresult *r = st ? NULL : finch_db_query(db,
      "WITH ins AS (INSERT INTO utterances (id, dataset_id, text, text_norm, label, split, dialogue_id, turn_index,"
      " speaker, meta, origin, content_hash, ingest_run_id, source_line)"
      " SELECT id, $1, text, text_norm, label, split, dialogue_id, turn_index, speaker, meta, 'source',"
      " content_hash, $2, source_line FROM ingest_stage"
      " ON CONFLICT (dataset_id, content_hash) DO NOTHING RETURNING split)"
      " SELECT count(*), count(*) FILTER (WHERE split = 'dev') FROM ins", 2, p, err);
  if (!st && !r) st = FINCH_EDB;
  if (!st) {
    *inserted = atoll(PQgetvalue(r, 0, 0));
    *dev = atoll(PQgetvalue(r, 0, 1));
    PQclear(r);
  }
  if (st) finch_db_rollback(db);
  return st;
}

finch_status ingest_run_finish(finch_db *db, const ingest_table *t, const ingest_run *run, const char *source,
                               const finch_ingest_result *res, int stopped, long long *inserted_total,
                               long long *dev_total, finch_err *err) {
  char runid[32], nread[32], rej[32], secs[32];
  snprintf(runid, sizeof runid, "%lld", run->id);
  snprintf(nread, sizeof nread, "%lld", res->read);
  snprintf(rej, sizeof rej, "%lld", res->rejected);
  snprintf(secs, sizeof secs, "%.3f", res->seconds);
  json_t *red = json_object();
  for (size_t i = 0; i < res->n_pii_types; i++)
    json_object_set_new(red, res->pii_types[i], json_integer((json_int_t)res->pii_counts[i]));
  char *reds = json_dumps(red, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(red);
  finch_status st = finch_db_exec(db, "BEGIN", err);
  /* Rejects are stored once, with the run's last step (a resumed run has not stored them yet). */
  if (!st && !stopped) st = finch_db_run(db, "DELETE FROM ingest_rejects WHERE run_id = $1", 1, (const char *[]){runid}, err);
  for (size_t i = 0; !st && !stopped && i < t->nrej; i++) {
    char line[32];
    snprintf(line, sizeof line, "%lld", t->rej[i].line);
    const char *p[] = {runid, source, line, t->rej[i].field, t->rej[i].reason};
    st = finch_db_run(db, "INSERT INTO ingest_rejects (run_id, source, line, field, reason) VALUES ($1, $2, $3, $4, $5)",
                      5, p, err);
  }
  const char *p2[] = {runid, nread, rej, reds, secs, stopped ? "stopped" : "done"};
  if (!st) {
    /* Duplicates: every row read that was neither rejected nor inserted by
     * this run, over all its invocations. */
    PGresult *r = finch_db_query(db,
        "UPDATE ingest_runs SET status = $6, finished_at = CASE WHEN $6 = 'done' THEN now() END,"
        " rows_read = $2, rows_rejected = $3, rows_duplicate = $2::bigint - $3::bigint - rows_inserted,"
        " redactions = $4::jsonb, seconds = coalesce(seconds, 0) + $5 WHERE id = $1 RETURNING rows_inserted,"
        " (SELECT count(*) FROM utterances u WHERE u.dataset_id = ingest_runs.dataset_id AND u.split = 'dev'"
        " AND u.ingest_run_id = $1)",
        6, p2, err);
    if (!r) {
      st = FINCH_EDB;
    } else {
      *inserted_total = atoll(PQgetvalue(r, 0, 0));
      *dev_total = atoll(PQgetvalue(r, 0, 1));
      PQclear(r);
    }
  }
  if (!st) st = finch_db_exec(db, "COMMIT", err);
  if (st) finch_db_rollback(db);
  free(reds);
  return st;
}

void ingest_run_fail(finch_db *db, long long run_id, const char *msg) {
  finch_db_rollback(db);
  char run[32];
  snprintf(run, sizeof run, "%lld", run_id);
  const char *p[] = {run, msg};
  finch_err ignore;
  finch_db_run(db, "UPDATE ingest_runs SET status = 'failed', error = $2 WHERE id = $1", 2, p, &ignore);
}

static int cmp_hex(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int put_row_direct(finch_copybuf *b, const ingest_row *r, long long id, const char *ds, const char *runid) {
  return finch_copybuf_field(b, ds, 0) || finch_copybuf_field(b, "source", 0) ||
         finch_copybuf_field(b, runid, 0) || put_row(b, r, id);
}

finch_status ingest_reserve_ids(finch_db *db, size_t from, size_t to, long long **ids, finch_err *err) {
  *ids = NULL;
  char n[32];
  snprintf(n, sizeof n, "%zu", to - from);
  const char *p[] = {n};
  PGresult *r = finch_db_query(db, "SELECT nextval(pg_get_serial_sequence('utterances', 'id'))"
                                   " FROM generate_series(1, $1::bigint) ORDER BY 1", 1, p, err);
  if (!r) return FINCH_EDB;
  finch_status st = FINCH_OK;
  if ((size_t)PQntuples(r) != to - from) {
    st = finch_err_set(err, FINCH_EDB, "utterances: reserved %d ids for a batch of %zu rows", PQntuples(r), to - from);
  } else if (!(*ids = malloc((to - from) * sizeof **ids))) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  } else {
    for (size_t i = 0; i < to - from; i++) (*ids)[i] = atoll(PQgetvalue(r, (int)i, 0));
  }
  PQclear(r);
  return st;
}

/* The fast path: one indexed lookup finds which rows of the batch are
 * already stored, and the rest go straight into utterances with COPY (a new
 * run into an empty dataset skips the lookup). If a concurrent load stored
 * one of them meanwhile, the unique index refuses the COPY, the transaction
 * rolls back, and the batch takes the general path. On success the
 * transaction is left open with the batch in it. */
finch_status ingest_stage_batch(finch_db *db, const ingest_table *t, size_t from, size_t to, const long long *ids,
                                const ingest_run *run, long long *inserted, long long *dev, finch_err *err) {
  char ds[32], runid[32];
  snprintf(ds, sizeof ds, "%lld", run->dataset_id);
  snprintf(runid, sizeof runid, "%lld", run->id);
  size_t n = to - from;
  char *arr = malloc(n * (FINCH_SHA256_HEX_LEN + 1) + 3);
  char **have = malloc((n + 1) * sizeof *have);
  if (!arr || !have) {
    free(arr);
    free(have);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  size_t o = 0;
  arr[o++] = '{';
  for (size_t i = from; i < to; i++) {
    if (i > from) arr[o++] = ',';
    memcpy(arr + o, t->rows[i].hash, FINCH_SHA256_HEX_LEN - 1);
    o += FINCH_SHA256_HEX_LEN - 1;
  }
  arr[o++] = '}';
  arr[o] = '\0';
  finch_status st = finch_db_exec(db, "BEGIN", err);
  const char *p[] = {ds, arr};
  PGresult *r = st || run->dataset_was_empty
                    ? NULL
                    : finch_db_query(db, "SELECT content_hash FROM utterances WHERE dataset_id = $1"
                                         " AND content_hash = ANY($2::text[])", 2, p, err);
  if (!st && !r && !run->dataset_was_empty) st = FINCH_EDB;
  size_t nhave = 0;
  if (!st && r) {
    for (int i = 0; i < PQntuples(r); i++) have[nhave++] = PQgetvalue(r, i, 0);
    qsort(have, nhave, sizeof *have, cmp_hex);
  }
  long long ins = 0, d = 0;
  if (!st)
    st = finch_db_copy_begin(db,
        "COPY utterances (dataset_id, origin, ingest_run_id, id, text, text_norm, label, split, dialogue_id,"
        " turn_index, speaker, meta, content_hash, source_line) FROM STDIN", err);
  finch_copybuf b = {0};
  for (size_t i = from; !st && i < to; i++) {
    const char *h = t->rows[i].hash;
    if (nhave && bsearch(&h, have, nhave, sizeof *have, cmp_hex)) continue;
    if (put_row_direct(&b, &t->rows[i], ids[i - from], ds, runid)) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    ins++;
    d += t->rows[i].split && strcmp(t->rows[i].split, "dev") == 0;
    if (!st && b.len > (1u << 20)) {
      st = finch_db_copy_put(db, b.buf, b.len, err);
      finch_copybuf_reset(&b);
    }
  }
  if (!st) {
    st = finch_db_copy_put(db, b.buf, b.len, err);
    finch_status end = finch_db_copy_end(db, err);
    if (!st) st = end;
  }
  finch_copybuf_free(&b);
  PQclear(r);
  free(arr);
  free(have);
  if (!st) {
    *inserted = ins;
    *dev = d;
    return FINCH_OK;
  }
  finch_db_rollback(db);
  if (strstr(err->msg, "duplicate key")) {
    finch_debug("batch at row %zu raced a concurrent load; loading it with ON CONFLICT", from);
    return stage_batch_upsert(db, t, from, to, ids, run, inserted, dev, err);
  }
  return st;
}

finch_status ingest_commit_batch(finch_db *db, const ingest_run *run, size_t to, long long inserted, finch_err *err) {
  char runid[32], upto[32], cnt[32];
  snprintf(runid, sizeof runid, "%lld", run->id);
  snprintf(upto, sizeof upto, "%zu", to);
  snprintf(cnt, sizeof cnt, "%lld", inserted);
  const char *p[] = {runid, upto, cnt};
  finch_status st = finch_db_run(db, "UPDATE ingest_runs SET rows_loaded = $2, rows_inserted = rows_inserted + $3"
                                     " WHERE id = $1", 3, p, err);
  if (!st) st = finch_db_exec(db, "COMMIT", err);
  if (st) finch_db_rollback(db);
  return st;
}

/* The advisory lock that keeps two runs from loading one dataset at once
 * (see load_pool.c): polled, so that a stop request ends the wait. */
#define INGEST_LOCK_CLASS "1179209283" /* "FINC" */

finch_status ingest_lock_dataset(finch_db *db, const char *dataset, volatile sig_atomic_t *stop, int *got,
                                 finch_err *err) {
  const char *p[] = {dataset};
  *got = 0;
  for (int waited = 0;; waited++) {
    PGresult *r = finch_db_query(db, "SELECT pg_try_advisory_lock(" INGEST_LOCK_CLASS ", hashtext($1))", 1, p, err);
    if (!r) return FINCH_EDB;
    *got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (*got || (stop && *stop)) return FINCH_OK;
    if (waited == 0) finch_info("another run is loading dataset %s; waiting for it to finish", dataset);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

void ingest_unlock_dataset(finch_db *db, const char *dataset) {
  const char *p[] = {dataset};
  finch_err ignore;
  finch_db_run(db, "SELECT pg_advisory_unlock(" INGEST_LOCK_CLASS ", hashtext($1))", 1, p, &ignore);
}
