/* The intent server's access log (serve/server_internal.h): one JSON line
 * per request, without the text unless log_text asks for it (redacted). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "serve/server_internal.h"

/* --- access log ------------------------------------------------------------ */

/* Appends src to dst[*n..cap) as the inside of a JSON string; stops early,
 * at a character boundary, when room runs out (6 bytes are kept for the
 * caller's closing). */
static void serve_json_esc(char *dst, size_t *n, size_t cap, const char *src) {
  static const char hex[] = "0123456789abcdef";
  size_t k = *n;
  for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
    size_t need = *p == '"' || *p == '\\' ? 2 : *p < 0x20 ? 6 : 1;
    if (*p >= 0x80 && (*p & 0xc0) == 0xc0) { /* a lead byte: the whole character must fit */
      size_t len = (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : 4;
      need = len;
    }
    if (k + need + 6 > cap) break;
    if (*p == '"' || *p == '\\') {
      dst[k++] = '\\';
      dst[k++] = (char)*p;
    } else if (*p < 0x20) {
      memcpy(dst + k, "\\u00", 4);
      dst[k + 4] = hex[*p >> 4];
      dst[k + 5] = hex[*p & 15];
      k += 6;
    } else if (need > 1) {
      size_t i = 0;
      for (; i < need && p[i]; i++) dst[k++] = (char)p[i];
      p += i - 1; /* a sequence cut short by the end stops at the NUL */
    } else {
      dst[k++] = (char)*p;
    }
  }
  *n = k;
}

/* One access log line, in one write(2): lines from several threads never
 * interleave (O_APPEND files; pipes up to PIPE_BUF). */
void serve__log_request(finch_server *srv, const serve_request *req, uint64_t ns) {
  char small[1024];
  size_t cap = sizeof small;
  char *line = small;
  if (req->log_text) {
    cap = 1024 + 6 * strlen(req->log_text);
    line = malloc(cap);
    if (!line) {
      line = small;
      cap = sizeof small;
    }
  }
  struct timespec wall;
  clock_gettime(CLOCK_REALTIME, &wall);
  struct tm tm;
  gmtime_r(&wall.tv_sec, &tm);
  char ts[32];
  size_t tn = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + tn, sizeof ts - tn, ".%03ldZ", wall.tv_nsec / 1000000);
  int w = snprintf(line, cap, "{\"ts\":\"%s\",\"request_id\":\"%s\",\"method\":\"", ts, req->rid);
  size_t n = w > 0 ? (size_t)w : 0;
  serve_json_esc(line, &n, cap, req->method);
  w = snprintf(line + n, cap - n, "\",\"path\":\"%s\",\"status\":%u,\"latency_ms\":%.3f", serve__metrics_path(&srv->metrics, req->metric),
               req->status, (double)ns / 1e6);
  n += w > 0 ? (size_t)w : 0;
  if (req->engine && n < cap) {
    w = snprintf(line + n, cap - n, ",\"engine\":\"%s\"", req->engine);
    n += w > 0 ? (size_t)w : 0;
  }
  if (req->engine && n < cap) { /* null: the engine gave no answer (no rule fired) */
    w = snprintf(line + n, cap - n, ",\"intent\":");
    n += w > 0 ? (size_t)w : 0;
    if (req->intent && n + 8 < cap) {
      line[n++] = '"';
      serve_json_esc(line, &n, cap, req->intent);
      line[n++] = '"';
    } else if (n + 8 < cap) {
      memcpy(line + n, "null", 4);
      n += 4;
    }
  }
  if (req->confidence >= 0 && n < cap) {
    w = snprintf(line + n, cap - n, ",\"confidence\":%.4f", req->confidence);
    n += w > 0 ? (size_t)w : 0;
  }
  if (req->batch && n < cap) {
    w = snprintf(line + n, cap - n, ",\"batch\":%u", req->batch);
    n += w > 0 ? (size_t)w : 0;
  }
  if (req->log_text && n + 16 < cap) {
    memcpy(line + n, ",\"text\":\"", 9);
    n += 9;
    serve_json_esc(line, &n, cap, req->log_text);
    line[n++] = '"';
  }
  if (n + 2 >= cap) n = cap - 3; /* cannot happen with the margins above; keeps the line a line */
  line[n++] = '}';
  line[n++] = '\n';
  for (size_t off = 0; off < n;) {
    ssize_t k = write(srv->log_fd, line + off, n - off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break; /* a full disk or closed pipe must not stop serving */
    off += (size_t)k;
  }
  if (line != small) free(line);
}

