/* noise: determinism, variety, protected finance terms, params JSON, no-op
 * inputs, small buffers, UTF-8 and speed. */
#include <ctype.h>
#include <jansson.h>
#include <stdint.h>
#include <time.h>

#include "augment/methods.h"
#include "tests/test.h"

static const finch_aug_method *M = &finch_aug_noise;

static int utf8_valid(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    int n = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
    if (n < 0) return 0;
    p++;
    for (int i = 0; i < n; i++, p++)
      if ((*p & 0xC0) != 0x80) return 0;
  }
  return 1;
}

/* Occurrences of term as a whole word, case-insensitively. */
static int count_ci(const char *s, const char *term) {
  size_t n = strlen(term), len = strlen(s);
  int c = 0;
  for (size_t i = 0; i + n <= len; i++)
    if (strncasecmp(s + i, term, n) == 0 && (i == 0 || !isalnum((unsigned char)s[i - 1])) &&
        !isalnum((unsigned char)s[i + n]))
      c++;
  return c;
}

/* params is {"edits": [1-2 strings]}; returns the edit count, -1 if invalid. */
static int check_params(const char *params) {
  json_error_t e;
  json_t *j = json_loads(params, 0, &e);
  if (!j) return -1;
  json_t *ed = json_object_get(j, "edits");
  int n = json_is_array(ed) ? (int)json_array_size(ed) : -1;
  for (int i = 0; i < n; i++)
    if (!json_is_string(json_array_get(ed, (size_t)i))) n = -1;
  json_decref(j);
  return n;
}

static void test_determinism_and_variety(void) {
  const char *t = "Why hasn't my new card arrived yet? I ordered it before you said it would come.";
  char a[512], b[512], pa[512], pb[512];
  for (uint64_t s = 0; s < 50; s++) {
    int ra = M->apply(NULL, t, s, a, sizeof a, pa, sizeof pa);
    int rb = M->apply(NULL, t, s, b, sizeof b, pb, sizeof pb);
    CHECK_INT_EQ(ra, rb);
    CHECK_STR_EQ(a, b);
    CHECK_STR_EQ(pa, pb);
  }
  static char seen[200][512];
  int distinct = 0, changed = 0;
  for (uint64_t s = 0; s < 200; s++) {
    if (!M->apply(NULL, t, s * 7919 + 3, a, sizeof a, pa, sizeof pa)) continue;
    changed++;
    CHECK(strcmp(a, t) != 0);
    int n = check_params(pa);
    CHECK(n == 1 || n == 2);
    int dup = 0;
    for (int i = 0; i < distinct && !dup; i++) dup = strcmp(seen[i], a) == 0;
    if (!dup) snprintf(seen[distinct++], sizeof seen[0], "%s", a);
  }
  CHECK_INT_EQ(changed, 200);
  CHECK(distinct >= 60);
  printf("noise: %d distinct of 200, e.g.\n  %s\n  %s\n  %s\n", distinct, seen[0], seen[1], seen[2]);
}

static void test_protected(void) {
  static const char *const texts[] = {
      "I cannot find where to change my card PIN and I do not know why the refund is pending.",
      "What is the exchange rate you use when I top up in euros? Please tell me before tomorrow.",
      "My direct debit failed because the payment was declined, what should I do with my <CARD>?",
      "It is not fair, you are charging me a fee for the top up and my card has not arrived!",
  };
  static const char *const terms[] = {"card", "PIN", "refund", "exchange rate", "top up", "direct debit",
                                      "pending", "payment", "declined", "fee", "charge"};
  char out[512], p[512];
  for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++)
    for (uint64_t s = 0; s < 1000; s++) {
      M->apply(NULL, texts[t], s, out, sizeof out, p, sizeof p);
      if (!out[0]) continue;
      for (size_t k = 0; k < sizeof terms / sizeof terms[0]; k++)
        if (count_ci(out, terms[k]) != count_ci(texts[t], terms[k])) {
          TEST_FAIL_("term '%s' broken: \"%s\" -> \"%s\"", terms[k], texts[t], out);
          return;
        }
      if (strstr(texts[t], "<CARD>") && !strstr(out, "<CARD>")) TEST_FAIL_("<CARD> broken: %s", out);
      CHECK(check_params(p) >= 1);
    }
}

