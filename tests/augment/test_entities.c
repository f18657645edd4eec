/* entities: mentions found by type and replaced by the same type,
 * determinism, variety, params JSON, no-op inputs, small buffers, UTF-8 and
 * speed. */
#include <jansson.h>
#include <stdint.h>
#include <time.h>

#include "augment/methods.h"
#include "tests/test.h"

static const finch_aug_method *M = &finch_aug_entities;

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

/* Parses {"replaced": [[from, to, type], ...]} into rows; returns the row
 * count, -1 when the JSON is not of that shape. */
typedef struct {
  char from[128], to[128], type[32];
} row;

static int parse_params(const char *params, row *rows, int max) {
  json_error_t e;
  json_t *j = json_loads(params, 0, &e);
  if (!j) return -1;
  json_t *a = json_object_get(j, "replaced");
  int n = json_is_array(a) ? (int)json_array_size(a) : -1;
  for (int i = 0; i < n && i < max; i++) {
    json_t *r = json_array_get(a, (size_t)i);
    if (!json_is_array(r) || json_array_size(r) != 3) {
      n = -1;
      break;
    }
    const char *f = json_string_value(json_array_get(r, 0)), *t = json_string_value(json_array_get(r, 1)),
               *y = json_string_value(json_array_get(r, 2));
    if (!f || !t || !y) {
      n = -1;
      break;
    }
    snprintf(rows[i].from, sizeof rows[i].from, "%s", f);
    snprintf(rows[i].to, sizeof rows[i].to, "%s", t);
    snprintf(rows[i].type, sizeof rows[i].type, "%s", y);
  }
  json_decref(j);
  return n;
}

/* The type entities gives to s when s is a whole mention; "" when none. */
static void type_of(const char *s, char *type, size_t cap) {
  char out[256], p[1024];
  row r[2];
  type[0] = 0;
  if (M->apply(NULL, s, 1, out, sizeof out, p, sizeof p) && parse_params(p, r, 2) == 1 && strcmp(r[0].from, s) == 0)
    snprintf(type, cap, "%s", r[0].type);
}

static void test_examples(void) {
  static const struct {
    const char *text;
    const char *mentions[4][2]; /* from, type */
  } cases[] = {
      {"I paid £20 at Tesco with my Visa", {{"£20", "amount"}, {"Tesco", "merchant"}, {"Visa", "brand"}}},
      {"I took cash from the ATM yesterday in France", {{"the ATM", "atm"}, {"yesterday", "date"}, {"France", "country"}}},
      {"My <CARD> was charged 15 euros by Amazon", {{"<CARD>", "pii"}, {"15 euros", "amount"}, {"Amazon", "merchant"}}},
      {"What is the GBP to EUR exchange rate", {{"GBP", "currency"}, {"EUR", "currency"}}},
      {"Transfer of $1,250.00 on 2024-03-12 to HSBC", {{"$1,250.00", "amount"}, {"2024-03-12", "date"}, {"HSBC", "bank"}}},
      {"I was charged 3.50 for Uber 3 days ago", {{"3.50", "amount"}, {"Uber", "merchant"}, {"3 days ago", "date"}}},
      {"Why is there a 20 GBP fee on 12 March from a cash machine", {{"20 GBP", "amount"}, {"12 March", "date"}, {"a cash machine", "atm"}}},
      {"Can I use American Express to top up 1k in Japan", {{"American Express", "brand"}, {"Japan", "country"}}},
  };
  char out[512], p[1024];
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int seen[4] = {0};
    for (uint64_t s = 0; s < 200; s++) {
      if (!M->apply(NULL, cases[c].text, s, out, sizeof out, p, sizeof p)) {
        TEST_FAIL_("no variant of \"%s\" (stream %llu)", cases[c].text, (unsigned long long)s);
        break;
      }
      row r[4];
      int n = parse_params(p, r, 4);
      if (n < 1 || n > 2) {
        TEST_FAIL_("bad params %s", p);
        break;
      }
      for (int i = 0; i < n; i++) {
        int known = 0;
        for (int m = 0; m < 4 && cases[c].mentions[m][0]; m++)
          if (strcmp(r[i].from, cases[c].mentions[m][0]) == 0) {
            known = 1;
            seen[m] = 1;
            CHECK_STR_EQ(r[i].type, cases[c].mentions[m][1]);
          }
        if (!known) TEST_FAIL_("unexpected mention '%s' in \"%s\"", r[i].from, cases[c].text);
        CHECK_CONTAINS(out, r[i].to);
        CHECK(strcasecmp(r[i].from, r[i].to) != 0);
        /* The replacement is itself a mention of the same type. */
        char t[32];
        type_of(r[i].to, t, sizeof t);
        if (strcmp(t, r[i].type) != 0) TEST_FAIL_("'%s' (for '%s') reads as '%s', not %s", r[i].to, r[i].from, t, r[i].type);
      }
    }
    for (int m = 0; m < 4 && cases[c].mentions[m][0]; m++)
      if (!seen[m]) TEST_FAIL_("'%s' never replaced in \"%s\"", cases[c].mentions[m][0], cases[c].text);
  }
  M->apply(NULL, cases[0].text, 42, out, sizeof out, p, sizeof p);
  printf("entities: \"%s\" -> \"%s\" %s\n", cases[0].text, out, p);
}

