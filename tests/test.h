/* Minimal test harness: typed asserts that print both values, one process per
 * test file, registered with CTest. A test that cannot run (no GPU, no data)
 * calls TEST_SKIP with the reason; CTest sees exit code 77 as skipped.
 * A test executable counts its failures once: helpers linked beside the test
 * file (a fixture.c that checks) add to the same count TEST_DONE reads, since
 * every file that includes this header makes the same weak definition and
 * the linker keeps one. */
#ifndef FINCH_TESTS_TEST_H
#define FINCH_TESTS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

__attribute__((weak)) int test_failures_ = 0;

#define TEST_FAIL_(...)                                                                            \
  do {                                                                                             \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                                \
    fprintf(stderr, __VA_ARGS__);                                                                  \
    fputc('\n', stderr);                                                                           \
    test_failures_++;                                                                              \
  } while (0)

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) TEST_FAIL_("CHECK(%s) failed", #cond);                                            \
  } while (0)

#define CHECK_INT_EQ(a, b)                                                                         \
  do {                                                                                             \
    long long a_ = (long long)(a), b_ = (long long)(b);                                            \
    if (a_ != b_) TEST_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);                            \
  } while (0)

#define CHECK_STR_EQ(a, b)                                                                         \
  do {                                                                                             \
    const char *a_ = (a), *b_ = (b);                                                               \
    if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                         \
      TEST_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");    \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
  do {                                                                                             \
    double a_ = (double)(a), b_ = (double)(b);                                                     \
    if (!(fabs(a_ - b_) <= (tol)))                                                                 \
      TEST_FAIL_("%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, a_, b_, (double)(tol));                \
  } while (0)

#define CHECK_CONTAINS(hay, needle)                                                                \
  do {                                                                                             \
    const char *h_ = (hay), *n_ = (needle);                                                        \
    if (!h_ || !strstr(h_, n_)) TEST_FAIL_("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_); \
  } while (0)

#define TEST_SKIP(...)                                                                             \
  do {                                                                                             \
    printf("SKIP: ");                                                                              \
    printf(__VA_ARGS__);                                                                           \
    printf("\n");                                                                                  \
    exit(77);                                                                                      \
  } while (0)

/* Normalised squared error of x against the reference y (n each):
 * sum (x - y)^2 / sum y^2, or the plain sum when y is all zero. */
static inline double test_nmse(const float *x, const float *y, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    den += (double)y[i] * y[i];
  }
  return den > 0 ? num / den : num;
}

#define TEST_DONE()                                                                                \
  do {                                                                                             \
    if (test_failures_) {                                                                          \
      fprintf(stderr, "%d check(s) failed\n", test_failures_);                                     \
      return 1;                                                                                    \
    }                                                                                              \
    return 0;                                                                                      \
  } while (0)

/* Runs a shell command; its standard output (malloc'd, NUL-terminated; the
 * caller frees) and, in *status, its exit code (-1 when it did not exit).
 * Exits the test when the command cannot be started or memory runs out. */
static inline char *test_run(const char *cmd, int *status) {
  *status = -1;
  FILE *p = popen(cmd, "r");
  size_t cap = 1 << 16, len = 0, k;
  char *buf = p ? malloc(cap) : NULL;
  if (!buf) {
    fprintf(stderr, "cannot run: %s\n", cmd);
    exit(1);
  }
  while ((k = fread(buf + len, 1, cap - len - 1, p)) > 0) {
    len += k;
    if (cap - len < 1024) {
      char *g = realloc(buf, cap *= 2);
      if (!g) exit(1);
      buf = g;
    }
  }
  buf[len] = '\0';
  int st = pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return buf;
}

#endif
