/* BERT WordPiece from tokenizer.json (contract and rules in nn/bert_tokenizer.h).
 *
 * The vocabulary lives in one arena of NUL-terminated tokens in id order,
 * found by an open-addressing table of ids. Encoding works on arrays of code
 * points, one pass per normalisation step, in scratch memory of the call (the
 * handle is never written after loading). */
#include "nn/bert_tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/json.h"

typedef struct {
  char *s;
  size_t len;
  int32_t id;
} bt__added;

struct nn_bert_tok {
  char *path;
  int32_t n;      /* vocabulary size: ids 0..n-1 */
  char *arena;    /* the tokens, NUL-terminated, in id order */
  size_t *off;    /* (n) token id -> offset in arena */
  uint32_t *tlen; /* (n) token id -> bytes */
  int32_t *slot;  /* (mask + 1) id, or -1 for an empty slot */
  uint32_t mask;
  char prefix[32];
  size_t prefix_len;
  int max_chars;
  int clean_text, chinese, strip_accents, lowercase;
  int32_t unk, cls, sep, pad;
  bt__added *added;
  int n_added;
};

static uint64_t bt__hash(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
  return h ^ (h >> 29);
}

int32_t nn_bert_tok_id(const nn_bert_tok_t *t, const char *s, size_t len) {
  for (uint32_t i = (uint32_t)bt__hash(s, len) & t->mask;; i = (i + 1) & t->mask) {
    int32_t id = t->slot[i];
    if (id < 0) return -1;
    if (t->tlen[id] == len && memcmp(t->arena + t->off[id], s, len) == 0) return id;
  }
}

const char *nn_bert_tok_token(const nn_bert_tok_t *t, int32_t id) {
  return id >= 0 && id < t->n ? t->arena + t->off[id] : NULL;
}

void nn_bert_tok_free(nn_bert_tok_t *t) {
  if (!t) return;
  for (int i = 0; i < t->n_added; i++) free(t->added[i].s);
  free(t->added);
  free(t->arena);
  free(t->off);
  free(t->tlen);
  free(t->slot);
  free(t->path);
  free(t);
}

nn_bert_tok_info nn_bert_tok_get_info(const nn_bert_tok_t *t) {
  return (nn_bert_tok_info){t->n, t->unk, t->cls, t->sep, t->pad, t->max_chars,
                            t->clean_text, t->chinese, t->strip_accents, t->lowercase};
}

/* ---- Loading ---- */

static finch_status bt__vocab(nn_bert_tok_t *t, json_t *vocab, finch_err *err) {
  const char *path = t->path;
  if (!json_is_object(vocab) || json_object_size(vocab) == 0)
    return finch_err_set(err, FINCH_EFORMAT, "%s: model.vocab missing, empty or not an object", path);
  size_t n = json_object_size(vocab);
  if (n > (size_t)INT32_MAX / 4)
    return finch_err_set(err, FINCH_EFORMAT, "%s: model.vocab has %zu tokens, too many", path, n);
  const char **keys = calloc(n, sizeof *keys);
  if (!keys) return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory for model.vocab", path);
  finch_status st = FINCH_OK;
  size_t arena_len = 0;
  const char *key;
  json_t *v;
  json_object_foreach(vocab, key, v) {
    if (!json_is_integer(v)) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: model.vocab['%s'] is not an integer", path, key);
      goto out;
    }
    json_int_t id = json_integer_value(v);
    if (id < 0 || (size_t)id >= n) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: model.vocab['%s'] = %lld is outside [0, %zu)", path, key,
                         (long long)id, n);
      goto out;
    }
    if (keys[id]) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: model.vocab: '%s' and '%s' both have id %lld", path, keys[id],
                         key, (long long)id);
      goto out;
    }
    keys[id] = key;
    arena_len += strlen(key) + 1;
  }
  uint32_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  t->n = (int32_t)n;
  t->arena = malloc(arena_len);
  t->off = malloc(n * sizeof *t->off);
  t->tlen = malloc(n * sizeof *t->tlen);
  t->slot = malloc(cap * sizeof *t->slot);
  if (!t->arena || !t->off || !t->tlen || !t->slot) {
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory for %zu tokens", path, n);
    goto out;
  }
  t->mask = cap - 1;
  memset(t->slot, 0xff, cap * sizeof *t->slot);
  size_t at = 0;
  for (size_t id = 0; id < n; id++) {
    size_t len = strlen(keys[id]);
    memcpy(t->arena + at, keys[id], len + 1);
    t->off[id] = at;
    t->tlen[id] = (uint32_t)len;
    at += len + 1;
    uint32_t i = (uint32_t)bt__hash(keys[id], len) & t->mask;
    while (t->slot[i] >= 0) i = (i + 1) & t->mask;
    t->slot[i] = (int32_t)id;
  }
