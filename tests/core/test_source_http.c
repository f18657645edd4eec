/* core/source over HTTP against an in-process libmicrohttpd server on
 * 127.0.0.1 (an ephemeral port) whose endpoints misbehave on purpose:
 * errors, redirects, bodies cut short, servers that ignore Range, stalls.
 * Every body read is compared byte for byte, and every SHA-256 against one
 * computed here. Local files, standard input and file:// URLs are in
 * test_source.c. */
#include "core/source.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>

#include "tests/core/source_bodies.h"
#include "tests/test.h"

/* --- helpers --------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* --- the test server --------------------------------------------------------- */

enum { CUT_LEN = 300000, CUT_AT = 100000 };

static const char recovered_body[] = "recovered\n";

static struct {
  struct MHD_Daemon *daemon;
  unsigned port;
  atomic_int stop; /* stalled callbacks give up */
  /* hits per endpoint, reset by the tests that count them */
  atomic_int hits_flaky, hits_503, hits_404, hits_429, hits_cut, hits_norange, hits_slow, hits_changed,
      hits_often;
  atomic_llong cut_range, norange_range, slow_range; /* the Range start last asked for, -1 none */
} srv;

static test_source_bodies bodies;

static void url_of(char *buf, size_t size, const char *path) {
  snprintf(buf, size, "http://127.0.0.1:%u%s", srv.port, path);
}

/* A body served by callback: cut_at > 0 ends it with an error after that
 * many bytes (the connection drops); stall > 0 stalls at stall_at for up to
 * stall seconds. */
typedef struct {
  const unsigned char *data;
  size_t len, cut_at, stall_at;
  int stall;
  size_t piece; /* at most this many bytes per call (0: no limit) */
} cb_body;

static ssize_t cb_read(void *cls, uint64_t pos, char *buf, size_t max) {
  cb_body *b = cls;
  if (b->cut_at && pos >= b->cut_at) return MHD_CONTENT_READER_END_WITH_ERROR;
  if (b->stall && pos >= b->stall_at) {
    for (int i = 0; i < b->stall * 100 && !atomic_load(&srv.stop); i++) sleep_ms(10);
    b->stall = 0;
  }
  if (pos >= b->len) return MHD_CONTENT_READER_END_OF_STREAM;
  size_t end = b->len;
  if (b->cut_at && b->cut_at < end) end = b->cut_at;
  if (b->stall && b->stall_at < end) end = b->stall_at;
  size_t n = end - (size_t)pos;
  if (n > max) n = max;
  if (b->piece && n > b->piece) n = b->piece;
  memcpy(buf, b->data + pos, n);
  return (ssize_t)n;
}

