#define _GNU_SOURCE /* fmemopen */
#include "tests/ingest/format_check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/format_impl.h" /* finch_format__jsonl_set_fast */
#include "tests/test.h"

void test_sb_addn(test_strbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->s = realloc(b->s, b->cap);
    if (!b->s) abort();
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

void test_sb_add(test_strbuf *b, const char *s) { test_sb_addn(b, s, strlen(s)); }

void test_sb_printf(test_strbuf *b, const char *fmt, ...) {
  char tmp[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  test_sb_add(b, tmp);
}

/* Compares two records field by field; 1 when equal. */
static int same_str(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

void test_compare_jsonl_paths(const char *data, size_t len, const char *what) {
  FILE *fa = fmemopen((void *)data, len, "rb"), *fb = fmemopen((void *)data, len, "rb");
  if (!fa || !fb) {
    TEST_FAIL_("fmemopen: %s", strerror(errno));
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return;
  }
  finch_format_reader *ra, *rb;
  finch_err ea = {0}, eb = {0};
  CHECK_INT_EQ(finch_format_open(&ra, "jsonl", fa, what, NULL, &ea), FINCH_OK);
  CHECK_INT_EQ(finch_format_open(&rb, "jsonl", fb, what, NULL, &eb), FINCH_OK);
  finch_format__jsonl_set_fast(rb, 0);
  finch_record a, b;
  const char *fla, *flb;
  int mismatches = 0;
  long long calls = 0;
  for (;;) {
    int rca = finch_format_next(ra, &a, &fla, &ea), rcb = finch_format_next(rb, &b, &flb, &eb);
    calls++;
    int same = rca == rcb && a.line == b.line;
    if (same && rca == 1)
      same = same_str(a.text, b.text) && same_str(a.label, b.label) && same_str(a.split, b.split) &&
             same_str(a.dialogue_id, b.dialogue_id) && a.turn == b.turn && same_str(a.speaker, b.speaker) &&
             same_str(a.meta_json, b.meta_json);
    if (same && rca < 0) same = same_str(fla, flb) && strcmp(ea.msg, eb.msg) == 0;
    if (!same && mismatches++ < 5)
      TEST_FAIL_("%s line %lld: fast path %d (%s) \"%.200s\" | \"%s\" vs jansson %d (%s) \"%.200s\" | \"%s\"", what,
                 b.line, rca, rca < 0 ? ea.msg : "", OR_DASH(a.text), OR_DASH(a.meta_json), rcb,
                 rcb < 0 ? eb.msg : "", OR_DASH(b.text), OR_DASH(b.meta_json));
    if (rca == 0 || rcb == 0) break;
  }
  finch_format_close(ra);
  finch_format_close(rb);
  fclose(fa);
  fclose(fb);
}
