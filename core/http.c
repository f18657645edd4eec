#include "core/http.h"

#include <pthread.h>
#include <strings.h>

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static CURLcode http_init_rc = CURLE_OK;

static void http_init(void) { http_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

finch_status finch_http_global_init(finch_err *err) {
  pthread_once(&http_once, http_init);
  if (http_init_rc == CURLE_OK) return FINCH_OK;
  return finch_err_set(err, FINCH_EIO, "cannot initialise libcurl: %s", curl_easy_strerror(http_init_rc));
}

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
