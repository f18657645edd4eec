/* Shared by the serve tests: a tiny trained model on disk, temp paths, and a
 * small libcurl client. */
#ifndef FINCH_TESTS_SERVE_FIXTURE_H
#define FINCH_TESTS_SERVE_FIXTURE_H

#include <stddef.h>

#include "core/status.h"

/* Fills buf with "$FINCH_TEST_TMP/<name>" (or /tmp/<name>), creating the
 * folder; 0 when it cannot. */
int fixture_tmp_path(char *buf, size_t size, const char *name);

/* Trains a three-label model (card_arrival, exchange_rate, request_refund) on
 * a few dozen synthetic texts and saves it to path. sha256_hex (65 bytes)
 * receives the file's SHA-256 as nn_model_save reports it. */
finch_status fixture_build_model(const char *path, char *sha256_hex, finch_err *err);

typedef struct {
  long status;           /* HTTP status, 0 when no response came */
  char *body;            /* NUL-terminated response body (malloc'd) */
  size_t len;
  char content_type[128];
  char error[1024];      /* libcurl's message when the transfer failed */
} fixture_reply;

enum {
  FIXTURE_BODY_FIXED = 0,   /* body sent with Content-Length */
  FIXTURE_BODY_CHUNKED = 1, /* body sent chunked, without a length */
  FIXTURE_NO_EXPECT = 2,    /* suppress "Expect: 100-continue" */
};

/* Performs one request on http://127.0.0.1:<port><path>. body may be NULL
 * (no body). Returns 0 when a response came back (any status). */
int fixture_http(unsigned port, const char *method, const char *path, const char *body,
                 size_t body_len, int flags, fixture_reply *out);
void fixture_reply_free(fixture_reply *r);

#endif
