/* The option tables (core/config.h) and the command line built on them:
 * every type stored in its field, bounds errors naming the flag, defaults in
 * --help, config-file sections with their precedence and errors naming file
 * and line, unknown flags. The CLI part runs $FINCH_BIN. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/config.h"
#include "tests/dbtest.h"
#include "tests/test.h"

typedef struct {
  int flag, on;
  unsigned port;
  size_t bytes;
  long long delta;
  unsigned long long seed;
  float share;
  double rate;
  const char *name, *arch, *members;
} sample_opts;

#define F(m) FINCH_OPT_FIELD(sample_opts, m)
static const finch_opt table[] = {
    {"flag", 'f', FINCH_OPT_BOOL, F(flag), .help = "a flag"},
    {"no-on", 0, FINCH_OPT_BOOL, F(on), .def = "false", .flags = FINCH_OPT_INVERT, .help = "turns on off"},
    {"port", 'p', FINCH_OPT_INT, F(port), .def = "8080", .min = 1, .max = 65535, .arg = "N", .help = "a port"},
    {"bytes", 0, FINCH_OPT_INT, F(bytes), .min = 0, .max = 1e308, .arg = "N", .help = "a size"},
    {"delta", 0, FINCH_OPT_INT, F(delta), .def = "-3", .arg = "N", .help = "any integer"},
    {"seed", 0, FINCH_OPT_INT, F(seed), .setting = "seed", .arg = "N", .help = "from the setting"},
    {"share", 0, FINCH_OPT_FLOAT, F(share), .def = "0.25", .min = 0, .max = 1, .flags = FINCH_OPT_MIN_OPEN,
     .arg = "X", .help = "in (0, 1]"},
    {"rate", 0, FINCH_OPT_FLOAT, F(rate), .min = 0, .max = 1e308, .env = "FINCH_TEST_OPTS_RATE", .arg = "R",
     .help = "has a variable"},
    {"name", 0, FINCH_OPT_STRING, F(name), .def = "anon", .arg = "S", .help = "a string"},
    {"arch", 0, FINCH_OPT_ENUM, F(arch), .choices = "bow|tfm", .arg = "A", .help = "an enum"},
    {"members", 0, FINCH_OPT_LIST, F(members), .choices = "slr|bow|tfm", .arg = "LIST", .help = "a list"},
};
#define N (sizeof table / sizeof table[0])

static const finch_opt *opt(const char *name) {
  for (size_t i = 0; i < N; i++)
    if (strcmp(table[i].name, name) == 0) return &table[i];
  return NULL;
}

static void test_types_and_bounds(void) {
  finch_err err;
  sample_opts o;
  memset(&o, 0, sizeof o);
  finch_cfg_src src[N];
  CHECK_INT_EQ(finch_opts_resolve("opts", table, N, &o, src, &err), FINCH_OK);
  CHECK_INT_EQ(o.on, 1);
  CHECK_INT_EQ(o.port, 8080);
  CHECK_INT_EQ(o.delta, -3);
  CHECK_INT_EQ((long long)o.seed, finch_config_int("seed"));
  CHECK_NEAR(o.share, 0.25, 1e-7);
  CHECK_STR_EQ(o.name, "anon");
  CHECK(o.arch == NULL);
  CHECK_INT_EQ(src[2], FINCH_CFG_SRC_DEFAULT);

  finch_opt_set_flag(opt("flag"), &o);
  finch_opt_set_flag(opt("no-on"), &o);
  CHECK_INT_EQ(o.flag, 1);
  CHECK_INT_EQ(o.on, 0);
  CHECK_INT_EQ(finch_opt_set(opt("bytes"), &o, "5000000000", "--", &err), FINCH_OK);
  CHECK(o.bytes == (size_t)5000000000ull);
  CHECK_INT_EQ(finch_opt_set(opt("seed"), &o, "4294967295", "--", &err), FINCH_OK);
  CHECK(o.seed == 4294967295ull);
  CHECK_INT_EQ(finch_opt_set(opt("rate"), &o, "2.5", "--", &err), FINCH_OK);
  CHECK_NEAR(o.rate, 2.5, 1e-12);
  CHECK_INT_EQ(finch_opt_set(opt("members"), &o, "slr,tfm", "--", &err), FINCH_OK);
  CHECK_STR_EQ(o.members, "slr,tfm");
  char buf[64];
  finch_opt_format(opt("port"), &o, buf, sizeof buf);
  CHECK_STR_EQ(buf, "8080");
  finch_opt_format(opt("delta"), &o, buf, sizeof buf);
  CHECK_STR_EQ(buf, "-3");
  finch_opt_format(opt("no-on"), &o, buf, sizeof buf);
  CHECK_STR_EQ(buf, "true");

  /* Errors name the flag, the value and what is accepted; the field keeps its value. */
  CHECK_INT_EQ(finch_opt_set(opt("port"), &o, "70000", "--", &err), FINCH_EINVAL);
  CHECK_STR_EQ(err.msg, "--port: 70000 is out of range 1..65535");
  CHECK_INT_EQ(o.port, 8080);
  CHECK_INT_EQ(finch_opt_set(opt("port"), &o, "80x", "--", &err), FINCH_EINVAL);
  CHECK_STR_EQ(err.msg, "--port: '80x' is not an integer");
  CHECK_INT_EQ(finch_opt_set(opt("share"), &o, "0", "--", &err), FINCH_EINVAL);
  CHECK_STR_EQ(err.msg, "--share: 0 is out of range (0, 1]");
  CHECK_INT_EQ(finch_opt_set(opt("share"), &o, "half", "--", &err), FINCH_EINVAL);
  CHECK_STR_EQ(err.msg, "--share: 'half' is not a number");
  CHECK_INT_EQ(finch_opt_set(opt("bytes"), &o, "-1", "--", &err), FINCH_EINVAL);
  CHECK_STR_EQ(err.msg, "--bytes: -1 is out of range >= 0");
  CHECK_INT_EQ(finch_opt_set(opt("arch"), &o, "cnn", "--", &err), FINCH_EINVAL);
  CHECK_STR_EQ(err.msg, "--arch: 'cnn' is not bow or tfm");
  CHECK_INT_EQ(finch_opt_set(opt("members"), &o, "slr,knn", "--", &err), FINCH_EINVAL);
  CHECK_STR_EQ(err.msg, "--members: 'knn' is not one of slr, bow or tfm");
  CHECK_INT_EQ(finch_opt_set(opt("flag"), &o, "maybe", "--", &err), FINCH_EINVAL);
  CHECK_STR_EQ(err.msg, "--flag: 'maybe' is not true or false");
}

