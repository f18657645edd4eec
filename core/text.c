#include "core/text.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

int finch_utf8_valid(const char *s, size_t len, size_t *bad_offset) {
  const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
  size_t i = 0;
  while (i < len) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &cp);
    if (n <= 0 || cp < 0) {
      if (bad_offset) *bad_offset = i;
      return 0;
    }
    i += (size_t)n;
  }
  return 1;
}

int finch_cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

size_t finch_str_sort_unique(const char **names, size_t n) {
  if (!n) return 0;
  qsort(names, n, sizeof *names, finch_cmp_str);
  size_t u = 0;
  for (size_t i = 0; i < n; i++)
    if (!u || strcmp(names[u - 1], names[i])) names[u++] = names[i];
  return u;
}

int finch_str_index(const char *const *names, size_t n, const char *s) {
  if (!s || !n) return -1;
  const char *const *hit = bsearch(&s, names, n, sizeof *names, finch_cmp_str);
  return hit ? (int)(hit - names) : -1;
}

static int is_space_cp(utf8proc_int32_t cp) {
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c) return 1;
  utf8proc_category_t c = utf8proc_category(cp);
  return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

static int is_dropped_cp(utf8proc_int32_t cp) {
  utf8proc_category_t c = utf8proc_category(cp);
  /* Controls that STRIPCC leaves, the byte-order mark and zero-width space:
   * invisible, and they would split tokens that look identical. */
  return c == UTF8PROC_CATEGORY_CC || cp == 0xFEFF || cp == 0x200B;
}

/* Printable ASCII (and space) is its own NFKC form, and case-folds to its
 * lower case: such text, by far the most common, skips utf8proc. Anything
 * else, control characters included, takes the general path. */
static int ascii_fast(const char *in, size_t len, int flags, char **out) {
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)in[i] < 0x20 || (unsigned char)in[i] > 0x7e) return 0;
  char *res = malloc(len + 1);
  if (!res) return 0;
  size_t o = 0;
  int pending_space = 0;
  for (size_t i = 0; i < len; i++) {
    char ch = in[i];
    if (ch == ' ') {
      pending_space = o > 0;
      continue;
    }
    if (pending_space) res[o++] = ' ';
    pending_space = 0;
    res[o++] = (flags & FINCH_TEXT_FOLD) && ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
  }
  res[o] = '\0';
  *out = res;
  return 1;
}

finch_status finch_text_normalize(const char *in, size_t len, int flags, char **out, finch_err *err) {
  *out = NULL;
  if (ascii_fast(in, len, flags, out)) return FINCH_OK;
  size_t bad;
  if (!finch_utf8_valid(in, len, &bad))
    return finch_err_set(err, FINCH_EFORMAT, "invalid UTF-8 at byte %zu", bad);
  utf8proc_uint8_t *mapped = NULL;
  int opts = UTF8PROC_COMPOSE | UTF8PROC_COMPAT | UTF8PROC_STRIPCC;
  if (flags & FINCH_TEXT_FOLD) opts |= UTF8PROC_CASEFOLD;
  utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)in, (utf8proc_ssize_t)len, &mapped,
                                    (utf8proc_option_t)opts);
  if (n < 0)
    return finch_err_set(err, FINCH_EFORMAT, "normalisation failed: %s", utf8proc_errmsg(n));
  /* Collapse white space in place; the output is never longer than the input. */
  char *res = malloc((size_t)n + 1);
  if (!res) {
    free(mapped);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory normalising %zu bytes", len);
  }
  size_t o = 0, i = 0;
  int pending_space = 0;
  while (i < (size_t)n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate(mapped + i, n - (utf8proc_ssize_t)i, &cp);
    if (k <= 0) break; /* cannot happen: utf8proc_map emits valid UTF-8 */
    if (is_space_cp(cp)) {
      pending_space = o > 0;
    } else if (!is_dropped_cp(cp)) {
      if (pending_space) res[o++] = ' ';
      pending_space = 0;
      memcpy(res + o, mapped + i, (size_t)k);
      o += (size_t)k;
    }
    i += (size_t)k;
  }
  res[o] = '\0';
  free(mapped);
  *out = res;
  return FINCH_OK;
}