static enum MHD_Result queue_callback_hdr(struct MHD_Connection *c, unsigned status, const unsigned char *data,
                                          size_t len, uint64_t announced, size_t cut_at, size_t stall_at, int stall,
                                          size_t piece, const char *hname, const char *hvalue) {
  cb_body *b = calloc(1, sizeof *b);
  if (!b) return MHD_NO;
  *b = (cb_body){.data = data, .len = len, .cut_at = cut_at, .stall_at = stall_at, .stall = stall, .piece = piece};
  struct MHD_Response *r = MHD_create_response_from_callback(announced, 4096, cb_read, b, free);
  if (!r) {
    free(b);
    return MHD_NO;
  }
  if (hname) MHD_add_response_header(r, hname, hvalue);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result queue_callback(struct MHD_Connection *c, unsigned status, const unsigned char *data,
                                      size_t len, uint64_t announced, size_t cut_at, size_t stall_at, int stall,
                                      size_t piece) {
  return queue_callback_hdr(c, status, data, len, announced, cut_at, stall_at, stall, piece, NULL, NULL);
}

static enum MHD_Result queue_buffer(struct MHD_Connection *c, unsigned status, const void *data, size_t len,
                                    const char *hname, const char *hvalue) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
  if (!r) return MHD_NO;
  if (hname) MHD_add_response_header(r, hname, hvalue);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

/* "bytes=N-" -> N; -1 when there is no Range header. */
static long long range_start(struct MHD_Connection *c) {
  const char *r = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
  if (!r || strncmp(r, "bytes=", 6) != 0) return -1;
  return atoll(r + 6);
}

/* data[from..len) as a 206 (416 past the end). */
static enum MHD_Result queue_range(struct MHD_Connection *c, const unsigned char *data, size_t len,
                                   long long from) {
  if (from >= (long long)len) return queue_buffer(c, 416, "", 0, NULL, NULL);
  char cr[96];
  snprintf(cr, sizeof cr, "bytes %lld-%zu/%zu", from, len - 1, len);
  return queue_buffer(c, 206, data + from, len - (size_t)from, "Content-Range", cr);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_data_size,
                               void **req_cls) {
  (void)cls, (void)method, (void)version, (void)upload_data, (void)upload_data_size, (void)req_cls;
  if (strcmp(url, "/plain") == 0) return queue_buffer(c, 200, test_plain_body, strlen(test_plain_body), NULL, NULL);
  if (strcmp(url, "/big") == 0) return queue_buffer(c, 200, bodies.big, BIG_LEN, NULL, NULL);
  if (strcmp(url, "/data") == 0) return queue_buffer(c, 200, bodies.gz, bodies.gz_len, NULL, NULL);
  if (strcmp(url, "/redirect") == 0) return queue_buffer(c, 302, "moved", 5, "Location", "/plain");
  if (strcmp(url, "/loop") == 0) return queue_buffer(c, 302, "", 0, "Location", "/loop");
  if (strcmp(url, "/chunked") == 0) /* no Content-Length: chunked */
    return queue_callback(c, 200, bodies.big, CUT_LEN, MHD_SIZE_UNKNOWN, 0, 0, 0, 1000);
  if (strcmp(url, "/flaky") == 0) {
    if (atomic_fetch_add(&srv.hits_flaky, 1) < 2) return queue_buffer(c, 500, "oops", 4, NULL, NULL);
    return queue_buffer(c, 200, recovered_body, strlen(recovered_body), NULL, NULL);
  }
  if (strcmp(url, "/always503") == 0) {
    atomic_fetch_add(&srv.hits_503, 1);
    return queue_buffer(c, 503, "busy", 4, NULL, NULL);
  }
  if (strcmp(url, "/429") == 0) {
    if (atomic_fetch_add(&srv.hits_429, 1) < 1) return queue_buffer(c, 429, "slow down", 9, NULL, NULL);
    return queue_buffer(c, 200, test_plain_body, strlen(test_plain_body), NULL, NULL);
  }
  if (strcmp(url, "/cut") == 0) { /* cut on the first try, Range honoured after */
    atomic_store(&srv.cut_range, range_start(c));
    if (atomic_fetch_add(&srv.hits_cut, 1) < 1)
      return queue_callback(c, 200, bodies.big, CUT_LEN, CUT_LEN, CUT_AT, 0, 0, 0);
    long long from = range_start(c);
    if (from > 0) return queue_range(c, bodies.big, CUT_LEN, from);
    return queue_buffer(c, 200, bodies.big, CUT_LEN, NULL, NULL);
  }
  if (strcmp(url, "/cut-norange") == 0) { /* cut on the first try, Range ignored after */
    atomic_store(&srv.norange_range, range_start(c));
    if (atomic_fetch_add(&srv.hits_norange, 1) < 1)
      return queue_callback(c, 200, bodies.big, CUT_LEN, CUT_LEN, CUT_AT, 0, 0, 0);
    return queue_buffer(c, 200, bodies.big, CUT_LEN, NULL, NULL);
  }
  if (strcmp(url, "/slow") == 0) { /* headers, then a stall on the first try */
    atomic_store(&srv.slow_range, range_start(c));
    if (atomic_fetch_add(&srv.hits_slow, 1) < 1)
      return queue_callback(c, 200, bodies.big, CUT_LEN, CUT_LEN, 0, 0, 5, 0);
    return queue_buffer(c, 200, bodies.big, CUT_LEN, NULL, NULL);
  }
  if (strcmp(url, "/changed") == 0) { /* cut, then a new version (another ETag) */
    int first = atomic_fetch_add(&srv.hits_changed, 1) < 1;
    return queue_callback_hdr(c, 200, bodies.big, CUT_LEN, CUT_LEN, first ? CUT_AT : 0, 0, 0, 0, "ETag",
                              first ? "\"v1\"" : "\"v2\"");
  }
  if (strcmp(url, "/cut-often") == 0) { /* every answer (Range honoured) stops after 60000 bytes */
    atomic_fetch_add(&srv.hits_often, 1);
    long long from = range_start(c);
    if (from < 0) from = 0;
    if (from >= CUT_LEN) return queue_buffer(c, 416, "", 0, NULL, NULL);
    char cr[96];
    snprintf(cr, sizeof cr, "bytes %lld-%d/%d", from, CUT_LEN - 1, CUT_LEN);
    size_t rest = CUT_LEN - (size_t)from;
    return queue_callback_hdr(c, from ? 206 : 200, bodies.big + from, rest, rest, rest > 60000 ? 60000 : 0, 0, 0, 0,
                              from ? "Content-Range" : NULL, cr);
  }
  if (strcmp(url, "/stall") == 0) return queue_callback(c, 200, bodies.big, CUT_LEN, CUT_LEN, 0, 10, 4, 0);
  atomic_fetch_add(&srv.hits_404, 1);
  return queue_buffer(c, 404, "not found", 9, NULL, NULL);
}

static int server_start(void) {
  test_bodies_make(&bodies);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  srv.daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
                                handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_END);
  if (!srv.daemon) return 0;
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv.daemon, MHD_DAEMON_INFO_BIND_PORT);
  srv.port = info ? info->port : 0;
  return srv.port != 0;
}