out:
  free(keys);
  return st;
}

/* obj.name as a boolean: def when absent; null gives def too when null_ok. */
static finch_status bt__bool(const char *path, json_t *obj, const char *field, const char *name, int def,
                             int null_ok, int *out, finch_err *err) {
  json_t *v = json_object_get(obj, name);
  if (!v || (null_ok && json_is_null(v))) {
    *out = def;
    return FINCH_OK;
  }
  if (!json_is_boolean(v))
    return finch_err_set(err, FINCH_EFORMAT, "%s: %s.%s is not a boolean", path, field, name);
  *out = json_is_true(v);
  return FINCH_OK;
}

/* The id of a token the configuration names; field says where it was named. */
static finch_status bt__named(const nn_bert_tok_t *t, const char *tok, const char *field, int32_t *out,
                              finch_err *err) {
  *out = nn_bert_tok_id(t, tok, strlen(tok));
  if (*out < 0)
    return finch_err_set(err, FINCH_EFORMAT, "%s: %s '%s' is not in model.vocab", t->path, field, tok);
  return FINCH_OK;
}

/* An id given in the file, checked against the vocabulary. */
static finch_status bt__id(const nn_bert_tok_t *t, json_t *v, const char *field, int32_t *out, finch_err *err) {
  if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= t->n)
    return finch_err_set(err, FINCH_EFORMAT, "%s: %s is not a token id in [0, %d)", t->path, field, (int)t->n);
  *out = (int32_t)json_integer_value(v);
  return FINCH_OK;
}

static finch_status bt__post(nn_bert_tok_t *t, json_t *pp, finch_err *err) {
  const char *path = t->path;
  if (!pp || json_is_null(pp)) {
    finch_status st = bt__named(t, "[CLS]", "post_processor is null and", &t->cls, err);
    return st ? st : bt__named(t, "[SEP]", "post_processor is null and", &t->sep, err);
  }
  const char *type = json_string_value(json_object_get(pp, "type"));
  if (type && strcmp(type, "BertProcessing") == 0) {
    finch_status st = bt__id(t, json_array_get(json_object_get(pp, "cls"), 1), "post_processor.cls[1]", &t->cls, err);
    return st ? st : bt__id(t, json_array_get(json_object_get(pp, "sep"), 1), "post_processor.sep[1]", &t->sep, err);
  }
  if (!type || strcmp(type, "TemplateProcessing") != 0)
    return finch_err_set(err, FINCH_EFORMAT, "%s: post_processor.type '%s' is not read (TemplateProcessing or "
                         "BertProcessing)", path, type ? type : "(missing)");
  json_t *single = json_object_get(pp, "single");
  json_t *first = json_object_get(json_array_get(single, 0), "SpecialToken");
  json_t *seq = json_object_get(json_array_get(single, 1), "Sequence");
  json_t *last = json_object_get(json_array_get(single, 2), "SpecialToken");
  const char *a = json_string_value(json_object_get(first, "id"));
  const char *b = json_string_value(json_object_get(last, "id"));
  const char *s = json_string_value(json_object_get(seq, "id"));
  if (json_array_size(single) != 3 || !a || !b || !s || strcmp(s, "A") != 0)
    return finch_err_set(err, FINCH_EFORMAT, "%s: post_processor.single is not <special> $A <special>", path);
  json_t *sp = json_object_get(pp, "special_tokens");
  json_t *ia = json_object_get(json_object_get(sp, a), "ids");
  json_t *ib = json_object_get(json_object_get(sp, b), "ids");
  if (json_array_size(ia) != 1 || json_array_size(ib) != 1)
    return finch_err_set(err, FINCH_EFORMAT, "%s: post_processor.special_tokens lacks one id for '%s' or '%s'",
                         path, a, b);
  finch_status st = bt__id(t, json_array_get(ia, 0), "post_processor.special_tokens ids", &t->cls, err);
  return st ? st : bt__id(t, json_array_get(ib, 0), "post_processor.special_tokens ids", &t->sep, err);
}

