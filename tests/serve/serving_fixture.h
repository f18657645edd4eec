/* Shared by the serving tests (test_serving.c: request ids, /metrics, the
 * bounded queue, hot reload, draining; test_serving_ops.c: access logs,
 * `finch serve` signals, database mode): two small models on disk, an HTTP
 * client that keeps the headers they check, an in-process server with the
 * tests' defaults and /metrics parsing. The helpers that check add to the
 * test's failure count (tests/test.h). */
#ifndef FINCH_TESTS_SERVE_SERVING_FIXTURE_H
#define FINCH_TESTS_SERVE_SERVING_FIXTURE_H

#include <curl/curl.h>
#include <stddef.h>

#include "serve/serve.h"

/* A: the fixture's model; B: the same model stored as int8 (another file and
 * hash, the same labels); bad: a file that is not a model. sha_*: their
 * SHA-256 as nn_model_save reports it. Filled by sv_models_make(). */
extern char sv_model_a[4096], sv_model_b[4096], sv_model_bad[4096], sv_sha_a[65], sv_sha_b[65];

/* Writes the three model files under the test's temp folder, named after
 * test and the process id; skips the test without a temp folder and exits 1
 * when a model cannot be built. */
void sv_models_make(const char *test);
void sv_models_remove(void);

double sv_now_s(void);
void sv_sleep_ms(long ms);

typedef struct {
  long status; /* 0: no response */
  char *body;
  size_t len;
  char content_type[128], request_id[128], retry_after[32], connection[32];
} sv_reply;

/* One request; curl may be NULL (a fresh handle) or a handle to reuse (its
 * connection stays open between calls). extra: a header line or NULL; key:
 * the API key for Authorization, or NULL. The body is never NULL. */
sv_reply sv_http(CURL *curl, unsigned port, const char *method, const char *path, const char *body,
                 const char *extra, const char *key);
void sv_reply_free(sv_reply *r);
/* POST /v1/intent with {"text": text}. */
sv_reply sv_intent(unsigned port, const char *text, const char *extra);

/* An in-process server on 127.0.0.1 with o's settings, model A unless
 * o.model_path says otherwise and no access log unless o.access_log does;
 * NULL (a failed check) when it does not start. */
finch_server *sv_start(finch_serve_opts o);

/* The value of the sample `series` (name with its labels exactly as
 * rendered, e.g. finch_requests_total{path="/v1/intent",status="200"}); -1
 * when absent. Also checks every line of the exposition is well formed. */
double sv_metric(const char *text, const char *series);
/* GET /metrics (with key, or none); the body (caller frees), or NULL (a
 * failed check) on another status. Checks the exposition's Content-Type. */
char *sv_scrape(unsigned port, const char *key);

/* Copies a file; 0 or -1. */
int sv_copy_file(const char *from, const char *to);

#endif
