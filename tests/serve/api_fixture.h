/* Shared by the server tests (test_http, test_api, test_rollout_e2e, test_serving): an
 * HTTP client that sends API keys and keeps the headers the tests check, and
 * `finch serve` child processes. */
#ifndef FINCH_TESTS_SERVE_API_FIXTURE_H
#define FINCH_TESTS_SERVE_API_FIXTURE_H

#include <jansson.h>
#include <sys/types.h>

typedef struct {
  long status;  /* 0 when no response came */
  json_t *json; /* parsed body, NULL when it is not JSON */
  char retry_after[32], www_auth[64];
  char raw[512]; /* the body's first bytes, for messages */
} api_reply;

/* One request to http://127.0.0.1:<port><path>; key NULL sends no
 * Authorization header, body NULL no body. */
api_reply api_http(unsigned port, const char *method, const char *path, const char *key, const char *body);
void api_reply_free(api_reply *r);
/* The string member k of o, or NULL. */
const char *api_str(json_t *o, const char *k);

typedef struct {
  pid_t pid;
  int out_fd; /* read end of the child's stdout */
  char buf[8192];
  size_t len;
} api_child;

/* Starts argv[0] with stdout on a pipe (stderr inherited). */
int api_child_start(api_child *c, char *const argv[]);
/* Reads stdout until a line starting with prefix (copied into line). */
int api_child_wait_line(api_child *c, const char *prefix, char *line, size_t size, double timeout_s);
/* Waits for exit, draining stdout; the wait status, or -1 after timeout_s. */
int api_child_wait_exit(api_child *c, double timeout_s);
void api_child_kill(api_child *c);

/* Runs a shell command; its stdout (malloc'd) and exit status. */
char *api_run(const char *cmd, int *status);

#endif
