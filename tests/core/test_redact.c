#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/redact.h"
#include "tests/test.h"

enum { T_CARD, T_IBAN, T_EMAIL, T_PHONE, T_SSN, T_ACCOUNT, N_BUILTIN };

static char *redact(finch_redactor *r, const char *s, uint64_t *counts) {
  char *out = NULL;
  finch_err err;
  uint64_t scratch[64] = {0};
  if (finch_redact(r, s, strlen(s), &out, counts ? counts : scratch, &err) != FINCH_OK) {
    fprintf(stderr, "redact(%s): %s\n", s, err.msg);
    return strdup("<error>");
  }
  return out;
}

#define CHECK_REDACT(r, in, want)                                                                  \
  do {                                                                                             \
    char *got_ = redact(r, in, NULL);                                                              \
    CHECK_STR_EQ(got_, want);                                                                      \
    free(got_);                                                                                    \
  } while (0)

#define CHECK_SURVIVES(r, in) CHECK_REDACT(r, in, in)

static char tmp_dir[512];

/* Writes text to a fresh file under FINCH_TEST_TMP (or /tmp) and returns its path in buf. */
static const char *write_tmp(char *buf, size_t size, const char *name, const char *text) {
  snprintf(buf, size, "%s/redact_%ld_%s", tmp_dir, (long)getpid(), name);
  FILE *f = fopen(buf, "w");
  if (!f) {
    TEST_FAIL_("cannot write %s: %s", buf, strerror(errno));
    return buf;
  }
  fputs(text, f);
  fclose(f);
  return buf;
}

