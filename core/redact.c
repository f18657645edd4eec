#include "core/redact.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FINCH_SOURCE_DIR
#error "FINCH_SOURCE_DIR must be defined (finch_core defines it)"
#endif

/* The built-in rules; the environment variable FINCH_PII_RULES names another file. */
#define RULES_BUILTIN FINCH_SOURCE_DIR "/core/pii_rules.conf"

enum { V_NONE, V_LUHN, V_MOD97, V_SSN, V_COUNT };
static const char *const validator_names[V_COUNT] = {"none", "luhn", "mod97", "ssn"};

/* Every pattern is compiled as "(?:pattern)(?C<CALLOUT_BASE + validator>)", so
 * the validator runs inside the match: a candidate that fails it (or overlaps a
 * span already redacted) makes PCRE2 backtrack and try the other candidates at
 * that place, e.g. an IBAN without the word that happened to follow it. */
#define CALLOUT_BASE 250

/* Verdicts of a validator. */
enum { CHECK_FAIL, CHECK_PASS, CHECK_KEEP /* fails, and shields the span from later rules */ };

#define TYPE_NAME_MAX 31
#define NEEDS_MAX 15
#define SPAN_KEEP ((size_t)-1)

typedef struct {
  char name[TYPE_NAME_MAX + 1];      /* "card" */
  char placeholder[TYPE_NAME_MAX + 3]; /* "<CARD>" */
  size_t placeholder_len;
} rtype;

typedef struct {
  pcre2_code *code;
  int jit; /* 1 when JIT compilation succeeded; else the interpreter runs it */
  size_t type;
  unsigned min_digits;       /* pre-filter: skip texts with fewer ASCII digits */
  char needs[NEEDS_MAX + 1]; /* pre-filter: skip texts lacking one of these bytes */
  char *where;               /* "file:line", for match-time errors */
} rule;

/* A byte range of the current text that a rule redacted (type) or shielded (SPAN_KEEP). */
typedef struct {
  size_t start, end, type;
} span;

struct finch_redactor {
  rule *rules;
  size_t n_rules, cap_rules;
  rtype *types;
  size_t n_types, cap_types;
  pcre2_match_context *mctx;
  pcre2_match_data *md;
  pcre2_jit_stack *jit_stack;
  /* Per-call state: spans of the text being redacted, sorted by start, disjoint. */
  span *spans;
  size_t n_spans, cap_spans;
  int oom; /* set by the callout when it could not record a span */
};

static const char *const builtin_types[] = {"card", "iban", "email", "phone", "ssn", "account"};

