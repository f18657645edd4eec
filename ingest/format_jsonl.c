/* jsonl: one JSON object a line, any length.
 *
 *   text         string, required
 *   label        string or null
 *   dialogue_id  string, number (kept as its decimal text) or null
 *   turn         integer 0..INT_MAX or null
 *   speaker      "user" or "system" (any case) or null
 *   split        "train", "dev" ("val", "validation"), "test" (any case) or null
 *   meta         object (kept as its compact JSON text) or null
 *
 * Other keys are ignored; blank lines are skipped; a UTF-8 byte-order mark
 * before the first line is skipped. Lines are numbered from 1 as in the file.
 *
 * Two parsers. jansson builds a tree of allocations for every line, about
 * 2 us for a short one, which alone would hold a reader to some 450,000 rows/s.
 * So a line is first scanned in place by scan_line, which decodes the
 * top-level strings into one reused buffer and hands nested values (meta, or
 * an ignored key's list) to jansson. It accepts only what jansson accepts and
 * gives up on anything unusual (a syntax error, a \u0000 or an unpaired
 * surrogate, an integer over 18 digits, a real dialogue_id, nesting deeper
 * than JSONL_MAX_DEPTH); the line then goes to json_loadb, whose verdict and
 * error message stand. Both parsers fill the same jl_value slots, and one
 * function turns those into the record, so the two agree by construction
 * except in parsing, which the tests compare line by line. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "ingest/format_impl.h"

enum { JSONL_MAX_DEPTH = 1024 }; /* jansson's own limit is 2048 */

typedef enum { JV_ABSENT, JV_NULL, JV_BOOL, JV_INT, JV_REAL, JV_STRING, JV_ARRAY, JV_OBJECT } jv_kind;

typedef struct {
  jv_kind kind;
  const char *s; /* JV_STRING */
  json_int_t i;  /* JV_INT */
  double d;      /* JV_REAL, from jansson only */
  json_t *obj;   /* JV_OBJECT: borrowed from the line's tree or owned by the reader (meta_obj) */
} jl_value;

/* The keys the format reads, in slot order. */
enum { K_TEXT, K_LABEL, K_DIALOGUE_ID, K_TURN, K_SPEAKER, K_SPLIT, K_META, K_COUNT };
static const char *const jl_keys[K_COUNT] = {"text", "label", "dialogue_id", "turn", "speaker", "split", "meta"};

typedef struct {
  finch_format_reader base;
  FILE *fp; /* not owned */
  char *buf;
  size_t cap;
  long long line;
  int fast; /* try scan_line first (always, but for the tests) */
  /* What the current record's strings point into; released on the next call. */
  char *arena; /* scan_line's decoded strings */
  size_t arena_cap;
  json_t *obj;      /* json_loadb's tree of the line */
  json_t *meta_obj; /* scan_line's parse of the meta value */
  char *meta;       /* meta as compact text */
  char id_buf[40];  /* a numeric dialogue_id as text */
} jsonl_reader;

/* ---- scan_line: the fast path ---- */

typedef struct {
  const unsigned char *p, *end;
  char *out; /* next free byte of the arena */
} jl_scan;

static inline int jl_ws(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void jl_skip_ws(jl_scan *s) {
  while (s->p < s->end && jl_ws(*s->p)) s->p++;
}

/* Length of the valid UTF-8 sequence at p (2..4 bytes, lead byte >= 0x80),
 * 0 when invalid: the rules of jansson's utf8_check_first/utf8_check_full. */
static size_t jl_utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned u = p[0];
  size_t n;
  unsigned v;
  if (u >= 0xC2 && u <= 0xDF) n = 2, v = u & 0x1F;
  else if (u >= 0xE0 && u <= 0xEF) n = 3, v = u & 0x0F;
  else if (u >= 0xF0 && u <= 0xF4) n = 4, v = u & 0x07;
  else return 0;
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    v = (v << 6) | (p[i] & 0x3F);
  }
  if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (n == 3 && v < 0x800) || (n == 4 && v < 0x10000))
    return 0;
  return n;
}

static int jl_hex4(const unsigned char *p, const unsigned char *end, unsigned *out) {
  if (end - p < 4) return 0;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return 0;
    v = v << 4 | d;
  }
  *out = v;
  return 1;
}

static char *jl_put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    *o++ = (char)cp;
  } else if (cp < 0x800) {
    *o++ = (char)(0xC0 | cp >> 6);
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | cp >> 12);
    *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | cp >> 18);
    *o++ = (char)(0x80 | (cp >> 12 & 0x3F));
    *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

/* Decodes the string whose opening quote is at s->p into the arena, NUL-
 * terminated. The decoded bytes and the NUL never outnumber the raw bytes
 * with both quotes, so an arena as long as the line always has room. */
