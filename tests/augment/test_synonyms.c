/* Synonym replacement over the Debian WordNet files: known synonyms, finance
 * terms kept, determinism, punctuation and casing, JSON parameters, bounds. */
#include <ctype.h>
#include <jansson.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "augment/methods.h"
#include "augment/wordnet.h"
#include "tests/test.h"


static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *state;
static char out[1024], params[1024];

static int apply(const char *text, uint64_t stream) {
  return finch_aug_synonyms.apply(state, text, stream, out, sizeof out, params, sizeof params);
}

/* Whether term occurs in s as whole words, case-insensitively. */
static int has_term(const char *s, const char *term) {
  size_t n = strlen(term);
  for (const char *p = s; *p; p++)
    if ((p == s || p[-1] == ' ') && strncasecmp(p, term, n) == 0 && !isalnum((unsigned char)p[n])) return 1;
  return 0;
}

static void test_missing_dir(void) {
  augment__wordnet *wn = NULL;
  finch_err err = {0};
  CHECK_INT_EQ(augment__wordnet_open("/nonexistent/wordnet", &wn, &err), FINCH_ENOTFOUND);
  CHECK(wn == NULL);
  CHECK_CONTAINS(err.msg, "/nonexistent/wordnet");
  CHECK_CONTAINS(err.msg, "wordnet-base");
  setenv("FINCH_WORDNET_DIR", "/nonexistent/wn2", 1);
  void *s = NULL;
  CHECK_INT_EQ(finch_aug_synonyms.open(&s, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "/nonexistent/wn2");
  unsetenv("FINCH_WORDNET_DIR");
}

static void test_lexicon(const augment__wordnet *wn) {
  augment__wordnet_word w[64];
  size_t n = augment__wordnet_synonyms(wn, "quickly", 7, w, 64);
  int rapidly = 0;
  for (size_t i = 0; i < n; i++) rapidly |= w[i].len == 7 && memcmp(w[i].s, "rapidly", 7) == 0;
  CHECK(rapidly);
  CHECK(augment__wordnet_has(wn, "purchase", 8));
  CHECK(!augment__wordnet_has(wn, "qzxv", 4));
  CHECK_INT_EQ(augment__wordnet_synonyms(wn, "qzxv", 4, w, 64), 0);
  /* Adjective markers are stripped: "(a)" never reaches a caller. */
  n = augment__wordnet_synonyms(wn, "big", 3, w, 64);
  CHECK(n > 0);
  for (size_t i = 0; i < n; i++) CHECK(memchr(w[i].s, '(', w[i].len) == NULL);
}

/* Whether any of the streams 0..199 turns text into one of the words. */
static int reaches(const char *text, const char *const *words) {
  for (uint64_t s = 0; s < 200; s++) {
    if (!apply(text, s)) continue;
    for (const char *const *w = words; *w; w++)
      if (has_term(out, *w)) return 1;
  }
  return 0;
}

static void test_known_synonyms(void) {
  CHECK(reaches("I want to purchase a new phone", (const char *const[]){"buy", NULL}));
  CHECK(reaches("it arrived quickly", (const char *const[]){"rapidly", "speedily", "quick", "fast", NULL}));
  CHECK(apply("purchase", 1));
  CHECK(strcmp(out, "purchase") != 0);
}

static void test_protected(void) {
  static const struct {
    const char *text, *terms[4];
  } cases[] = {
      {"my card payment was declined at the grocery so I want a refund", {"card payment", "refund", NULL}},
      {"what exchange rate applies when I top up in another country", {"exchange rate", "top up", NULL}},
      {"why did my direct debit bounce twice this month", {"direct debit", NULL}},
      {"I forgot the pin for my new card and cannot remember it", {"pin", "card", NULL}},
      {"please block <CARD> immediately because someone stole it yesterday", {"<CARD>", NULL}},
      {"Card arrived broken, want a refund? The pin fails too.", {"card", "refund", "pin", NULL}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int changed = 0;
    for (uint64_t s = 0; s < 1000; s++) {
      if (!apply(cases[c].text, s)) continue;
      changed++;
      for (const char *const *t = cases[c].terms; *t; t++)
        if (!strstr(out, *t) && !has_term(out, *t))
          TEST_FAIL_("stream %llu lost \"%s\": %s", (unsigned long long)s, *t, out);
    }
    if (changed <= 900) TEST_FAIL_("only %d of 1000 streams changed: %s", changed, cases[c].text);
  }
}

static void test_determinism_and_variety(void) {
  const char *text = "how long does it take for a new account to arrive after I order it online";
  char first[1024], first_params[1024];
  CHECK(apply(text, 42));
  strcpy(first, out);
  strcpy(first_params, params);
  CHECK(apply(text, 42));
  CHECK_STR_EQ(out, first);
  CHECK_STR_EQ(params, first_params);
  char seen[50][1024];
  int distinct = 0;
  for (uint64_t s = 0; s < 50; s++) {
    if (!apply(text, s)) continue;
    int dup = 0;
    for (int i = 0; i < distinct && !dup; i++) dup = strcmp(seen[i], out) == 0;
    if (!dup) strcpy(seen[distinct++], out);
  }
  CHECK(distinct >= 5);
}

static void test_punctuation_and_case(void) {
  CHECK(apply("(quickly),", 3));
  CHECK(out[0] == '(');
  CHECK(strlen(out) > 3 && strcmp(out + strlen(out) - 2, "),") == 0);
  CHECK(apply("quickly?", 3));
  CHECK(out[strlen(out) - 1] == '?');
  for (uint64_t s = 0; s < 100; s++) {
    CHECK(apply("Purchase", s));
    CHECK(out[0] >= 'A' && out[0] <= 'Z');
    for (const char *p = out + 1; *p; p++) CHECK(!(*p >= 'A' && *p <= 'Z'));
  }
  /* Spacing and untouched words are copied as they are. */
  CHECK(apply("Card?  quickly", 5));
  CHECK(strncmp(out, "Card?  ", 7) == 0);
}

static void test_params_json(void) {
  const char *text = "I would love to purchase something quickly, but the shop seems closed today";
  for (uint64_t s = 0; s < 100; s++) {
    CHECK(apply(text, s));
    json_error_t jerr;
    json_t *j = json_loads(params, 0, &jerr);
    if (!j) {
      TEST_FAIL_("invalid JSON %s: %s", params, jerr.text);
      continue;
    }
    json_t *r = json_object_get(j, "replaced");
    CHECK(json_is_array(r) && json_array_size(r) >= 1);
    for (size_t i = 0; i < json_array_size(r); i++) {
      json_t *pair = json_array_get(r, i);
      CHECK(json_is_array(pair) && json_array_size(pair) == 2);
      const char *o = json_string_value(json_array_get(pair, 0)),
                 *n = json_string_value(json_array_get(pair, 1));
      CHECK(o && n && strcmp(o, n) != 0);
      if (o && n) {
        CHECK(has_term(text, o) || strstr(text, o));
        CHECK(strstr(out, n) != NULL);
      }
    }
    json_decref(j);
  }
}

static void test_not_applicable(void) {
  CHECK_INT_EQ(apply("", 1), 0);
  CHECK_INT_EQ(apply("my card", 1), 0);
  CHECK_INT_EQ(apply("<CARD> pin top up", 1), 0);
  CHECK_INT_EQ(apply("is it the one you have", 1), 0);
  CHECK_INT_EQ(apply("ATM 1234 ok", 1), 0);
  CHECK_INT_EQ(apply("qzxvq blorfing", 1), 0);
}

static void test_small_caps(void) {
  const char *text = "I would love to purchase something quickly";
  char big[256], bigp[256];
  CHECK(finch_aug_synonyms.apply(state, text, 9, big, sizeof big, bigp, sizeof bigp));
  size_t need = strlen(big) + 1, needp = strlen(bigp) + 1;
  char buf[300];
  for (size_t cap = 1; cap < need; cap++) {
    memset(buf, 'Z', sizeof buf);
    CHECK_INT_EQ(finch_aug_synonyms.apply(state, text, 9, buf, cap, bigp, sizeof bigp), 0);
    for (size_t i = cap; i < sizeof buf; i++)
      if (buf[i] != 'Z') TEST_FAIL_("cap %zu: wrote past the buffer at %zu", cap, i);
  }
  for (size_t cap = 1; cap < needp; cap++) {
    memset(buf, 'Z', sizeof buf);
    CHECK_INT_EQ(finch_aug_synonyms.apply(state, text, 9, big, sizeof big, buf, cap), 0);
    for (size_t i = cap; i < sizeof buf; i++)
      if (buf[i] != 'Z') TEST_FAIL_("params cap %zu: wrote past the buffer at %zu", cap, i);
  }
  char fit[256], fitp[256];
  CHECK_INT_EQ(finch_aug_synonyms.apply(state, text, 9, fit, need, fitp, needp), 1);
  CHECK(finch_aug_synonyms.apply(state, text, 9, big, sizeof big, bigp, sizeof bigp));
  CHECK_STR_EQ(fit, big);
  CHECK_STR_EQ(fitp, bigp);
  CHECK_INT_EQ(finch_aug_synonyms.apply(state, text, 9, big, 0, bigp, sizeof bigp), 0);
  /* More eligible words than fit on the stack. */
  char longtext[8192] = "";
  for (int i = 0; i < 300; i++) strcat(longtext, i % 2 ? "quickly " : "purchase ");
  char lout[16384], lpar[16384];
  CHECK(finch_aug_synonyms.apply(state, longtext, 1, lout, sizeof lout, lpar, sizeof lpar));
  json_t *j = json_loads(lpar, 0, NULL);
  CHECK(j && json_array_size(json_object_get(j, "replaced")) == 45);
  json_decref(j);
}

static void test_speed(void) {
  const char *text = "I would like to purchase a new phone quickly, how long will delivery take";
  int n = 200000, made = 0;
  double t0 = now_s();
  for (int i = 0; i < n; i++) made += apply(text, (uint64_t)i);
  double rate = n / (now_s() - t0);
  printf("apply: %.0f calls/s (%d of %d changed)\n", rate, made, n);
  /* A figure, not a check: speed is measured by bench/bench_augment. */
}

int main(void) {
  const char *dir = getenv("FINCH_WORDNET_DIR");
  if (!dir || !*dir) dir = "/usr/share/wordnet";
  struct stat st;
  if (stat(dir, &st) != 0) TEST_SKIP("WordNet not installed at %s (Debian package wordnet-base)", dir);
  test_missing_dir();

  augment__wordnet *wn = NULL;
  finch_err err = {0};
  double t0 = now_s();
  finch_status rc = augment__wordnet_open(NULL, &wn, &err);
  double load = now_s() - t0;
  if (rc) {
    TEST_FAIL_("wordnet open: %s", err.msg);
    TEST_DONE();
  }
  printf("wordnet load: %.3f s\n", load);
  test_lexicon(wn);
  augment__wordnet_close(wn);

  if (finch_aug_synonyms.open(&state, &err)) {
    TEST_FAIL_("synonyms open: %s", err.msg);
    TEST_DONE();
  }
  CHECK_STR_EQ(finch_aug_synonyms.name, "synonyms");
  test_known_synonyms();
  test_protected();
  test_determinism_and_variety();
  test_punctuation_and_case();
  test_params_json();
  test_not_applicable();
  test_small_caps();
  test_speed();
  for (uint64_t s = 0; s < 5; s++)
    if (apply("Can I purchase a new card quickly? My refund hasn't arrived yet.", s))
      printf("  %s  %s\n", out, params);
  finch_aug_synonyms.close(state);
  TEST_DONE();
}
