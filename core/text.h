/* Text normalisation shared by ingest, training and serving.
 *
 * finch_text_normalize() turns raw UTF-8 into the stored form:
 *   - NFKC (full-width forms, ligatures and compatibility characters folded),
 *   - control characters removed (tabs and newlines become spaces),
 *   - runs of white space (including Unicode spaces) collapsed to one ASCII
 *     space, leading and trailing space trimmed.
 * With FINCH_TEXT_FOLD the result is also case-folded (the `text_norm` column
 * and the model's tokenizer input). CJK text passes through intact.
 * Invalid UTF-8 is reported as FINCH_EFORMAT with the byte offset. */
#ifndef FINCH_CORE_TEXT_H
#define FINCH_CORE_TEXT_H

#include <stddef.h>

#include "core/status.h"

enum { FINCH_TEXT_FOLD = 1 };

/* On success *out is a NUL-terminated malloc'd string owned by the caller. */
finch_status finch_text_normalize(const char *in, size_t len, int flags, char **out, finch_err *err);

/* 1 when s[0..len) is valid UTF-8, else 0 and *bad_offset (if non-NULL) set. */
int finch_utf8_valid(const char *s, size_t len, size_t *bad_offset);

/* qsort/bsearch comparator for an array of strings (char * or const char *
 * elements): strcmp order, the order of every sorted label list. */
int finch_cmp_str(const void *a, const void *b);
/* Sorts names[0..n) in finch_cmp_str order and drops repeats in place; the
 * number kept. */
size_t finch_str_sort_unique(const char **names, size_t n);
/* The index of s in the sorted, repeat-free names[0..n), or -1 (also for
 * s NULL). */
int finch_str_index(const char *const *names, size_t n, const char *s);

#endif
