/* The home is found the same way from any directory (core/paths.h), and a
 * new embedded cluster is announced on stderr. Runs $FINCH_BIN with
 * FINCH_HOME, FINCH_DATABASE_URL and the PG* variables removed, in a
 * directory under /tmp (outside any checkout's .finch).
 *
 * Before this rule the home was ./.finch relative to the current directory:
 * from a/b/c the finch.conf of a/.finch was not read (seed stayed 42), and a
 * new cluster was created under a/b/c/.finch with only an info line that
 * named neither the rule nor the home's pg directory. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test.h"

/* Runs finch in dir with a clean database environment and XDG_DATA_HOME=xdg;
 * stdout and stderr together. */
static char *finch_in(const char *bin, const char *dir, const char *xdg, const char *args, int *status) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && env -u FINCH_HOME -u FINCH_DATABASE_URL -u FINCH_CONFIG -u PGHOST -u PGPORT -u PGDATABASE "
           "-u PGUSER -u PGSERVICE -u PGHOSTADDR XDG_DATA_HOME='%s' '%s' %s 2>&1",
           dir, xdg, bin, args);
  return test_run(cmd, status);
}

static void mk(const char *path) {
  char cmd[PATH_MAX + 32];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
  CHECK_INT_EQ(system(cmd), 0);
}

int main(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || !*bin) TEST_SKIP("FINCH_BIN not set");
  struct stat st;
  if (stat("/tmp/.finch", &st) == 0 || stat("/.finch", &st) == 0)
    TEST_SKIP("a .finch directory in /tmp or / would be found first");
  char root[] = "/tmp/finch-home-XXXXXX";
  if (!mkdtemp(root)) TEST_SKIP("mkdtemp failed");
  chmod(root, 0755); /* the cluster may run as the postgres account */
  char a[PATH_MAX], deep[PATH_MAX], conf[PATH_MAX], xdg[PATH_MAX], work[PATH_MAX], want[PATH_MAX * 2];
  snprintf(a, sizeof a, "%s/a/.finch", root);
  snprintf(deep, sizeof deep, "%s/a/b/c", root);
  snprintf(conf, sizeof conf, "%s/finch.conf", a);
  snprintf(xdg, sizeof xdg, "%s/xdg", root);
  snprintf(work, sizeof work, "%s/w", root);
  mk(a);
  mk(deep);
  mk(work);
  FILE *fp = fopen(conf, "w");
  CHECK(fp != NULL);
  if (fp) {
    fputs("seed = 5\n", fp);
    fclose(fp);
  }

  /* From a subdirectory, the nearest .finch above is the home: its
   * finch.conf is read, and --settings names the home and the rule. */
  int status;
  char *out = finch_in(bin, deep, xdg, "--settings", &status);
  CHECK_INT_EQ(status, 0);
  CHECK_CONTAINS(out, "seed          = 5                        (file;");
  snprintf(want, sizeof want, "home (found)  = %s", a);
  CHECK_CONTAINS(out, want);
  CHECK_CONTAINS(out, "(the nearest .finch at or above the current directory)");
  free(out);
  /* The same from the directory holding .finch itself. */
  snprintf(want, sizeof want, "%s/a", root);
  out = finch_in(bin, want, xdg, "--settings", &status);
  CHECK_CONTAINS(out, "seed          = 5                        (file;");
  free(out);

  /* With no .finch above, the home is $XDG_DATA_HOME/finch, and creating its
   * cluster says so in one line; a second run says nothing of the kind. */
  out = finch_in(bin, work, xdg, "--settings", &status);
  snprintf(want, sizeof want, "home (found)  = %s/finch", xdg);
  CHECK_CONTAINS(out, want);
  CHECK_CONTAINS(out, "($XDG_DATA_HOME/finch)");
  free(out);
  out = finch_in(bin, work, xdg, "--log-level warn db up", &status);
  CHECK_INT_EQ(status, 0);
  snprintf(want, sizeof want, "finch: warning: created a new database cluster under %s/finch/pg ($XDG_DATA_HOME/finch)\n",
           xdg);
  CHECK_CONTAINS(out, want);
  free(out);
  out = finch_in(bin, work, xdg, "db up", &status);
  CHECK_INT_EQ(status, 0);
  CHECK(out && !strstr(out, "created a new database cluster"));
  free(out);
  snprintf(want, sizeof want, "%s/w/.finch", root);
  CHECK(stat(want, &st) != 0); /* nothing was created in the current directory */
  out = finch_in(bin, work, xdg, "db down", &status);
  CHECK_INT_EQ(status, 0);
  free(out);
  /* FINCH_HOME given explicitly still wins, and is named as the rule. */
  char cmd[PATH_MAX * 3];
  snprintf(cmd, sizeof cmd, "cd '%s' && FINCH_HOME='%s/explicit' '%s' --settings 2>&1", deep, root, bin);
  out = test_run(cmd, &status);
  snprintf(want, sizeof want, "home (found)  = %s/explicit", root);
  CHECK_CONTAINS(out, want);
  CHECK_CONTAINS(out, "(FINCH_HOME)");
  free(out);

  if (!test_failures_) {
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  }
  TEST_DONE();
}
