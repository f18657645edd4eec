#include "core/pgcluster.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/log.h"
#include "core/paths.h"

#define SUPERUSER "finch"

typedef struct {
  char pgdir[PATH_MAX];  /* home/pg: port and lock files */
  char data[PATH_MAX];   /* home/pg/data */
  char sock[PATH_MAX];   /* socket directory */
  char log[PATH_MAX];    /* server log */
  char bindir[PATH_MAX]; /* PostgreSQL server binaries */
  uid_t uid;             /* account the server runs as */
  gid_t gid;
  int as_other; /* 1 when we must switch to uid to run server tools */
} cluster;

/* Newest /usr/lib/postgresql/N/bin holding initdb, or $FINCH_PG_BINDIR. */
static finch_status find_bindir(char *out, size_t n, finch_err *err) {
  const char *env = getenv("FINCH_PG_BINDIR");
  if (env && *env) {
    snprintf(out, n, "%s", env);
    return FINCH_OK;
  }
  DIR *d = opendir("/usr/lib/postgresql");
  int best = -1;
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      int v = atoi(e->d_name);
      char p[PATH_MAX];
      snprintf(p, sizeof p, "/usr/lib/postgresql/%s/bin/initdb", e->d_name);
      if (v > best && access(p, X_OK) == 0) best = v;
    }
    closedir(d);
  }
  if (best < 0)
    return finch_err_set(err, FINCH_ENOTFOUND,
                         "no PostgreSQL server found under /usr/lib/postgresql (install the "
                         "'postgresql' package, run scripts/install-deps.sh, or set "
                         "FINCH_DATABASE_URL)");
  snprintf(out, n, "/usr/lib/postgresql/%d/bin", best);
  return FINCH_OK;
}

/* Runs argv (absolute path) as the cluster account, output appended to the
 * server log. Returns the exit status, or -1 when it could not run. */
static int run_tool(const cluster *c, char *const argv[]) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = open(c->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      if (c->as_other && fchown(fd, c->uid, c->gid) != 0) _exit(126);
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    if (c->as_other) {
      if (setgroups(0, NULL) != 0 || setgid(c->gid) != 0 || setuid(c->uid) != 0) _exit(126);
    }
    if (chdir("/") != 0) _exit(126);
    /* Variables from the caller must not redirect the server tools. */
    unsetenv("PGDATA");
    unsetenv("PGPORT");
    unsetenv("PGHOST");
    execv(argv[0], argv);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* 1 when the cluster account can reach dir through all its parents
 * (checked in a child that switches to that account). What finch creates
 * inside dir for the server (data, socket directory, log) it creates as
 * root and hands over, so search permission is all the account needs. */
static int account_can_reach(const cluster *c, const char *dir) {
  if (!c->as_other) return access(dir, W_OK | X_OK) == 0;
  pid_t pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    if (setgroups(0, NULL) != 0 || setgid(c->gid) != 0 || setuid(c->uid) != 0) _exit(1);
    _exit(access(dir, X_OK) == 0 ? 0 : 1);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return 0;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static finch_status make_owned_dir(const cluster *c, const char *dir, finch_err *err) {
  finch_status st = finch_mkdirs(dir, 0700, err);
  if (st) return st;
  if (c->as_other && chown(dir, c->uid, c->gid) != 0)
    return finch_err_set(err, FINCH_EIO, "chown %s: %s", dir, strerror(errno));
  if (chmod(dir, 0700) != 0) return finch_err_set(err, FINCH_EIO, "chmod %s: %s", dir, strerror(errno));
  return FINCH_OK;
}

static finch_status cluster_init(cluster *c, const char *home, finch_err *err) {
  memset(c, 0, sizeof *c);
  snprintf(c->pgdir, sizeof c->pgdir, "%s/pg", home);
  finch_status st = finch_mkdirs(c->pgdir, 0755, err);
  if (st) return st;
  snprintf(c->data, sizeof c->data, "%s/data", c->pgdir);
  snprintf(c->log, sizeof c->log, "%s/server.log", c->pgdir);
  char hash[FINCH_SHA256_HEX_LEN];
  finch_sha256_hex(home, strlen(home), hash);
  hash[12] = '\0';
  st = find_bindir(c->bindir, sizeof c->bindir, err);
  if (st) return st;
  if (geteuid() == 0) {
    struct passwd *pw = getpwnam("postgres");
    if (!pw)
      return finch_err_set(err, FINCH_ENOTFOUND,
                           "running as root, and there is no 'postgres' account to run the "
                           "embedded cluster as (install the 'postgresql' package)");
    c->uid = pw->pw_uid;
    c->gid = pw->pw_gid;
    c->as_other = 1;
  } else {
    c->uid = geteuid();
    c->gid = getegid();
  }
  /* sun_path holds 107 bytes, "/.s.PGSQL.65535" takes 15 of them; and the
   * server's account must reach the socket directory. */
  if (strlen(c->pgdir) + strlen("/run/.s.PGSQL.65535") < 100 && account_can_reach(c, c->pgdir))
    snprintf(c->sock, sizeof c->sock, "%s/run", c->pgdir);
  else
    snprintf(c->sock, sizeof c->sock, "/tmp/finch-%s", hash);
  return FINCH_OK;
}

static int read_port(const cluster *c) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/port", c->pgdir);
  FILE *fp = fopen(p, "r");
  if (!fp) return 0;
  int port = 0;
  if (fscanf(fp, "%d", &port) != 1) port = 0;
  fclose(fp);
  return port > 0 && port < 65536 ? port : 0;
}

static finch_status write_port(const cluster *c, int port, finch_err *err) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/port", c->pgdir);
  FILE *fp = fopen(p, "w");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: %s", p, strerror(errno));
  fprintf(fp, "%d\n", port);
  if (fclose(fp) != 0) return finch_err_set(err, FINCH_EIO, "%s: %s", p, strerror(errno));
  return FINCH_OK;
}