/* ---- validators ---------------------------------------------------------- */

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alpha(int c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

/* Luhn over the ASCII digits of s; strict: anything but digits, spaces and dashes fails. */
static int luhn_check(const char *s, size_t len, int strict) {
  unsigned sum = 0, n = 0;
  for (size_t i = len; i-- > 0;) {
    int c = (unsigned char)s[i];
    if (!is_digit(c)) {
      if (strict && c != ' ' && c != '-') return 0;
      continue;
    }
    unsigned d = (unsigned)(c - '0');
    if (n++ & 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return n >= 2 && sum % 10 == 0;
}

int finch_luhn_valid(const char *s, size_t len) { return luhn_check(s, len, 1); }

/* IBAN lengths per country: the SWIFT IBAN registry, plus the countries that
 * use IBANs outside it (Algeria, Angola, Benin, ...) as listed by iban.com. */
static const struct {
  char cc[3];
  unsigned char len;
} iban_lengths[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AO", 25}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
    {"BF", 28}, {"BG", 22}, {"BH", 22}, {"BI", 27}, {"BJ", 28}, {"BR", 29}, {"BY", 28}, {"CF", 27},
    {"CG", 27}, {"CH", 21}, {"CI", 28}, {"CM", 27}, {"CR", 22}, {"CV", 25}, {"CY", 28}, {"CZ", 24},
    {"DE", 22}, {"DJ", 27}, {"DK", 18}, {"DO", 28}, {"DZ", 26}, {"EE", 20}, {"EG", 29}, {"ES", 24},
    {"FI", 18}, {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GA", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23},
    {"GL", 18}, {"GQ", 27}, {"GR", 27}, {"GT", 28}, {"GW", 25}, {"HN", 28}, {"HR", 21}, {"HU", 28},
    {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IR", 26}, {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KM", 27},
    {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21},
    {"LY", 25}, {"MA", 28}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MG", 27}, {"MK", 19}, {"ML", 28},
    {"MN", 20}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"MZ", 25}, {"NE", 28}, {"NI", 28}, {"NL", 18},
    {"NO", 15}, {"OM", 23}, {"PK", 24}, {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24},
    {"RS", 22}, {"RU", 33}, {"SA", 24}, {"SC", 31}, {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24},
    {"SM", 27}, {"SN", 28}, {"SO", 23}, {"ST", 25}, {"SV", 28}, {"TD", 27}, {"TG", 28}, {"TL", 23},
    {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20}, {"YE", 30},
};

static unsigned iban_country_len(char a, char b) {
  for (size_t i = 0; i < sizeof iban_lengths / sizeof iban_lengths[0]; i++)
    if (iban_lengths[i].cc[0] == a && iban_lengths[i].cc[1] == b) return iban_lengths[i].len;
  return 0;
}

/* ISO 13616 over the letters and digits of s (case-insensitive). CHECK_KEEP:
 * a known country and its exact length, but the check fails; strict: anything
 * but letters, digits, spaces and dashes fails. */
static int iban_check(const char *s, size_t len, int strict) {
  char a[35];
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int c = (unsigned char)s[i];
    if (is_digit(c) || is_alpha(c)) {
      if (n == sizeof a - 1) return CHECK_FAIL; /* longer than any IBAN */
      a[n++] = (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    } else if (strict && c != ' ' && c != '-') {
      return CHECK_FAIL;
    }
  }
  if (n < 15 || !is_alpha(a[0]) || !is_alpha(a[1]) || !is_digit(a[2]) || !is_digit(a[3]))
    return CHECK_FAIL;
  if (iban_country_len(a[0], a[1]) != n) return CHECK_FAIL;
  /* Move the first four characters to the end, letters become 10..35, mod 97 must be 1. */
  unsigned rem = 0;
  for (size_t k = 0; k < n; k++) {
    int c = a[(k + 4) % n];
    rem = is_digit(c) ? (rem * 10 + (unsigned)(c - '0')) % 97 : (rem * 100 + (unsigned)(c - 'A' + 10)) % 97;
  }
  unsigned check = (unsigned)(a[2] - '0') * 10 + (unsigned)(a[3] - '0');
  return rem == 1 && check >= 2 && check <= 98 ? CHECK_PASS : CHECK_KEEP;
}

int finch_iban_valid(const char *s, size_t len) { return iban_check(s, len, 1) == CHECK_PASS; }

/* US SSN over the ASCII digits of s: nine of them; area not 000, 666 or 9xx,
 * group not 00, serial not 0000. */
static int ssn_check(const char *s, size_t len) {
  unsigned d[9], n = 0;
  for (size_t i = 0; i < len; i++) {
    int c = (unsigned char)s[i];
    if (!is_digit(c)) continue;
    if (n == 9) return 0;
    d[n++] = (unsigned)(c - '0');
  }
  if (n != 9) return 0;
  unsigned area = d[0] * 100 + d[1] * 10 + d[2], group = d[3] * 10 + d[4];
  unsigned serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
  return area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
}

/* ---- spans ---------------------------------------------------------------- */

/* Index of the first span that ends after pos. */
static size_t span_lower(const finch_redactor *r, size_t pos) {
  size_t lo = 0, hi = r->n_spans;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r->spans[mid].end <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static int span_overlaps(const finch_redactor *r, size_t start, size_t end) {
  size_t i = span_lower(r, start);
  return i < r->n_spans && r->spans[i].start < end;
}

/* Inserts [start, end), which overlaps no span, keeping the list sorted. */
static int span_add(finch_redactor *r, size_t start, size_t end, size_t type) {
  if (r->n_spans == r->cap_spans) {
    size_t cap = r->cap_spans ? r->cap_spans * 2 : 16;
    span *p = realloc(r->spans, cap * sizeof *p);
    if (!p) return 0;
    r->spans = p;
    r->cap_spans = cap;
  }
  size_t i = span_lower(r, start);
  memmove(r->spans + i + 1, r->spans + i, (r->n_spans - i) * sizeof *r->spans);
  r->spans[i] = (span){start, end, type};
  r->n_spans++;
  return 1;
}

/* Runs at the end of every pattern: returns 0 to accept the candidate match,
 * 1 to make PCRE2 backtrack, a negative code to abandon the match. */
static int on_callout(pcre2_callout_block *cb, void *data) {
  finch_redactor *r = data;
  if (cb->callout_string || cb->callout_number < CALLOUT_BASE ||
      cb->callout_number >= CALLOUT_BASE + V_COUNT)
    return 0; /* a callout of the pattern's own */
  size_t start = cb->start_match, end = cb->current_position;
  if (end <= start || span_overlaps(r, start, end)) return 1;
  const char *s = (const char *)cb->subject + start;
  size_t len = end - start;
  switch (cb->callout_number - CALLOUT_BASE) {
  case V_LUHN: return !luhn_check(s, len, 0);
  case V_SSN: return !ssn_check(s, len);
  case V_MOD97: {
    int v = iban_check(s, len, 0);
    if (v == CHECK_KEEP && !span_add(r, start, end, SPAN_KEEP)) {
      r->oom = 1;
      return PCRE2_ERROR_NOMEMORY;
    }
    return v != CHECK_PASS;
  }
  default: return 0;
  }
}

/* ---- loading -------------------------------------------------------------- */

static void rule_free(rule *ru) {
  pcre2_code_free(ru->code);
  free(ru->where);
}

void finch_redactor_free(finch_redactor *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n_rules; i++) rule_free(&r->rules[i]);
  free(r->rules);
  free(r->types);
  free(r->spans);
  pcre2_match_data_free(r->md);
  pcre2_match_context_free(r->mctx);
  pcre2_jit_stack_free(r->jit_stack);
  free(r);
}

/* Index of the type called name (already lower case), adding it when new; SIZE_MAX on ENOMEM. */
static size_t type_get(finch_redactor *r, const char *name) {
  for (size_t i = 0; i < r->n_types; i++)
    if (strcmp(r->types[i].name, name) == 0) return i;
  if (r->n_types == r->cap_types) {
    size_t cap = r->cap_types ? r->cap_types * 2 : 8;
    rtype *p = realloc(r->types, cap * sizeof *p);
    if (!p) return SIZE_MAX;
    r->types = p;
    r->cap_types = cap;
  }
  rtype *t = &r->types[r->n_types];
  size_t n = strlen(name);
  memcpy(t->name, name, n + 1);
  t->placeholder[0] = '<';
  for (size_t i = 0; i < n; i++)
    t->placeholder[i + 1] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 'a' + 'A' : name[i]);
  t->placeholder[n + 1] = '>';
  t->placeholder[n + 2] = '\0';
  t->placeholder_len = n + 2;
  return r->n_types++;
}

static finch_status read_file(const char *path, char **out, size_t *out_len, finch_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return finch_err_set(err, FINCH_EIO, "%s: cannot open rules file: %s", path, strerror(errno));
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf) {
      fclose(f);
      return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory reading rules", path);
    }
    n += fread(buf + n, 1, cap - n - 1, f);
    if (n < cap - 1) break;
    cap *= 2;
    char *p = realloc(buf, cap);
    if (!p) free(buf);
    buf = p;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return finch_err_set(err, FINCH_EIO, "%s: read error", path);
  }
  buf[n] = '\0';
  *out = buf;
  *out_len = n;
  return FINCH_OK;
}

