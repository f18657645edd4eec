#include "ingest/ingest.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/csv.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/text.h"

typedef struct {
  char *text, *text_norm, *label;
  char hash[FINCH_SHA256_HEX_LEN];
  char order[FINCH_SHA256_HEX_LEN]; /* seeded sort key for the holdout */
  long long line;
  int dev;
} row;

typedef struct {
  long long line;
  char field[16];
  char reason[256];
} reject;

typedef struct {
  row *rows;
  size_t n, cap;
  reject *rej;
  size_t nrej, caprej;
} table;

static void table_free(table *t) {
  for (size_t i = 0; i < t->n; i++) {
    free(t->rows[i].text);
    free(t->rows[i].text_norm);
    free(t->rows[i].label);
  }
  free(t->rows);
  free(t->rej);
}

static int add_reject(table *t, long long line, const char *field, const char *reason) {
  if (t->nrej == t->caprej) {
    size_t cap = t->caprej ? 2 * t->caprej : 64;
    reject *nr = realloc(t->rej, cap * sizeof *nr);
    if (!nr) return -1;
    t->rej = nr;
    t->caprej = cap;
  }
  reject *r = &t->rej[t->nrej++];
  r->line = line;
  snprintf(r->field, sizeof r->field, "%s", field);
  snprintf(r->reason, sizeof r->reason, "%s", reason);
  return 0;
}

/* Reads a banking77 CSV (header text,category) into t. Malformed records
 * become rejects; only I/O failure is an error. */
static finch_status read_banking77(FILE *fp, const char *name, table *t, long long *nread, finch_err *err) {
  finch_csv *csv = finch_csv_open(fp, name);
  if (!csv) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  static const char *const header[] = {"text", "category"};
  finch_status st = finch_csv_expect_header(csv, header, 2, err);
  if (st) {
    finch_csv_close(csv);
    return st;
  }
  char **f;
  size_t nf;
  finch_err rerr;
  int rc;
  while ((rc = finch_csv_next(csv, &f, &nf, &rerr)) != 0) {
    long long line = (long long)finch_csv_line(csv);
    (*nread)++;
    char reason[256];
    if (rc < 0) {
      /* The reader's message already names the file and line. */
      const char *msg = strstr(rerr.msg, ": ");
      snprintf(reason, sizeof reason, "%s", msg ? msg + 2 : rerr.msg);
      finch_warn("%s", rerr.msg);
      if (add_reject(t, line, "record", reason)) goto oom;
      continue;
    }
    if (nf != 2) {
      snprintf(reason, sizeof reason, "expected 2 fields, found %zu", nf);
      finch_warn("%s:%lld: %s", name, line, reason);
      if (add_reject(t, line, "record", reason)) goto oom;
      continue;
    }
    const char *fields[2] = {"text", "category"};
    int bad = 0;
    for (int k = 0; k < 2 && !bad; k++) {
      size_t off;
      if (!finch_utf8_valid(f[k], strlen(f[k]), &off)) {
        snprintf(reason, sizeof reason, "invalid UTF-8 at byte %zu", off);
        finch_warn("%s:%lld: %s in field %s", name, line, reason, fields[k]);
        if (add_reject(t, line, fields[k], reason)) goto oom;
        bad = 1;
      }
    }
    if (bad) continue;
    char *text = NULL, *norm = NULL, *label = NULL;
    finch_err nerr;
    if (finch_text_normalize(f[0], strlen(f[0]), 0, &text, &nerr) ||
        finch_text_normalize(f[0], strlen(f[0]), FINCH_TEXT_FOLD, &norm, &nerr) ||
        finch_text_normalize(f[1], strlen(f[1]), 0, &label, &nerr)) {
      free(text), free(norm), free(label);
      finch_warn("%s:%lld: %s", name, line, nerr.msg);
      if (add_reject(t, line, "text", nerr.msg)) goto oom;
      continue;
    }
    if (!*text || !*label) {
      const char *which = !*text ? "text" : "category";
      snprintf(reason, sizeof reason, "empty %s", which);
      finch_warn("%s:%lld: %s", name, line, reason);
      free(text), free(norm), free(label);
      if (add_reject(t, line, which, reason)) goto oom;
      continue;
    }
    if (t->n == t->cap) {
      size_t cap = t->cap ? 2 * t->cap : 1024;
      row *nr = realloc(t->rows, cap * sizeof *nr);
      if (!nr) {
        free(text), free(norm), free(label);
        goto oom;
      }
      t->rows = nr;
      t->cap = cap;
    }
    row *r = &t->rows[t->n++];
    memset(r, 0, sizeof *r);
    r->text = text;
    r->text_norm = norm;
    r->label = label;
    r->line = line;
    finch_utterance_hash(norm, label, "", r->hash);
  }
  if (ferror(fp)) st = finch_err_set(err, FINCH_EIO, "%s: read error", name);
  finch_csv_close(csv);
  return st;
oom:
  finch_csv_close(csv);
  return finch_err_set(err, FINCH_ENOMEM, "out of memory reading %s", name);
}