/* A loopback port that is free right now. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = 0;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static void uri_escape(const char *s, char *out, size_t n) {
  static const char hx[] = "0123456789ABCDEF";
  size_t o = 0;
  for (; *s && o + 4 < n; s++) {
    unsigned char ch = (unsigned char)*s;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
        strchr("-._~/", ch)) {
      out[o++] = (char)ch;
    } else {
      out[o++] = '%';
      out[o++] = hx[ch >> 4];
      out[o++] = hx[ch & 15];
    }
  }
  out[o] = '\0';
}

static void make_url(const cluster *c, int port, const char *dbname, char *url, size_t n) {
  char sock[PATH_MAX * 3], db[256];
  uri_escape(c->sock, sock, sizeof sock);
  uri_escape(dbname, db, sizeof db);
  snprintf(url, n, "postgresql:///%s?host=%s&port=%d&user=" SUPERUSER, db, sock, port);
}

static int answers(const cluster *c, int port) {
  char url[PATH_MAX * 4];
  if (port <= 0) return 0;
  make_url(c, port, "postgres", url, sizeof url);
  return PQping(url) == PQPING_OK;
}

static int lock_cluster(const cluster *c, finch_err *err) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/lock", c->pgdir);
  int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    finch_err_set(err, FINCH_EIO, "%s: %s", p, strerror(errno));
    return -1;
  }
  while (flock(fd, LOCK_EX) != 0)
    if (errno != EINTR) {
      finch_err_set(err, FINCH_EIO, "flock %s: %s", p, strerror(errno));
      close(fd);
      return -1;
    }
  return fd;
}

static finch_status do_initdb(cluster *c, const char *origin, finch_err *err) {
  /* The account must reach the data directory through every parent. When it
   * cannot (a checkout under /root, say), the cluster lives in /var/tmp and
   * home/pg/data points at it. */
  if (!account_can_reach(c, c->pgdir)) {
    if (!c->as_other) return finch_err_set(err, FINCH_EIO, "%s is not writable", c->pgdir);
    char hash[FINCH_SHA256_HEX_LEN], alt[PATH_MAX];
    finch_sha256_hex(c->pgdir, strlen(c->pgdir), hash);
    hash[12] = '\0';
    snprintf(alt, sizeof alt, "/var/tmp/finch-pg-%s", hash);
    finch_status st = make_owned_dir(c, alt, err);
    if (st) return st;
    char altdata[PATH_MAX];
    snprintf(altdata, sizeof altdata, "%s/data", alt);
    unlink(c->data);
    if (symlink(altdata, c->data) != 0)
      return finch_err_set(err, FINCH_EIO, "symlink %s: %s", c->data, strerror(errno));
    finch_info("the postgres account cannot reach %s; the cluster's data is in %s", c->pgdir, altdata);
    snprintf(c->data, sizeof c->data, "%s", altdata);
    snprintf(c->log, sizeof c->log, "%s/server.log", alt);
  }
  finch_status st = make_owned_dir(c, c->data, err);
  if (st) return st;
  char initdb[PATH_MAX + 16];
  snprintf(initdb, sizeof initdb, "%s/initdb", c->bindir);
  char *argv[] = {initdb, "-D", c->data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--no-locale", "--no-instructions", NULL};
  if (run_tool(c, argv) != 0)
    return finch_err_set(err, FINCH_EDB, "initdb failed for %s (see %s)", c->data, c->log);
  /* A warning, so that a scheduled job at --log-level warn still says it
   * started from an empty database rather than the one it meant. */
  finch_warn("created a new database cluster under %s%s%s%s", c->pgdir, origin ? " (" : "", origin ? origin : "",
             origin ? ")" : "");
  return FINCH_OK;
}