static void server_stop(void) {
  atomic_store(&srv.stop, 1);
  if (srv.daemon) MHD_stop_daemon(srv.daemon);
  test_bodies_free(&bodies);
}
/* --- HTTP tests -------------------------------------------------------------- */

static const finch_source_opts fast_opts = {
    .connect_timeout_s = 5, .low_speed_time_s = 10, .max_retries = 3, .backoff_ms = 5};

static void test_http_plain(void) {
  char url[128], want[FINCH_SHA256_HEX_LEN], sha[FINCH_SHA256_HEX_LEN];
  url_of(url, sizeof url, "/plain");
  finch_err err = {0};
  finch_source *s = NULL;
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_OK);
  if (!s) return;
  CHECK_STR_EQ(finch_source_name(s), url);
  CHECK_STR_EQ(finch_source_lineage(s), url);
  CHECK_INT_EQ(finch_source_size(s), strlen(test_plain_body));
  size_t len;
  unsigned char *body = test_read_all(finch_source_file(s), &len, NULL);
  CHECK_STR_EQ((char *)body, test_plain_body);
  CHECK_INT_EQ(finch_source_raw_bytes(s), strlen(test_plain_body));
  CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
  test_sha_of(test_plain_body, strlen(test_plain_body), want);
  CHECK_STR_EQ(sha, want);
  free(body);
}

static void test_http_big(void) {
  char url[128], want[FINCH_SHA256_HEX_LEN], sha[FINCH_SHA256_HEX_LEN];
  url_of(url, sizeof url, "/big");
  finch_err err = {0};
  finch_source *s = NULL;
  CHECK_INT_EQ(finch_source_open(&s, url, NULL, &err), FINCH_OK);
  if (!s) return;
  CHECK_INT_EQ(finch_source_size(s), BIG_LEN);
  /* Streamed: progress moves while reading, never past what was read plus what is buffered. */
  FILE *fp = finch_source_file(s);
  size_t pos = 0, mismatch = (size_t)-1;
  long long last = 0;
  int monotonic = 1;
  unsigned char buf[7919];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, fp)) > 0) {
    if (pos + k > BIG_LEN) {
      mismatch = pos;
      break;
    }
    if (mismatch == (size_t)-1 && memcmp(buf, bodies.big + pos, k) != 0) mismatch = pos;
    pos += k;
    long long rb = finch_source_raw_bytes(s);
    if (rb < last || rb < (long long)pos) monotonic = 0;
    last = rb;
  }
  CHECK_INT_EQ(pos, BIG_LEN);
  CHECK(mismatch == (size_t)-1);
  CHECK(monotonic);
  CHECK_INT_EQ(finch_source_raw_bytes(s), BIG_LEN);
  CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
  test_sha_of(bodies.big, BIG_LEN, want);
  CHECK_STR_EQ(sha, want);
}

