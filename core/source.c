/* Input sources (core/source.h).
 *
 * Layers. A source reads raw bytes from a file descriptor (a path, "-",
 * file://) or from an HTTP transfer; every raw byte goes through the SHA-256
 * and the raw byte count on its way up. Above that sits the codec, chosen on
 * the first read from the first two raw bytes: gzip (1f 8b) is inflated with
 * zlib, one member after another, anything else passes through. The caller
 * sees the codec's output as a FILE * made with fopencookie().
 *
 * HTTP is pulled, not pushed: there is no background thread. The cookie's
 * read function drives a curl multi handle (curl_multi_perform and
 * curl_multi_poll) until the write callback has put some body bytes into
 * http->buf, so the transfer advances only as fast as the caller reads and
 * memory stays bounded by what one curl_multi_perform call receives (curl
 * 7.x reads at most 100 buffers of 16 KiB per call, so about 1.6 MiB).
 * Closing early just detaches the easy handle: nothing to cancel or join.
 *
 * Retries. An attempt that fails with 5xx, 429 or a retryable transfer error
 * (connection refused or reset, timeout, a body cut short) is repeated after
 * backoff_ms * 2^(n-1) milliseconds (capped, with "equal jitter": a random
 * point in the upper half of that delay; at least Retry-After when the server
 * sends one), up to max_retries times in a row: an attempt that received new
 * bytes resets the count. Bytes already received are kept: the
 * next attempt asks for "Range: bytes=<received>-". A 206 answer is appended
 * as it comes (after dropping any overlap); a 200 answer (the server ignores
 * Range) has its first <received> bytes dropped. So every byte reaches the
 * reader exactly once. CURLOPT_RANGE is used rather than
 * CURLOPT_RESUME_FROM_LARGE because the latter makes curl fail the transfer
 * (CURLE_RANGE_ERROR) when the server answers 200.
 *
 * Errors that happen while reading are kept in s->err; the FILE * only sees
 * an error (the read function returns -1 with errno EIO) and
 * finch_source_close() returns them. */
#define _GNU_SOURCE /* fopencookie */

#include "core/source.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

enum {
  SOURCE_BUF_SIZE = 1 << 16,       /* raw read size, and the FILE's buffer */
  SOURCE_MAX_REDIRS = 10,
  SOURCE_MAX_DELAY_MS = 30000,     /* cap on one backoff delay */
  SOURCE_MAX_RETRY_AFTER_S = 60,   /* cap on a server's Retry-After */
  SOURCE_POLL_MS = 1000,           /* curl_multi_poll timeout; curl's own timers still fire */
};

static const finch_source_opts source_defaults = {
    .connect_timeout_s = 15, .low_speed_time_s = 60, .max_retries = 5, .backoff_ms = 500};

typedef enum { SOURCE_FD, SOURCE_HTTP } source_kind;
typedef enum { SOURCE_CODEC_UNKNOWN, SOURCE_CODEC_PLAIN, SOURCE_CODEC_GZIP } source_codec;

/* One HTTP transfer, possibly over several attempts. Only the thread that
 * reads the source touches it. */
typedef struct {
  CURLM *multi;
  CURL *easy;
  char *url;                 /* as given, handed to curl */
  finch_source_opts opts;
  int attached;              /* easy is in multi: an attempt is under way */
  int attempts;              /* attempts started */
  int failures;              /* failed attempts since the last one that received new bytes */
  long delay_ms;             /* to wait before the next attempt */
  int started;               /* final 2xx headers seen once: open may return */
  int done;                  /* the whole body has been received */
  long long received;        /* body bytes put into buf over all attempts */

  /* The current attempt. */
  long long range_from;      /* the Range asked for (0: none) */
  int body_ok;               /* its final headers were 2xx: the body is the resource */
  long long skip;            /* body bytes still to drop (overlap with received) */
  long abort_status;         /* HTTP status the header callback stopped on */
  long long cr_start, cr_total; /* Content-Range of the last response, -1 when absent */
  long retry_after_s;        /* Retry-After of the last response, 0 when absent */
  char etag[128];            /* ETag of the last response, "" when absent */
  char etag_first[128];      /* ETag of the first 2xx response: a later one must match */
  int oom;                   /* the write callback could not grow buf */
  int failed;                /* the transfer failed for good: err says why. The reader
                              * gets what buf still holds first, then the error. */
  finch_err err;
  char fatal[256];           /* a header-time error that no retry can fix */
  char errbuf[CURL_ERROR_SIZE];

  unsigned char *buf;        /* received, not yet read: buf[pos..len) */
  size_t pos, len, cap;
  uint64_t rng;              /* jitter */
} source_http;