static finch_status bt__added_tokens(nn_bert_tok_t *t, json_t *arr, finch_err *err) {
  if (!arr || json_is_null(arr)) return FINCH_OK;
  if (!json_is_array(arr))
    return finch_err_set(err, FINCH_EFORMAT, "%s: added_tokens is not an array", t->path);
  size_t n = json_array_size(arr);
  t->added = calloc(n ? n : 1, sizeof *t->added);
  if (!t->added) return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory for added_tokens", t->path);
  for (size_t i = 0; i < n; i++) {
    json_t *a = json_array_get(arr, i);
    json_t *content = json_object_get(a, "content");
    if (!json_is_string(content) || json_string_length(content) == 0)
      return finch_err_set(err, FINCH_EFORMAT, "%s: added_tokens[%zu].content missing or empty", t->path, i);
    const char *c = json_string_value(content);
    static const char *const flags[] = {"normalized", "lstrip", "rstrip", "single_word"};
    for (int f = 0; f < 4; f++)
      if (json_is_true(json_object_get(a, flags[f])))
        return finch_err_set(err, FINCH_EFORMAT, "%s: added_tokens[%zu] ('%s'): %s added tokens are not read",
                             t->path, i, c, flags[f]);
    char field[64];
    snprintf(field, sizeof field, "added_tokens[%zu].id", i);
    bt__added *d = &t->added[t->n_added];
    finch_status st = bt__id(t, json_object_get(a, "id"), field, &d->id, err);
    if (st) return st;
    d->len = json_string_length(content);
    if (!(d->s = malloc(d->len))) return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", t->path);
    memcpy(d->s, c, d->len);
    t->n_added++;
  }
  return FINCH_OK;
}

static finch_status bt__config(nn_bert_tok_t *t, json_t *root, finch_err *err) {
  const char *path = t->path;
  if (!json_is_object(root)) return finch_err_set(err, FINCH_EFORMAT, "%s: not a JSON object", path);
  json_t *model = json_object_get(root, "model");
  if (!json_is_object(model)) return finch_err_set(err, FINCH_EFORMAT, "%s: model missing or not an object", path);
  const char *type = json_string_value(json_object_get(model, "type"));
  if (!type || strcmp(type, "WordPiece") != 0)
    return finch_err_set(err, FINCH_EFORMAT, "%s: model.type is '%s'; only WordPiece is read", path,
                         type ? type : "(missing)");
  finch_status st = bt__vocab(t, json_object_get(model, "vocab"), err);
  if (st) return st;

  json_t *v = json_object_get(model, "unk_token");
  if (v && !json_is_string(v)) return finch_err_set(err, FINCH_EFORMAT, "%s: model.unk_token is not a string", path);
  if ((st = bt__named(t, v ? json_string_value(v) : "[UNK]", "model.unk_token", &t->unk, err))) return st;
  v = json_object_get(model, "continuing_subword_prefix");
  const char *prefix = v ? json_string_value(v) : "##";
  if (!prefix || strlen(prefix) >= sizeof t->prefix)
    return finch_err_set(err, FINCH_EFORMAT, "%s: model.continuing_subword_prefix is not a short string", path);
  t->prefix_len = strlen(prefix);
  memcpy(t->prefix, prefix, t->prefix_len + 1);
  v = json_object_get(model, "max_input_chars_per_word");
  t->max_chars = 100;
  if (v) {
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000000)
      return finch_err_set(err, FINCH_EFORMAT, "%s: model.max_input_chars_per_word is not in [1, 1000000]", path);
    t->max_chars = (int)json_integer_value(v);
  }

  json_t *norm = json_object_get(root, "normalizer");
  if (norm && !json_is_null(norm)) {
    const char *nt = json_string_value(json_object_get(norm, "type"));
    if (!nt || strcmp(nt, "BertNormalizer") != 0)
      return finch_err_set(err, FINCH_EFORMAT, "%s: normalizer.type is '%s'; only BertNormalizer is read", path,
                           nt ? nt : "(missing)");
    if ((st = bt__bool(path, norm, "normalizer", "clean_text", 1, 0, &t->clean_text, err)) ||
        (st = bt__bool(path, norm, "normalizer", "handle_chinese_chars", 1, 0, &t->chinese, err)) ||
        (st = bt__bool(path, norm, "normalizer", "lowercase", 1, 0, &t->lowercase, err)) ||
        (st = bt__bool(path, norm, "normalizer", "strip_accents", t->lowercase, 1, &t->strip_accents, err)))
      return st;
  }
  json_t *pre = json_object_get(root, "pre_tokenizer");
  const char *pt = json_string_value(json_object_get(pre, "type"));
  if (!pt || strcmp(pt, "BertPreTokenizer") != 0)
    return finch_err_set(err, FINCH_EFORMAT, "%s: pre_tokenizer.type is '%s'; only BertPreTokenizer is read", path,
                         pt ? pt : "(missing)");
  if ((st = bt__post(t, json_object_get(root, "post_processor"), err))) return st;
  const char *pad = json_string_value(json_object_get(json_object_get(root, "padding"), "pad_token"));
  if ((st = bt__named(t, pad ? pad : "[PAD]", "padding.pad_token", &t->pad, err))) return st;
  return bt__added_tokens(t, json_object_get(root, "added_tokens"), err);
}

