/* Passwords masked wherever a database URL is shown (core/dburl.h): the
 * masking over every URL form libpq takes, then through the binary, where
 * `finch db status`, `finch --settings` and a failed connection printed the
 * password of FINCH_DATABASE_URL in clear before the mask. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/dburl.h"
#include "tests/test.h"

static void expect_masked(const char *in, const char *want) {
  char buf[512];
  finch_db_url_masked(in, buf, sizeof buf);
  CHECK_STR_EQ(buf, want);
}

static void test_forms(void) {
  /* URIs: with and without password, percent-encoded, IPv6, query, both schemes. */
  expect_masked("postgresql://finch:s3cret@db.example:5432/finch",
                "postgresql://finch:****@db.example:5432/finch");
  expect_masked("postgres://u:p@h/d", "postgres://u:****@h/d");
  expect_masked("POSTGRESQL://u:p@h", "POSTGRESQL://u:****@h");
  expect_masked("postgresql://finch@db.example/finch", "postgresql://finch@db.example/finch");
  expect_masked("postgresql://db.example:5432/finch", "postgresql://db.example:5432/finch");
  expect_masked("postgresql:///finch?host=/run/pg", "postgresql:///finch?host=/run/pg");
  expect_masked("postgresql://u:p%40ss%3Aw@h/d", "postgresql://u:****@h/d");
  expect_masked("postgresql://u:p@ss@h/d", "postgresql://u:****@h/d"); /* an unencoded '@': the last one ends it */
  expect_masked("postgresql://u:@h/d", "postgresql://u:****@h/d");
  expect_masked("postgresql://u:pw@[::1]:5432/d", "postgresql://u:****@[::1]:5432/d");
  expect_masked("postgresql://u@h/d?sslmode=require&password=top&connect_timeout=5",
                "postgresql://u@h/d?sslmode=require&password=****&connect_timeout=5");
  expect_masked("postgresql://u:a@h/d?password=b", "postgresql://u:****@h/d?password=****");
  /* key=value conninfo strings, quoted values with escapes and spaces. */
  expect_masked("host=h user=u password=s3cret dbname=d", "host=h user=u password=**** dbname=d");
  expect_masked("password=s3cret", "password=****");
  expect_masked("host=h password = 'a b\\' c' dbname=d", "host=h password = **** dbname=d");
  expect_masked("host=h PASSWORD=x", "host=h PASSWORD=****");
  expect_masked("host=h passwordfile=x sslpassword=y", "host=h passwordfile=x sslpassword=y");
  expect_masked("host=h dbname=d", "host=h dbname=d");
  /* Text around a URL, as in an error message. */
  expect_masked("invalid URI \"postgresql://u:pw@h/d\" here", "invalid URI \"postgresql://u:****@h/d\" here");
  expect_masked("", "");
  expect_masked(NULL, "");
  /* Cut short safely. */
  char small[12];
  finch_db_url_masked("postgresql://u:p@h/d", small, sizeof small);
  CHECK_STR_EQ(small, "postgresql:");
}

static void test_cli(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || !*bin) {
    printf("FINCH_BIN not set: CLI checks skipped\n");
    return;
  }
  /* Port 1 on loopback answers nothing: status says so, connecting fails. */
  const char *url = "postgresql://finch:Hunter2pw@127.0.0.1:1/finch?connect_timeout=2";
  const char *args[] = {"db status", "--settings", "models list", "--database-url 'host=127.0.0.1 port=1 "
                        "password=Hunter2pw connect_timeout=2' db status"};
  for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "FINCH_DATABASE_URL='%s' '%s' %s 2>&1", url, bin, args[i]);
    int status;
    char *out = test_run(cmd, &status);
    if (out && strstr(out, "Hunter2pw")) TEST_FAIL_("finch %s shows the password:\n%s", args[i], out);
    CHECK_CONTAINS(out, i == 3 ? "password=****" : i == 2 ? "cannot connect to PostgreSQL" : "finch:****@127.0.0.1:1/finch");
    free(out);
  }
  /* finch db url is for psql: the one place the password stays. */
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "FINCH_DATABASE_URL='%s' '%s' db url 2>&1", url, bin);
  int status;
  char *out = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  CHECK_CONTAINS(out, url);
  free(out);
}

int main(void) {
  test_forms();
  test_cli();
  TEST_DONE();
}