static const char *jl_string(jl_scan *s) {
  const unsigned char *p = s->p + 1, *end = s->end;
  char *o = s->out, *start = o;
  for (;;) {
    const unsigned char *run = p;
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80) p++;
    memcpy(o, run, (size_t)(p - run));
    o += p - run;
    if (p == end || *p < 0x20) return NULL;
    if (*p == '"') break;
    if (*p >= 0x80) {
      size_t n = jl_utf8_len(p, end);
      if (!n) return NULL;
      memcpy(o, p, n);
      o += n;
      p += n;
      continue;
    }
    /* A backslash. */
    if (end - p < 2) return NULL;
    unsigned c = p[1];
    p += 2;
    switch (c) {
    case '"': case '\\': case '/': *o++ = (char)c; break;
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (!jl_hex4(p, end, &cp) || cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return NULL;
      p += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !jl_hex4(p + 2, end, &lo) || lo < 0xDC00 ||
            lo > 0xDFFF)
          return NULL;
        p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      o = jl_put_utf8(o, cp);
      break;
    }
    default: return NULL;
    }
  }
  *o++ = '\0';
  s->out = o;
  s->p = p + 1;
  return start;
}

static int jl_digit(const jl_scan *s) { return s->p < s->end && *s->p >= '0' && *s->p <= '9'; }

/* A JSON number: JV_INT with its value when it has at most 18 digits, JV_REAL
 * (no value) with a fraction or exponent; 0 to give up. */
static int jl_number(jl_scan *s, jl_value *v) {
  int neg = *s->p == '-';
  if (neg) s->p++;
  if (!jl_digit(s)) return 0;
  const unsigned char *digits = s->p;
  if (*s->p == '0') s->p++;
  else
    while (jl_digit(s)) s->p++;
  size_t ndigits = (size_t)(s->p - digits);
  int real = 0;
  if (s->p < s->end && *s->p == '.') {
    s->p++;
    if (!jl_digit(s)) return 0;
    while (jl_digit(s)) s->p++;
    real = 1;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    if (!jl_digit(s)) return 0;
    while (jl_digit(s)) s->p++;
    real = 1;
  }
  if (real) {
    v->kind = JV_REAL;
    return 1;
  }
  if (ndigits > 18) return 0;
  json_int_t x = 0;
  for (size_t i = 0; i < ndigits; i++) x = x * 10 + (digits[i] - '0');
  v->kind = JV_INT;
  v->i = neg ? -x : x;
  return 1;
}

/* A nested list or object: finds its end and lets jansson parse just that.
 * *out gets the tree (caller's) when want is set; otherwise the value is only
 * checked. 0 to give up. */
static int jl_nested(jl_scan *s, int want, json_t **out) {
  const unsigned char *start = s->p, *p = s->p;
  int depth = 0;
  do {
    if (p == s->end) return 0;
    unsigned c = *p++;
    if (c == '{' || c == '[') {
      if (++depth > JSONL_MAX_DEPTH) return 0;
    } else if (c == '}' || c == ']') {
      depth--;
    } else if (c == '"') {
      for (;;) {
        if (p == s->end) return 0;
        if (*p == '"') break;
        if (*p == '\\' && ++p == s->end) return 0;
        p++;
      }
      p++;
    }
  } while (depth > 0);
  json_error_t je;
  json_t *tree = json_loadb((const char *)start, (size_t)(p - start), 0, &je);
  if (!tree) return 0;
  if (want) *out = tree;
  else json_decref(tree);
  s->p = p;
  return 1;
}

