/* HTTP transfers for core/source.c: a curl multi handle pulled by the
 * reader, retries with backoff and Range resumption (see source.c). */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/http.h"
#include "core/source_internal.h"

/* --- HTTP --------------------------------------------------------------- */

static int http_fail(finch_source *s, finch_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int http_fail(finch_source *s, finch_status code, const char *fmt, ...) {
  source_http *h = s->http;
  if (!h->failed) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->err.msg, sizeof h->err.msg, fmt, ap);
    va_end(ap);
    h->err.code = code;
    h->failed = 1;
  }
  return -1;
}


/* Parses a decimal number at *p, skipping leading blanks; -1 when none. */
static long long http_parse_num(const char **p) {
  const char *q = *p;
  while (*q == ' ' || *q == '\t') q++;
  if (*q < '0' || *q > '9') return -1;
  long long v = 0;
  while (*q >= '0' && *q <= '9') {
    if (v > (LLONG_MAX - 9) / 10) return -1;
    v = v * 10 + (*q++ - '0');
  }
  *p = q;
  return v;
}

/* Header value when line (length n, not NUL-terminated) is "name: value",
 * copied NUL-terminated into out; NULL otherwise. */
static const char *http_header_value(const char *line, size_t n, const char *name, char *out, size_t out_size) {
  size_t k = strlen(name);
  if (n <= k || line[k] != ':' || strncasecmp(line, name, k) != 0) return NULL;
  size_t v = n - k - 1;
  if (v >= out_size) v = out_size - 1;
  memcpy(out, line + k + 1, v);
  out[v] = '\0';
  return out;
}

/* At the end of the final headers of a 2xx response: where does this body
 * start, and how big is the resource? */
static void http_headers_done(finch_source *s, long code) {
  source_http *h = s->http;
  int first = !h->started;
  h->body_ok = 1;
  h->started = 1;
  long long start = 0;
  if (code == 206) {
    if (h->cr_start < 0) {
      snprintf(h->fatal, sizeof h->fatal, "HTTP 206 without a usable Content-Range");
      return;
    }
    start = h->cr_start;
  }
  if (start > h->range_from) {
    snprintf(h->fatal, sizeof h->fatal, "asked for bytes from %lld, server answered from %lld", h->range_from,
             start);
    return;
  }
  h->skip = h->range_from - start;
  long long total = -1;
  if (code == 206) {
    total = h->cr_total;
  } else {
    curl_off_t cl = -1;
    if (curl_easy_getinfo(h->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl >= 0) total = cl;
  }
  /* A resumed transfer must continue the same resource: splicing two
   * versions would deliver neither. */
  long long size = atomic_load(&s->size);
  if (first) {
    snprintf(h->etag_first, sizeof h->etag_first, "%s", h->etag);
  } else if (h->etag_first[0] && h->etag[0] && strcmp(h->etag_first, h->etag) != 0) {
    snprintf(h->fatal, sizeof h->fatal, "the resource changed during the transfer (ETag %s, then %s)",
             h->etag_first, h->etag);
    return;
  } else if (size >= 0 && total >= 0 && total != size) {
    snprintf(h->fatal, sizeof h->fatal, "the resource changed during the transfer (%lld bytes, then %lld)", size,
             total);
    return;
  }
  if (size < 0 && total >= 0) atomic_store(&s->size, total);
}

static size_t http_header_cb(char *line, size_t size, size_t nitems, void *userdata) {
  finch_source *s = userdata;
  source_http *h = s->http;
  size_t n = size * nitems;
  char val[128];
  long v;
  if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new response (redirects, 1xx) */
    h->cr_start = h->cr_total = -1;
    h->retry_after_s = 0;
    h->etag[0] = '\0';
  } else if (http_header_value(line, n, "ETag", val, sizeof val)) {
    const char *p = val + strspn(val, " \t");
    size_t k = strcspn(p, "\r\n");
    while (k > 0 && (p[k - 1] == ' ' || p[k - 1] == '\t')) k--;
    snprintf(h->etag, sizeof h->etag, "%.*s", (int)k, p);
  } else if (http_header_value(line, n, "Content-Range", val, sizeof val)) {
    /* "bytes 100-299/300"; the total may be "*" (unknown) */
    const char *p = val;
    while (*p == ' ' || *p == '\t') p++;
    if (strncasecmp(p, "bytes", 5) == 0) {
      p += 5;
      long long a = http_parse_num(&p);
      if (a >= 0 && *p == '-') {
        p++;
        if (http_parse_num(&p) >= 0 && *p == '/') {
          p++;
          h->cr_start = a;
          h->cr_total = http_parse_num(&p);
        }
      }
    }
  } else if ((v = finch_http_retry_after(line, n, SOURCE_MAX_RETRY_AFTER_S)) >= 0) {
    if (v > 0) h->retry_after_s = v; /* an HTTP date is ignored: the backoff applies */
  } else if ((n == 2 && line[0] == '\r' && line[1] == '\n') || (n == 1 && line[0] == '\n')) {
    long code = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 400) {
      h->abort_status = code; /* stop here: CURLE_WRITE_ERROR, classified by http_finish */
      return 0;
    }
    /* 1xx are interim; 3xx are followed by curl (one it cannot follow ends
     * the transfer without a 2xx and fails in http_finish). */
    if (code >= 200 && code < 300 && !h->body_ok) {
      http_headers_done(s, code);
      if (h->fatal[0]) return 0;
    }
  }
  return n;
}