static void test_http_gzip(void) {
  char url[128], want[FINCH_SHA256_HEX_LEN], sha[FINCH_SHA256_HEX_LEN];
  url_of(url, sizeof url, "/data");
  finch_err err = {0};
  finch_source *s = NULL;
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_OK);
  if (!s) return;
  CHECK_INT_EQ(finch_source_size(s), bodies.gz_len);
  size_t len;
  unsigned char *body = test_read_all(finch_source_file(s), &len, NULL);
  CHECK_INT_EQ(len, bodies.gz_text_len); /* both members */
  CHECK(len == bodies.gz_text_len && memcmp(body, bodies.gz_text, len) == 0);
  CHECK_INT_EQ(finch_source_raw_bytes(s), bodies.gz_len);
  CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
  test_sha_of(bodies.gz, bodies.gz_len, want); /* of the raw (compressed) bytes */
  CHECK_STR_EQ(sha, want);
  free(body);
}

static void test_http_redirect(void) {
  char url[128], sha[FINCH_SHA256_HEX_LEN];
  unsigned char *body;
  size_t len;
  finch_err err = {0};
  url_of(url, sizeof url, "/redirect");
  CHECK_INT_EQ(test_fetch(url, &fast_opts, &body, &len, sha, &err), FINCH_OK);
  CHECK_STR_EQ((char *)body, test_plain_body); /* not the 302's own body */
  free(body);

  url_of(url, sizeof url, "/loop");
  finch_source *s = NULL;
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_EIO);
  CHECK(s == NULL);
  CHECK_CONTAINS(err.msg, url);
  CHECK_CONTAINS(err.msg, "redirects");
}

static void test_http_retries(void) {
  char url[128], sha[FINCH_SHA256_HEX_LEN];
  unsigned char *body;
  size_t len;
  finch_err err = {0};

  atomic_store(&srv.hits_flaky, 0);
  url_of(url, sizeof url, "/flaky");
  CHECK_INT_EQ(test_fetch(url, &fast_opts, &body, &len, sha, &err), FINCH_OK);
  CHECK_STR_EQ((char *)body, recovered_body);
  CHECK_INT_EQ(atomic_load(&srv.hits_flaky), 3);
  free(body);

  atomic_store(&srv.hits_429, 0);
  url_of(url, sizeof url, "/429");
  CHECK_INT_EQ(test_fetch(url, &fast_opts, &body, &len, sha, &err), FINCH_OK);
  CHECK_STR_EQ((char *)body, test_plain_body);
  CHECK_INT_EQ(atomic_load(&srv.hits_429), 2);
  free(body);

  /* Always 503: max_retries 2 = 3 attempts, then open fails. */
  atomic_store(&srv.hits_503, 0);
  url_of(url, sizeof url, "/always503");
  finch_source_opts o = fast_opts;
  o.max_retries = 2;
  finch_source *s = NULL;
  double t0 = now_s();
  CHECK_INT_EQ(finch_source_open(&s, url, &o, &err), FINCH_EIO);
  CHECK(s == NULL);
  CHECK_CONTAINS(err.msg, url);
  CHECK_CONTAINS(err.msg, "HTTP 503");
  CHECK_CONTAINS(err.msg, "gave up after 3 attempts");
  CHECK_INT_EQ(atomic_load(&srv.hits_503), 3);
  CHECK(now_s() - t0 < 2.0);

  /* max_retries 0: one attempt. */
  atomic_store(&srv.hits_503, 0);
  o.max_retries = 0;
  CHECK_INT_EQ(finch_source_open(&s, url, &o, &err), FINCH_EIO);
  CHECK_INT_EQ(atomic_load(&srv.hits_503), 1);

  /* 404: fails at once, no retry. */
  atomic_store(&srv.hits_404, 0);
  url_of(url, sizeof url, "/missing");
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_EIO);
  CHECK(s == NULL);
  char want[200];
  snprintf(want, sizeof want, "%s: HTTP 404", url);
  CHECK_STR_EQ(err.msg, want);
  CHECK_INT_EQ(atomic_load(&srv.hits_404), 1);
}

