/* Input sources as a FILE *: a local path, "-" (standard input), file://
 * URLs and http(s):// URLs streamed with libcurl. gzip input is detected by
 * its magic bytes and decompressed on the fly (zlib), whatever the name.
 *
 * HTTP: redirects followed (at most 10), connect and low-speed timeouts,
 * retries with exponential backoff and jitter on 5xx, 429 and connection
 * resets; an interrupted transfer resumes with a Range request from the
 * last byte delivered, so no byte is read twice. 4xx (other than 429) fails
 * at once with the status and the URL. */
#ifndef FINCH_CORE_SOURCE_H
#define FINCH_CORE_SOURCE_H

#include <stdio.h>

#include "core/hash.h"
#include "core/status.h"

/* A field <= 0 takes its default, except max_retries: 0 means no retry and
 * only a negative value takes the default. */
typedef struct {
  long connect_timeout_s; /* default 15 */
  long low_speed_time_s;  /* abort a transfer slower than 1 byte/s for this long; default 60 */
  int max_retries;        /* default 5 */
  long backoff_ms;        /* first retry delay, doubled each time; default 500 */
} finch_source_opts;

typedef struct finch_source finch_source;

/* opts may be NULL for the defaults. Fails at once, with a clear message, on
 * a missing or unreadable file and on an HTTP error status. */
finch_status finch_source_open(finch_source **out, const char *uri, const finch_source_opts *opts, finch_err *err);

/* The decompressed byte stream. Owned by the source; valid until close. */
FILE *finch_source_file(finch_source *s);
/* The uri as given, for messages. */
const char *finch_source_name(const finch_source *s);
/* The absolute path or the URL, for lineage. */
const char *finch_source_lineage(const finch_source *s);
/* Size of the raw (possibly compressed) input in bytes, -1 when unknown. */
long long finch_source_size(const finch_source *s);
/* Raw bytes consumed so far (for progress). */
long long finch_source_raw_bytes(const finch_source *s);

/* Closes the source. Returns the first error that happened while reading
 * (a transfer that failed after its retries, corrupt gzip data), which a
 * reader sees only as an early end of file. sha256_hex (may be NULL)
 * receives the SHA-256 of the raw bytes when the whole input was read, ""
 * otherwise. */
finch_status finch_source_close(finch_source *s, char sha256_hex[FINCH_SHA256_HEX_LEN], finch_err *err);

#endif
