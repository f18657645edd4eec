#include "serve/pq.h"

#include <string.h>

PGresult *serve__pq_at(PGconn *c, const char *sql, int n, const char *const *params, finch_err *err,
                       const char *file, int line) {
  PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
  ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) return r;
  const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
  char clean[768];
  snprintf(clean, sizeof clean, "%s", msg && *msg ? msg : "no result");
  size_t k = strlen(clean);
  while (k && (clean[k - 1] == '\n' || clean[k - 1] == ' ')) clean[--k] = '\0';
  finch_err_set(err, FINCH_EDB, "%s:%d: %s", file, line, clean);
  PQclear(r);
  return NULL;
}

finch_status serve__pq_run_at(PGconn *c, const char *sql, int n, const char *const *params, finch_err *err,
                              const char *file, int line) {
  PGresult *r = serve__pq_at(c, sql, n, params, err, file, line);
  if (!r) return FINCH_EDB;
  PQclear(r);
  return FINCH_OK;
}

void serve__pq_rollback(PGconn *c) {
  if (PQtransactionStatus(c) != PQTRANS_IDLE) PQclear(PQexec(c, "ROLLBACK"));
}
