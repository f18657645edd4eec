#include "core/db.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/dburl.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/text.h"
#include "core/pgcluster.h"

#ifndef FINCH_SOURCE_DIR
#define FINCH_SOURCE_DIR "."
#endif

struct finch_db {
  PGconn *conn;
};

static int pg_env_set(void) {
  static const char *vars[] = {"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "PGHOSTADDR"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v && *v) return 1;
  }
  return 0;
}

finch_status finch_db_resolve_url(char *buf, size_t n, int start, finch_err *err) {
  const char *url = finch_config_get("database_url");
  if (url && *url) {
    snprintf(buf, n, "%s", url);
    return FINCH_OK;
  }
  if (pg_env_set()) {
    buf[0] = '\0'; /* libpq reads PG* itself */
    return FINCH_OK;
  }
  char home[PATH_MAX], found[PATH_MAX];
  const char *origin = NULL;
  finch_status st = finch_home_find(found, sizeof found, &origin, err);
  if (!st) st = finch_home_dir(home, sizeof home, err);
  if (st) return st;
  const char *db = finch_config_get("db_name");
  return start ? finch_pgcluster_ensure(home, origin, db, buf, n, err)
               : finch_pgcluster_url(home, db, buf, n, err);
}

finch_status finch_db_connect(finch_db **out, finch_err *err) {
  *out = NULL;
  char url[PATH_MAX * 4];
  finch_status st = finch_db_resolve_url(url, sizeof url, 1, err);
  if (st) return st;
  PGconn *conn = PQconnectdb(url);
  if (PQstatus(conn) != CONNECTION_OK) {
    /* libpq's message may quote the URL it could not parse: masked too. */
    char msg[1024];
    finch_db_url_masked(PQerrorMessage(conn), msg, sizeof msg);
    finch_err_set(err, FINCH_EDB, "cannot connect to PostgreSQL: %s", msg);
    PQfinish(conn);
    return FINCH_EDB;
  }
  PGresult *r = PQexec(conn, "SET client_min_messages = warning");
  PQclear(r);
  finch_db *db = calloc(1, sizeof *db);
  if (!db) {
    PQfinish(conn);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  db->conn = conn;
  *out = db;
  return FINCH_OK;
}

finch_status finch_db_open(finch_db **out, finch_err *err) {
  finch_status st = finch_db_connect(out, err);
  if (st) return st;
  st = finch_db_migrate(*out, finch_db_schema_dir(), NULL, err);
  if (st) {
    finch_db_close(*out);
    *out = NULL;
  }
  return st;
}

void finch_db_close(finch_db *db) {
  if (!db) return;
  PQfinish(db->conn);
  free(db);
}

PGconn *finch_db_conn(finch_db *db) { return db->conn; }

const char *finch_db_schema_dir(void) {
  const char *d = getenv("FINCH_SCHEMA_DIR");
  return d && *d ? d : FINCH_SOURCE_DIR "/schemas";
}

/* Sets err for a failed call: the first line of r's message, else of the
 * connection's, and the call site. */
static finch_status db_failed(PGconn *c, const PGresult *r, finch_err *err, const char *file, int line) {
  const char *msg = r ? PQresultErrorMessage(r) : "";
  if (!msg || !*msg) msg = PQerrorMessage(c);
  if (!msg || !*msg) msg = "no result";
  return finch_err_set(err, FINCH_EDB, "%.*s (%s:%d)", (int)strcspn(msg, "\n"), msg, file, line);
}

static int db_ok(const PGresult *r) {
  ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

finch_status finch_db_exec_at(finch_db *db, const char *sql, finch_err *err, const char *file, int line) {
  PGresult *r = PQexec(db->conn, sql);
  finch_status st = db_ok(r) ? FINCH_OK : db_failed(db->conn, r, err, file, line);
  PQclear(r);
  return st;
}

PGresult *finch_db_query_on_at(PGconn *c, const char *sql, int nparams, const char *const *params, finch_err *err,
                               const char *file, int line) {
  PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
  if (db_ok(r)) return r;
  db_failed(c, r, err, file, line);
  PQclear(r);
  return NULL;
}

finch_status finch_db_run_on_at(PGconn *c, const char *sql, int nparams, const char *const *params, finch_err *err,
                                const char *file, int line) {
  PGresult *r = finch_db_query_on_at(c, sql, nparams, params, err, file, line);
  if (!r) return FINCH_EDB;
  PQclear(r);
  return FINCH_OK;
}

PGresult *finch_db_query_at(finch_db *db, const char *sql, int nparams, const char *const *params,
                            finch_err *err, const char *file, int line) {
  return finch_db_query_on_at(db->conn, sql, nparams, params, err, file, line);
}

finch_status finch_db_run_at(finch_db *db, const char *sql, int nparams, const char *const *params,
                             finch_err *err, const char *file, int line) {
  return finch_db_run_on_at(db->conn, sql, nparams, params, err, file, line);
}

void finch_db_rollback_on(PGconn *c) {
  if (PQtransactionStatus(c) != PQTRANS_IDLE) PQclear(PQexec(c, "ROLLBACK"));
}

void finch_db_rollback(finch_db *db) { finch_db_rollback_on(db->conn); }

static char *read_file(const char *path, finch_err *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(errno));
    return NULL;
  }
  fseek(fp, 0, SEEK_END);
  long len = ftell(fp);
  rewind(fp);
  char *buf = malloc((size_t)len + 1);
  if (!buf || fread(buf, 1, (size_t)len, fp) != (size_t)len) {
    finch_err_set(err, FINCH_EIO, "%s: read failed", path);
    free(buf);
    fclose(fp);
    return NULL;
  }
  buf[len] = '\0';
  fclose(fp);
  return buf;
}

