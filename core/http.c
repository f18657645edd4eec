#include "core/http.h"

#include <strings.h>

int finch_http_retryable_curl(CURLcode rc) {
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

int finch_http_retryable_status(long status) { return status == 429 || status >= 500; }

long finch_http_retry_after(const char *line, size_t n, long cap) {
  static const char name[] = "Retry-After:";
  const size_t k = sizeof name - 1;
  if (n < k || strncasecmp(line, name, k) != 0) return -1;
  const char *p = line + k, *end = line + n;
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  long v = 0;
  int digits = 0;
  while (p < end && *p >= '0' && *p <= '9') {
    if (v <= cap) v = v * 10 + (*p - '0');
    p++;
    digits++;
  }
  if (!digits || v <= 0) return 0;
  return v > cap ? cap : v;
}
