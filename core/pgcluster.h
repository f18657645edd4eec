/* The embedded PostgreSQL cluster under $FINCH_HOME/pg.
 *
 *   pg/data      the cluster (initdb), owned by the account that runs it
 *   pg/port      the loopback TCP port chosen on first start
 *   pg/server.log
 *   pg/lock      flock()ed while starting or stopping
 * The server listens on 127.0.0.1:port and on a unix socket in pg/run (or
 * /tmp/finch-<hash> when that path is too long for a socket address).
 * PostgreSQL refuses to run as root: when finch runs as root the cluster
 * runs as the unprivileged `postgres` account that Debian's package creates.
 * Authentication is `trust` on the socket and on loopback for the cluster's
 * own superuser `finch`; the cluster is a development and test database. */
#ifndef FINCH_CORE_PGCLUSTER_H
#define FINCH_CORE_PGCLUSTER_H

#include <stddef.h>

#include "core/status.h"

/* Initialises (first use) and starts the cluster if it is not running,
 * creates database dbname if missing, and writes its libpq URI to url.
 * Initialising says so in one line on stderr (a warning), naming home/pg
 * and origin, the reason home was chosen (finch_home_find; NULL: none). */
finch_status finch_pgcluster_ensure(const char *home, const char *origin, const char *dbname, char *url,
                                    size_t n, finch_err *err);
/* URI of the cluster without starting it (FINCH_ENOTFOUND when never initialised). */
finch_status finch_pgcluster_url(const char *home, const char *dbname, char *url, size_t n, finch_err *err);
/* Stops the cluster (fast shutdown); a no-op when it is not running. */
finch_status finch_pgcluster_stop(const char *home, finch_err *err);
/* 1 when the cluster answers. */
int finch_pgcluster_running(const char *home);

#endif