finch_status nn_bert_tok_load(const char *path, nn_bert_tok_t **out, finch_err *err) {
  *out = NULL;
  json_t *root;
  finch_status st = finch_json_read_file(path, &root, err);
  if (st) return st;
  nn_bert_tok_t *t = calloc(1, sizeof *t);
  if (!t || !(t->path = strdup(path))) {
    free(t);
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", path);
  } else if ((st = bt__config(t, root, err)) != FINCH_OK) {
    nn_bert_tok_free(t);
  } else {
    *out = t;
  }
  json_decref(root);
  return st;
}

finch_status nn_bert_tok_load_bytes(const char *name, const void *buf, size_t len, nn_bert_tok_t **out,
                                   finch_err *err) {
  *out = NULL;
  json_error_t jerr;
  json_t *root = json_loadb(buf, len, 0, &jerr);
  if (!root)
    return finch_err_set(err, FINCH_EFORMAT, "%s:%d:%d: not valid JSON: %s", name, jerr.line, jerr.column,
                         jerr.text);
  nn_bert_tok_t *t = calloc(1, sizeof *t);
  finch_status st;
  if (!t || !(t->path = strdup(name))) {
    free(t);
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", name);
  } else if ((st = bt__config(t, root, err)) != FINCH_OK) {
    nn_bert_tok_free(t);
  } else {
    *out = t;
  }
  json_decref(root);
  return st;
}

/* ---- Character classes (HF tokenizers: normalizers/bert.rs, pre_tokenizers/bert.rs) ---- */

/* Unicode White_Space, as Rust's char::is_whitespace: the Z[slp] categories
 * plus the C0 controls tab to carriage return and NEL. */