/* Resolves data/log paths when home/pg/data is a link to /var/tmp. */
static void follow_data_link(cluster *c) {
  char target[PATH_MAX];
  ssize_t k = readlink(c->data, target, sizeof target - 1);
  if (k <= 0) return;
  target[k] = '\0';
  snprintf(c->data, sizeof c->data, "%s", target);
  char *slash = strrchr(target, '/');
  if (slash) *slash = '\0';
  snprintf(c->log, sizeof c->log, "%s/server.log", target);
}

static finch_status start_server(cluster *c, int port, finch_err *err) {
  finch_status st = make_owned_dir(c, c->sock, err);
  if (st) return st;
  /* Bulk loads want more than the stock 128 MB of buffers and fewer
   * checkpoints; commits stay synchronous (a committed batch survives). */
  char pg_ctl[PATH_MAX + 16], opts[PATH_MAX + 256];
  snprintf(pg_ctl, sizeof pg_ctl, "%s/pg_ctl", c->bindir);
  snprintf(opts, sizeof opts,
           "-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=50 -c shared_buffers=512MB"
           " -c max_wal_size=4GB -c checkpoint_timeout=15min -c wal_buffers=16MB", port,
           c->sock);
  char *argv[] = {pg_ctl, "-D", c->data, "-l", c->log, "-w", "-t", "60", "-o", opts, "start", NULL};
  if (run_tool(c, argv) != 0)
    return finch_err_set(err, FINCH_EDB, "pg_ctl start failed on port %d (see %s)", port, c->log);
  return FINCH_OK;
}