static void test_http_resume(void) {
  char url[128], want[FINCH_SHA256_HEX_LEN], sha[FINCH_SHA256_HEX_LEN];
  test_sha_of(bodies.big, CUT_LEN, want);
  finch_err err = {0};

  /* Cut after CUT_AT bytes, then Range honoured (206). */
  atomic_store(&srv.hits_cut, 0);
  url_of(url, sizeof url, "/cut");
  finch_source *s = NULL;
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_OK);
  if (s) {
    CHECK_INT_EQ(finch_source_size(s), CUT_LEN);
    size_t len;
    unsigned char *body = test_read_all(finch_source_file(s), &len, NULL);
    CHECK_INT_EQ(len, CUT_LEN);
    CHECK(len == CUT_LEN && memcmp(body, bodies.big, CUT_LEN) == 0);
    CHECK_INT_EQ(finch_source_raw_bytes(s), CUT_LEN);
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
    CHECK_STR_EQ(sha, want);
    free(body);
  }
  CHECK_INT_EQ(atomic_load(&srv.hits_cut), 2);
  long long r = atomic_load(&srv.cut_range);
  CHECK(r > 0 && r <= CUT_AT);

  /* Cut, then the server ignores Range (200 with the whole body). */
  atomic_store(&srv.hits_norange, 0);
  url_of(url, sizeof url, "/cut-norange");
  unsigned char *body;
  size_t len;
  CHECK_INT_EQ(test_fetch(url, &fast_opts, &body, &len, sha, &err), FINCH_OK);
  CHECK_INT_EQ(len, CUT_LEN);
  CHECK(len == CUT_LEN && memcmp(body, bodies.big, CUT_LEN) == 0);
  CHECK_STR_EQ(sha, want);
  CHECK_INT_EQ(atomic_load(&srv.hits_norange), 2);
  r = atomic_load(&srv.norange_range);
  CHECK(r > 0 && r <= CUT_AT);
  free(body);

  /* Cut with no retry left: open succeeds, the reader sees an error, close says why. */
  atomic_store(&srv.hits_cut, 0);
  url_of(url, sizeof url, "/cut");
  finch_source_opts o = fast_opts;
  o.max_retries = 0;
  CHECK_INT_EQ(finch_source_open(&s, url, &o, &err), FINCH_OK);
  if (s) {
    int ferr;
    body = test_read_all(finch_source_file(s), &len, &ferr);
    CHECK(ferr);
    CHECK(len <= CUT_AT);
    strcpy(sha, "x");
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_EIO);
    CHECK_CONTAINS(err.msg, url);
    CHECK_CONTAINS(err.msg, "(gave up after 1 attempt)");
    CHECK_STR_EQ(sha, "");
    free(body);
  }

  /* Cut every 60000 bytes: each attempt makes progress, so one retry in a
   * row is enough for five attempts. */
  atomic_store(&srv.hits_often, 0);
  url_of(url, sizeof url, "/cut-often");
  o = fast_opts;
  o.max_retries = 1;
  CHECK_INT_EQ(test_fetch(url, &o, &body, &len, sha, &err), FINCH_OK);
  CHECK(len == CUT_LEN && memcmp(body, bodies.big, CUT_LEN) == 0);
  CHECK_STR_EQ(sha, want);
  CHECK_INT_EQ(atomic_load(&srv.hits_often), 5);
  free(body);

  /* The resource changes between attempts (another ETag): no splice. */
  atomic_store(&srv.hits_changed, 0);
  url_of(url, sizeof url, "/changed");
  CHECK_INT_EQ(test_fetch(url, &fast_opts, &body, &len, sha, &err), FINCH_EIO);
  CHECK_CONTAINS(err.msg, "changed during the transfer");
  CHECK_INT_EQ(atomic_load(&srv.hits_changed), 2);
  free(body);

  /* Stalls after the headers: the low-speed limit (1 s here) ends the
   * attempt (CURLE_OPERATION_TIMEDOUT), and the next one succeeds. Curl
   * averages the speed over the last 5 s, so a stall after some body bytes
   * would take that long to notice. */
  atomic_store(&srv.hits_slow, 0);
  url_of(url, sizeof url, "/slow");
  o = fast_opts;
  o.low_speed_time_s = 1;
  double t0 = now_s();
  CHECK_INT_EQ(test_fetch(url, &o, &body, &len, sha, &err), FINCH_OK);
  CHECK_INT_EQ(len, CUT_LEN);
  CHECK(len == CUT_LEN && memcmp(body, bodies.big, CUT_LEN) == 0);
  CHECK_STR_EQ(sha, want);
  CHECK_INT_EQ(atomic_load(&srv.hits_slow), 2);
  CHECK_INT_EQ(atomic_load(&srv.slow_range), -1); /* nothing to resume from */
  CHECK(now_s() - t0 < 4.0);
  free(body);
}