static int is_blank(int c) { return c == ' ' || c == '\t'; }

/* Next blank-separated token of *p: [*tok, *tok + *tok_len); *p moves past it and the blanks after it. */
static void next_token(char **p, char **tok, size_t *tok_len) {
  char *s = *p;
  *tok = s;
  while (*s && !is_blank((unsigned char)*s)) s++;
  *tok_len = (size_t)(s - *tok);
  while (is_blank((unsigned char)*s)) s++;
  *p = s;
}

/* Length of the start-of-pattern option such as (*UCP) or (*LIMIT_MATCH=1000)
 * at p, 0 if there is none. Backtracking verbs such as (*F) or (*COMMIT) are
 * not options: they stay inside the wrapper, where "(*F)a|b" keeps its meaning. */
static size_t pattern_option_len(const char *p, size_t len) {
  static const char *const verbs[] = {"ACCEPT", "FAIL", "F", "COMMIT", "PRUNE", "SKIP", "THEN"};
  if (len < 3 || p[0] != '(' || p[1] != '*') return 0;
  size_t i = 2, name_end = 0;
  for (; i < len && p[i] != ')'; i++) {
    int c = (unsigned char)p[i];
    if (c == '=' && !name_end) name_end = i;
    else if (!(c >= 'A' && c <= 'Z') && !is_digit(c) && c != '_') return 0;
  }
  if (i == len || i == 2) return 0;
  if (!name_end) name_end = i;
  for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++)
    if (strlen(verbs[v]) == name_end - 2 && memcmp(p + 2, verbs[v], name_end - 2) == 0) return 0;
  return i + 1;
}

