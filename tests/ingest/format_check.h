/* Shared by the ingest/formats tests (test_formats.c: the fixtures;
 * test_formats_data.c: the public data sets): a growing string, and the check
 * that the jsonl reader's fast scanner and its jansson path agree call for
 * call. The check adds to the test's failure count (tests/test.h). */
#ifndef FINCH_TESTS_INGEST_FORMAT_CHECK_H
#define FINCH_TESTS_INGEST_FORMAT_CHECK_H

#include <stddef.h>

#define OR_DASH(s) ((s) ? (s) : "-")

/* A NUL-terminated string that grows as it is appended to; s is malloc'd
 * (the caller frees it), NULL until the first append. Appends abort when
 * memory runs out. */
typedef struct {
  char *s;
  size_t len, cap;
} test_strbuf;

void test_sb_addn(test_strbuf *b, const char *s, size_t n);
void test_sb_add(test_strbuf *b, const char *s);
/* Appends at most 2047 bytes of the formatted text. */
void test_sb_printf(test_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads data as jsonl twice in lockstep, through the fast scanner and through
 * jansson alone, and checks that every call gives the same result; what
 * names the data in messages. */
void test_compare_jsonl_paths(const char *data, size_t len, const char *what);

#endif
