/* Shared by core/source.c (files, codecs, the FILE *) and
 * core/source_http.c (HTTP transfers). Not part of core's interface. */
#ifndef FINCH_CORE_SOURCE_INTERNAL_H
#define FINCH_CORE_SOURCE_INTERNAL_H

#include <curl/curl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <zlib.h>

#include "core/source.h"

enum {
  SOURCE_BUF_SIZE = 1 << 16,       /* raw read size, and the FILE's buffer */
  SOURCE_MAX_REDIRS = 10,
  SOURCE_MAX_DELAY_MS = 30000,     /* cap on one backoff delay */
  SOURCE_MAX_RETRY_AFTER_S = 60,   /* cap on a server's Retry-After */
  SOURCE_POLL_MS = 1000,           /* curl_multi_poll timeout; curl's own timers still fire */
};

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

/* Records the first reading error; later ones are consequences. Returns -1
 * for the read paths. */
int source__fail(finch_source *s, finch_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* HTTP (core/source_http.c). */
finch_status source__http_open(finch_source *s, const char *url, const finch_source_opts *o, finch_err *err);
ssize_t source__http_read(finch_source *s, unsigned char *dst, size_t cap);
void source__http_free(source_http *h);
/* The URL without user:password@, malloc'd. */
char *source__http_display_url(const char *url);

#endif