static int cmp_label_order(const void *a, const void *b) {
  const row *x = a, *y = b;
  int c = strcmp(x->label, y->label);
  return c ? c : strcmp(x->order, y->order);
}

static int cmp_line(const void *a, const void *b) {
  const row *x = a, *y = b;
  return (x->line > y->line) - (x->line < y->line);
}

/* Marks round(holdout * n_label) rows of each label as dev, chosen by the
 * seeded hash order; drops repeats of a content hash within the source. */
static size_t assign_splits(table *t, double holdout, unsigned long long seed) {
  for (size_t i = 0; i < t->n; i++) {
    char buf[128];
    int len = snprintf(buf, sizeof buf, "%llu:%s", seed, t->rows[i].hash);
    finch_sha256_hex(buf, (size_t)len, t->rows[i].order);
  }
  qsort(t->rows, t->n, sizeof *t->rows, cmp_label_order);
  size_t dup = 0, o = 0;
  for (size_t i = 0; i < t->n; i++) {
    /* Equal hashes have equal order keys, so repeats are adjacent. */
    if (o > 0 && strcmp(t->rows[o - 1].hash, t->rows[i].hash) == 0) {
      free(t->rows[i].text), free(t->rows[i].text_norm), free(t->rows[i].label);
      dup++;
      continue;
    }
    t->rows[o++] = t->rows[i];
  }
  t->n = o;
  for (size_t i = 0; i < t->n;) {
    size_t j = i;
    while (j < t->n && strcmp(t->rows[j].label, t->rows[i].label) == 0) j++;
    size_t k = (size_t)(holdout * (double)(j - i) + 0.5);
    for (size_t m = i; m < i + k && m < j; m++) t->rows[m].dev = 1;
    i = j;
  }
  qsort(t->rows, t->n, sizeof *t->rows, cmp_line); /* load in source order */
  return dup;
}

static finch_status load_batch(finch_db *db, const table *t, size_t from, size_t to, long long dataset_id,
                               long long run_id, long long *inserted,
                               long long *dev, finch_err *err) {
  char ds[32], run[32], line[32];
  snprintf(ds, sizeof ds, "%lld", dataset_id);
  snprintf(run, sizeof run, "%lld", run_id);
  finch_status st = finch_db_copy_begin(db,
      "COPY ingest_stage (text, text_norm, label, split, content_hash, source_line) FROM STDIN", err);
  if (st) return st;
  finch_copybuf b = {0};
  for (size_t i = from; i < to && !st; i++) {
    const row *r = &t->rows[i];
    snprintf(line, sizeof line, "%lld", r->line);
    if (finch_copybuf_field(&b, r->text, 0) || finch_copybuf_field(&b, r->text_norm, 0) ||
        finch_copybuf_field(&b, r->label, 0) || finch_copybuf_field(&b, r->dev ? "dev" : "train", 0) ||
        finch_copybuf_field(&b, r->hash, 0) || finch_copybuf_field(&b, line, 1)) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    if (b.len > (1u << 20)) {
      st = finch_db_copy_put(db, b.buf, b.len, err);
      finch_copybuf_reset(&b);
    }
  }
  if (!st) st = finch_db_copy_put(db, b.buf, b.len, err);
  finch_copybuf_free(&b);
  finch_status end = finch_db_copy_end(db, err);
  if (st) return st;
  if (end) return end;
  const char *p[] = {ds, run};
  PGresult *r = finch_db_query(db,
      "WITH ins AS (INSERT INTO utterances (dataset_id, text, text_norm, label, split, origin,"
      " content_hash, ingest_run_id, source_line)"
      " SELECT $1, text, text_norm, label, split, 'source', content_hash, $2, source_line"
      " FROM ingest_stage ON CONFLICT (dataset_id, content_hash) DO NOTHING RETURNING split)"
      " SELECT count(*), count(*) FILTER (WHERE split = 'dev') FROM ins", 2, p, err);
  if (!r) return FINCH_EDB;
  long long n = atoll(PQgetvalue(r, 0, 0)), d = atoll(PQgetvalue(r, 0, 1));
  PQclear(r);
  *inserted += n;
  *dev += d;
  char cnt[32], dup[32];
  snprintf(cnt, sizeof cnt, "%lld", n);
  snprintf(dup, sizeof dup, "%lld", (long long)(to - from) - n);
  const char *p2[] = {run, cnt, dup};
  st = finch_db_run(db, "UPDATE ingest_runs SET rows_inserted = rows_inserted + $2,"
                        " rows_duplicate = rows_duplicate + $3 WHERE id = $1", 3, p2, err);
  if (!st) st = finch_db_exec(db, "TRUNCATE ingest_stage", err);
  return st;
}

static finch_status store_rejects(finch_db *db, const table *t, long long run_id, const char *source,
                                  finch_err *err) {
  char run[32], line[32];
  snprintf(run, sizeof run, "%lld", run_id);
  for (size_t i = 0; i < t->nrej; i++) {
    snprintf(line, sizeof line, "%lld", t->rej[i].line);
    const char *p[] = {run, source, line, t->rej[i].field, t->rej[i].reason};
    finch_status st = finch_db_run(db,
        "INSERT INTO ingest_rejects (run_id, source, line, field, reason) VALUES ($1, $2, $3, $4, $5)",
        5, p, err);
    if (st) return st;
  }
  return FINCH_OK;
}