struct finch_source {
  char *name;    /* the uri as given */
  char *lineage; /* absolute path, URL or "<stdin>" */
  source_kind kind;
  int fd;       /* SOURCE_FD */
  int own_fd;   /* close fd at the end (not standard input) */
  source_http *http;
  FILE *fp;
  _Atomic long long size;      /* raw size, -1 unknown */
  _Atomic long long raw_bytes; /* raw bytes consumed */

  source_codec codec;
  z_stream zs;
  int zs_init;
  int member_done; /* the last gzip member ended; more input starts a new one */
  unsigned char *in; /* raw input not yet used: in[in_pos..in_len) (plain) or zs.next_in (gzip) */
  size_t in_pos, in_len;
  int raw_eof;   /* the raw input has ended cleanly */
  int failed;    /* err holds the first reading error */
  finch_err err;
  finch_sha256 *sha;
};

static pthread_once_t source_curl_once = PTHREAD_ONCE_INIT;
static CURLcode source_curl_init_rc = CURLE_OK;

static void source_curl_init(void) { source_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* Records the first reading error; later ones are consequences. Returns -1
 * for the read paths. */
static int source_fail(finch_source *s, finch_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int source_fail(finch_source *s, finch_status code, const char *fmt, ...) {
  if (!s->failed) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err.msg, sizeof s->err.msg, fmt, ap);
    va_end(ap);
    s->err.code = code;
    s->failed = 1;
  }
  return -1;
}

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

static int http_retryable_code(CURLcode rc) {
  switch (rc) {
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_PARTIAL_FILE:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_COULDNT_CONNECT:
  case CURLE_GOT_NOTHING:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_SSL_CONNECT_ERROR:
    return 1;
  default:
    return 0;
  }
}