static void test_http_misc(void) {
  char url[128], sha[FINCH_SHA256_HEX_LEN];
  finch_err err = {0};
  finch_source *s = NULL;

  /* No Content-Length: size unknown, body intact. */
  url_of(url, sizeof url, "/chunked");
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_OK);
  if (s) {
    CHECK_INT_EQ(finch_source_size(s), -1);
    size_t len;
    unsigned char *body = test_read_all(finch_source_file(s), &len, NULL);
    CHECK(len == CUT_LEN && memcmp(body, bodies.big, CUT_LEN) == 0);
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
    CHECK_INT_EQ(strlen(sha), 64);
    free(body);
  }

  /* Closing early: no hang, no error, no hash. */
  url_of(url, sizeof url, "/big");
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_OK);
  if (s) {
    unsigned char buf[100];
    CHECK_INT_EQ(fread(buf, 1, sizeof buf, finch_source_file(s)), sizeof buf);
    CHECK(memcmp(buf, bodies.big, sizeof buf) == 0);
    strcpy(sha, "x");
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
    CHECK_STR_EQ(sha, "");
  }
  url_of(url, sizeof url, "/stall"); /* 10 bytes, then nothing for seconds */
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_OK);
  if (s) {
    unsigned char buf[10];
    CHECK_INT_EQ(fread(buf, 1, sizeof buf, finch_source_file(s)), sizeof buf);
    double t0 = now_s();
    CHECK_INT_EQ(finch_source_close(s, sha, &err), FINCH_OK);
    CHECK(now_s() - t0 < 0.5);
    CHECK_STR_EQ(sha, "");
  }
  /* Opened and closed without a read. */
  url_of(url, sizeof url, "/plain");
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_OK);
  if (s) CHECK_INT_EQ(finch_source_close(s, NULL, &err), FINCH_OK);

  /* Nothing listens: connection refused, retried, then a clear error. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0);
  close(fd); /* bound, never listened: the port refuses */
  snprintf(url, sizeof url, "http://127.0.0.1:%u/x", (unsigned)ntohs(a.sin_port));
  finch_source_opts o = fast_opts;
  o.max_retries = 1;
  CHECK_INT_EQ(finch_source_open(&s, url, &o, &err), FINCH_EIO);
  CHECK_CONTAINS(err.msg, url);
  CHECK_CONTAINS(err.msg, "gave up after 2 attempts");

  /* Credentials stay out of the lineage. */
  snprintf(url, sizeof url, "http://user:secret@127.0.0.1:%u/plain", srv.port);
  CHECK_INT_EQ(finch_source_open(&s, url, &fast_opts, &err), FINCH_OK);
  if (s) {
    char want[128];
    url_of(want, sizeof want, "/plain");
    CHECK_STR_EQ(finch_source_lineage(s), want);
    CHECK_STR_EQ(finch_source_name(s), url);
    finch_source_close(s, NULL, &err);
  }
}

int main(void) {
  if (!server_start()) {
    server_stop();
    TEST_SKIP("cannot start an HTTP server on 127.0.0.1");
  }

  test_http_plain();
  test_http_big();
  test_http_gzip();
  test_http_redirect();
  test_http_retries();
  test_http_resume();
  test_http_misc();

  server_stop();
  TEST_DONE();
}