static void test_validators(void) {
  CHECK(finch_luhn_valid("4111 1111 1111 1111", 19));
  CHECK(finch_luhn_valid("5555-5555-5555-4444", 19));
  CHECK(finch_luhn_valid("378282246310005", 15));
  CHECK(finch_luhn_valid("79927398713", 11));
  CHECK(!finch_luhn_valid("79927398710", 11));
  CHECK(!finch_luhn_valid("4111 1111 1111 1112", 19));
  CHECK(!finch_luhn_valid("4111x1111 1111 1111", 19)); /* only spaces and dashes between digits */
  CHECK(!finch_luhn_valid("0", 1));
  CHECK(!finch_luhn_valid("", 0));

  const char *good[] = {"GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00",
                        "FR14 2004 1010 0505 0001 3M02 606", "NL91 ABNA 0417 1643 00",
                        "ES91 2100 0418 4502 0005 1332", "BE68 5390 0754 7034", "NO9386011117947",
                        "gb82west12345698765432", "GB82-WEST-1234-5698-7654-32"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    if (!finch_iban_valid(good[i], strlen(good[i]))) TEST_FAIL_("IBAN %s should be valid", good[i]);
  const char *bad[] = {"GB83 WEST 1234 5698 7654 32", /* check digits */
                       "DE89 3704 0044 0532 0130 01", /* BBAN digit */
                       "GB82 WEST 1234 5698 7654 3",  /* length for GB */
                       "QQ82 WEST 1234 5698 7654 32", /* no such country */
                       "GB82 WEST 1234 5698 7654 32.", "", "GB82"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (finch_iban_valid(bad[i], strlen(bad[i]))) TEST_FAIL_("IBAN %s should be invalid", bad[i]);
}

static void test_types(finch_redactor *r) {
  const char *want[] = {"card", "iban", "email", "phone", "ssn", "account"};
  CHECK_INT_EQ(finch_redactor_n_types(r), N_BUILTIN);
  for (size_t i = 0; i < N_BUILTIN; i++) CHECK_STR_EQ(finch_redactor_type(r, i), want[i]);
  CHECK(finch_redactor_type(r, N_BUILTIN) == NULL);
}

static void test_cards(finch_redactor *r) {
  CHECK_REDACT(r, "my card 4111 1111 1111 1111 was declined", "my card <CARD> was declined");
  CHECK_REDACT(r, "5555-5555-5555-4444", "<CARD>");
  CHECK_REDACT(r, "amex 378282246310005.", "amex <CARD>.");
  CHECK_REDACT(r, "amex 3782 822463 10005", "amex <CARD>");
  CHECK_REDACT(r, "discover 6011111111111117, thanks", "discover <CARD>, thanks");
  CHECK_REDACT(r, "discover 6011 0009 9013 9424", "discover <CARD>");
  CHECK_REDACT(r, "visa 4222222222222", "visa <CARD>");
  CHECK_REDACT(r, "card 4111-1111-1111-1111, exp 12/25", "card <CARD>, exp 12/25");
  /* One digit changed: Luhn fails, a reference number stays. */
  CHECK_SURVIVES(r, "my card 4111 1111 1111 1112 was declined");
  CHECK_SURVIVES(r, "5555-5555-5555-4445");
  CHECK_SURVIVES(r, "amex 378282246310006");
  CHECK_SURVIVES(r, "discover 6011111111111118");
  CHECK_SURVIVES(r, "ref 1234567812345678");
  /* Never a piece of a word or of a longer number. */
  CHECK_SURVIVES(r, "abc4111111111111111def");
  CHECK_SURVIVES(r, "id 41111111111111110000");
  CHECK_SURVIVES(r, "4111-1111-1111-1111-2222");
  CHECK_SURVIVES(r, "ref 0111 1111 1111 1111 0"); /* no card starts with 0 */
  /* Another number after a space: the card still goes, the number stays. */
  CHECK_REDACT(r, "card 4111 1111 1111 1111 12 25 123", "card <CARD> 12 25 123");
  CHECK_REDACT(r, "4111 1111 1111 1111 5555 5555 5555 4444", "<CARD> <CARD>");
}

static void test_ibans(finch_redactor *r) {
  CHECK_REDACT(r, "pay GB82 WEST 1234 5698 7654 32 today", "pay <IBAN> today");
  CHECK_REDACT(r, "DE89 3704 0044 0532 0130 00", "<IBAN>");
  CHECK_REDACT(r, "IBAN: FR14 2004 1010 0505 0001 3M02 606.", "IBAN: <IBAN>.");
  CHECK_REDACT(r, "NL91 ABNA 0417 1643 00", "<IBAN>");
  CHECK_REDACT(r, "ES91 2100 0418 4502 0005 1332", "<IBAN>");
  CHECK_REDACT(r, "BE68 5390 0754 7034 and NO93 8601 1117 947", "<IBAN> and <IBAN>");
  /* Without spaces, lower case, a word right after it. */
  CHECK_REDACT(r, "iban gb82west12345698765432, thanks", "iban <IBAN>, thanks");
  CHECK_REDACT(r, "ES91 2100 0418 4502 0005 1332 thanks", "<IBAN> thanks");
  /* Bad checks survive whole: no other rule takes a piece of them. */
  CHECK_SURVIVES(r, "pay GB83 WEST 1234 5698 7654 32 today");
  CHECK_SURVIVES(r, "DE88 3704 0044 0532 0130 00");
  CHECK_SURVIVES(r, "FR15 2004 1010 0505 0001 3M02 606");
  CHECK_SURVIVES(r, "NL92 ABNA 0417 1643 00");
  CHECK_SURVIVES(r, "ES92 2100 0418 4502 0005 1332");
  CHECK_SURVIVES(r, "QQ82 WEST 1234 5698 7654 32");
  CHECK_SURVIVES(r, "xGB82WEST12345698765432");
}

static void test_emails(finch_redactor *r) {
  CHECK_REDACT(r, "mail john.smith@example.co.uk now", "mail <EMAIL> now");
  CHECK_REDACT(r, "j+tag@sub.example.com.", "<EMAIL>.");
  CHECK_REDACT(r, "(anna.o'neil@bank-x.org)", "(<EMAIL>)");
  CHECK_REDACT(r, "write to 'john@example.com'", "write to '<EMAIL>'");
  CHECK_REDACT(r, "josé.garcía@correo.es", "<EMAIL>");
  CHECK_REDACT(r, "我的邮箱是john@example.com。", "我的邮箱是<EMAIL>。");
  CHECK_SURVIVES(r, "ping @finchbank on x");
  CHECK_SURVIVES(r, "me@home");
  CHECK_SURVIVES(r, "user@localhost");
}

static void test_phones(finch_redactor *r) {
  CHECK_REDACT(r, "call +44 20 7946 0958", "call <PHONE>");
  CHECK_REDACT(r, "call +14155552671 now", "call <PHONE> now");
  CHECK_REDACT(r, "call +49 (0)30 1234567", "call <PHONE>");
  CHECK_REDACT(r, "+1 (415) 555-2671", "<PHONE>");
  CHECK_REDACT(r, "0044 20 7946 0958", "<PHONE>");
  CHECK_REDACT(r, "(415) 555-2671", "<PHONE>");
  CHECK_REDACT(r, "415-555-2671", "<PHONE>");
  CHECK_REDACT(r, "415.555.2671", "<PHONE>");
  CHECK_REDACT(r, "1-800-555-0199", "<PHONE>");
  CHECK_REDACT(r, "ring 020 7946 0958 please", "ring <PHONE> please");
  CHECK_REDACT(r, "mobile 07700 900123", "mobile <PHONE>");
  CHECK_REDACT(r, "mobile 07700900123", "mobile <PHONE>");
  CHECK_REDACT(r, "(0161) 496 0000", "<PHONE>");
  CHECK_REDACT(r, "01 23 45 67 89", "<PHONE>");
  CHECK_REDACT(r, "030 1234567", "<PHONE>");
  CHECK_REDACT(r, "phone +44 7700 900123 ext 12", "phone <PHONE> ext 12");
  /* Without country code or trunk 0, only after words that announce a phone. */
  CHECK_REDACT(r, "The phone number is 20 7071 5029, thanks", "The phone number is <PHONE>, thanks");
  CHECK_REDACT(r, "they can be reached at 1 40 51 38 38.", "they can be reached at <PHONE>.");
  CHECK_REDACT(r, "contact number: 1793 414926", "contact number: <PHONE>");
  CHECK_SURVIVES(r, "I called on 2024-03-12 and 12/03/2024 at 10:30");
  CHECK_SURVIVES(r, "I called about transaction 98765432101");
  CHECK_SURVIVES(r, "+50.00 on my balance");
  CHECK_SURVIVES(r, "192.168.100.1000");
  CHECK_SURVIVES(r, "code 0207946095812345");
}

static void test_ssns(finch_redactor *r) {
  CHECK_REDACT(r, "my ssn is 123-45-6789", "my ssn is <SSN>");
  CHECK_REDACT(r, "SSN: 123456789", "SSN: <SSN>");
  CHECK_REDACT(r, "social security number 078 05 1120", "social security number <SSN>");
  CHECK_SURVIVES(r, "000-12-3456");
  CHECK_SURVIVES(r, "666-12-3456");
  CHECK_SURVIVES(r, "900-12-3456 and 987-65-4321");
  CHECK_SURVIVES(r, "123-00-4567");
  CHECK_SURVIVES(r, "123-45-0000");
  CHECK_SURVIVES(r, "ssn 000000000");
  CHECK_SURVIVES(r, "order 123456789"); /* bare nine digits only after "SSN" */
}

static void test_accounts(finch_redactor *r) {
  CHECK_REDACT(r, "sort code 20-00-00 account 12345678", "<ACCOUNT>");
  CHECK_REDACT(r, "pay 20-00-00 12345678 today", "pay <ACCOUNT> today");
  CHECK_REDACT(r, "200000 12345678", "<ACCOUNT>");
  CHECK_REDACT(r, "my sort code is 20-00-00 and account number 12345678 thanks", "my <ACCOUNT> thanks");
  CHECK_REDACT(r, "Sort-code: 200000, acc no. 12345678", "<ACCOUNT>");
  /* The pair is one placeholder, not a phone plus a number. */
  uint64_t c[N_BUILTIN] = {0};
  char *out = redact(r, "20 00 00 12345678", c);
  CHECK_STR_EQ(out, "<ACCOUNT>");
  CHECK_INT_EQ(c[T_ACCOUNT], 1);
  CHECK_INT_EQ(c[T_PHONE], 0);
  free(out);
}

static void test_survivors(finch_redactor *r) {
  const char *keep[] = {
      "I paid £1,250.00 and $100 and 1 000 EUR and 50.00",
      "on 12/03/2024, 2024-03-12 and 12.03.2024",
      "at 10:30 or 14:05:33",
      "card ending 1234",
      "card ending in 4242",
      "last 4 digits 1234",
      "transaction 4111111111111112 failed",
      "reference GB00 WEST 1234 5698 7654 32",
      "rate 3.5% since 2019, 7 times, 42 days",
      "years 1999 2000 2001",
      "ref 98765432101 on 2024-03-12 at 14:05:33",
      "order #12345678",
      "",
      "I was charged twice for the same coffee, can you help me?",
  };
  for (size_t i = 0; i < sizeof keep / sizeof *keep; i++) CHECK_SURVIVES(r, keep[i]);
}

static void test_counts(finch_redactor *r) {
  uint64_t c[N_BUILTIN] = {0};
  const char *in = "card 4111 1111 1111 1111 and 5555555555554444, mail a@b.io, call 020 7946 0958, "
                   "IBAN DE89370400440532013000, ssn 123-45-6789, sort code 20-00-00 12345678";
  char *out = redact(r, in, c);
  CHECK_STR_EQ(out, "card <CARD> and <CARD>, mail <EMAIL>, call <PHONE>, IBAN <IBAN>, ssn <SSN>, <ACCOUNT>");
  free(out);
  CHECK_INT_EQ(c[T_CARD], 2);
  CHECK_INT_EQ(c[T_IBAN], 1);
  CHECK_INT_EQ(c[T_EMAIL], 1);
  CHECK_INT_EQ(c[T_PHONE], 1);
  CHECK_INT_EQ(c[T_SSN], 1);
  CHECK_INT_EQ(c[T_ACCOUNT], 1);
  /* Counts are added to. */
  out = redact(r, "4111111111111111", c);
  free(out);
  CHECK_INT_EQ(c[T_CARD], 3);

  /* Many in one long text (the span list grows). */
  size_t n = 200, unit = strlen("4111 1111 1111 1111; ");
  char *big = malloc(n * unit + 1), *want = malloc(n * strlen("<CARD>; ") + 1);
  big[0] = want[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    strcat(big, "4111 1111 1111 1111; ");
    strcat(want, "<CARD>; ");
  }
  memset(c, 0, sizeof c);
  out = redact(r, big, c);
  CHECK_STR_EQ(out, want);
  CHECK_INT_EQ(c[T_CARD], n);
  free(out);
  free(big);
  free(want);
}

static void test_utf8(finch_redactor *r) {
  CHECK_REDACT(r, "我的卡号是 4111 1111 1111 1111", "我的卡号是 <CARD>");
  CHECK_REDACT(r, "我的卡号是4111111111111111。谢谢", "我的卡号是<CARD>。谢谢");
  CHECK_REDACT(r, "Überweisung an DE89 3704 0044 0532 0130 00 – danke",
               "Überweisung an <IBAN> – danke");
  CHECK_REDACT(r, "📞 +44 20 7946 0958 😊", "📞 <PHONE> 😊");
  CHECK_SURVIVES(r, "€100 für März");

  /* Invalid UTF-8 is an error naming the byte, never a partial redaction. */
  const char bad[] = "card 4111 1111 1111 1111 \xC3\x28";
  char *out = (char *)1;
  finch_err err;
  CHECK_INT_EQ(finch_redact(r, bad, strlen(bad), &out, NULL, &err), FINCH_EFORMAT);
  CHECK(out == NULL);
  CHECK_CONTAINS(err.msg, "invalid UTF-8 at byte 25");
  const char surrogate[] = "\xED\xA0\x80";
  CHECK_INT_EQ(finch_redact(r, surrogate, 3, &out, NULL, &err), FINCH_EFORMAT);
  /* Length-delimited: bytes past len are not read. */
  CHECK_INT_EQ(finch_redact(r, "4111111111111111", 4, &out, NULL, &err), FINCH_OK);
  CHECK_STR_EQ(out, "4111");
  free(out);
}

static void test_extension(void) {
  char p1[600], p2[600];
  const char *ext[] = {
      write_tmp(p1, sizeof p1, "policy.conf",
                "# deployment rules\n"
                "\n"
                "policy  none  \\bPOL-\\d{6}\\b\n"
                "Phone\tnone\tdigits=9  (?<![\\w+])[6-9]\\d{2} \\d{3} \\d{3}(?![\\w])(?![ .,/-]?\\d)\r\n"),
      write_tmp(p2, sizeof p2, "shout.conf", "shout none needs=D \\b[A-Z]{4,}\\b\n"),
  };
  finch_redactor *r;
  finch_err err;
  if (finch_redactor_open(&r, ext, 2, &err) != FINCH_OK) {
    TEST_FAIL_("open with extensions: %s", err.msg);
    unlink(p1);
    unlink(p2);
    return;
  }
  CHECK_INT_EQ(finch_redactor_n_types(r), N_BUILTIN + 2);
  CHECK_STR_EQ(finch_redactor_type(r, N_BUILTIN), "policy");
  CHECK_STR_EQ(finch_redactor_type(r, N_BUILTIN + 1), "shout");
  uint64_t c[N_BUILTIN + 2] = {0};
  char *out = redact(r, "policy POL-123456 and xPOL-123456 or POL-1234567", c);
  CHECK_STR_EQ(out, "policy <POLICY> and xPOL-123456 or POL-1234567");
  free(out);
  CHECK_INT_EQ(c[N_BUILTIN], 1);
  /* A rule of an existing type adds a pattern to it (Spanish numbers). */
  out = redact(r, "llámame al 912 345 678", c);
  CHECK_STR_EQ(out, "llámame al <PHONE>");
  free(out);
  CHECK_INT_EQ(c[T_PHONE], 1);
  /* Later rules never match inside an earlier placeholder. */
  out = redact(r, "DEAR BANK my card 4111111111111111 and mail a@b.io", c);
  CHECK_STR_EQ(out, "<SHOUT> <SHOUT> my card <CARD> and mail <EMAIL>");
  free(out);
  CHECK_INT_EQ(c[N_BUILTIN + 1], 2);
  /* needs=D: a text without a D skips the rule. */
  CHECK_SURVIVES(r, "BANK ONLY");
  finch_redactor_free(r);
  unlink(p1);
  unlink(p2);
}

/* Opens the built-in rules plus one extra file holding text; returns the status and fills err. */
static finch_status open_with(const char *name, const char *text, char *path, size_t size, finch_err *err) {
  const char *ext[] = {write_tmp(path, size, name, text)};
  finch_redactor *r = NULL;
  finch_status st = finch_redactor_open(&r, ext, 1, err);
  CHECK(st == FINCH_OK ? r != NULL : r == NULL);
  finch_redactor_free(r);
  unlink(path);
  return st;
}

#define CHECK_BAD_RULES(name, text, code, ...)                                                     \
  do {                                                                                             \
    char path_[600], want_[700];                                                                   \
    finch_err err_;                                                                                \
    CHECK_INT_EQ(open_with(name, text, path_, sizeof path_, &err_), code);                         \
    const char *parts_[] = {__VA_ARGS__};                                                          \
    for (size_t i_ = 0; i_ < sizeof parts_ / sizeof *parts_; i_++) {                               \
      snprintf(want_, sizeof want_, parts_[i_], path_);                                            \
      CHECK_CONTAINS(err_.msg, want_);                                                             \
    }                                                                                              \
  } while (0)

static void test_malformed(void) {
  /* A pattern PCRE2 refuses: file, line, PCRE2's message and the offset. */
  CHECK_BAD_RULES("regex.conf", "# ok\npolicy none \\bPOL-\\d{6}\\b\nbad none (abc\n", FINCH_EFORMAT,
                  "%s:3: ", "missing closing parenthesis", "offset 4");
  CHECK_BAD_RULES("regex2.conf", "x none a{2,1}\n", FINCH_EFORMAT, "%s:1: ", "out of order", "offset");
  CHECK_BAD_RULES("badutf.conf", "x none caf\xC3\n", FINCH_EFORMAT, "%s:1: ", "UTF-8");
  /* Malformed lines. */
  CHECK_BAD_RULES("nopat.conf", "\n\npolicy none\n", FINCH_EFORMAT, "%s:3: ", "pattern is missing");
  CHECK_BAD_RULES("notype.conf", "policy\n", FINCH_EFORMAT, "%s:1: ", "expected 'type validator pattern'");
  CHECK_BAD_RULES("validator.conf", "policy crc32 POL-\\d+\n", FINCH_EFORMAT, "%s:1: ",
                  "unknown validator 'crc32'");
  CHECK_BAD_RULES("typename.conf", "pol-icy none POL\n", FINCH_EFORMAT, "%s:1: ", "type name");
  CHECK_BAD_RULES("typelen.conf", "a234567890123456789012345678901234 none x\n", FINCH_EFORMAT, "%s:1: ",
                  "type name");
  CHECK_BAD_RULES("option.conf", "policy none digits=x POL\n", FINCH_EFORMAT, "%s:1: ", "digits=x");

  finch_redactor *r = NULL;
  finch_err err;
  const char *ext[] = {"/nonexistent/finch/rules.conf"};
  CHECK_INT_EQ(finch_redactor_open(&r, ext, 1, &err), FINCH_EIO);
  CHECK(r == NULL);
  CHECK_CONTAINS(err.msg, "/nonexistent/finch/rules.conf");
}

static void test_env_override(void) {
  char path[600];
  write_tmp(path, sizeof path, "only.conf", "ssn ssn \\d{3}-\\d{2}-\\d{4}\n");
  const char *old = getenv("FINCH_PII_RULES");
  char *saved = old ? strdup(old) : NULL;
  setenv("FINCH_PII_RULES", path, 1);
  finch_redactor *r;
  finch_err err;
  if (finch_redactor_open(&r, NULL, 0, &err) != FINCH_OK) {
    TEST_FAIL_("open with FINCH_PII_RULES: %s", err.msg);
  } else {
    CHECK_INT_EQ(finch_redactor_n_types(r), N_BUILTIN);
    CHECK_REDACT(r, "123-45-6789 4111111111111111", "<SSN> 4111111111111111");
    finch_redactor_free(r);
  }
  if (saved) setenv("FINCH_PII_RULES", saved, 1);
  else unsetenv("FINCH_PII_RULES");
  free(saved);
  unlink(path);
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Prints ns per utterance; a figure, not a check (sanitizers and shared CI
 * machines are slow). bench/bench_redact.c measures more thoroughly. */
static void report_timing(finch_redactor *r) {
  const char *clean = "I was charged twice for the same coffee, can you help me?";
  const char *pii = "My card 4111 1111 1111 1111 was declined, call +44 20 7946 0958";
  uint64_t c[N_BUILTIN] = {0};
  const int iters = 20000;
  double t[2];
  for (int k = 0; k < 2; k++) {
    const char *s = k ? pii : clean;
    size_t len = strlen(s);
    double t0 = now_ns();
    for (int i = 0; i < iters; i++) {
      char *out;
      finch_err err;
      if (finch_redact(r, s, len, &out, c, &err) != FINCH_OK) {
        TEST_FAIL_("timing: %s", err.msg);
        return;
      }
      free(out);
    }
    t[k] = (now_ns() - t0) / iters;
  }
  printf("redact: %.0f ns per clean utterance, %.0f ns per utterance with PII\n", t[0], t[1]);
}

int main(void) {
  const char *t = getenv("FINCH_TEST_TMP");
  snprintf(tmp_dir, sizeof tmp_dir, "%s", t && *t ? t : "/tmp");
  mkdir(tmp_dir, 0777); /* CTest's test-tmp may not exist yet */
  unsetenv("FINCH_PII_RULES");

  test_validators();
  finch_redactor *r;
  finch_err err;
  if (finch_redactor_open(&r, NULL, 0, &err) != FINCH_OK) {
    fprintf(stderr, "finch_redactor_open: %s\n", err.msg);
    return 1;
  }
  test_types(r);
  test_cards(r);
  test_ibans(r);
  test_emails(r);
  test_phones(r);
  test_ssns(r);
  test_accounts(r);
  test_survivors(r);
  test_counts(r);
  test_utf8(r);
  report_timing(r);
  finch_redactor_free(r);

  test_extension();
  test_malformed();
  test_env_override();
  TEST_DONE();
}