/* Compiles one rule's pattern; errors carry file:line, PCRE2's message and the offset in the pattern. */
static finch_status compile_rule(rule *ru, const char *pat, size_t plen, int validator, const char *path,
                                 size_t lineno, finch_err *err) {
  int ec;
  PCRE2_SIZE eo;
  PCRE2_UCHAR msg[256];
  /* The pattern on its own first, so that errors and offsets refer to what the file says. */
  pcre2_code *raw = pcre2_compile((PCRE2_SPTR)pat, plen, PCRE2_UTF, &ec, &eo, NULL);
  if (!raw) {
    pcre2_get_error_message(ec, msg, sizeof msg);
    return finch_err_set(err, FINCH_EFORMAT, "%s:%zu: bad pattern at offset %zu: %s", path, lineno,
                         (size_t)eo, (const char *)msg);
  }
  pcre2_code_free(raw);
  /* Start-of-pattern options such as (*UCP) must stay in front of the wrapper.
   * \E ends a \Q quote the pattern may leave open (an isolated \E is ignored). */
  size_t head = 0;
  while (head < plen) {
    size_t k = pattern_option_len(pat + head, plen - head);
    if (!k) break;
    head += k;
  }
  size_t wlen = plen + 32;
  char *wrapped = malloc(wlen);
  if (!wrapped) return finch_err_set(err, FINCH_ENOMEM, "%s:%zu: out of memory", path, lineno);
  int w = snprintf(wrapped, wlen, "%.*s(?:%.*s\\E)(?C%d)", (int)head, pat, (int)(plen - head), pat + head,
                   CALLOUT_BASE + validator);
  ru->code = pcre2_compile((PCRE2_SPTR)wrapped, (PCRE2_SIZE)w, PCRE2_UTF, &ec, &eo, NULL);
  free(wrapped);
  if (!ru->code) {
    pcre2_get_error_message(ec, msg, sizeof msg);
    return finch_err_set(err, FINCH_EFORMAT,
                         "%s:%zu: pattern cannot take a validator callout (a '#' comment in (?x) mode?): %s",
                         path, lineno, (const char *)msg);
  }
  /* Without JIT support (or executable memory) the interpreter runs the rule. */
  ru->jit = pcre2_jit_compile(ru->code, PCRE2_JIT_COMPLETE) == 0;
  return FINCH_OK;
}