finch_status finch_db_migrate(finch_db *db, const char *schema_dir, int *applied, finch_err *err) {
  if (applied) *applied = 0;
  DIR *d = opendir(schema_dir);
  if (!d) return finch_err_set(err, FINCH_EIO, "schema directory %s: %s", schema_dir, strerror(errno));
  char *names[256];
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 256) {
    size_t len = strlen(e->d_name);
    if (len > 8 && e->d_name[0] >= '0' && e->d_name[0] <= '9' && strcmp(e->d_name + len - 4, ".sql") == 0)
      names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof names[0], finch_cmp_str);

  /* One migrator at a time; the lock is released with the session or below. */
  finch_status st = finch_db_exec(db,
      "SELECT pg_advisory_lock(7240917);"
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      "  version integer PRIMARY KEY, name text NOT NULL,"
      "  applied_at timestamptz NOT NULL DEFAULT now())", err);
  for (size_t i = 0; !st && i < n; i++) {
    char version[16];
    snprintf(version, sizeof version, "%d", atoi(names[i]));
    const char *p1[] = {version};
    PGresult *r = finch_db_query(db, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, p1, err);
    if (!r) {
      st = FINCH_EDB;
      break;
    }
    int done = PQntuples(r) > 0;
    PQclear(r);
    if (done) continue;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", schema_dir, names[i]);
    char *sql = read_file(path, err);
    if (!sql) {
      st = FINCH_EIO;
      break;
    }
    st = finch_db_exec(db, "BEGIN", err);
    if (!st) {
      st = finch_db_exec(db, sql, err);
      if (st) finch_err_prefix(err, "migration %s", names[i]);
    }
    if (!st) {
      const char *p2[] = {version, names[i]};
      st = finch_db_run(db, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, p2, err);
    }
    if (!st) st = finch_db_exec(db, "COMMIT", err);
    if (st) {
      finch_db_rollback(db);
    } else {
      finch_info("applied migration %s", names[i]);
      if (applied) (*applied)++;
    }
    free(sql);
  }
  PQclear(PQexec(db->conn, "SELECT pg_advisory_unlock(7240917)"));
  for (size_t i = 0; i < n; i++) free(names[i]);
  return st;
}

finch_status finch_db_copy_begin(finch_db *db, const char *copy_sql, finch_err *err) {
  PGresult *r = PQexec(db->conn, copy_sql);
  finch_status st = FINCH_OK;
  if (PQresultStatus(r) != PGRES_COPY_IN)
    st = finch_err_set(err, FINCH_EDB, "COPY: %s", PQerrorMessage(db->conn));
  PQclear(r);
  return st;
}

finch_status finch_db_copy_put(finch_db *db, const char *data, size_t len, finch_err *err) {
  if (len == 0) return FINCH_OK;
  if (PQputCopyData(db->conn, data, (int)len) != 1)
    return finch_err_set(err, FINCH_EDB, "COPY data: %s", PQerrorMessage(db->conn));
  return FINCH_OK;
}

finch_status finch_db_copy_end(finch_db *db, finch_err *err) {
  if (PQputCopyEnd(db->conn, NULL) != 1)
    return finch_err_set(err, FINCH_EDB, "COPY end: %s", PQerrorMessage(db->conn));
  finch_status st = FINCH_OK;
  PGresult *r;
  while ((r = PQgetResult(db->conn))) {
    if (PQresultStatus(r) != PGRES_COMMAND_OK && !st)
      st = finch_err_set(err, FINCH_EDB, "COPY: %s", PQresultErrorMessage(r));
    PQclear(r);
  }
  return st;
}

static int grow(finch_copybuf *b, size_t need) {
  if (b->len + need + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + need + 1) cap *= 2;
  char *nb = realloc(b->buf, cap);
  if (!nb) return -1;
  b->buf = nb;
  b->cap = cap;
  return 0;
}

int finch_copybuf_field(finch_copybuf *b, const char *s, int last) {
  if (!s) {
    if (grow(b, 3)) return -1;
    memcpy(b->buf + b->len, "\\N", 2);
    b->len += 2;
  } else {
    size_t len = strlen(s);
    if (grow(b, 2 * len + 1)) return -1;
    for (size_t i = 0; i < len; i++) {
      char ch = s[i];
      switch (ch) {
      case '\\': b->buf[b->len++] = '\\'; b->buf[b->len++] = '\\'; break;
      case '\t': b->buf[b->len++] = '\\'; b->buf[b->len++] = 't'; break;
      case '\n': b->buf[b->len++] = '\\'; b->buf[b->len++] = 'n'; break;
      case '\r': b->buf[b->len++] = '\\'; b->buf[b->len++] = 'r'; break;
      default: b->buf[b->len++] = ch;
      }
    }
  }
  b->buf[b->len++] = last ? '\n' : '\t';
  return 0;
}

void finch_copybuf_reset(finch_copybuf *b) { b->len = 0; }

void finch_copybuf_free(finch_copybuf *b) {
  free(b->buf);
  b->buf = NULL;
  b->len = b->cap = 0;
}