static void test_sections(void) {
  finch_err err;
  CHECK_INT_EQ(finch_config_section("opts", table, N, &err), FINCH_OK);
  char path[512];
  snprintf(path, sizeof path, "%s/test_options.conf", test_tmpdir());
  const char good[] = "# global settings first\nseed = 11\n\n[opts]\nport = 9000\nname = from-file\n"
                      "no-on = yes\nrate = 1.5\nport = 9001\n";
  test_write_file(path, good, sizeof good - 1);
  CHECK_INT_EQ(finch_config_load_file(path, &err), FINCH_OK);

  /* file section > setting > default; later lines win; environment > file. */
  setenv("FINCH_TEST_OPTS_RATE", "4", 1);
  sample_opts o;
  memset(&o, 0, sizeof o);
  finch_cfg_src src[N];
  CHECK_INT_EQ(finch_opts_resolve("opts", table, N, &o, src, &err), FINCH_OK);
  CHECK_INT_EQ(o.port, 9001);
  CHECK_INT_EQ(src[2], FINCH_CFG_SRC_FILE);
  CHECK_STR_EQ(o.name, "from-file");
  CHECK_INT_EQ(o.on, 0);
  CHECK_INT_EQ((long long)o.seed, 11);
  CHECK_INT_EQ(src[5], FINCH_CFG_SRC_FILE);
  CHECK_NEAR(o.rate, 4, 1e-12);
  CHECK_INT_EQ(src[7], FINCH_CFG_SRC_ENV);
  CHECK_INT_EQ(o.delta, -3);
  CHECK_INT_EQ(src[4], FINCH_CFG_SRC_DEFAULT);
  unsetenv("FINCH_TEST_OPTS_RATE");

  /* Errors name the file and line. */
  const char *bad[][2] = {
      {"[opts]\n\nport = 0\n", "test_options.conf:3: [opts] port: 0 is out of range 1..65535"},
      {"[opts]\nprot = 1\n", "test_options.conf:2: [opts] has no option 'prot'"},
      {"seed = 1\n[nothing]\n", "test_options.conf:2: no command 'nothing' for a section"},
      {"[opts\n", "test_options.conf:1: expected '[command]'"},
      {"[opts]\narch = rnn\n", "test_options.conf:2: [opts] arch: 'rnn' is not bow or tfm"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    test_write_file(path, bad[i][0], strlen(bad[i][0]));
    CHECK(finch_config_load_file(path, &err) != FINCH_OK);
    CHECK_CONTAINS(err.msg, bad[i][1]);
  }
}

static void expect(const char *bin, const char *args, int code, const char *needle) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, args);
  int status;
  char *out = test_run(cmd, &status);
  if (status != code) TEST_FAIL_("%s: exit %d, expected %d:\n%s", args, status, code, out);
  CHECK_CONTAINS(out, needle);
  free(out);
}