static int http_retryable_status(long status) { return status == 429 || status >= 500; }

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
  } else if (http_header_value(line, n, "Retry-After", val, sizeof val)) {
    const char *p = val;
    long long v = http_parse_num(&p); /* an HTTP date is ignored: the backoff applies */
    if (v > 0) h->retry_after_s = v > SOURCE_MAX_RETRY_AFTER_S ? SOURCE_MAX_RETRY_AFTER_S : (long)v;
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
    retry = http_retryable_status(code);
    snprintf(reason, sizeof reason, "HTTP %ld", code);
  } else {
    retry = http_retryable_code(rc);
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

static void http_free(source_http *h) {
  if (!h) return;
  if (h->multi && h->easy && h->attached) curl_multi_remove_handle(h->multi, h->easy);
  if (h->easy) curl_easy_cleanup(h->easy);
  if (h->multi) curl_multi_cleanup(h->multi);
  free(h->buf);
  free(h->url);
  free(h);
}

/* The URL without any "user:password@", for messages and lineage. */
static char *http_display_url(const char *url) {
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

static finch_status http_open(finch_source *s, const char *url, const finch_source_opts *o, finch_err *err) {
  pthread_once(&source_curl_once, source_curl_init);
  if (source_curl_init_rc != CURLE_OK)
    return finch_err_set(err, FINCH_EIO, "%s: cannot initialise libcurl: %s", s->lineage,
                         curl_easy_strerror(source_curl_init_rc));
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

static ssize_t http_read(finch_source *s, unsigned char *dst, size_t cap) {
  source_http *h = s->http;
  if (h->pos == h->len && http_pump(s, 0) != 0) return source_fail(s, h->err.code, "%s", h->err.msg);
  size_t n = h->len - h->pos;
  if (n > cap) n = cap;
  memcpy(dst, h->buf + h->pos, n);
  h->pos += n;
  return (ssize_t)n;
}

/* --- raw input and codecs ------------------------------------------------ */

/* Reads up to cap raw bytes: > 0, 0 at the end, -1 on error (recorded). */
static ssize_t source_raw_read(finch_source *s, unsigned char *dst, size_t cap) {
  if (s->failed) return -1;
  if (s->raw_eof) return 0;
  ssize_t n;
  if (s->kind == SOURCE_HTTP) {
    n = http_read(s, dst, cap);
  } else {
    do n = read(s->fd, dst, cap);
    while (n < 0 && errno == EINTR);
    if (n < 0) return source_fail(s, FINCH_EIO, "%s: %s", s->name, strerror(errno));
  }
  if (n < 0) return -1;
  if (n == 0) {
    s->raw_eof = 1;
    return 0;
  }
  finch_sha256_update(s->sha, dst, (size_t)n);
  atomic_fetch_add(&s->raw_bytes, (long long)n);
  return n;
}

/* Reads the first bytes into s->in and picks the codec. */
static int source_detect(finch_source *s) {
  while (s->in_len < 2) {
    ssize_t n = source_raw_read(s, s->in + s->in_len, SOURCE_BUF_SIZE - s->in_len);
    if (n < 0) return -1;
    if (n == 0) break;
    s->in_len += (size_t)n;
  }
  if (s->in_len >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b) {
    /* 32 + MAX_WBITS would also take zlib streams; only gzip was detected. */
    int rc = inflateInit2(&s->zs, 16 + MAX_WBITS);
    if (rc != Z_OK)
      return source_fail(s, rc == Z_MEM_ERROR ? FINCH_ENOMEM : FINCH_EINTERNAL, "%s: inflateInit2 failed (%d)",
                         s->name, rc);
    s->zs_init = 1;
    s->zs.next_in = s->in;
    s->zs.avail_in = (uInt)s->in_len;
    s->codec = SOURCE_CODEC_GZIP;
  } else {
    s->codec = SOURCE_CODEC_PLAIN;
  }
  return 0;
}

static ssize_t source_read_gzip(finch_source *s, unsigned char *out, size_t size) {
  size_t produced = 0;
  if (size > UINT_MAX) size = UINT_MAX;
  while (produced == 0) {
    if (s->zs.avail_in == 0) {
      ssize_t n = source_raw_read(s, s->in, SOURCE_BUF_SIZE);
      if (n < 0) return -1;
      if (n == 0) {
        if (s->member_done) return 0;
        source_fail(s, FINCH_EFORMAT, "%s: corrupt gzip data: unexpected end of input", s->name);
        return -1;
      }
      s->zs.next_in = s->in;
      s->zs.avail_in = (uInt)n;
    }
    if (s->member_done) { /* another member follows (as `cat a.gz b.gz` makes) */
      inflateReset(&s->zs);
      s->member_done = 0;
    }
    s->zs.next_out = out + produced;
    s->zs.avail_out = (uInt)(size - produced);
    int rc = inflate(&s->zs, Z_NO_FLUSH);
    produced = size - s->zs.avail_out;
    if (rc == Z_STREAM_END) {
      s->member_done = 1;
    } else if (rc == Z_MEM_ERROR) {
      return source_fail(s, FINCH_ENOMEM, "%s: out of memory while inflating", s->name);
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) { /* Z_BUF_ERROR: needs more input */
      return source_fail(s, FINCH_EFORMAT, "%s: corrupt gzip data: %s", s->name,
                         s->zs.msg ? s->zs.msg : "invalid stream");
    }
  }
  return (ssize_t)produced;
}

static ssize_t source_cookie_read(void *cookie, char *buf, size_t size) {
  finch_source *s = cookie;
  ssize_t n;
  if (size == 0) return 0;
  if (s->failed) {
    n = -1;
  } else if (s->codec == SOURCE_CODEC_UNKNOWN && source_detect(s) != 0) {
    n = -1;
  } else if (s->codec == SOURCE_CODEC_GZIP) {
    n = source_read_gzip(s, (unsigned char *)buf, size);
  } else if (s->in_pos < s->in_len) {
    n = (ssize_t)(s->in_len - s->in_pos < size ? s->in_len - s->in_pos : size);
    memcpy(buf, s->in + s->in_pos, (size_t)n);
    s->in_pos += (size_t)n;
  } else {
    n = source_raw_read(s, (unsigned char *)buf, size);
  }
  if (n < 0) errno = EIO;
  return n;
}

/* The FILE's close does nothing: finch_source_close() owns the resources. */
static int source_cookie_close(void *cookie) {
  (void)cookie;
  return 0;
}

/* --- opening ------------------------------------------------------------- */

/* Length of the scheme when uri starts with "scheme://", else 0. */
static size_t source_scheme_len(const char *uri) {
  size_t i = 0;
  if (!((uri[0] >= 'a' && uri[0] <= 'z') || (uri[0] >= 'A' && uri[0] <= 'Z'))) return 0;
  while ((uri[i] >= 'a' && uri[i] <= 'z') || (uri[i] >= 'A' && uri[i] <= 'Z') || (uri[i] >= '0' && uri[i] <= '9') ||
         uri[i] == '+' || uri[i] == '-' || uri[i] == '.')
    i++;
  return strncmp(uri + i, "://", 3) == 0 ? i : 0;
}

static int source_hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* file:///abs/path or file://localhost/abs/path into a malloc'd path. */
static finch_status source_file_url_path(const char *uri, char **out, finch_err *err) {
  const char *p = uri + 7; /* after "file://" */
  if (strncasecmp(p, "localhost/", 10) == 0) p += 9;
  if (*p != '/')
    return finch_err_set(err, FINCH_EINVAL, "%s: a file URL needs an absolute path on this host (file:///path)",
                         uri);
  size_t n = strcspn(p, "?#");
  char *path = malloc(n + 1);
  if (!path) return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", uri);
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] != '%') {
      path[j++] = p[i];
      continue;
    }
    int hi = i + 2 < n ? source_hex(p[i + 1]) : -1, lo = hi >= 0 ? source_hex(p[i + 2]) : -1;
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
      free(path);
      return finch_err_set(err, FINCH_EINVAL, "%s: bad percent escape at offset %zu", uri, (size_t)(p + i - uri));
    }
    path[j++] = (char)(hi * 16 + lo);
    i += 2;
  }
  path[j] = '\0';
  *out = path;
  return FINCH_OK;
}

