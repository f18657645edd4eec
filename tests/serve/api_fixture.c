#include "tests/serve/api_fixture.h"

#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static size_t on_body(char *data, size_t size, size_t n, void *ctx) {
  char **buf = ctx;
  size_t add = size * n, old = *buf ? strlen(*buf) : 0;
  char *p = realloc(*buf, old + add + 1);
  if (!p) return 0;
  memcpy(p + old, data, add);
  p[old + add] = '\0';
  *buf = p;
  return add;
}

static size_t on_header(char *data, size_t size, size_t n, void *ctx) {
  api_reply *r = ctx;
  size_t len = size * n;
  char line[256];
  snprintf(line, sizeof line, "%.*s", (int)(len < 255 ? len : 255), data);
  line[strcspn(line, "\r\n")] = '\0';
  if (strncasecmp(line, "Retry-After: ", 13) == 0) snprintf(r->retry_after, sizeof r->retry_after, "%s", line + 13);
  if (strncasecmp(line, "WWW-Authenticate: ", 18) == 0) snprintf(r->www_auth, sizeof r->www_auth, "%s", line + 18);
  return len;
}

api_reply api_http(unsigned port, const char *method, const char *path, const char *key, const char *body) {
  api_reply r = {0};
  char *buf = NULL;
  CURL *c = curl_easy_init();
  if (!c) return r;
  char url[1024], auth[160];
  snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
  struct curl_slist *h = NULL;
  if (key) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    h = curl_slist_append(h, auth);
  }
  if (body) {
    h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &buf);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  snprintf(r.raw, sizeof r.raw, "%s", buf ? buf : "");
  r.json = buf ? json_loads(buf, 0, NULL) : NULL;
  free(buf);
  return r;
}

void api_reply_free(api_reply *r) {
  json_decref(r->json);
  r->json = NULL;
}

const char *api_str(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

char *api_run(const char *cmd, int *status) {
  *status = -1;
  FILE *p = popen(cmd, "r");
  if (!p) return NULL;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t k;
  while (buf && (k = fread(buf + len, 1, cap - len - 1, p)) > 0) {
    len += k;
    if (cap - len < 1024) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) break;
      buf = nb;
    }
  }
  if (buf) buf[len] = '\0';
  int st = pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return buf;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Starts argv[0] with stdout on a pipe; stderr is inherited so that the
 * server's own messages show up in the test log. */
int api_child_start(api_child *c, char *const argv[]) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  memset(c, 0, sizeof *c);
  c->pid = fork();
  if (c->pid < 0) return -1;
  if (c->pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  c->out_fd = fds[0];
  return 0;
}

/* Reads the child's stdout until a line starting with prefix arrives (copied
 * into line) or the deadline passes or the pipe closes. Other lines are
 * echoed to stderr. */
int api_child_wait_line(api_child *c, const char *prefix, char *line, size_t size,
                           double timeout_s) {
  double deadline = now_s() + timeout_s;
  for (;;) {
    char *nl;
    while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
      size_t n = (size_t)(nl - c->buf);
      *nl = '\0';
      int match = strncmp(c->buf, prefix, strlen(prefix)) == 0;
      if (match) {
        size_t k = n < size - 1 ? n : size - 1;
        memcpy(line, c->buf, k);
        line[k] = '\0';
      }
      else fprintf(stderr, "[finch stdout] %s\n", c->buf);
      memmove(c->buf, nl + 1, c->len - n - 1);
      c->len -= n + 1;
      if (match) return 0;
    }
    if (c->len == sizeof c->buf) c->len = 0; /* an absurdly long line: drop it */
    double left = deadline - now_s();
    if (left <= 0) return -1;
    struct pollfd p = {.fd = c->out_fd, .events = POLLIN};
    int pr = poll(&p, 1, (int)(left * 1000) + 1);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) return -1;
    ssize_t r = read(c->out_fd, c->buf + c->len, sizeof c->buf - c->len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1; /* the child closed stdout: it has died */
    c->len += (size_t)r;
  }
}

/* Waits up to timeout_s for the child to exit, draining its stdout so that
 * it never blocks on a full pipe. Returns the wait status, or -1. */
int api_child_wait_exit(api_child *c, double timeout_s) {
  double deadline = now_s() + timeout_s;
  while (now_s() < deadline) {
    int status;
    pid_t w = waitpid(c->pid, &status, WNOHANG);
    if (w == c->pid) {
      c->pid = 0;
      return status;
    }
    struct pollfd p = {.fd = c->out_fd, .events = POLLIN};
    if (c->out_fd >= 0 && poll(&p, 1, 50) > 0) {
      char sink[4096];
      ssize_t r = read(c->out_fd, sink, sizeof sink);
      if (r > 0) fprintf(stderr, "[finch stdout] %.*s", (int)r, sink);
      if (r == 0) {
        close(c->out_fd);
        c->out_fd = -1;
      }
    } else if (c->out_fd < 0) {
      usleep(50 * 1000);
    }
  }
  return -1;
}

void api_child_kill(api_child *c) {
  if (c->pid > 0) {
    kill(c->pid, SIGKILL);
    waitpid(c->pid, NULL, 0);
    c->pid = 0;
  }
  if (c->out_fd >= 0) close(c->out_fd);
  c->out_fd = -1;
}