static int bt__is_space(int32_t c) {
  if (c == ' ' || (c >= 9 && c <= 13) || c == 0x85) return 1;
  if (c < 128) return 0;
  utf8proc_category_t k = utf8proc_category(c);
  return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

/* Other, less "not assigned": tab, newline and carriage return count as space. */
static int bt__is_control(int32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return 0;
  if (c >= 32 && c < 127) return 0;
  utf8proc_category_t k = utf8proc_category(c);
  return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CO ||
         k == UTF8PROC_CATEGORY_CS;
}

static int bt__is_punct(int32_t c) {
  if (c < 128) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  utf8proc_category_t k = utf8proc_category(c);
  return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

/* BERT's definition of a CJK ideograph: these blocks, not the Han script
 * (kana and hangul are written with spaces between words). */
static int bt__is_cjk(int32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* ---- Encoding ---- */

typedef struct {
  int32_t *a, *b;  /* code points, ping-ponged between the normalisation steps */
  size_t cap;      /* of a and b */
  uint8_t *u8;     /* UTF-8 of one word or of a piece for NFD, 4 * cap + 32 */
  char *key;       /* prefix + piece, 4 * cap + 64 */
  int32_t *pieces; /* of one word, cap */
} bt__scratch;

static int bt__grow(bt__scratch *s, size_t need) {
  if (need <= s->cap) return 1;
  size_t cap = need + need / 2 + 16;
  int32_t *a = realloc(s->a, cap * sizeof *a), *b = a ? realloc(s->b, cap * sizeof *b) : NULL;
  if (a) s->a = a;
  if (b) s->b = b;
  uint8_t *u8 = b ? realloc(s->u8, 4 * cap + 32) : NULL;
  if (u8) s->u8 = u8;
  char *key = u8 ? realloc(s->key, 4 * cap + 64) : NULL;
  if (key) s->key = key;
  int32_t *p = key ? realloc(s->pieces, cap * sizeof *p) : NULL;
  if (p) s->pieces = p;
  if (!p) return 0;
  s->cap = cap;
  return 1;
}

static size_t bt__utf8(const int32_t *cp, size_t n, uint8_t *out) {
  size_t at = 0;
  for (size_t i = 0; i < n; i++) at += (size_t)utf8proc_encode_char(cp[i], out + at);
  return at;
}

/* Emits one word's WordPiece ids into out[*k..cap). */
static void bt__wordpiece(const nn_bert_tok_t *t, bt__scratch *s, const int32_t *w, size_t wn, int32_t *out,
                          int *k, int cap) {
  size_t np = 0;
  if (wn > (size_t)t->max_chars) goto unk;
  uint8_t *u = s->u8;
  size_t ulen = bt__utf8(w, wn, u), start = 0;
  memcpy(s->key, t->prefix, t->prefix_len);
  while (start < ulen) {
    /* The piece: u[start..end) alone at the start, prefix + u[start..end) after. */
    char *key = start ? s->key : (char *)u + start;
    size_t pre = start ? t->prefix_len : 0;
    if (start) memcpy(s->key + pre, u + start, ulen - start);
    size_t end = ulen;
    int32_t id = -1;
    while (end > start) {
      id = nn_bert_tok_id(t, key, pre + end - start);
      if (id >= 0) break;
      do end--;
      while (end > start && (u[end] & 0xC0) == 0x80);
    }
    if (id < 0) goto unk;
    s->pieces[np++] = id;
    start = end;
  }
  for (size_t i = 0; i < np && *k < cap; i++) out[(*k)++] = s->pieces[i];
  return;
unk:
  if (*k < cap) out[(*k)++] = t->unk;
}

/* Normalises, splits and encodes text[0..len), which holds no added token. */
static finch_status bt__segment(const nn_bert_tok_t *t, bt__scratch *s, const uint8_t *text, size_t len,
                                int32_t *out, int *k, int cap, finch_err *err) {
  /* Decoding and clean_text: at most len code points. Chinese spacing: 3 per. */
  if (!bt__grow(s, 3 * len + 1)) return finch_err_set(err, FINCH_ENOMEM, "bert tokenizer: out of memory");
  size_t n = 0;
  for (size_t i = 0; i < len;) {
    int32_t c;
    utf8proc_ssize_t m = utf8proc_iterate(text + i, (utf8proc_ssize_t)(len - i), &c);
    i += (size_t)m; /* text was validated by the caller */
    if (t->clean_text) {
      if (c == 0 || c == 0xFFFD || bt__is_control(c)) continue;
      if (bt__is_space(c)) c = ' ';
    }
    s->a[n++] = c;
  }
  int32_t *cp = s->a;
  if (t->chinese) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
      if (bt__is_cjk(cp[i])) {
        s->b[m++] = ' ';
        s->b[m++] = cp[i];
        s->b[m++] = ' ';
      } else {
        s->b[m++] = cp[i];
      }
    }
    cp = s->b;
    n = m;
  }
  if (t->strip_accents && n) {
    /* NFD through utf8proc (canonical order included), then drop Mn. */
    size_t ulen = bt__utf8(cp, n, s->u8);
    int32_t *dst = cp == s->a ? s->b : s->a;
    utf8proc_ssize_t m = utf8proc_decompose(s->u8, (utf8proc_ssize_t)ulen, dst, (utf8proc_ssize_t)s->cap,
                                            UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    if (m > (utf8proc_ssize_t)s->cap) {
      /* Rare: more than 3 code points per input one. Grow and decompose again. */
      int32_t *src = malloc(n * sizeof *src);
      if (src) memcpy(src, cp, n * sizeof *src);
      if (!src || !bt__grow(s, (size_t)m)) {
        free(src);
        return finch_err_set(err, FINCH_ENOMEM, "bert tokenizer: out of memory");
      }
      ulen = bt__utf8(src, n, s->u8);
      free(src);
      dst = s->a;
      m = utf8proc_decompose(s->u8, (utf8proc_ssize_t)ulen, dst, (utf8proc_ssize_t)s->cap,
                             UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    }
    if (m < 0)
      return finch_err_set(err, FINCH_EINTERNAL, "bert tokenizer: NFD failed: %s", utf8proc_errmsg(m));
    size_t w = 0;
    for (utf8proc_ssize_t i = 0; i < m; i++)
      if (utf8proc_category(dst[i]) != UTF8PROC_CATEGORY_MN) dst[w++] = dst[i];
    cp = dst;
    n = w;
  }
  /* Lower case, then split and encode word by word. U+0130 (capital I with
   * dot) is the one character whose full lower case is two (i, U+0307); it
   * is met here only when accents are kept. */
  size_t word = 0, wn = 0;
  int32_t *wbuf = cp == s->a ? s->b : s->a;
  for (size_t i = 0; i <= n && *k < cap; i++) {
    int32_t c = i < n ? cp[i] : ' ';
    int split = i == n || bt__is_space(c), punct = !split && bt__is_punct(c);
    if ((split || punct) && wn) {
      bt__wordpiece(t, s, wbuf + word, wn, out, k, cap);
      word += wn;
      wn = 0;
    }
    if (split) continue;
    if (t->lowercase) {
      if (c == 0x130) {
        wbuf[word + wn++] = 'i';
        c = 0x307;
      } else {
        c = utf8proc_tolower(c);
      }
    }
    wbuf[word + wn++] = c;
    if (punct) {
      bt__wordpiece(t, s, wbuf + word, wn, out, k, cap);
      word += wn;
      wn = 0;
    }
  }
  return FINCH_OK;
}

finch_status nn_bert_tok_encode(const nn_bert_tok_t *t, const char *text, size_t len, int max_len, int32_t *ids,
                                int *n, finch_err *err) {
  *n = 0;
  if (max_len < 2) return finch_err_set(err, FINCH_EINVAL, "bert tokenizer: max_len %d < 2", max_len);
  const uint8_t *u = (const uint8_t *)text;
  for (size_t i = 0; i < len;) {
    int32_t c;
    utf8proc_ssize_t m = utf8proc_iterate(u + i, (utf8proc_ssize_t)(len - i), &c);
    if (m < 0) return finch_err_set(err, FINCH_EFORMAT, "bert tokenizer: invalid UTF-8 at byte %zu", i);
    i += (size_t)m;
  }
  bt__scratch s = {0};
  finch_status st = FINCH_OK;
  int k = 0, cap = max_len - 2;
  int32_t *out = ids + 1;
  size_t pos = 0;
  while (pos < len && k < cap) {
    /* The next added token: leftmost, then longest. */
    size_t at = len;
    int best = -1;
    for (size_t i = pos; i < len && best < 0; i++) {
      for (int a = 0; a < t->n_added; a++) {
        const bt__added *d = &t->added[a];
        if (d->len <= len - i && (best < 0 || d->len > t->added[best].len) && memcmp(u + i, d->s, d->len) == 0) {
          at = i;
          best = a;
        }
      }
    }
    if (at > pos && (st = bt__segment(t, &s, u + pos, at - pos, out, &k, cap, err))) break;
    if (best < 0) break;
    if (k < cap) out[k++] = t->added[best].id;
    pos = at + t->added[best].len;
  }
  free(s.a);
  free(s.b);
  free(s.u8);
  free(s.key);
  free(s.pieces);
  if (st) return st;
  ids[0] = t->cls;
  ids[k + 1] = t->sep;
  *n = k + 2;
  return FINCH_OK;
}
