/* A webhook receiver on loopback for the server tests: libmicrohttpd in a
 * thread of the test process, recording every request with whether its
 * Finch-Signature verifies (serve/webhook.h) and answering 503 while down is
 * set, else 200. */
#ifndef FINCH_TESTS_SERVE_RECEIVER_H
#define FINCH_TESTS_SERVE_RECEIVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

typedef struct {
  char key[128];   /* Idempotency-Key */
  char event[64];  /* Finch-Webhook-Event */
  char *body;      /* the request body, NUL-terminated */
  size_t len;
  int ok;          /* signature verifies, Finch-Webhook-Id = the key, body {"id","type","created_at","data"}
                    * with type = the event header */
  unsigned answered; /* the status sent back */
} test_rx_req;

typedef struct {
  struct MHD_Daemon *d;
  unsigned port;
  char secret[128];
  atomic_int down; /* answer 503 while set */
  pthread_mutex_t lock;
  test_rx_req *reqs; /* every request, in arrival order; read under lock or after stop */
  size_t n, cap;
} test_receiver;

/* Listens on 127.0.0.1, any free port (rx->port); 0 or -1. */
int test_receiver_start(test_receiver *rx, const char *secret);
/* Stops listening; rx->reqs stays readable until test_receiver_free(). */
void test_receiver_stop(test_receiver *rx);
void test_receiver_free(test_receiver *rx);

#endif
