/* The rule engine: priorities, negative patterns, ties, errors with lines,
 * lint, and the shipped BANKING77 pack. */
#include <stdio.h>
#include <string.h>

#include "serve/rules.h"
#include "tests/test.h"

static finch_status load_text(const char *name, const char *text, finch_rules **r, finch_err *err) {
  char path[512];
  const char *tmp = getenv("FINCH_TEST_TMP");
  snprintf(path, sizeof path, "%s/%s", tmp && *tmp ? tmp : "/tmp", name);
  FILE *fp = fopen(path, "w");
  fputs(text, fp);
  fclose(fp);
  return finch_rules_load(r, path, err);
}

int main(void) {
  finch_err err;
  finch_rules *r = NULL;
  const char *good =
      "# card delivery\n"
      "card_arrival        40  /\\bcard\\b.*\\b(arriv|come|deliver)/i  !/\\bactivat/i\n"
      "activate_my_card    50  /\\bactivat\\w*\\b.*\\bcard\\b|\\bcard\\b.*\\bactivat/i\n"
      "\n"
      "exchange_rate       30  /exchange rate|\\brate\\b.*\\b(usd|eur|gbp)\\b/i\n"
      "exchange_via_app    30  /exchange rate/i\n"
      "top_up_failed       20  /top[- ]?up.*(fail|declin|not work)/i\n"
      "transfer_into_account 10 /money\\/transfer|a\\/b/\n";
  CHECK_INT_EQ(load_text("test_rules_good.rules", good, &r, &err), FINCH_OK);
  if (!r) return 1;
  CHECK_INT_EQ(finch_rules_count(r), 6);
#define MATCH(t) finch_rules_match(r, t, strlen(t), NULL, NULL)
  CHECK_STR_EQ(MATCH("My card has not arrived yet"), "card_arrival");
  /* The negative pattern stops card_arrival; activate wins by priority anyway. */
  CHECK_STR_EQ(MATCH("my card arrived, how do I activate it"), "activate_my_card");
  CHECK_STR_EQ(MATCH("how do i activate the card that came"), "activate_my_card");
  /* Equal priority: the earlier line wins. */
  size_t idx = 0;
  long line = 0;
  const char *got = finch_rules_match(r, "what exchange rate do you use", 29, &idx, &line);
  CHECK_STR_EQ(got, "exchange_rate");
  CHECK_INT_EQ(line, 5);
  CHECK_STR_EQ(MATCH("Top-up failed again"), "top_up_failed");
  CHECK_STR_EQ(MATCH("send money/transfer"), "transfer_into_account"); /* \/ is a literal slash */
  CHECK(MATCH("hello there") == NULL);
  /* Lint compares patterns as written: none of these repeats another. */
  FILE *devnull = fopen("/dev/null", "w");
  CHECK_INT_EQ(finch_rules_lint(r, devnull), 0);
  finch_rules_free(r);

  /* Rules that can never fire or win. */
  const char *dead = "a 10 /x/i\n"
                     "b 10 /x/i\n"            /* same pattern, not higher: never wins */
                     "c 50 /y/  !/y/\n";      /* negative = pattern: never fires */
  CHECK_INT_EQ(load_text("test_rules_dead.rules", dead, &r, &err), FINCH_OK);
  char report[1024] = "";
  FILE *mem = fmemopen(report, sizeof report, "w");
  CHECK_INT_EQ(finch_rules_lint(r, mem), 2);
  fclose(mem);
  CHECK_CONTAINS(report, "test_rules_dead.rules:2: rule for b can never win: line 1");
  CHECK_CONTAINS(report, "test_rules_dead.rules:3: rule for c can never fire");
  finch_rules_free(r);

  /* Errors name the file and the line. */
  static const struct {
    const char *text, *want;
  } bad[] = {
      {"a 10 /ok/\nb 10 /(unclosed/i\n", "test_rules_bad.rules:2: bad pattern at offset"},
      {"a ten /x/\n", "test_rules_bad.rules:1: expected a priority"},
      {"a 101 /x/\n", "test_rules_bad.rules:1: expected a priority"},
      {"\n\na 5 x\n", "test_rules_bad.rules:3: expected /pattern/"},
      {"a 5 /x\n", "test_rules_bad.rules:1: unterminated pattern"},
      {"a 5 /x/q\n", "test_rules_bad.rules:1: unknown flag"},
      {"a 5 /x/ trailing\n", "test_rules_bad.rules:1: unexpected text"},
      {"# only a comment\n", "test_rules_bad.rules: no rules"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = NULL;
    CHECK_INT_EQ(load_text("test_rules_bad.rules", bad[i].text, &r, &err), FINCH_EFORMAT);
    CHECK(r == NULL);
    CHECK_CONTAINS(err.msg, bad[i].want);
  }
  CHECK_INT_EQ(finch_rules_load(&r, "/no/such.rules", &err), FINCH_ENOTFOUND);

  /* The shipped pack compiles, covers the 77 intents and lints clean. */
  char pack[1024];
  snprintf(pack, sizeof pack, "%s/serve/rules/banking77.rules", FINCH_SOURCE_DIR);
  CHECK_INT_EQ(finch_rules_load(&r, pack, &err), FINCH_OK);
  if (r) {
    CHECK(finch_rules_count(r) >= 77);
    CHECK_INT_EQ(finch_rules_lint(r, stderr), 0);
    CHECK_STR_EQ(MATCH("my card still hasn't arrived"), "card_arrival");
    finch_rules_free(r);
  }
  fclose(devnull);
  TEST_DONE();
}
