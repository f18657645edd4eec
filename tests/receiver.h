/* A loopback HTTP server for the tests: libmicrohttpd in a thread of the test
 * process, listening on 127.0.0.1 at a free port. It reads each request's
 * body whole, hands the request to the test's handler and sends the answer
 * the handler filled in. What a test's server does (record webhooks, play an
 * OpenAI-compatible completions endpoint) is its handler; listening, reading
 * and writing are here. */
#ifndef FINCH_TESTS_RECEIVER_H
#define FINCH_TESTS_RECEIVER_H

#include <stddef.h>

struct MHD_Connection;
struct MHD_Daemon;

typedef struct {
  const char *method, *url; /* url: the path, without the query */
  char *body;               /* the whole body, NUL-terminated, never NULL; a handler that sets
                             * body = NULL keeps it and frees it itself */
  size_t len;
  struct MHD_Connection *conn; /* for test_http_header() */
} test_http_request;

typedef struct {
  unsigned status;          /* 200 unless the handler says otherwise */
  const char *body;         /* copied when sent; NULL: an empty body */
  char *body_free;          /* freed once the answer is queued (the handler's malloc'd body), or NULL */
  const char *content_type; /* NULL: no Content-Type header */
  const char *retry_after;  /* NULL: no Retry-After header */
} test_http_answer;

/* Called on the server's thread, one request at a time, once the body is read. */
typedef void (*test_http_handler)(void *ctx, test_http_request *req, test_http_answer *ans);

typedef struct {
  struct MHD_Daemon *d;
  unsigned port;
  test_http_handler handler;
  void *ctx;
} test_http_server;

/* Listens on 127.0.0.1, any free port (s->port); 0, or -1 when it cannot. */
int test_http_start(test_http_server *s, test_http_handler handler, void *ctx);
/* Stops listening and waits for the server's thread; a second call does nothing. */
void test_http_stop(test_http_server *s);
/* The value of request header name, or "" when absent. */
const char *test_http_header(const test_http_request *req, const char *name);

#endif