/* One line "type validator [digits=N] [needs=S] pattern", already known not to be blank or a comment. */
static finch_status parse_rule(finch_redactor *r, char *p, const char *path, size_t lineno, finch_err *err) {
  char *tok;
  size_t n;
  next_token(&p, &tok, &n);
  char name[TYPE_NAME_MAX + 1];
  if (n == 0 || n > TYPE_NAME_MAX || !is_alpha((unsigned char)tok[0]))
    return finch_err_set(err, FINCH_EFORMAT,
                         "%s:%zu: expected a type name ([A-Za-z][A-Za-z0-9_]*, at most %d characters), "
                         "got '%.*s'",
                         path, lineno, TYPE_NAME_MAX, (int)(n > 40 ? 40 : n), tok);
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)tok[i];
    if (!is_alpha(c) && !is_digit(c) && c != '_')
      return finch_err_set(err, FINCH_EFORMAT, "%s:%zu: bad character '%c' in type name '%.*s'", path, lineno,
                           c, (int)n, tok);
    name[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  }
  name[n] = '\0';

  next_token(&p, &tok, &n);
  int validator = -1;
  for (int v = 0; v < V_COUNT; v++)
    if (strlen(validator_names[v]) == n && memcmp(tok, validator_names[v], n) == 0) validator = v;
  if (validator < 0) {
    if (n == 0)
      return finch_err_set(err, FINCH_EFORMAT,
                           "%s:%zu: expected 'type validator pattern', the line ends after the type", path,
                           lineno);
    return finch_err_set(err, FINCH_EFORMAT,
                         "%s:%zu: unknown validator '%.*s' (expected none, luhn, mod97 or ssn)", path, lineno,
                         (int)(n > 40 ? 40 : n), tok);
  }

  rule ru = {0};
  for (;;) {
    char *save = p;
    next_token(&p, &tok, &n);
    if (n > 7 && memcmp(tok, "digits=", 7) == 0) {
      char *end;
      errno = 0;
      unsigned long d = strtoul(tok + 7, &end, 10);
      if (errno || end != tok + n || !is_digit((unsigned char)tok[7]) || d > 100000)
        return finch_err_set(err, FINCH_EFORMAT, "%s:%zu: bad option '%.*s' (digits=N, N a count of digits)",
                             path, lineno, (int)n, tok);
      ru.min_digits = (unsigned)d;
    } else if (n > 6 && memcmp(tok, "needs=", 6) == 0) {
      size_t k = n - 6;
      if (k > NEEDS_MAX)
        return finch_err_set(err, FINCH_EFORMAT, "%s:%zu: option needs= takes at most %d characters", path,
                             lineno, NEEDS_MAX);
      for (size_t i = 0; i < k; i++)
        if ((unsigned char)tok[6 + i] >= 0x80)
          return finch_err_set(err, FINCH_EFORMAT, "%s:%zu: option needs= takes ASCII characters only", path,
                               lineno);
      memcpy(ru.needs, tok + 6, k);
      ru.needs[k] = '\0';
    } else {
      p = save;
      break;
    }
  }
  size_t plen = strlen(p);
  while (plen && is_blank((unsigned char)p[plen - 1])) plen--;
  if (plen == 0)
    return finch_err_set(err, FINCH_EFORMAT,
                         "%s:%zu: expected 'type validator pattern', the pattern is missing", path, lineno);

  finch_status st = compile_rule(&ru, p, plen, validator, path, lineno, err);
  if (st != FINCH_OK) return st;
  size_t where_len = strlen(path) + 24;
  ru.where = malloc(where_len);
  ru.type = type_get(r, name);
  if (r->n_rules == r->cap_rules) {
    size_t cap = r->cap_rules ? r->cap_rules * 2 : 16;
    rule *q = realloc(r->rules, cap * sizeof *q);
    if (q) {
      r->rules = q;
      r->cap_rules = cap;
    }
  }
  if (!ru.where || ru.type == SIZE_MAX || r->n_rules == r->cap_rules) {
    rule_free(&ru);
    return finch_err_set(err, FINCH_ENOMEM, "%s:%zu: out of memory", path, lineno);
  }
  snprintf(ru.where, where_len, "%s:%zu", path, lineno);
  r->rules[r->n_rules++] = ru;
  return FINCH_OK;
}