static size_t http_write_cb(char *data, size_t size, size_t nmemb, void *userdata) {
  finch_source *s = userdata;
  source_http *h = s->http;
  size_t n = size * nmemb;
  if (!h->body_ok) return n; /* the body of a redirect or interim response */
  size_t off = 0;
  if (h->skip > 0) {
    off = (unsigned long long)h->skip < n ? (size_t)h->skip : n;
    h->skip -= (long long)off;
  }
  size_t m = n - off;
  if (m == 0) return n;
  if (h->pos > 0 && h->pos == h->len) h->pos = h->len = 0;
  if (h->len + m > h->cap) {
    size_t cap = h->cap ? h->cap : SOURCE_BUF_SIZE;
    while (cap < h->len + m) cap *= 2;
    unsigned char *nb = realloc(h->buf, cap);
    if (!nb) {
      h->oom = 1;
      return 0;
    }
    h->buf = nb;
    h->cap = cap;
  }
  memcpy(h->buf + h->len, data + off, m);
  h->len += m;
  h->received += (long long)m;
  return n;
}

static void http_sleep_ms(long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static uint64_t http_rand(source_http *h) { /* xorshift64* */
  h->rng ^= h->rng >> 12;
  h->rng ^= h->rng << 25;
  h->rng ^= h->rng >> 27;
  return h->rng * 2685821657736338717ULL;
}

/* Starts the next attempt, after its backoff delay. */
static int http_start(finch_source *s) {
  source_http *h = s->http;
  if (h->attempts > 0 && h->delay_ms > 0) http_sleep_ms(h->delay_ms);
  h->range_from = h->received;
  h->body_ok = 0;
  h->skip = 0;
  h->abort_status = 0;
  h->cr_start = h->cr_total = -1;
  h->retry_after_s = 0;
  h->etag[0] = '\0';
  h->fatal[0] = '\0';
  h->errbuf[0] = '\0';
  char range[32];
  snprintf(range, sizeof range, "%lld-", h->range_from);
  curl_easy_setopt(h->easy, CURLOPT_RANGE, h->range_from > 0 ? range : NULL);
  CURLMcode mc = curl_multi_add_handle(h->multi, h->easy);
  if (mc != CURLM_OK)
    return http_fail(s, FINCH_EIO, "%s: cannot start the transfer: %s", s->lineage, curl_multi_strerror(mc));
  h->attached = 1;
  h->attempts++;
  return 0;
}

/* An attempt ended with rc: done, retry later (delay_ms set), or fail. */
static int http_finish(finch_source *s, CURLcode rc) {
  source_http *h = s->http;
  curl_multi_remove_handle(h->multi, h->easy);
  h->attached = 0;
  long code = 0;
  curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
  if (h->oom) return http_fail(s, FINCH_ENOMEM, "%s: out of memory", s->lineage);
  if (h->fatal[0]) return http_fail(s, FINCH_EIO, "%s: %s", s->lineage, h->fatal);

  int retry;
  char reason[CURL_ERROR_SIZE + 64];
  if (rc == CURLE_OK && h->body_ok) {
    h->done = 1;
    return 0;
  }
  if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && h->abort_status)) {
    if (h->abort_status) code = h->abort_status;
    /* Asked for the bytes after the last one: the body was complete. */
    if (code == 416 && h->range_from > 0 && h->range_from == atomic_load(&s->size)) {
      h->done = 1;
      return 0;
    }
    retry = finch_http_retryable_status(code);
    snprintf(reason, sizeof reason, "HTTP %ld", code);
  } else {
    retry = finch_http_retryable_curl(rc);
    snprintf(reason, sizeof reason, "%s", h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
  }
  if (!retry) return http_fail(s, FINCH_EIO, "%s: %s", s->lineage, reason);
  /* max_retries bounds failures in a row: an attempt that got new bytes
   * starts the count again, so a long transfer survives scattered resets. */
  if (h->received > h->range_from) h->failures = 0;
  h->failures++;
  if (h->failures > h->opts.max_retries)
    return http_fail(s, FINCH_EIO, "%s: %s (gave up after %d attempt%s)", s->lineage, reason, h->failures,
                     h->failures == 1 ? "" : "s");

  long long base = h->opts.backoff_ms > 0 ? h->opts.backoff_ms : 0;
  for (int i = 1; i < h->failures && base < SOURCE_MAX_DELAY_MS; i++) base *= 2;
  if (base > SOURCE_MAX_DELAY_MS) base = SOURCE_MAX_DELAY_MS;
  long long delay = base - base / 2 + (base / 2 > 0 ? (long long)(http_rand(h) % (uint64_t)(base / 2 + 1)) : 0);
  if (h->retry_after_s * 1000LL > delay) delay = h->retry_after_s * 1000LL;
  h->delay_ms = (long)delay;
  return 0;
}

