#include <stdio.h>
#include <stdlib.h>

#include "core/config.h"
#include "tests/dbtest.h"
#include "tests/test.h"

int main(void) {
  finch_err err;
  CHECK_STR_EQ(finch_config_get("db_name"), "finch");
  CHECK_INT_EQ(finch_config_int("seed"), 42);
  /* Type and bounds are checked. */
  CHECK_INT_EQ(finch_config_set("seed", "abc", FINCH_CFG_SRC_FLAG, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "not an integer");
  CHECK_INT_EQ(finch_config_set("holdout", "0.95", FINCH_CFG_SRC_FLAG, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "outside");
  CHECK_INT_EQ(finch_config_set("nope", "1", FINCH_CFG_SRC_FLAG, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "unknown setting 'nope'");

  /* A file sets values; a flag outranks the file whatever the order. */
  char path[512];
  snprintf(path, sizeof path, "%s/test_config.conf", test_tmpdir());
  const char good[] = "# comment\n\nseed = 7\nholdout=0.2\n";
  test_write_file(path, good, sizeof good - 1);
  CHECK_INT_EQ(finch_config_set("holdout", "0.3", FINCH_CFG_SRC_FLAG, &err), FINCH_OK);
  CHECK_INT_EQ(finch_config_load_file(path, &err), FINCH_OK);
  CHECK_INT_EQ(finch_config_int("seed"), 7);
  CHECK_NEAR(finch_config_float("holdout"), 0.3, 1e-12);

  /* Errors name the file and line. */
  const char bad[] = "seed = 1\nthis line is wrong\n";
  test_write_file(path, bad, sizeof bad - 1);
  CHECK_INT_EQ(finch_config_load_file(path, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "test_config.conf:2: expected 'name = value'");
  const char bad2[] = "\nmax_body = 1\n";
  test_write_file(path, bad2, sizeof bad2 - 1);
  CHECK_INT_EQ(finch_config_load_file(path, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "test_config.conf:2");
  CHECK_CONTAINS(err.msg, "max_body");
  TEST_DONE();
}