static finch_status fd_open(finch_source *s, const char *path, finch_err *err) {
  if (strcmp(path, "-") == 0) {
    s->fd = STDIN_FILENO;
    s->lineage = strdup("<stdin>");
    if (!s->lineage) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  } else {
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0)
      return finch_err_set(err, errno == ENOENT ? FINCH_ENOTFOUND : FINCH_EIO, "%s: %s", path, strerror(errno));
    s->own_fd = 1;
    s->lineage = realpath(path, NULL);
    if (!s->lineage) return finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(errno));
  }
  struct stat st;
  if (fstat(s->fd, &st) != 0) return finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode)) return finch_err_set(err, FINCH_EIO, "%s: %s", path, strerror(EISDIR));
  if (S_ISREG(st.st_mode)) atomic_store(&s->size, (long long)st.st_size);
  return FINCH_OK;
}

static void source_free(finch_source *s) {
  if (!s) return;
  if (s->fp) fclose(s->fp);
  http_free(s->http);
  if (s->zs_init) inflateEnd(&s->zs);
  if (s->own_fd) close(s->fd);
  if (s->sha) {
    char discard[FINCH_SHA256_HEX_LEN];
    finch_sha256_final(s->sha, discard);
  }
  free(s->in);
  free(s->name);
  free(s->lineage);
  free(s);
}

