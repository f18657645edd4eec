/* What the core/source tests share (test_source.c: local files, standard
 * input, file:// URLs; test_source_http.c: HTTP): the bodies both read back,
 * made the same way every run, and the helpers that write, read and hash
 * them. Every helper aborts or exits on a failure of its own; none checks
 * what core/source did, so the checks stay in the tests. */
#ifndef FINCH_TESTS_CORE_SOURCE_BODIES_H
#define FINCH_TESTS_CORE_SOURCE_BODIES_H

#include <stddef.h>
#include <stdio.h>

#include "core/hash.h"
#include "core/source.h"

enum { BIG_LEN = 5 * 1000 * 1000 };

extern const char test_plain_body[]; /* "hello\nworld\n" */

typedef struct {
  unsigned char *big; /* BIG_LEN bytes of xorshift32: incompressible, every byte value */
  unsigned char *gz;  /* two gzip members */
  size_t gz_len;
  unsigned char *gz_text; /* what gz inflates to */
  size_t gz_text_len;
} test_source_bodies;

/* Fills b (the same bytes every call); test_bodies_free() releases them. */
void test_bodies_make(test_source_bodies *b);
void test_bodies_free(test_source_bodies *b);

/* gzip (one member) of data; caller frees. */
unsigned char *test_gzip(const void *data, size_t len, size_t *out_len);
/* a then b, NUL-terminated; caller frees. */
unsigned char *test_concat(const void *a, size_t na, const void *b, size_t nb);
/* Reads fp to its end, NUL-terminated; caller frees. *bad (unless NULL) is set when the stream reported an error. */
unsigned char *test_read_all(FILE *fp, size_t *len, int *bad);
/* Writes len bytes to path, or exits naming the path. */
void test_write_bytes(const char *path, const void *data, size_t len);
/* The SHA-256 of data as hex. */
void test_sha_of(const void *data, size_t len, char out[FINCH_SHA256_HEX_LEN]);
/* Opens uri, reads it to the end and closes it. Returns close's status (or
 * open's); *body (caller frees) and sha receive what was read. */
finch_status test_fetch(const char *uri, const finch_source_opts *o, unsigned char **body, size_t *len,
                        char sha[FINCH_SHA256_HEX_LEN], finch_err *err);

#endif
