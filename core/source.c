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
#include "core/source_internal.h"

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

static const finch_source_opts source_defaults = {
    .connect_timeout_s = 15, .low_speed_time_s = 60, .max_retries = 5, .backoff_ms = 500};

int source__fail(finch_source *s, finch_status code, const char *fmt, ...) {
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

/* --- raw input and codecs ------------------------------------------------ */

/* Reads up to cap raw bytes: > 0, 0 at the end, -1 on error (recorded). */
static ssize_t source_raw_read(finch_source *s, unsigned char *dst, size_t cap) {
  if (s->failed) return -1;
  if (s->raw_eof) return 0;
  ssize_t n;
  if (s->kind == SOURCE_HTTP) {
    n = source__http_read(s, dst, cap);
  } else {
    do n = read(s->fd, dst, cap);
    while (n < 0 && errno == EINTR);
    if (n < 0) return source__fail(s, FINCH_EIO, "%s: %s", s->name, strerror(errno));
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
      return source__fail(s, rc == Z_MEM_ERROR ? FINCH_ENOMEM : FINCH_EINTERNAL, "%s: inflateInit2 failed (%d)",
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
        source__fail(s, FINCH_EFORMAT, "%s: corrupt gzip data: unexpected end of input", s->name);
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
      return source__fail(s, FINCH_ENOMEM, "%s: out of memory while inflating", s->name);
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) { /* Z_BUF_ERROR: needs more input */
      return source__fail(s, FINCH_EFORMAT, "%s: corrupt gzip data: %s", s->name,
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
  source__http_free(s->http);
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
    s->lineage = source__http_display_url(uri);
    if (!s->lineage) {
      st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", uri);
      goto out;
    }
    st = source__http_open(s, uri, &o, err);
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
