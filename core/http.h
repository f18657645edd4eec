/* Retry decisions shared by finch's HTTP clients (core/source_http.c for
 * downloads, distill/external.c for teacher endpoints): which failures are
 * transient, and how long a server asks us to wait. */
#ifndef FINCH_CORE_HTTP_H
#define FINCH_CORE_HTTP_H

#include <curl/curl.h>
#include <stddef.h>

/* 1 for libcurl failures that a later attempt may not meet: resets, timeouts,
 * refused or broken connections, empty replies. */
int finch_http_retryable_curl(CURLcode rc);

/* 1 for HTTP statuses worth retrying: 429 and 5xx. */
int finch_http_retryable_status(long status);

/* When header line (n bytes, not NUL-terminated, as libcurl's header
 * callback gets it) is "Retry-After: <seconds>", returns the seconds, at most
 * cap; 0 for an HTTP date or a value that is not positive (the caller's own
 * backoff applies); -1 when the line is some other header. */
long finch_http_retry_after(const char *line, size_t n, long cap);

#endif