/* Parses line[0, len) into v; 1 when done, 0 to hand the line to jansson. */
static int scan_line(jsonl_reader *r, const char *line, size_t len, jl_value *v) {
  if (r->arena_cap < len + 1) {
    size_t cap = r->arena_cap ? r->arena_cap : 4096;
    while (cap < len + 1) cap *= 2;
    char *a = realloc(r->arena, cap);
    if (!a) return 0;
    r->arena = a;
    r->arena_cap = cap;
  }
  jl_scan s = {(const unsigned char *)line, (const unsigned char *)line + len, r->arena};
  jl_skip_ws(&s);
  if (s.p == s.end || *s.p != '{') return 0;
  s.p++;
  jl_skip_ws(&s);
  if (s.p < s.end && *s.p == '}') {
    s.p++;
  } else {
    for (;;) {
      if (s.p == s.end || *s.p != '"') return 0;
      char *key_at = s.out;
      const char *key = jl_string(&s);
      if (!key) return 0;
      int k = 0;
      while (k < K_COUNT && strcmp(key, jl_keys[k]) != 0) k++;
      s.out = key_at; /* the key is not kept */
      jl_skip_ws(&s);
      if (s.p == s.end || *s.p != ':') return 0;
      s.p++;
      jl_skip_ws(&s);
      if (s.p == s.end) return 0;
      jl_value x = {JV_ABSENT, NULL, 0, 0, NULL};
      size_t left = (size_t)(s.end - s.p);
      switch (*s.p) {
      case '"':
        x.kind = JV_STRING;
        if (!(x.s = jl_string(&s))) return 0;
        break;
      case '{':
      case '[':
        x.kind = *s.p == '{' ? JV_OBJECT : JV_ARRAY;
        if (!jl_nested(&s, k == K_META && x.kind == JV_OBJECT, &x.obj)) return 0;
        break;
      case 't':
        if (left < 4 || memcmp(s.p, "true", 4) != 0) return 0;
        s.p += 4, x.kind = JV_BOOL;
        break;
      case 'f':
        if (left < 5 || memcmp(s.p, "false", 5) != 0) return 0;
        s.p += 5, x.kind = JV_BOOL;
        break;
      case 'n':
        if (left < 4 || memcmp(s.p, "null", 4) != 0) return 0;
        s.p += 4, x.kind = JV_NULL;
        break;
      default:
        if (!jl_number(&s, &x)) return 0;
      }
      if (k < K_COUNT) {
        if (k == K_META) { /* a repeated key: the last one counts, as in jansson */
          json_decref(r->meta_obj);
          r->meta_obj = x.obj;
        }
        v[k] = x;
      }
      jl_skip_ws(&s);
      if (s.p < s.end && *s.p == ',') {
        s.p++;
        jl_skip_ws(&s);
        continue;
      }
      if (s.p < s.end && *s.p == '}') {
        s.p++;
        break;
      }
      return 0;
    }
  }
  jl_skip_ws(&s);
  if (s.p != s.end) return 0;
  /* Its decimal text would need strtod's exact rounding: leave it to jansson. */
  if (v[K_DIALOGUE_ID].kind == JV_REAL) return 0;
  return 1;
}

/* ---- the record, from either parser ---- */

static void jl_from_tree(json_t *o, jl_value *v) {
  for (int k = 0; k < K_COUNT; k++) {
    json_t *x = json_object_get(o, jl_keys[k]);
    jl_value *y = &v[k];
    if (!x) continue;
    switch (json_typeof(x)) {
    case JSON_OBJECT: y->kind = JV_OBJECT, y->obj = x; break;
    case JSON_ARRAY: y->kind = JV_ARRAY; break;
    case JSON_STRING: y->kind = JV_STRING, y->s = json_string_value(x); break;
    case JSON_INTEGER: y->kind = JV_INT, y->i = json_integer_value(x); break;
    case JSON_REAL: y->kind = JV_REAL, y->d = json_real_value(x); break;
    case JSON_TRUE:
    case JSON_FALSE: y->kind = JV_BOOL; break;
    case JSON_NULL: y->kind = JV_NULL; break;
    }
  }
}

#define JSONL_BAD(fld, ...)                                                                        \
  do {                                                                                             \
    char what_[256];                                                                               \
    snprintf(what_, sizeof what_, __VA_ARGS__);                                                    \
    *field = (fld);                                                                                \
    finch_err_set(err, FINCH_EFORMAT, "%s:%lld: %s", base->name, r->line, what_);                  \
    return -1;                                                                                     \
  } while (0)

/* A string-or-null field: 0 with *out set (NULL when absent or null), -1 for
 * another type. */
static int jl_opt_string(const jl_value *v, const char **out) {
  *out = v->kind == JV_STRING ? v->s : NULL;
  return v->kind == JV_STRING || v->kind == JV_NULL || v->kind == JV_ABSENT ? 0 : -1;
}

