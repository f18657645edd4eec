/* The CUDA fallback is quiet unless asked about: a CPU run with the default
 * device (auto) prints no CUDA line on stderr; at --log-level debug it says
 * why the CPU is used; --device cuda without a device fails naming CUDA.
 * Before, every auto run without a GPU printed "no CUDA device found (...);
 * using the CPU" on stderr, so the first check failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/dbtest.h"
#include "tests/test.h"

int main(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || !*bin) TEST_SKIP("FINCH_BIN not set");
  char csv[1024], cmd[4096];
  snprintf(csv, sizeof csv, "%s/test_device_quiet.csv", test_tmpdir());
  FILE *fp = fopen(csv, "w");
  CHECK(fp != NULL);
  if (!fp) TEST_DONE();
  fputs("text,label\n", fp);
  for (int i = 0; i < 40; i++)
    fprintf(fp, i % 2 ? "please check my balance %d,balance\n" : "i lost my card %d,lost_card\n", i);
  fclose(fp);
  int status;
  snprintf(cmd, sizeof cmd, "'%s' ingest --format csv --dataset quiet '%s' 2>&1", bin, csv);
  char *out = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  free(out);

  /* stderr alone, with the device setting at its default. */
  const char *train = "teacher train --dataset quiet --members tfm --epochs 1 --seq-len 16";
  snprintf(cmd, sizeof cmd, "env -u FINCH_DEVICE '%s' %s 2>&1 >/dev/null", bin, train);
  out = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  if (out && strstr(out, "CUDA")) TEST_FAIL_("a run with the default device mentions CUDA:\n%s", out);
  free(out);

  snprintf(cmd, sizeof cmd, "env -u FINCH_DEVICE '%s' --log-level debug %s 2>&1 >/dev/null", bin, train);
  out = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  int no_gpu = out && strstr(out, "no CUDA device found (") && strstr(out, "); using the CPU");
  free(out);
  if (no_gpu) {
    snprintf(cmd, sizeof cmd, "'%s' %s --device cuda 2>&1", bin, train);
    out = test_run(cmd, &status);
    CHECK(status != 0);
    CHECK_CONTAINS(out, "CUDA");
    free(out);
  } else {
    printf("a CUDA device answers: the fallback's messages are not checked\n");
  }
  TEST_DONE();
}