static finch_status ensure_database(const cluster *c, int port, const char *dbname, finch_err *err) {
  char url[PATH_MAX * 4];
  make_url(c, port, "postgres", url, sizeof url);
  PGconn *conn = PQconnectdb(url);
  if (PQstatus(conn) != CONNECTION_OK) {
    finch_err_set(err, FINCH_EDB, "connecting to the embedded cluster: %s", PQerrorMessage(conn));
    PQfinish(conn);
    return FINCH_EDB;
  }
  const char *params[] = {dbname};
  PGresult *r = PQexecParams(conn, "SELECT 1 FROM pg_database WHERE datname = $1", 1, NULL, params,
                             NULL, NULL, 0);
  finch_status st = FINCH_OK;
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    st = finch_err_set(err, FINCH_EDB, "looking up database %s: %s", dbname, PQerrorMessage(conn));
  } else if (PQntuples(r) == 0) {
    char *ident = PQescapeIdentifier(conn, dbname, strlen(dbname));
    char sql[512];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", ident ? ident : "\"finch\"");
    PQfreemem(ident);
    PGresult *r2 = PQexec(conn, sql);
    if (PQresultStatus(r2) != PGRES_COMMAND_OK)
      st = finch_err_set(err, FINCH_EDB, "creating database %s: %s", dbname, PQerrorMessage(conn));
    PQclear(r2);
  }
  PQclear(r);
  PQfinish(conn);
  return st;
}

finch_status finch_pgcluster_url(const char *home, const char *dbname, char *url, size_t n, finch_err *err) {
  cluster c;
  finch_status st = cluster_init(&c, home, err);
  if (st) return st;
  int port = read_port(&c);
  if (!port) return finch_err_set(err, FINCH_ENOTFOUND, "no embedded cluster under %s", c.pgdir);
  make_url(&c, port, dbname, url, n);
  return FINCH_OK;
}

int finch_pgcluster_running(const char *home) {
  cluster c;
  if (cluster_init(&c, home, NULL)) return 0;
  return answers(&c, read_port(&c));
}

finch_status finch_pgcluster_ensure(const char *home, const char *origin, const char *dbname, char *url,
                                    size_t n, finch_err *err) {
  cluster c;
  finch_status st = cluster_init(&c, home, err);
  if (st) return st;
  int port = read_port(&c);
  if (answers(&c, port)) {
    /* Fast path: running; the database may still be new. */
    st = ensure_database(&c, port, dbname, err);
    if (!st) make_url(&c, port, dbname, url, n);
    return st;
  }
  int lock = lock_cluster(&c, err);
  if (lock < 0) return FINCH_EIO;
  port = read_port(&c); /* another process may have started it meanwhile */
  if (!answers(&c, port)) {
    char version[PATH_MAX + 16];
    follow_data_link(&c);
    snprintf(version, sizeof version, "%s/PG_VERSION", c.data);
    if (!finch_file_exists(version)) st = do_initdb(&c, origin, err);
    /* A remembered port may have been taken since: then pick another. */
    for (int attempt = 0; !st && attempt < 3; attempt++) {
      if (!port || attempt > 0) port = free_port();
      if (!port) {
        st = finch_err_set(err, FINCH_EIO, "no free loopback port");
        break;
      }
      finch_status started = start_server(&c, port, err);
      if (!started) {
        st = write_port(&c, port, err);
        break;
      }
      if (attempt == 2) st = started;
    }
  }
  if (!st) st = ensure_database(&c, port, dbname, err);
  if (!st) make_url(&c, port, dbname, url, n);
  close(lock);
  return st;
}

finch_status finch_pgcluster_stop(const char *home, finch_err *err) {
  cluster c;
  finch_status st = cluster_init(&c, home, err);
  if (st) return st;
  follow_data_link(&c);
  if (!answers(&c, read_port(&c))) return FINCH_OK;
  int lock = lock_cluster(&c, err);
  if (lock < 0) return FINCH_EIO;
  char pg_ctl[PATH_MAX + 16];
  snprintf(pg_ctl, sizeof pg_ctl, "%s/pg_ctl", c.bindir);
  char *argv[] = {pg_ctl, "-D", c.data, "-m", "fast", "-w", "-t", "60", "stop", NULL};
  if (run_tool(&c, argv) != 0)
    st = finch_err_set(err, FINCH_EDB, "pg_ctl stop failed (see %s)", c.log);
  close(lock);
  return st;
}
