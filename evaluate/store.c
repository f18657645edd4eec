#include "evaluate/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/paths.h"
#include "evaluate/body.h"
#include "evaluate/report.h"
#include "evaluate/report_html.h"

/* Reads a whole file (malloc'd, NUL-terminated; *len its size). NULL with
 * errno set when it cannot be read. */
static char *slurp(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n - 1, fp);
    if (n < cap - 1) break;
    char *t = realloc(buf, cap *= 2);
    if (!t) free(buf);
    buf = t;
  }
  int bad = ferror(fp);
  fclose(fp);
  if (!buf || bad) {
    free(buf);
    errno = bad ? EIO : ENOMEM;
    return NULL;
  }
  buf[n] = '\0';
  *len = n;
  return buf;
}

/* Puts data at path unless a file is there: through a temporary file in the
 * same directory and a rename, so a reader never sees half a report. An
 * existing file with the same bytes is accepted; with other bytes refused,
 * unless keep: then the existing file stays as it is (a rendering of the
 * same body, made on another run). */
static finch_status write_once(const char *path, const char *data, size_t len, int keep, finch_err *err) {
  size_t have_len;
  char *have = slurp(path, &have_len);
  if (have) {
    int same = have_len == len && memcmp(have, data, len) == 0;
    free(have);
    if (same || keep) return FINCH_OK;
    return finch_err_set(err, FINCH_ECHECKSUM, "%s: a different file is already there; reports are never "
                         "overwritten", path);
  }
  if (errno != ENOENT) return finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(errno));
  char tmp[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
  FILE *fp = fopen(tmp, "wb");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: %s", tmp, strerror(errno));
  int bad = fwrite(data, 1, len, fp) != len || fflush(fp) != 0 || fsync(fileno(fp)) != 0;
  bad |= fclose(fp) != 0;
  /* link() fails on an existing target, where rename() would replace it. */
  if (bad || link(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    if (!bad && e == EEXIST) return write_once(path, data, len, keep, err);
    return finch_err_set(err, FINCH_EIO, "%s: %s", path, bad ? "write failed" : strerror(e));
  }
  unlink(tmp);
  return FINCH_OK;
}

static void report_paths(const char *dir, long long id, const char *sha, char *json, char *md, char *html) {
  snprintf(json, PATH_MAX, "%s/report-%lld-%.12s.json", dir, id, sha);
  snprintf(md, PATH_MAX, "%s/report-%lld-%.12s.md", dir, id, sha);
  snprintf(html, PATH_MAX, "%s/report-%lld-%.12s.html", dir, id, sha);
}

/* The HTML page of r (evaluate/report_html.h), as written at the time the
 * report is made: the sign-off then lists no decision; finch report show
 * --format html renders it again with the decisions given since. */
static finch_status write_html(const finch_report *r, const char *path, finch_err *err) {
  char *html = finch_report_html(r->body, r->body_sha256, r->measurements, r->approvals);
  finch_status st = html ? write_once(path, html, strlen(html), 1, err)
                         : finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", path);
  free(html);
  return st;
}

/* The Markdown of r, as written at the time the report is made. */
static finch_status write_md(const finch_report *r, finch_err *err) {
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  if (!fp) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  finch_report_write_markdown(fp, r);
  int bad = ferror(fp);
  fclose(fp);
  finch_status st = bad ? finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", r->md_path)
                        : write_once(r->md_path, buf, len, 1, err);
  free(buf);
  return st;
}

finch_status finch_report_store(finch_db *db, const json_t *body, const json_t *measurements,
                                const finch_report_row *row, finch_report_ref *out, finch_err *err) {
  memset(out, 0, sizeof *out);
  char *bytes = finch_eval_body_dump(body, out->body_sha256);
  char *meas = json_dumps(measurements, JSON_COMPACT | JSON_SORT_KEYS);
  char *metrics = json_dumps(row->metrics, JSON_COMPACT);
  char dir[PATH_MAX];
  finch_status st = (!bytes || !meas || !metrics) ? finch_err_set(err, FINCH_ENOMEM, "out of memory") : FINCH_OK;
  if (!st) st = finch_home_subdir("reports", dir, sizeof dir, err);
  if (st) goto out;
  char mid[32], nbuf[32];
  snprintf(mid, sizeof mid, "%lld", row->model_id);
  snprintf(nbuf, sizeof nbuf, "%lld", row->n);
  /* Looked up first, so that a repeated evaluation takes no id from the
   * sequence; ON CONFLICT keeps one report per body when two evaluations of
   * the same body insert at once (the loser then finds the winner's). */
  const char *p1[] = {out->body_sha256};
  const char *p[] = {row->model_id ? mid : NULL, row->model_sha256, row->model_path, row->source, nbuf, metrics,
                     bytes, out->body_sha256, meas};
  for (int attempt = 0; !st && !out->id && attempt < 2; attempt++) {
    PGresult *r = finch_db_query(db, "SELECT id FROM eval_reports WHERE body_sha256 = $1", 1, p1, err);
    if (!r) {
      st = FINCH_EDB;
      break;
    }
    if (PQntuples(r)) {
      out->id = atoll(PQgetvalue(r, 0, 0));
      out->unchanged = 1;
    }
    PQclear(r);
    if (out->id || attempt) break;
    r = finch_db_query(db,
        "INSERT INTO eval_reports (model_id, model_sha256, model_path, source, n, metrics, body, body_sha256,"
        " measurements) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9::jsonb)"
        " ON CONFLICT (body_sha256) WHERE body_sha256 IS NOT NULL DO NOTHING RETURNING id", 9, p, err);
    if (!r) {
      st = FINCH_EDB;
      break;
    }
    if (PQntuples(r)) out->id = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (out->id) {
      report_paths(dir, out->id, out->body_sha256, out->json_path, out->md_path, out->html_path);
      char idbuf[32];
      snprintf(idbuf, sizeof idbuf, "%lld", out->id);
      const char *p3[] = {idbuf, out->md_path, out->json_path};
      st = finch_db_run(db, "UPDATE eval_reports SET report_path = $2, json_path = $3 WHERE id = $1", 3, p3, err);
    }
  }
  if (!st && !out->id)
    st = finch_err_set(err, FINCH_EINTERNAL, "report with body %s neither inserted nor found", out->body_sha256);
  if (st) goto out;
  report_paths(dir, out->id, out->body_sha256, out->json_path, out->md_path, out->html_path);
  if (!st) st = write_once(out->json_path, bytes, strlen(bytes), 0, err);
  /* The Markdown is written where it is missing. One already at its path
   * renders this same body (the JSON beside it was just found identical):
   * made by an earlier run, perhaps against another database sharing this
   * home, with that run's measurements; it is kept, not rewritten. */
  const int need_md = !finch_file_exists(out->md_path), need_html = !finch_file_exists(out->html_path);
  if (!st && (need_md || need_html)) {
    finch_report rep;
    st = finch_report_load(db, out->id, &rep, err);
    if (!st && need_md) st = write_md(&rep, err);
    if (!st && need_html) st = write_html(&rep, out->html_path, err);
    if (need_md || need_html) finch_report_free(&rep);
  }
out:
  free(bytes), free(meas), free(metrics);
  return st;
}

void finch_report_free(finch_report *r) {
  json_decref(r->body);
  json_decref(r->measurements);
  json_decref(r->approvals);
  memset(r, 0, sizeof *r);
}

finch_status finch_report_load(finch_db *db, long long id, finch_report *out, finch_err *err) {
  memset(out, 0, sizeof *out);
  char idbuf[32];
  snprintf(idbuf, sizeof idbuf, "%lld", id);
  const char *p[] = {idbuf};
  PGresult *r = finch_db_query(db,
      "SELECT body::text, body_sha256, measurements::text, coalesce(json_path, ''), coalesce(report_path, ''),"
      " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
      " coalesce((SELECT jsonb_agg(jsonb_build_object('id', a.id, 'reviewer', a.reviewer, 'decision', a.decision,"
      "   'comment', a.comment, 'body_sha256', a.body_sha256, 'created_at',"
      "   to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER BY a.id)"
      "   FROM report_approvals a WHERE a.report_id = e.id), '[]')::text"
      " FROM eval_reports e WHERE id = $1 AND body IS NOT NULL", 1, p, err);
  if (!r) return FINCH_EDB;
  if (!PQntuples(r)) {
    PQclear(r);
    return finch_err_set(err, FINCH_ENOTFOUND, "report %lld does not exist (finch report list shows them)", id);
  }
  out->id = id;
  out->body = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
  snprintf(out->body_sha256, sizeof out->body_sha256, "%s", PQgetvalue(r, 0, 1));
  out->measurements = json_loads(PQgetvalue(r, 0, 2), 0, NULL);
  snprintf(out->json_path, sizeof out->json_path, "%s", PQgetvalue(r, 0, 3));
  snprintf(out->md_path, sizeof out->md_path, "%s", PQgetvalue(r, 0, 4));
  /* The page beside the Markdown: the same name, .html. */
  size_t ml = strlen(out->md_path);
  if (ml > 3 && !strcmp(out->md_path + ml - 3, ".md"))
    snprintf(out->html_path, sizeof out->html_path, "%.*s.html", (int)(ml - 3), out->md_path);
  snprintf(out->created_at, sizeof out->created_at, "%s", PQgetvalue(r, 0, 5));
  out->approvals = json_loads(PQgetvalue(r, 0, 6), 0, NULL);
  PQclear(r);
  if (!out->body || !out->measurements || !out->approvals) {
    finch_report_free(out);
    return finch_err_set(err, FINCH_EFORMAT, "report %lld: unreadable JSON from the database", id);
  }
  size_t len;
  char *file = out->json_path[0] ? slurp(out->json_path, &len) : NULL;
  if (!file) {
    out->file_state = "missing";
  } else {
    finch_sha256_hex(file, len, out->file_sha256);
    out->file_state = strcmp(out->file_sha256, out->body_sha256) ? "differs" : "intact";
    free(file);
  }
  return FINCH_OK;
}

finch_status finch_report_list(finch_db *db, json_t **out, finch_err *err) {
  *out = NULL;
  PGresult *r = finch_db_query(db,
      "SELECT coalesce(jsonb_agg(x ORDER BY (x->>'id')::bigint DESC), '[]')::text FROM ("
      " SELECT jsonb_build_object('id', e.id, 'created_at',"
      "  to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'body_sha256', e.body_sha256,"
      "  'model_sha256', e.model_sha256, 'model_id', e.model_id, 'source', e.source, 'n', e.n,"
      "  'accuracy', e.body->'results'->'accuracy', 'macro_f1', e.body->'results'->'macro_f1',"
      "  'approvals', (SELECT count(*) FROM report_approvals a WHERE a.report_id = e.id),"
      "  'last_decision', (SELECT a.decision FROM report_approvals a WHERE a.report_id = e.id"
      "                    ORDER BY a.id DESC LIMIT 1)) AS x"
      " FROM eval_reports e WHERE e.body IS NOT NULL) s", 0, NULL, err);
  if (!r) return FINCH_EDB;
  *out = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
  PQclear(r);
  return *out ? FINCH_OK : finch_err_set(err, FINCH_EFORMAT, "report list: unreadable JSON from the database");
}

finch_status finch_report_approve(finch_db *db, long long id, const char *reviewer, const char *decision,
                                  const char *comment, long long *approval_id, finch_err *err) {
  *approval_id = 0;
  const char *r0 = reviewer ? reviewer : "";
  while (*r0 == ' ' || *r0 == '\t') r0++;
  if (!*r0) return finch_err_set(err, FINCH_EINVAL, "--reviewer: a reviewer's name is required");
  if (!decision || (strcmp(decision, "approve") != 0 && strcmp(decision, "reject") != 0))
    return finch_err_set(err, FINCH_EINVAL, "--decision '%s': expected approve or reject", decision ? decision : "");
  char idbuf[32];
  snprintf(idbuf, sizeof idbuf, "%lld", id);
  const char *p[] = {idbuf, reviewer, decision, comment ? comment : ""};
  /* The hash is the report's own, read in the same statement. */
  PGresult *r = finch_db_query(db,
      "INSERT INTO report_approvals (report_id, body_sha256, reviewer, decision, comment)"
      " SELECT id, body_sha256, $2, $3, $4 FROM eval_reports WHERE id = $1 AND body IS NOT NULL RETURNING id", 4, p,
      err);
  if (!r) return FINCH_EDB;
  int found = PQntuples(r) > 0;
  if (found) *approval_id = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  if (!found) return finch_err_set(err, FINCH_ENOTFOUND, "report %lld does not exist (finch report list shows them)", id);
  return FINCH_OK;
}