static void test_cli(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || !*bin) {
    printf("FINCH_BIN not set: CLI checks skipped\n");
    return;
  }
  /* --help shows each default from the table, the setting's, and the library's (the gate). */
  expect(bin, "serve --help", 0, "--port N                 TCP port; 0 picks a free one (default 8080)");
  expect(bin, "serve --help", 0, "(default: setting max_body, 65536)");
  expect(bin, "serve --help", 0, "promotion gate one-sided confidence (default 0.95)");
  expect(bin, "distill --help", 0, "softmax temperature of the soft labels (default 2)");
  expect(bin, "webhooks --help", 0, "at most N rows, newest first (default 50)");
  /* Range and type errors name the flag; unknown flags are refused. */
  expect(bin, "serve --model m.fnm --port 70000", 2, "finch serve: --port: 70000 is out of range 0..65535");
  expect(bin, "serve --model m.fnm --gate-confidence 0.5", 2, "--gate-confidence: 0.5 is out of range (0.5, 1)");
  expect(bin, "distill --dataset d --student cnn", 2, "finch distill: --student: 'cnn' is not bow or tfm");
  expect(bin, "distill --dataset d --alpha=0", 2, "--alpha: 0 is out of range (0, 1]");
  expect(bin, "ingest --jobs 17 --format csv --dataset d x.csv", 2, "--jobs: 17 is out of range 1..16");
  expect(bin, "teacher train --dataset d --seq-len x", 2, "--seq-len: 'x' is not an integer");
  expect(bin, "serve --prot 1", 2, "finch serve: unknown option '--prot' (see finch serve --help)");
  expect(bin, "serve --no-database=1", 2, "--no-database takes no value");
  expect(bin, "serve --port", 2, "--port needs a value (N)");
  expect(bin, "--frobnicate models", 2, "finch: unknown global option '--frobnicate'");
  /* An option given twice is refused (the first would be lost), except one
   * that adds its items: eval's --model. */
  expect(bin, "serve --model a.fnm --port 1 --port 2", 2, "finch serve: --port is given twice; give it once");
  expect(bin, "distill --dataset d --dataset e", 2, "--dataset is given twice");
  expect(bin, "serve --no-webhooks --no-webhooks --model a.fnm", 2, "--no-webhooks is given twice");
  expect(bin, "eval --model /nonexistent/a.fnm --model /nonexistent/b.fnm --dataset d", 1, "/nonexistent/a.fnm");

  /* [serve] and [distill] sections: file < environment < flag. */
  char path[512], args[1024];
  snprintf(path, sizeof path, "%s/test_options_cli.conf", test_tmpdir());
  const char conf[] = "seed = 9\n[serve]\nport = 9000\nno-webhooks = true\n[distill]\nseed = 7\n";
  test_write_file(path, conf, sizeof conf - 1);
  snprintf(args, sizeof args, "--config '%s' --settings", path);
  expect(bin, args, 0, "port                   = 9000                     (file)");
  expect(bin, args, 0, "no-webhooks            = true                     (file)");
  expect(bin, args, 0, "seed                   = 7                        (file)");
  snprintf(args, sizeof args, "--config '%s' serve --help", path);
  expect(bin, args, 0, "TCP port; 0 picks a free one (default 9000)");
  snprintf(args, sizeof args, "--config '%s' serve --model m.fnm --port 70000", path);
  expect(bin, args, 2, "--port: 70000 is out of range");
  snprintf(args, sizeof args, "env FINCH_SEED=5 '%s' --config '%s' --settings", bin, path);
  {
    char cmd[2048];
    int status;
    snprintf(cmd, sizeof cmd, "%s", args);
    char *out = test_run(cmd, &status);
    CHECK_INT_EQ(status, 0);
    CHECK_CONTAINS(out, "seed                   = 5                        (env)");
    CHECK(strstr(out, "= 7 ") == NULL);
    free(out);
  }
  /* Keys with '_' for '-' (student_epochs, as the global settings are
   * spelled), and global settings spelled like their flags (log-level):
   * both were "unknown" before. */
  const char under[] = "log-level = warn\n[distill]\nstudent_epochs = 3\n";
  test_write_file(path, under, sizeof under - 1);
  snprintf(args, sizeof args, "--config '%s' --settings", path);
  expect(bin, args, 0, "student-epochs         = 3                        (file)");
  expect(bin, args, 0, "log_level     = warn                     (file;");
  const char under_bad[] = "[distill]\nstudent_epochs = x\n";
  test_write_file(path, under_bad, sizeof under_bad - 1);
  expect(bin, args, 1, "test_options_cli.conf:2: [distill] student-epochs: 'x' is not an integer");
  const char under_unknown[] = "[distill]\nstudent__epochs = 3\n";
  test_write_file(path, under_unknown, sizeof under_unknown - 1);
  expect(bin, args, 1, "test_options_cli.conf:2: [distill] has no option 'student__epochs'");
  const char under_half[] = "[distill]\nstudent_epochs_ = 3\n";
  test_write_file(path, under_half, sizeof under_half - 1);
  expect(bin, args, 1, "[distill] has no option 'student_epochs_'");
  const char bad[] = "[serve]\nthreads = 0\n";
  test_write_file(path, bad, sizeof bad - 1);
  snprintf(args, sizeof args, "--config '%s' models list", path);
  expect(bin, args, 1, "test_options_cli.conf:2: [serve] threads: 0 is out of range 1..256");
}

int main(void) {
  test_types_and_bounds();
  test_sections();
  test_cli();
  TEST_DONE();
}