/* Drives the transfer until the final headers arrived (until_started) or
 * until buf holds unread bytes, or the body is complete. 0, or -1 with the
 * error recorded. */
static int http_pump(finch_source *s, int until_started) {
  source_http *h = s->http;
  for (;;) {
    if (h->failed) return -1;
    if (h->done || (until_started ? h->started : h->pos < h->len)) return 0;
    if (!h->attached) {
      if (http_start(s) != 0) return -1;
    }
    int running = 0;
    CURLMcode mc = curl_multi_perform(h->multi, &running);
    if (mc != CURLM_OK) return http_fail(s, FINCH_EIO, "%s: %s", s->lineage, curl_multi_strerror(mc));
    CURLMsg *msg;
    int left;
    int ended = 0;
    CURLcode rc = CURLE_OK;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
      if (msg->msg == CURLMSG_DONE && msg->easy_handle == h->easy) {
        ended = 1;
        rc = msg->data.result;
      }
    }
    if (ended) {
      if (http_finish(s, rc) != 0) return -1;
      continue;
    }
    if (h->done || (until_started ? h->started : h->pos < h->len)) return 0;
    mc = curl_multi_poll(h->multi, NULL, 0, SOURCE_POLL_MS, NULL);
    if (mc != CURLM_OK) return http_fail(s, FINCH_EIO, "%s: %s", s->lineage, curl_multi_strerror(mc));
  }
}

void source__http_free(source_http *h) {
  if (!h) return;
  if (h->multi && h->easy && h->attached) curl_multi_remove_handle(h->multi, h->easy);
  if (h->easy) curl_easy_cleanup(h->easy);
  if (h->multi) curl_multi_cleanup(h->multi);
  free(h->buf);
  free(h->url);
  free(h);
}

/* The URL without any "user:password@", for messages and lineage. */
char *source__http_display_url(const char *url) {
  const char *auth = strstr(url, "://");
  auth = auth ? auth + 3 : url;
  size_t host_len = strcspn(auth, "/?#");
  const char *at = memchr(auth, '@', host_len);
  size_t n = strlen(url);
  char *out = malloc(n + 1);
  if (!out) return NULL;
  if (!at) {
    memcpy(out, url, n + 1);
  } else {
    size_t head = (size_t)(auth - url);
    memcpy(out, url, head);
    memcpy(out + head, at + 1, n - (size_t)(at + 1 - url) + 1);
  }
  return out;
}

finch_status source__http_open(finch_source *s, const char *url, const finch_source_opts *o, finch_err *err) {
  finch_status st = finch_http_global_init(err);
  if (st != FINCH_OK) {
    finch_err_prefix(err, "%s", s->lineage);
    return st;
  }
  source_http *h = calloc(1, sizeof *h);
  if (!h) return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", s->lineage);
  s->http = h;
  h->opts = *o;
  h->url = strdup(url);
  h->multi = curl_multi_init();
  h->easy = curl_easy_init();
  if (!h->url || !h->multi || !h->easy) return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", s->lineage);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  h->rng = ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ (uint64_t)(uintptr_t)h;
  if (!h->rng) h->rng = 1;

  CURL *e = h->easy;
  curl_easy_setopt(e, CURLOPT_URL, h->url);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85: the _STR forms */
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)SOURCE_MAX_REDIRS);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, o->connect_timeout_s);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, o->low_speed_time_s);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "finch");
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, s);

  /* Wait for the first answer, so that a 404 or a dead host fails here. A
   * failure after 2xx headers (the body cut short, retries spent) belongs to
   * the reader, who first gets the bytes that did arrive. */
  if (http_pump(s, 1) != 0 && !h->started) return finch_err_set(err, h->err.code, "%s", h->err.msg);
  return FINCH_OK;
}

ssize_t source__http_read(finch_source *s, unsigned char *dst, size_t cap) {
  source_http *h = s->http;
  if (h->pos == h->len && http_pump(s, 0) != 0) return source__fail(s, h->err.code, "%s", h->err.msg);
  size_t n = h->len - h->pos;
  if (n > cap) n = cap;
  memcpy(dst, h->buf + h->pos, n);
  h->pos += n;
  return (ssize_t)n;
}

