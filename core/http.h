/* What finch's HTTP clients (core/source_http.c for downloads,
 * distill/external_query.c for teacher endpoints, serve/webhook.c for
 * webhook deliveries) share: libcurl's one global initialisation, which
 * failures are transient, and how long a server asks us to wait. */
#ifndef FINCH_CORE_HTTP_H
#define FINCH_CORE_HTTP_H

#include <curl/curl.h>
#include <stddef.h>

#include "core/status.h"

/* libcurl's global initialisation, done once per process whichever thread
 * asks first; every later call returns the first call's outcome. Call it
 * before any other libcurl function. On failure err says "cannot initialise
 * libcurl: <libcurl's text>" (FINCH_EIO). */
finch_status finch_http_global_init(finch_err *err);

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
