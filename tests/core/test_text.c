#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "tests/test.h"

static char *norm(const char *s, int flags) {
  char *out = NULL;
  finch_err err;
  if (finch_text_normalize(s, strlen(s), flags, &out, &err) != FINCH_OK) {
    fprintf(stderr, "normalize(%s): %s\n", s, err.msg);
    return strdup("<error>");
  }
  return out;
}

#define CHECK_NORM(in, flags, want)                                                                \
  do {                                                                                             \
    char *got_ = norm(in, flags);                                                                  \
    CHECK_STR_EQ(got_, want);                                                                      \
    free(got_);                                                                                    \
  } while (0)

int main(void) {
  /* NFKC: full-width forms and ligatures. */
  CHECK_NORM("\xEF\xBC\xA1\xEF\xBC\xB4\xEF\xBC\xAD card", 0, "ATM card"); /* ＡＴＭ */
  CHECK_NORM("\xEF\xAC\x81nance", 0, "finance");                          /* ﬁ ligature */
  /* Control characters removed, tabs/newlines become spaces, runs collapse. */
  CHECK_NORM("  my\tcard \r\n\n  has\x01 not  arrived ", 0, "my card has not arrived");
  /* No-break and ideographic spaces collapse too. */
  CHECK_NORM("top\xC2\xA0up\xE3\x80\x80now", 0, "top up now");
  /* Zero-width space and BOM dropped. */
  CHECK_NORM("\xEF\xBB\xBFpin\xE2\x80\x8B code", 0, "pin code");
  /* Case folding only when asked. */
  CHECK_NORM("My CARD", 0, "My CARD");
  CHECK_NORM("My CARD Straße", FINCH_TEXT_FOLD, "my card strasse");
  /* CJK kept intact. */
  CHECK_NORM("我的卡还没到", FINCH_TEXT_FOLD, "我的卡还没到");
  CHECK_NORM("", 0, "");

  /* The printable-ASCII fast path agrees with utf8proc: a string made of
   * every printable character, once plain and once with a non-ASCII
   * character appended (which forces the general path). */
  char ascii[256], mixed[260];
  size_t k = 0;
  for (int c = 0x20; c <= 0x7e; c++) {
    ascii[k++] = (char)c;
    if (c % 7 == 0) ascii[k++] = ' ';
  }
  ascii[k] = '\0';
  snprintf(mixed, sizeof mixed, "%s \xC3\xA9", ascii);
  for (int flags = 0; flags <= FINCH_TEXT_FOLD; flags += FINCH_TEXT_FOLD) {
    char *fast = norm(ascii, flags), *slow = norm(mixed, flags);
    size_t fl = strlen(fast);
    CHECK(strlen(slow) == fl + 3); /* " é" */
    CHECK(strncmp(fast, slow, fl) == 0);
    free(fast);
    free(slow);
  }

  /* Invalid UTF-8 is an error naming the byte, never a crash. */
  const char bad[] = "card \xC3\x28 ok";
  char *out = (char *)1;
  finch_err err;
  CHECK_INT_EQ(finch_text_normalize(bad, strlen(bad), 0, &out, &err), FINCH_EFORMAT);
  CHECK(out == NULL);
  CHECK_CONTAINS(err.msg, "invalid UTF-8 at byte 5");
  const char overlong[] = "\xC0\xAF";
  CHECK_INT_EQ(finch_text_normalize(overlong, 2, 0, &out, &err), FINCH_EFORMAT);
  const char truncated[] = "abc\xE2\x82";
  size_t off = 0;
  CHECK_INT_EQ(finch_utf8_valid(truncated, strlen(truncated), &off), 0);
  CHECK_INT_EQ(off, 3);
  CHECK_INT_EQ(finch_utf8_valid("€100", strlen("€100"), NULL), 1);
  TEST_DONE();
}