static finch_status load_rules(finch_redactor *r, const char *path, finch_err *err) {
  char *buf = NULL;
  size_t len = 0;
  finch_status st = read_file(path, &buf, &len, err);
  if (st != FINCH_OK) return st;
  size_t lineno = 0;
  char *line = buf, *end = buf + len;
  while (st == FINCH_OK && line < end) {
    char *nl = memchr(line, '\n', (size_t)(end - line));
    char *next = nl ? nl + 1 : end;
    if (!nl) nl = end;
    if (nl > line && nl[-1] == '\r') nl--;
    *nl = '\0';
    lineno++;
    if (strlen(line) != (size_t)(nl - line)) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s:%zu: NUL byte in line", path, lineno);
      break;
    }
    char *p = line;
    while (is_blank((unsigned char)*p)) p++;
    if (*p && *p != '#') st = parse_rule(r, p, path, lineno, err);
    line = next;
  }
  free(buf);
  return st;
}

finch_status finch_redactor_open(finch_redactor **out, const char *const *extra, size_t n_extra,
                                 finch_err *err) {
  *out = NULL;
  finch_redactor *r = calloc(1, sizeof *r);
  if (!r) return finch_err_set(err, FINCH_ENOMEM, "out of memory creating the redactor");
  finch_status st = FINCH_OK;
  for (size_t i = 0; i < sizeof builtin_types / sizeof builtin_types[0]; i++)
    if (type_get(r, builtin_types[i]) == SIZE_MAX) st = FINCH_ENOMEM;
  r->mctx = pcre2_match_context_create(NULL);
  r->md = pcre2_match_data_create(1, NULL);
  /* 32 KiB to start, growing to 1 MiB: enough for the backtracking of long texts. */
  r->jit_stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
  if (st != FINCH_OK || !r->mctx || !r->md) {
    finch_redactor_free(r);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory creating the redactor");
  }
  if (r->jit_stack) pcre2_jit_stack_assign(r->mctx, NULL, r->jit_stack);
  pcre2_set_callout(r->mctx, on_callout, r);

  const char *builtin = getenv("FINCH_PII_RULES");
  if (!builtin || !*builtin) builtin = RULES_BUILTIN;
  st = load_rules(r, builtin, err);
  for (size_t i = 0; st == FINCH_OK && i < n_extra; i++) st = load_rules(r, extra[i], err);
  if (st != FINCH_OK) {
    finch_redactor_free(r);
    return st;
  }
  *out = r;
  return FINCH_OK;
}

size_t finch_redactor_n_types(const finch_redactor *r) { return r->n_types; }

const char *finch_redactor_type(const finch_redactor *r, size_t i) {
  return i < r->n_types ? r->types[i].name : NULL;
}

/* ---- redaction ------------------------------------------------------------ */

/* One pass over the text: UTF-8 validity (RFC 3629: no overlongs, surrogates
 * or code points past U+10FFFF), the count of ASCII digits and which ASCII
 * bytes occur (seen, a 128-bit set), for the rules' pre-filters. Returns the
 * offset of the first bad byte, or len. */
static size_t scan_text(const unsigned char *s, size_t len, unsigned *digits, uint64_t seen[2]) {
  unsigned nd = 0;
  uint64_t lo = 0, hi = 0;
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    if (c < 0x80) {
      nd += c - '0' < 10;
      if (c < 64) lo |= (uint64_t)1 << c;
      else hi |= (uint64_t)1 << (c - 64);
      i++;
      continue;
    }
    size_t n;
    unsigned lo2 = 0x80, hi2 = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      if (c == 0xE0) lo2 = 0xA0;
      if (c == 0xED) hi2 = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      if (c == 0xF0) lo2 = 0x90;
      if (c == 0xF4) hi2 = 0x8F;
    } else {
      break;
    }
    if (len - i < n || s[i + 1] < lo2 || s[i + 1] > hi2) break;
    size_t k = 2;
    while (k < n && (s[i + k] & 0xC0) == 0x80) k++;
    if (k < n) break;
    i += n;
  }
  *digits = nd;
  seen[0] = lo;
  seen[1] = hi;
  return i;
}

