#include <stdio.h>
#include <string.h>

#include "augment/internal.h"

size_t augment__json_put(char *buf, size_t len, size_t cap, const char *s, size_t n) {
  if (len == (size_t)-1) return len;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char tmp[8];
    size_t k;
    if (c == '"' || c == '\\') {
      tmp[0] = '\\';
      tmp[1] = (char)c;
      k = 2;
    } else if (c < 0x20) {
      k = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", c);
    } else {
      tmp[0] = (char)c;
      k = 1;
    }
    if (len + k + 1 > cap) return (size_t)-1;
    memcpy(buf + len, tmp, k);
    len += k;
  }
  buf[len] = 0;
  return len;
}

size_t augment__json_raw(char *buf, size_t len, size_t cap, const char *s) {
  if (len == (size_t)-1) return len;
  size_t n = strlen(s);
  if (len + n + 1 > cap) return (size_t)-1;
  memcpy(buf + len, s, n + 1);
  return len + n;
}
