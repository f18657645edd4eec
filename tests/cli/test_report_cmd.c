/* finch eval and finch report, black-box through the binary ($FINCH_BIN)
 * against the test database: a repeated eval says "unchanged" and adds no
 * report; report list/show/approve print what is stored; approve refuses
 * malformed arguments with an error naming them and a non-zero exit; show
 * finds a JSON file changed on disk and exits 1. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/dbtest.h"
#include "tests/test.h"

static const char *bin;

/* Runs the finch command line args, stderr folded into the output (malloc'd). */
static char *finch(int *status, const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, args);
  return test_run(cmd, status);
}

/* Runs args, expects exit code want and needle in the output. */
static void expect(const char *args, int want, const char *needle) {
  int status;
  char *out = finch(&status, args);
  if (status != want) fprintf(stderr, "finch %s:\n%s\n", args, out);
  CHECK_INT_EQ(status, want);
  if (needle) CHECK_CONTAINS(out, needle);
  free(out);
}

int main(void) {
  bin = getenv("FINCH_BIN");
  if (!bin || !*bin) TEST_SKIP("FINCH_BIN is not set");
  finch_db *db = test_db_open();
  char args[4096];
  snprintf(args, sizeof args, "ingest --format banking77 --dataset sample --holdout 0.3 --seed 3 '%s/data/sample/banking_sample.csv'",
           FINCH_SOURCE_DIR);
  expect(args, 0, "ingest run 1");
  expect("distill --dataset sample --teacher-epochs 1 --seed 4", 0, "student: model 2");

  expect("eval --model 2 --dataset sample", 0, "report 1: ");
  expect("eval --model 2 --dataset sample", 0, "unchanged: report 1");
  int status;
  char *out = finch(&status, "eval --model 2 --dataset sample --json");
  CHECK_INT_EQ(status, 0);
  json_t *j = json_loads(out, 0, NULL);
  CHECK(j != NULL);
  CHECK(json_is_true(json_object_get(j, "unchanged")));
  CHECK_INT_EQ(json_integer_value(json_object_get(j, "report_id")), 1);
  CHECK(json_is_number(json_object_get(j, "accuracy")) && json_is_number(json_object_get(j, "latency_ms_p90")));
  CHECK_INT_EQ(strlen(json_string_value(json_object_get(j, "rows_sha256"))), 64);
  json_decref(j);
  free(out);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM eval_reports"), 1);
  /* Another CPU price is another body, so another report; a negative one is refused. */
  expect("eval --model 2 --dataset sample --cpu-price-hour 0.5", 0, "report 2: ");
  expect("eval --model 2 --dataset sample --cpu-price-hour -1", 2, "--cpu-price-hour");
  expect("eval --model 2 --dataset sample --rules /nonexistent/x.rules", 1, "/nonexistent/x.rules");
  expect("eval --model 2 --dataset sample --rules ''", 0, "report 3: ");

  expect("report list", 0, "dataset sample, split dev");
  out = finch(&status, "report list --json");
  CHECK_INT_EQ(status, 0);
  j = json_loads(out, 0, NULL);
  CHECK_INT_EQ(json_array_size(j), 3);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(j, 0), "id")), 3); /* newest first */
  json_decref(j);
  free(out);

  /* approve: malformed arguments. */
  expect("report approve 1 --decision approve", 1, "--reviewer NAME is required");
  expect("report approve 1 --reviewer Ann", 1, "--decision approve|reject is required");
  expect("report approve 1 --reviewer '' --decision approve", 1, "a reviewer's name is required");
  expect("report approve 1 --reviewer Ann --decision maybe", 1, "--decision 'maybe': expected approve or reject");
  expect("report approve 99 --reviewer Ann --decision reject", 1, "report 99 does not exist");
  expect("report approve 1x --reviewer Ann --decision reject", 1, "report ID '1x': expected a positive integer");
  expect("report approve -3 --reviewer Ann --decision reject", 2, NULL);
  expect("report approve --reviewer Ann --decision reject", 2, "usage");
  expect("report frobnicate 1", 2, "usage");
  expect("report show", 2, "usage");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM report_approvals"), 0);

  expect("report approve 1 --reviewer Ann --decision approve --comment 'fit for assist'", 0,
         "decision 1 on report 1: approve by Ann, on body ");
  expect("report show 1", 0, "approve by Ann on body ");
  expect("report show 1", 0, "(intact)");
  expect("report show 1 --format md", 0, "| Ann | approve |");
  expect("report show 1 --format md", 0, "## Sign-off");
  expect("report show 1 --format html", 0, "<!DOCTYPE html>");
  expect("report show 1 --format html", 0, "<td>Ann</td>");

  /* A deployment's serving record as the report's monitoring section: in
   * the body (another report), drawn on the page; an unknown deployment
   * and a period without one are refused. */
  test_exec(db, "INSERT INTO conversation_turns (deployment, conversation_id, turn_index, speaker, text, stage, engine,"
                " intent, model_intent, model_confidence, handoff, latency_ms, created_at) VALUES"
                " ('desk', 'c1', 0, 'user', 'my card is lost', 'primary', 'model', 'lost_or_stolen_card',"
                " 'lost_or_stolen_card', 0.9, false, 2.5, '2026-01-05 10:00+00'),"
                " ('desk', 'c2', 0, 'user', 'hello there', 'primary', 'rules', 'greeting', 'card_arrival', 0.2, true,"
                " 4.0, '2026-01-06 11:00+00')");
  long long before = test_scalar(db, "SELECT count(*) FROM eval_reports");
  out = finch(&status, "eval --model 2 --dataset sample --deployment desk --until 2026-02-01 --json");
  CHECK_INT_EQ(status, 0);
  j = json_loads(out, 0, NULL);
  long long mon_id = j ? (long long)json_integer_value(json_object_get(j, "report_id")) : 0;
  CHECK(j && !json_is_true(json_object_get(j, "unchanged")));
  json_decref(j);
  free(out);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM eval_reports"), before + 1);
  snprintf(args, sizeof args,
           "SELECT count(*) FROM eval_reports WHERE id = %lld AND body->'monitoring'->>'deployment' = 'desk'"
           " AND (body->'monitoring'->'total'->>'turns')::int = 2", mon_id);
  CHECK_INT_EQ(test_scalar(db, args), 1);
  snprintf(args, sizeof args, "report show %lld --format html", mon_id);
  expect(args, 0, "Monitoring: the deployment in service</h2>");
  expect("eval --model 2 --dataset sample --deployment desk --until 2026-02-01", 0, "unchanged: report");
  expect("eval --model 2 --dataset sample --deployment nosuch", 1, "nosuch");
  expect("eval --model 2 --dataset sample --since 7d", 2, "--since and --until need --deployment");
  expect("eval --model 2 --dataset sample --deployment desk --since yesterday", 1, "yesterday");
  expect("report show 2 --format md", 0, "No decision was recorded");
  expect("report show 42", 1, "report 42 does not exist");

  out = finch(&status, "report show 1 --json");
  CHECK_INT_EQ(status, 0);
  j = json_loads(out, 0, NULL);
  CHECK(j != NULL);
  const json_t *file = json_object_get(j, "file");
  CHECK_STR_EQ(json_string_value(json_object_get(file, "state")), "intact");
  CHECK_STR_EQ(json_string_value(json_object_get(file, "sha256")), json_string_value(json_object_get(j, "body_sha256")));
  CHECK_INT_EQ(json_array_size(json_object_get(j, "approvals")), 1);
  CHECK(json_object_get(json_object_get(j, "body"), "lineage") != NULL);
  CHECK(json_is_number(json_object_get(json_object_get(j, "measurements"), "latency_ms_p99")));

  /* Tampered on disk: show says so and fails; the file is put back after. */
  const char *path = json_string_value(json_object_get(file, "path"));
  FILE *fp = path ? fopen(path, "rb") : NULL;
  CHECK(fp != NULL);
  if (fp) {
    char orig[1 << 16];
    size_t len = fread(orig, 1, sizeof orig, fp);
    fclose(fp);
    CHECK(len > 100 && len < sizeof orig);
    char *bad = malloc(len + 1);
    memcpy(bad, orig, len);
    bad[len - 2] = bad[len - 2] == '}' ? ']' : '}';
    test_write_file(path, bad, len);
    expect("report show 1", 1, "differs from the stored report");
    expect("report show 1 --json", 1, "\"state\":\"differs\"");
    test_write_file(path, orig, len);
    expect("report show 1", 0, "(intact)");
    free(bad);
  }
  json_decref(j);
  free(out);
  finch_db_close(db);
  TEST_DONE();
}
