#include "serve/rules.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <errno.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char *intent;
  int priority;
  long line;
  char *pattern, *negative; /* source text, for lint */
  uint32_t flags, neg_flags;
  pcre2_code *re, *neg;
} rule;

struct finch_rules {
  char *path;
  rule *rules;
  size_t n;
};

size_t finch_rules_count(const finch_rules *r) { return r->n; }

void finch_rules_free(finch_rules *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++) {
    free(r->rules[i].intent);
    free(r->rules[i].pattern);
    free(r->rules[i].negative);
    pcre2_code_free(r->rules[i].re);
    pcre2_code_free(r->rules[i].neg);
  }
  free(r->rules);
  free(r->path);
  free(r);
}

/* Parses "/.../flags" at *p; the pattern (with \/ turned into /) goes to
 * *out. Returns 0, or -1 with why set. */
static int parse_regex(const char **p, char **out, uint32_t *flags, const char **why) {
  const char *s = *p;
  if (*s != '/') {
    *why = "expected /pattern/";
    return -1;
  }
  s++;
  size_t cap = strlen(s) + 1, o = 0;
  char *buf = malloc(cap);
  if (!buf) {
    *why = "out of memory";
    return -1;
  }
  for (; *s && *s != '/'; s++) {
    if (*s == '\\' && s[1] == '/') s++;
    else if (*s == '\\' && s[1]) buf[o++] = *s++;
    buf[o++] = *s;
  }
  if (*s != '/') {
    free(buf);
    *why = "unterminated pattern (no closing /)";
    return -1;
  }
  buf[o] = '\0';
  s++;
  *flags = PCRE2_UTF;
  for (; *s && !isspace((unsigned char)*s); s++) {
    if (*s == 'i') *flags |= PCRE2_CASELESS;
    else if (*s == 'x') *flags |= PCRE2_EXTENDED;
    else {
      free(buf);
      *why = "unknown flag (i or x)";
      return -1;
    }
  }
  *p = s;
  *out = buf;
  return 0;
}

static pcre2_code *compile(const char *pattern, uint32_t flags, const char *path, long line, finch_err *err) {
  int code;
  PCRE2_SIZE off;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, flags, &code, &off, NULL);
  if (!re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(code, msg, sizeof msg);
    finch_err_set(err, FINCH_EFORMAT, "%s:%ld: bad pattern at offset %zu: %s", path, line, (size_t)off, (char *)msg);
    return NULL;
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter when JIT is unavailable */
  return re;
}

finch_status finch_rules_load(finch_rules **out, const char *path, finch_err *err) {
  *out = NULL;
  FILE *fp = fopen(path, "r");
  if (!fp) return finch_err_set(err, errno == ENOENT ? FINCH_ENOTFOUND : FINCH_EIO, "%s: %s", path, strerror(errno));
  finch_rules *r = calloc(1, sizeof *r);
  if (!r || !(r->path = strdup(path))) {
    fclose(fp);
    finch_rules_free(r);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  char *line = NULL;
  size_t lcap = 0, cap = 0;
  long lineno = 0;
  finch_status st = FINCH_OK;
  while (!st && getline(&line, &lcap, fp) >= 0) {
    lineno++;
    const char *s = line;
    while (isspace((unsigned char)*s)) s++;
    if (!*s || *s == '#') continue;
    rule x = {.line = lineno};
    const char *why = NULL;
    size_t n = strcspn(s, " \t");
    x.intent = strndup(s, n);
    s += n;
    while (*s == ' ' || *s == '\t') s++;
    char *end;
    long pr = strtol(s, &end, 10);
    if (end == s || pr < 0 || pr > 100) why = "expected a priority from 0 to 100 after the intent";
    x.priority = (int)pr;
    s = end;
    while (!why && (*s == ' ' || *s == '\t')) s++;
    if (!why && parse_regex(&s, &x.pattern, &x.flags, &why) == 0) {
      while (*s == ' ' || *s == '\t') s++;
      if (*s == '!') {
        s++;
        parse_regex(&s, &x.negative, &x.neg_flags, &why);
      }
      while (!why && isspace((unsigned char)*s)) s++;
      if (!why && *s) why = "unexpected text after the rule";
    }
    if (!why && x.intent && !*x.intent) why = "missing intent";
    if (why) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s:%ld: %s", path, lineno, why);
    } else if (!(x.re = compile(x.pattern, x.flags, path, lineno, err)) ||
               (x.negative && !(x.neg = compile(x.negative, x.neg_flags, path, lineno, err)))) {
      st = FINCH_EFORMAT;
    } else if (r->n == cap) {
      rule *nr = realloc(r->rules, (cap = cap ? 2 * cap : 64) * sizeof *nr);
      if (!nr) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      else r->rules = nr;
    }
    if (st) {
      free(x.intent), free(x.pattern), free(x.negative);
      pcre2_code_free(x.re), pcre2_code_free(x.neg);
    } else {
      r->rules[r->n++] = x;
    }
  }
  free(line);
  fclose(fp);
  if (!st && r->n == 0) st = finch_err_set(err, FINCH_EFORMAT, "%s: no rules", path);
  if (st) {
    finch_rules_free(r);
    return st;
  }
  *out = r;
  return FINCH_OK;
}

static int matches(const pcre2_code *re, const char *text, size_t len, pcre2_match_data *md) {
  return pcre2_match(re, (PCRE2_SPTR)text, len, 0, 0, md, NULL) >= 0;
}

const char *finch_rules_match(const finch_rules *r, const char *text, size_t len, size_t *rule_out, long *line) {
  pcre2_match_data *md = pcre2_match_data_create(1, NULL);
  if (!md) return NULL;
  const rule *best = NULL;
  size_t bi = 0;
  for (size_t i = 0; i < r->n; i++) {
    const rule *x = &r->rules[i];
    if (best && x->priority <= best->priority) continue;
    if (!matches(x->re, text, len, md)) continue;
    if (x->neg && matches(x->neg, text, len, md)) continue;
    best = x;
    bi = i;
  }
  pcre2_match_data_free(md);
  if (!best) return NULL;
  if (rule_out) *rule_out = bi;
  if (line) *line = best->line;
  return best->intent;
}

size_t finch_rules_lint(const finch_rules *r, FILE *report) {
  size_t problems = 0;
  for (size_t i = 0; i < r->n; i++) {
    const rule *x = &r->rules[i];
    if (x->negative && x->neg_flags == x->flags && strcmp(x->negative, x->pattern) == 0) {
      fprintf(report, "%s:%ld: rule for %s can never fire: its negative pattern is its pattern\n", r->path, x->line,
              x->intent);
      problems++;
    }
    for (size_t j = 0; j < i; j++) {
      const rule *y = &r->rules[j];
      if (y->flags == x->flags && strcmp(y->pattern, x->pattern) == 0 && !y->negative && y->priority >= x->priority) {
        fprintf(report, "%s:%ld: rule for %s can never win: line %ld has the same pattern at priority %d (%s)\n",
                r->path, x->line, x->intent, y->line, y->priority, y->intent);
        problems++;
        break;
      }
    }
  }
  return problems;
}