static int jl_record(jsonl_reader *r, const jl_value *v, finch_record *rec, const char **field, finch_err *err) {
  finch_format_reader *base = &r->base;
  if (v[K_TEXT].kind == JV_ABSENT) JSONL_BAD("text", "missing field text");
  if (v[K_TEXT].kind != JV_STRING) JSONL_BAD("text", "field text is not a string");
  rec->text = v[K_TEXT].s;

  if (jl_opt_string(&v[K_LABEL], &rec->label)) JSONL_BAD("label", "field label is not a string");

  const jl_value *id = &v[K_DIALOGUE_ID];
  if (id->kind == JV_STRING) {
    rec->dialogue_id = id->s;
  } else if (id->kind == JV_INT) {
    snprintf(r->id_buf, sizeof r->id_buf, "%" JSON_INTEGER_FORMAT, id->i);
    rec->dialogue_id = r->id_buf;
  } else if (id->kind == JV_REAL) {
    snprintf(r->id_buf, sizeof r->id_buf, "%.17g", id->d);
    rec->dialogue_id = r->id_buf;
  } else if (id->kind != JV_NULL && id->kind != JV_ABSENT) {
    JSONL_BAD("dialogue_id", "field dialogue_id is not a string or number");
  }

  const jl_value *turn = &v[K_TURN];
  if (turn->kind == JV_INT) {
    if (turn->i < 0 || turn->i > INT_MAX)
      JSONL_BAD("turn", "field turn is out of range: %" JSON_INTEGER_FORMAT, turn->i);
    rec->turn = (int)turn->i;
  } else if (turn->kind != JV_NULL && turn->kind != JV_ABSENT) {
    JSONL_BAD("turn", "field turn is not an integer");
  }

  const char *s;
  if (jl_opt_string(&v[K_SPEAKER], &s)) JSONL_BAD("speaker", "field speaker is not a string");
  if (s) {
    if (strcasecmp(s, "user") == 0) rec->speaker = "user";
    else if (strcasecmp(s, "system") == 0) rec->speaker = "system";
    else JSONL_BAD("speaker", "unknown speaker '%.64s' (expected user or system)", s);
  }

  if (jl_opt_string(&v[K_SPLIT], &s)) JSONL_BAD("split", "field split is not a string");
  if (s) {
    if (strcasecmp(s, "train") == 0) rec->split = "train";
    else if (strcasecmp(s, "dev") == 0 || strcasecmp(s, "val") == 0 || strcasecmp(s, "validation") == 0)
      rec->split = "dev";
    else if (strcasecmp(s, "test") == 0) rec->split = "test";
    else JSONL_BAD("split", "unknown split '%.64s' (expected train, dev or test)", s);
  }

  const jl_value *meta = &v[K_META];
  if (meta->kind == JV_OBJECT) {
    r->meta = json_dumps(meta->obj, JSON_COMPACT);
    if (!r->meta) {
      *field = "meta";
      finch_err_set(err, FINCH_ENOMEM, "%s:%lld: out of memory", base->name, r->line);
      return -1;
    }
    rec->meta_json = r->meta;
  } else if (meta->kind != JV_NULL && meta->kind != JV_ABSENT) {
    JSONL_BAD("meta", "field meta is not an object");
  }
  return 1;
}

static int jl_blank(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!jl_ws((unsigned char)p[i])) return 0;
  return 1;
}

static int jsonl_next(finch_format_reader *base, finch_record *rec, const char **field, finch_err *err) {
  jsonl_reader *r = (jsonl_reader *)base;
  json_decref(r->obj);
  r->obj = NULL;
  json_decref(r->meta_obj);
  r->meta_obj = NULL;
  free(r->meta);
  r->meta = NULL;

  char *p;
  size_t len;
  for (;;) {
    ssize_t n = getline(&r->buf, &r->cap, r->fp);
    /* A read error may end a line early: that is not the line. */
    if (n < 0 || (r->buf[n - 1] != '\n' && ferror(r->fp))) {
      if (!ferror(r->fp)) return 0;
      rec->line = r->line + 1;
      finch_err_set(err, FINCH_EIO, "%s:%lld: read error", base->name, rec->line);
      return -2;
    }
    p = r->buf;
    len = (size_t)n;
    if (++r->line == 1 && len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3, len -= 3;
    if (!jl_blank(p, len)) break;
  }
  rec->line = r->line;
  /* Without its line end, so that jansson's column is on this line. */
  while (len && (p[len - 1] == '\n' || p[len - 1] == '\r')) len--;

  jl_value v[K_COUNT] = {0};
  if (!r->fast || !scan_line(r, p, len, v)) {
    memset(v, 0, sizeof v);
    json_decref(r->meta_obj);
    r->meta_obj = NULL;
    json_error_t je;
    r->obj = json_loadb(p, len, 0, &je);
    if (!r->obj) JSONL_BAD("record", "invalid JSON: %s (column %d)", je.text, je.column);
    if (!json_is_object(r->obj)) JSONL_BAD("record", "expected a JSON object");
    jl_from_tree(r->obj, v);
  }
  return jl_record(r, v, rec, field, err);
}

static void jsonl_free(finch_format_reader *base) {
  jsonl_reader *r = (jsonl_reader *)base;
  json_decref(r->obj);
  json_decref(r->meta_obj);
  free(r->meta);
  free(r->arena);
  free(r->buf);
  free(r);
}

finch_status finch_format__jsonl_open(finch_format_reader **out, FILE *fp, const char *name,
                                      const finch_format_opts *opts, finch_err *err) {
  (void)opts;
  (void)name;
  *out = NULL;
  jsonl_reader *r = calloc(1, sizeof *r);
  if (!r) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  r->base.next = jsonl_next;
  r->base.free = jsonl_free;
  r->fp = fp;
  r->fast = 1;
  *out = &r->base;
  return FINCH_OK;
}

void finch_format__jsonl_set_fast(finch_format_reader *base, int on) {
  if (base && base->next == jsonl_next) ((jsonl_reader *)base)->fast = on;
}
