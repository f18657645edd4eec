/* Checked libpq calls for the serve room, on a caller's PGconn (the server
 * keeps a pool of them; core/db.h wraps a single one). Every statement is
 * parameterised: no SQL is ever built from request data. */
#ifndef FINCH_SERVE_PQ_H
#define FINCH_SERVE_PQ_H

#include <libpq-fe.h>

#include "core/status.h"

/* Runs sql with text parameters (NULL = SQL NULL). Returns the result
 * (caller PQclear()s it) when it is COMMAND_OK or TUPLES_OK; else NULL with
 * err naming the call site and the server's message. */
PGresult *serve__pq_at(PGconn *c, const char *sql, int n, const char *const *params, finch_err *err,
                       const char *file, int line);
#define serve__pq(c, sql, n, params, err) serve__pq_at((c), (sql), (n), (params), (err), __FILE__, __LINE__)

/* Same, discarding the result. */
finch_status serve__pq_run_at(PGconn *c, const char *sql, int n, const char *const *params, finch_err *err,
                              const char *file, int line);
#define serve__pq_run(c, sql, n, params, err)                                                                        \
  serve__pq_run_at((c), (sql), (n), (params), (err), __FILE__, __LINE__)

/* ROLLBACK when a transaction is open (after a failure); errors ignored. */
void serve__pq_rollback(PGconn *c);

#endif
