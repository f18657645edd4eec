/* A webhook receiver on loopback for the server tests (tests/receiver.h
 * underneath): it records every request with whether its Finch-Signature
 * verifies (serve/webhook.h) and answers by its mode:
 * - TEST_RX_ONE_ROUTE: every path answers 200, or 503 while down is set;
 * - TEST_RX_ROUTES: /main as above; /gone 410 until gone_ok is set, then
 *   200; /flaky always 500; /busy 429 with Retry-After: 2; any other 404. */
#ifndef FINCH_TESTS_SERVE_RECEIVER_H
#define FINCH_TESTS_SERVE_RECEIVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "tests/receiver.h"

typedef enum { TEST_RX_ONE_ROUTE, TEST_RX_ROUTES } test_rx_mode;

typedef struct {
  char path[32];   /* the request's path */
  char key[128];   /* Idempotency-Key */
  char id[128];    /* Finch-Webhook-Id */
  char event[64];  /* Finch-Webhook-Event */
  long long ts;    /* Finch-Webhook-Timestamp */
  char *body;      /* the request body, NUL-terminated */
  size_t len;
  int sig_ok;      /* Finch-Signature matches HMAC(secret, id.ts.body) */
  int body_ok;     /* body is {"id","type","created_at","data"} with type = the event header */
  int ok;          /* sig_ok, body_ok and Finch-Webhook-Id = the key */
  unsigned answered; /* the status sent back */
} test_rx_req;

typedef struct {
  test_http_server http;
  unsigned port;
  test_rx_mode mode;
  char secret[128];
  atomic_int down;    /* the main route answers 503 while set */
  atomic_int gone_ok; /* TEST_RX_ROUTES: /gone answers 200 once set */
  pthread_mutex_t lock;
  test_rx_req *reqs; /* every request, in arrival order; read under lock or after stop */
  size_t n, cap;
} test_receiver;

/* Listens on 127.0.0.1, any free port (rx->port); 0 or -1. */
int test_receiver_start(test_receiver *rx, const char *secret, test_rx_mode mode);
/* Stops listening; rx->reqs stays readable until test_receiver_free(). */
void test_receiver_stop(test_receiver *rx);
/* Stops listening if it still does, and frees the requests. */
void test_receiver_free(test_receiver *rx);

/* Requests received for key: *total, *ok (2xx answers), *bad (signature,
 * body or Finch-Webhook-Id wrong), *after_ok (requests after the first 2xx). */
void test_receiver_count(test_receiver *rx, const char *key, int *total, int *ok, int *bad, int *after_ok);
/* Distinct keys with a 2xx answer on path: what a deduplicating receiver keeps. */
int test_receiver_distinct_ok(test_receiver *rx, const char *path);

#endif