static void mark_failed(finch_db *db, long long run_id, const char *msg) {
  PQclear(PQexec(finch_db_conn(db), "ROLLBACK"));
  char run[32];
  snprintf(run, sizeof run, "%lld", run_id);
  const char *p[] = {run, msg};
  finch_err ignore;
  finch_db_run(db, "UPDATE ingest_runs SET status = 'failed', error = $2, finished_at = now()"
                   " WHERE id = $1", 2, p, &ignore);
}

finch_status finch_ingest_run(finch_db *db, const finch_ingest_opts *opts, finch_ingest_result *res,
                              finch_err *err) {
  memset(res, 0, sizeof *res);
  if (strcmp(opts->format, "banking77") != 0)
    return finch_err_set(err, FINCH_EINVAL, "unknown format '%s' (supported: banking77)", opts->format);
  if (opts->holdout < 0 || opts->holdout >= 1)
    return finch_err_set(err, FINCH_EINVAL, "holdout %g is outside [0, 1)", opts->holdout);
  int from_stdin = strcmp(opts->source, "-") == 0;
  /* Lineage records the absolute path; messages name the path as given. */
  char abs[PATH_MAX];
  const char *name = from_stdin ? "<stdin>" : opts->source;
  const char *lineage = from_stdin ? "<stdin>" : realpath(opts->source, abs) ? abs : opts->source;
  char sha[FINCH_SHA256_HEX_LEN] = "";
  if (!from_stdin) {
    finch_status st = finch_sha256_file(opts->source, sha, err);
    if (st) return st;
  }
  FILE *fp = from_stdin ? stdin : fopen(opts->source, "rb");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: %s", opts->source, strerror(errno));

  table t = {0};
  finch_status st = read_banking77(fp, name, &t, &res->read, err);
  if (!from_stdin) fclose(fp);
  if (st) {
    table_free(&t);
    return st;
  }
  res->duplicate = (long long)assign_splits(&t, opts->holdout, opts->seed);
  res->rejected = (long long)t.nrej;

  /* The run row is committed first so that a failure leaves a record. */
  char holdout[32], seed[32];
  snprintf(holdout, sizeof holdout, "%g", opts->holdout);
  snprintf(seed, sizeof seed, "%llu", opts->seed);
  const char *p[] = {opts->dataset, opts->format, lineage, sha[0] ? sha : NULL, holdout, seed};
  PGresult *r = finch_db_query(db,
      "WITH ds AS (INSERT INTO datasets (name, format) VALUES ($1, $2)"
      " ON CONFLICT (name) DO UPDATE SET format = datasets.format RETURNING id)"
      " INSERT INTO ingest_runs (dataset_id, source, source_sha256, format, holdout, seed)"
      " SELECT id, $3, $4, $2, $5, $6 FROM ds RETURNING id, dataset_id", 6, p, err);
  if (!r) {
    table_free(&t);
    return FINCH_EDB;
  }
  res->run_id = atoll(PQgetvalue(r, 0, 0));
  long long dataset_id = atoll(PQgetvalue(r, 0, 1));
  PQclear(r);

  st = finch_db_exec(db,
      "CREATE TEMP TABLE IF NOT EXISTS ingest_stage (text text, text_norm text, label text,"
      " split text, content_hash text, source_line bigint)", err);
  size_t batch = opts->batch_rows ? opts->batch_rows : 5000;
  for (size_t i = 0; !st && i < t.n; i += batch) {
    size_t to = i + batch < t.n ? i + batch : t.n;
    st = finch_db_exec(db, "BEGIN", err);
    if (!st) st = load_batch(db, &t, i, to, dataset_id, res->run_id, &res->inserted, &res->dev, err);
    if (!st) st = finch_db_exec(db, "COMMIT", err);
  }
  if (!st) {
    char run[32], nread[32], dup[32], rej[32];
    snprintf(run, sizeof run, "%lld", res->run_id);
    snprintf(nread, sizeof nread, "%lld", res->read);
    snprintf(dup, sizeof dup, "%lld", res->duplicate);
    snprintf(rej, sizeof rej, "%lld", res->rejected);
    const char *p2[] = {run, nread, dup, rej};
    st = finch_db_exec(db, "BEGIN", err);
    if (!st) st = store_rejects(db, &t, res->run_id, name, err);
    if (!st)
      st = finch_db_run(db, "UPDATE ingest_runs SET status = 'done', finished_at = now(), rows_read = $2,"
                            " rows_duplicate = rows_duplicate + $3, rows_rejected = $4 WHERE id = $1",
                        4, p2, err);
    if (!st) st = finch_db_exec(db, "COMMIT", err);
  }
  if (st) mark_failed(db, res->run_id, err->msg);
  res->duplicate = res->read - res->rejected - res->inserted;
  table_free(&t);
  return st;
}