/* Each kind of edit shows up somewhere in 300 streams. */
static void test_kinds(void) {
  static const struct {
    const char *text, *want_param, *want_out;
  } cases[] = {
      {"I do not have my card", "contraction:do not->don't", "don't"},
      {"I haven't received my card", "contraction:haven't->have not", "have not"},
      {"I cannot top up", "contraction:cannot->can't", "can't"},
      {"Can you please check my refund", "texting:you->u", " u "},
      {"Can you please check my refund", "texting:please->pl", "pl"},
      {"Thanks, what happened to my money", "typo:money->", NULL},
      {"Why hasn't my refund arrived", "apostrophe:hasn't->hasnt", "hasnt"},
      {"Where is my refund?", "punct:drop ?", NULL},
      {"Where is my refund?", "casing:lower", "where"},
      {"Where is my refund?", "casing:upper", "WHERE IS MY REFUND"},
  };
  char out[256], p[512];
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int found = 0;
    for (uint64_t s = 0; s < 300 && !found; s++) {
      if (!M->apply(NULL, cases[c].text, s, out, sizeof out, p, sizeof p)) continue;
      if (strstr(p, cases[c].want_param) && (!cases[c].want_out || strstr(out, cases[c].want_out))) found = 1;
    }
    if (!found) TEST_FAIL_("no '%s' edit of \"%s\"", cases[c].want_param, cases[c].text);
  }
}

static void test_noop_and_small_cap(void) {
  char out[64], p[256];
  CHECK_INT_EQ(M->apply(NULL, "", 1, out, sizeof out, p, sizeof p), 0);
  CHECK_INT_EQ(M->apply(NULL, "<CARD>", 1, out, sizeof out, p, sizeof p), 0);
  CHECK_INT_EQ(M->apply(NULL, "1234 5678 <IBAN>", 1, out, sizeof out, p, sizeof p), 0);
  CHECK_STR_EQ(out, "");
  const char *t = "Why has my transfer not arrived yet, I sent it yesterday?";
  char small[16 + 8];
  memset(small, 'Z', sizeof small);
  for (uint64_t s = 0; s < 50; s++) {
    CHECK_INT_EQ(M->apply(NULL, t, s, small, 16, p, sizeof p), 0);
    CHECK_STR_EQ(small, "");
    CHECK(small[16] == 'Z' && small[23] == 'Z');
  }
  /* Params too small: 0, and nothing written past params_cap. */
  char bp[12 + 4];
  memset(bp, 'Z', sizeof bp);
  char big[256];
  for (uint64_t s = 0; s < 50; s++) {
    CHECK_INT_EQ(M->apply(NULL, t, s, big, sizeof big, bp, 12), 0);
    CHECK(bp[12] == 'Z');
  }
  /* Output exactly as long as the input: expansions do not overflow. */
  const char *c = "I cannot do it";
  char exact[15 + 4];
  for (uint64_t s = 0; s < 200; s++) {
    memset(exact, 'Z', sizeof exact);
    M->apply(NULL, c, s, exact, 15, p, sizeof p);
    CHECK(exact[15] == 'Z');
    CHECK(strlen(exact) < 15);
  }
}

static void test_utf8(void) {
  static const char *const texts[] = {"我的卡 was charged €50 twice, why?", "Why hasn’t my €50 top up arrived? 我的卡",
                                      "Café transaction déclinée please help"};
  char out[256], p[512];
  for (size_t t = 0; t < 3; t++)
    for (uint64_t s = 0; s < 500; s++) {
      if (!M->apply(NULL, texts[t], s, out, sizeof out, p, sizeof p)) continue;
      if (!utf8_valid(out) || !utf8_valid(p) || check_params(p) < 1) {
        TEST_FAIL_("bad UTF-8 or params: \"%s\" -> \"%s\" %s", texts[t], out, p);
        return;
      }
      if (strstr(texts[t], "€50")) CHECK(strstr(out, "€50") != NULL);
      if (strstr(texts[t], "我的卡")) CHECK(strstr(out, "我的卡") != NULL);
    }
}

static void test_speed(void) {
  const char *t = "Hi, I do not know why my card payment to you was declined before the weekend, please help.";
  char out[256], p[512];
  struct timespec a, b;
  const int n = 200000;
  int made = 0;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++) made += M->apply(NULL, t, (uint64_t)i, out, sizeof out, p, sizeof p);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
  printf("noise: %.0f apply/s (%d of %d made a variant)\n", n / s, made, n);
  /* A figure, not a check: speed is measured by bench/bench_augment. */
}

int main(void) {
  void *st = NULL;
  finch_err err;
  CHECK_INT_EQ(M->open(&st, &err), FINCH_OK);
  CHECK_STR_EQ(M->name, "noise");
  test_determinism_and_variety();
  test_protected();
  test_kinds();
  test_noop_and_small_cap();
  test_utf8();
  test_speed();
  M->close(st);
  TEST_DONE();
}
