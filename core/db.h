/* PostgreSQL access: connection resolution, the embedded cluster,
 * migrations and checked query helpers.
 *
 * Resolution: setting database_url (FINCH_DATABASE_URL) when set; else, when
 * any libpq PG* variable (PGHOST, PGPORT, PGDATABASE, PGUSER, PGSERVICE) is
 * set, libpq's own defaults; else the embedded cluster under $FINCH_HOME/pg,
 * started on first use (core/pgcluster.h). */
#ifndef FINCH_CORE_DB_H
#define FINCH_CORE_DB_H

#include <libpq-fe.h>
#include <stddef.h>

#include "core/status.h"

typedef struct finch_db finch_db;

/* Resolves the URI in use into buf; with start != 0 the embedded cluster is
 * initialised/started as needed. */
finch_status finch_db_resolve_url(char *buf, size_t n, int start, finch_err *err);

/* Connects and applies pending migrations. The caller owns *out. */
finch_status finch_db_open(finch_db **out, finch_err *err);
/* Connects without migrating (for `finch db migrate` itself). */
finch_status finch_db_connect(finch_db **out, finch_err *err);
void finch_db_close(finch_db *db);
PGconn *finch_db_conn(finch_db *db);

/* Applies schemas/NNN_name.sql files not yet in schema_migrations, each in
 * its own transaction, in order; *applied (may be NULL) gets the count. */
finch_status finch_db_migrate(finch_db *db, const char *schema_dir, int *applied, finch_err *err);
/* The schema directory: $FINCH_SCHEMA_DIR, else the source tree's schemas/. */
const char *finch_db_schema_dir(void);

/* The checked calls. Each carries its call site (file:line) and, on
 * failure, the first line of the server's message (or the connection's,
 * when there is no result) in err; detail lines, which may quote values, are
 * left out. Every statement with data is parameterised: no SQL is built from
 * values. The *_on forms run on a bare connection, for code that keeps its
 * own (the intent server's pool); the others on a finch_db. */

/* Runs one or more statements without parameters. */
finch_status finch_db_exec_at(finch_db *db, const char *sql, finch_err *err, const char *file, int line);
#define finch_db_exec(db, sql, err) finch_db_exec_at((db), (sql), (err), __FILE__, __LINE__)

/* Runs a parameterised statement (text parameters, NULL = SQL NULL). On
 * success returns the result (caller PQclear()s it); on failure NULL with err
 * set to the server's message and the call site. */
PGresult *finch_db_query_at(finch_db *db, const char *sql, int nparams, const char *const *params,
                            finch_err *err, const char *file, int line);
#define finch_db_query(db, sql, n, params, err)                                                    \
  finch_db_query_at((db), (sql), (n), (params), (err), __FILE__, __LINE__)

/* Same, for statements whose result is not needed. */
#define finch_db_run(db, sql, n, params, err) finch_db_run_at((db), (sql), (n), (params), (err), __FILE__, __LINE__)
finch_status finch_db_run_at(finch_db *db, const char *sql, int nparams, const char *const *params,
                             finch_err *err, const char *file, int line);

/* The same calls on a bare connection. */
PGresult *finch_db_query_on_at(PGconn *c, const char *sql, int nparams, const char *const *params, finch_err *err,
                               const char *file, int line);
#define finch_db_query_on(c, sql, n, params, err)                                                                   \
  finch_db_query_on_at((c), (sql), (n), (params), (err), __FILE__, __LINE__)
finch_status finch_db_run_on_at(PGconn *c, const char *sql, int nparams, const char *const *params, finch_err *err,
                                const char *file, int line);
#define finch_db_run_on(c, sql, n, params, err)                                                                     \
  finch_db_run_on_at((c), (sql), (n), (params), (err), __FILE__, __LINE__)

/* Transactions: BEGIN and COMMIT as checked calls; a rollback after a
 * failure, when a transaction is open, with its own errors ignored (the
 * failure that led to it is the one to report). */
#define finch_db_begin_on(c, err) finch_db_run_on_at((c), "BEGIN", 0, NULL, (err), __FILE__, __LINE__)
#define finch_db_commit_on(c, err) finch_db_run_on_at((c), "COMMIT", 0, NULL, (err), __FILE__, __LINE__)
void finch_db_rollback_on(PGconn *c);
void finch_db_rollback(finch_db *db);

/* COPY helpers: start `COPY ... FROM STDIN`, send text-format rows, finish. */
finch_status finch_db_copy_begin(finch_db *db, const char *copy_sql, finch_err *err);
finch_status finch_db_copy_put(finch_db *db, const char *data, size_t len, finch_err *err);
finch_status finch_db_copy_end(finch_db *db, finch_err *err);

/* Appends s to a COPY text-format buffer with the escapes COPY needs
 * (backslash, tab, newline, carriage return). NULL writes \N. */
typedef struct {
  char *buf;
  size_t len, cap;
} finch_copybuf;
int finch_copybuf_field(finch_copybuf *b, const char *s, int last);
void finch_copybuf_reset(finch_copybuf *b);
void finch_copybuf_free(finch_copybuf *b);

#endif