finch_status finch_source_open(finch_source **out, const char *uri, const finch_source_opts *opts, finch_err *err) {
  *out = NULL;
  if (!uri || !uri[0]) return finch_err_set(err, FINCH_EINVAL, "no input source given");
  finch_source_opts o = source_defaults;
  if (opts) {
    if (opts->connect_timeout_s > 0) o.connect_timeout_s = opts->connect_timeout_s;
    if (opts->low_speed_time_s > 0) o.low_speed_time_s = opts->low_speed_time_s;
    if (opts->max_retries >= 0) o.max_retries = opts->max_retries;
    if (opts->backoff_ms > 0) o.backoff_ms = opts->backoff_ms;
  }
  finch_source *s = calloc(1, sizeof *s);
  if (!s) return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", uri);
  s->fd = -1;
  atomic_init(&s->size, -1);
  atomic_init(&s->raw_bytes, 0);
  s->name = strdup(uri);
  s->in = malloc(SOURCE_BUF_SIZE);
  s->sha = finch_sha256_new();
  finch_status st = FINCH_OK;
  if (!s->name || !s->in || !s->sha) {
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", uri);
    goto out;
  }

  size_t sl = source_scheme_len(uri);
  if (sl == 0) {
    s->kind = SOURCE_FD;
    st = fd_open(s, uri, err);
  } else if (sl == 4 && strncasecmp(uri, "file", 4) == 0) {
    char *path = NULL;
    st = source_file_url_path(uri, &path, err);
    if (!st) {
      s->kind = SOURCE_FD;
      st = fd_open(s, path, err);
      free(path);
    }
  } else if ((sl == 4 && strncasecmp(uri, "http", 4) == 0) || (sl == 5 && strncasecmp(uri, "https", 5) == 0)) {
    s->kind = SOURCE_HTTP;
    s->lineage = http_display_url(uri);
    if (!s->lineage) {
      st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", uri);
      goto out;
    }
    st = http_open(s, uri, &o, err);
  } else {
    st = finch_err_set(err, FINCH_EINVAL,
                       "%s: unsupported URL scheme '%.*s' (use a path, -, file://, http:// or https://)", uri,
                       (int)sl, uri);
  }
  if (st) goto out;

  cookie_io_functions_t io = {.read = source_cookie_read, .write = NULL, .seek = NULL, .close = source_cookie_close};
  s->fp = fopencookie(s, "r", io);
  if (!s->fp) {
    st = finch_err_set(err, FINCH_ENOMEM, "%s: fopencookie: %s", uri, strerror(errno));
    goto out;
  }
  setvbuf(s->fp, NULL, _IOFBF, SOURCE_BUF_SIZE);
  *out = s;
out:
  if (st) source_free(s);
  return st;
}

/* --- accessors and close -------------------------------------------------- */

FILE *finch_source_file(finch_source *s) { return s->fp; }
const char *finch_source_name(const finch_source *s) { return s->name; }
const char *finch_source_lineage(const finch_source *s) { return s->lineage; }
long long finch_source_size(const finch_source *s) { return atomic_load(&((finch_source *)s)->size); }
long long finch_source_raw_bytes(const finch_source *s) { return atomic_load(&((finch_source *)s)->raw_bytes); }

finch_status finch_source_close(finch_source *s, char sha256_hex[FINCH_SHA256_HEX_LEN], finch_err *err) {
  if (sha256_hex) sha256_hex[0] = '\0';
  if (!s) return FINCH_OK;
  finch_status st = FINCH_OK;
  if (s->failed) st = finch_err_set(err, s->err.code, "%s", s->err.msg);
  /* Complete only when the caller got to the end: the raw input ended and
   * the codec drained it (a gzip member still open would have failed). */
  int complete = !s->failed && s->raw_eof &&
                 (s->codec == SOURCE_CODEC_PLAIN ? s->in_pos == s->in_len
                                                 : s->codec == SOURCE_CODEC_GZIP && s->member_done &&
                                                       s->zs.avail_in == 0);
  char hex[FINCH_SHA256_HEX_LEN];
  finch_sha256_final(s->sha, hex);
  s->sha = NULL;
  if (sha256_hex && complete) memcpy(sha256_hex, hex, sizeof hex);
  source_free(s);
  return st;
}