static void test_determinism_and_variety(void) {
  const char *t = "I paid £20 at Tesco with my Visa yesterday";
  char a[256], b[256], pa[1024], pb[1024];
  static char seen[200][256];
  int distinct = 0;
  for (uint64_t s = 0; s < 200; s++) {
    int ra = M->apply(NULL, t, s, a, sizeof a, pa, sizeof pa);
    int rb = M->apply(NULL, t, s, b, sizeof b, pb, sizeof pb);
    CHECK_INT_EQ(ra, 1);
    CHECK_INT_EQ(ra, rb);
    CHECK_STR_EQ(a, b);
    CHECK_STR_EQ(pa, pb);
    int dup = 0;
    for (int i = 0; i < distinct && !dup; i++) dup = strcmp(seen[i], a) == 0;
    if (!dup) snprintf(seen[distinct++], sizeof seen[0], "%s", a);
  }
  CHECK(distinct >= 150);
  printf("entities: %d distinct of 200, e.g.\n  %s\n  %s\n  %s\n", distinct, seen[0], seen[1], seen[2]);
}

static void test_noop_and_small_cap(void) {
  char out[64], p[256];
  CHECK_INT_EQ(M->apply(NULL, "", 1, out, sizeof out, p, sizeof p), 0);
  CHECK_INT_EQ(M->apply(NULL, "how do I activate my card", 1, out, sizeof out, p, sizeof p), 0);
  CHECK_INT_EQ(M->apply(NULL, "I have 3 cards and 2 PINs", 1, out, sizeof out, p, sizeof p), 0);
  CHECK_INT_EQ(M->apply(NULL, "can I add it to Apple Pay", 1, out, sizeof out, p, sizeof p), 0);
  CHECK_STR_EQ(out, "");
  CHECK_STR_EQ(p, "");
  const char *t = "I paid £20 at Tesco with my Visa";
  char small[8 + 8];
  memset(small, 'Z', sizeof small);
  for (uint64_t s = 0; s < 100; s++) {
    CHECK_INT_EQ(M->apply(NULL, t, s, small, 8, p, sizeof p), 0);
    CHECK_STR_EQ(small, "");
    CHECK(small[8] == 'Z' && small[15] == 'Z');
  }
  char bp[20 + 4], big[256];
  memset(bp, 'Z', sizeof bp);
  for (uint64_t s = 0; s < 100; s++) {
    CHECK_INT_EQ(M->apply(NULL, t, s, big, sizeof big, bp, 20), 0);
    CHECK(bp[20] == 'Z');
  }
  /* cap exactly the input size: either fits or 0, never past cap. */
  size_t n = strlen(t) + 1;
  char exact[64];
  for (uint64_t s = 0; s < 200; s++) {
    memset(exact, 'Z', sizeof exact);
    int r = M->apply(NULL, t, s, exact, n, p, sizeof p);
    CHECK(exact[n] == 'Z');
    CHECK(strlen(exact) < n);
    if (!r) CHECK_STR_EQ(exact, "");
  }
}

static void test_utf8(void) {
  static const char *const texts[] = {"我的卡 was charged €50 at Lidl", "€50 or ¥3000 or ₹500 for 我的卡 in Thailand",
                                      "Café in España charged 20€ on Sunday"};
  char out[512], p[1024];
  for (size_t t = 0; t < 3; t++) {
    int made = 0;
    for (uint64_t s = 0; s < 500; s++) {
      if (!M->apply(NULL, texts[t], s, out, sizeof out, p, sizeof p)) continue;
      made++;
      row r[2];
      if (!utf8_valid(out) || !utf8_valid(p) || parse_params(p, r, 2) < 1) {
        TEST_FAIL_("bad UTF-8 or params: \"%s\" -> \"%s\" %s", texts[t], out, p);
        return;
      }
      if (strstr(texts[t], "我的卡")) CHECK(strstr(out, "我的卡") != NULL);
    }
    CHECK_INT_EQ(made, 500);
  }
}

static void test_speed(void) {
  const char *t = "Hi, I paid £20 at Tesco with my Visa yesterday but the payment is still pending.";
  char out[256], p[1024];
  struct timespec a, b;
  const int n = 200000;
  int made = 0;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++) made += M->apply(NULL, t, (uint64_t)i, out, sizeof out, p, sizeof p);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
  printf("entities: %.0f apply/s (%d of %d made a variant)\n", n / s, made, n);
  /* A figure, not a check: speed is measured by bench/bench_augment. */
}

int main(void) {
  void *st = NULL;
  finch_err err;
  CHECK_INT_EQ(M->open(&st, &err), FINCH_OK);
  CHECK_STR_EQ(M->name, "entities");
  test_examples();
  test_determinism_and_variety();
  test_noop_and_small_cap();
  test_utf8();
  test_speed();
  M->close(st);
  TEST_DONE();
}