static int rule_wanted(const rule *ru, unsigned digits, const uint64_t seen[2]) {
  if (digits < ru->min_digits) return 0;
  for (const char *c = ru->needs; *c; c++) {
    unsigned b = (unsigned char)*c;
    if (!(seen[b >> 6] & ((uint64_t)1 << (b & 63)))) return 0;
  }
  return 1;
}

/* Finds every match of ru in text and records it as a span. */
static finch_status run_rule(finch_redactor *r, const rule *ru, const char *text, size_t len,
                             finch_err *err) {
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
  size_t off = 0;
  while (off < len) {
    int rc = ru->jit ? pcre2_jit_match(ru->code, (PCRE2_SPTR)text, len, off, 0, r->md, r->mctx)
                     : pcre2_match(ru->code, (PCRE2_SPTR)text, len, off, PCRE2_NO_UTF_CHECK, r->md, r->mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      if (r->oom) return finch_err_set(err, FINCH_ENOMEM, "out of memory redacting %zu bytes", len);
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      return finch_err_set(err, FINCH_EINTERNAL, "%s: matching failed: %s", ru->where, (const char *)msg);
    }
    size_t s = ov[0], e = ov[1];
    /* The callout has vetted [match start, e); \K can move the reported start
     * (or past e, from inside a lookahead): then skip a character and go on. */
    if (s < e && !span_overlaps(r, s, e)) {
      if (!span_add(r, s, e, ru->type))
        return finch_err_set(err, FINCH_ENOMEM, "out of memory redacting %zu bytes", len);
      off = e;
    } else {
      off = (s > off ? s : off) + 1;
      while (off < len && ((unsigned char)text[off] & 0xC0) == 0x80) off++;
    }
  }
  return FINCH_OK;
}

finch_status finch_redact(finch_redactor *r, const char *text, size_t len, char **out, uint64_t *counts,
                          finch_err *err) {
  *out = NULL;
  if (!text) text = "";
  unsigned digits;
  uint64_t seen[2];
  size_t bad = scan_text((const unsigned char *)text, len, &digits, seen);
  if (bad < len) return finch_err_set(err, FINCH_EFORMAT, "invalid UTF-8 at byte %zu", bad);

  r->n_spans = 0;
  r->oom = 0;
  for (size_t i = 0; i < r->n_rules; i++) {
    const rule *ru = &r->rules[i];
    if (!rule_wanted(ru, digits, seen)) continue;
    finch_status st = run_rule(r, ru, text, len, err);
    if (st != FINCH_OK) return st;
  }

  size_t out_len = len;
  for (size_t i = 0; i < r->n_spans; i++) {
    const span *sp = &r->spans[i];
    if (sp->type != SPAN_KEEP) out_len = out_len - (sp->end - sp->start) + r->types[sp->type].placeholder_len;
  }
  char *res = malloc(out_len + 1);
  if (!res) return finch_err_set(err, FINCH_ENOMEM, "out of memory redacting %zu bytes", len);
  size_t o = 0, at = 0;
  for (size_t i = 0; i < r->n_spans; i++) {
    const span *sp = &r->spans[i];
    if (sp->type == SPAN_KEEP) continue;
    memcpy(res + o, text + at, sp->start - at);
    o += sp->start - at;
    memcpy(res + o, r->types[sp->type].placeholder, r->types[sp->type].placeholder_len);
    o += r->types[sp->type].placeholder_len;
    at = sp->end;
    if (counts) counts[sp->type]++;
  }
  memcpy(res + o, text + at, len - at);
  o += len - at;
  res[o] = '\0';
  *out = res;
  return FINCH_OK;
}
