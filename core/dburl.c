#include "core/dburl.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct {
  char *buf;
  size_t n, len;
} out_buf;

static void put(out_buf *o, const char *s, size_t k) {
  for (size_t i = 0; i < k && o->len + 1 < o->n; i++) o->buf[o->len++] = s[i];
  o->buf[o->len] = '\0';
}

/* Length of a URI scheme prefix "postgresql://" or "postgres://" at s, else 0. */
static size_t scheme_at(const char *s) {
  if (strncasecmp(s, "postgresql://", 13) == 0) return 13;
  if (strncasecmp(s, "postgres://", 11) == 0) return 11;
  return 0;
}

/* At s (just after the scheme): copies the authority with its password
 * masked; returns the bytes consumed. */
static size_t mask_authority(const char *s, out_buf *o) {
  size_t end = strcspn(s, "/?# \t\n\"'");
  const char *at = NULL;
  for (size_t i = 0; i < end; i++)
    if (s[i] == '@') at = s + i;
  if (!at) {
    put(o, s, end);
    return end;
  }
  const char *colon = memchr(s, ':', (size_t)(at - s));
  if (!colon) {
    put(o, s, end);
    return end;
  }
  put(o, s, (size_t)(colon - s) + 1);
  put(o, FINCH_DB_PASSWORD_MASK, strlen(FINCH_DB_PASSWORD_MASK));
  put(o, at, (size_t)(s + end - at));
  return end;
}

/* 1 when "password" at s is a key: at the start, or after a blank, '?' or '&'. */
static int password_key_at(const char *text, const char *s) {
  if (strncasecmp(s, "password", 8) != 0) return 0;
  if (s > text && !strchr(" \t\n?&", s[-1])) return 0;
  const char *p = s + 8;
  while (*p == ' ' || *p == '\t') p++;
  return *p == '=';
}

/* At s ("password ... = value"): copies the key and '=' and masks the value;
 * returns the bytes consumed. In a URI query (in_query) the value ends at
 * '&', '#' or a blank; in a conninfo at a blank, or it is quoted. */
static size_t mask_password_value(const char *s, int in_query, out_buf *o) {
  const char *eq = strchr(s, '=');
  const char *v = eq + 1;
  if (!in_query)
    while (*v == ' ' || *v == '\t') v++;
  put(o, s, (size_t)(v - s));
  const char *e = v;
  if (!in_query && *e == '\'') {
    for (e++; *e && *e != '\''; e++)
      if (*e == '\\' && e[1]) e++;
    if (*e == '\'') e++;
  } else {
    e += strcspn(e, in_query ? "&# \t\n" : " \t\n");
  }
  put(o, FINCH_DB_PASSWORD_MASK, strlen(FINCH_DB_PASSWORD_MASK));
  return (size_t)(e - s);
}

void finch_db_url_masked(const char *text, char *buf, size_t n) {
  if (!n) return;
  out_buf o = {buf, n, 0};
  buf[0] = '\0';
  if (!text) return;
  int in_query = 0; /* inside a URI's query part, where '&' separates parameters */
  for (const char *s = text; *s;) {
    size_t k = scheme_at(s);
    if (k) {
      put(&o, s, k);
      s += k;
      s += mask_authority(s, &o);
      in_query = 0;
      continue;
    }
    if (password_key_at(text, s)) {
      s += mask_password_value(s, in_query, &o);
      continue;
    }
    if (*s == '?') in_query = 1;
    if (isspace((unsigned char)*s)) in_query = 0;
    put(&o, s, 1);
    s++;
  }
}
