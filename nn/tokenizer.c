/* The tokenizer (nn/tokenizer.h): the record, encoding and the blob; the
 * vocabulary is learnt in nn/tokenizer_train.c. */
#include "nn/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "nn/tokenizer_impl.h"

static const char *const SPECIALS[NN_TOK_N_SPECIAL] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};


void nn_tokenizer_free(nn_tokenizer *t) {
  if (!t) return;
  nn_strtab_free(&t->p);
  free(t);
}

int nn__tok_piece_add(nn_tokenizer *t, const char *s, size_t len) {
  uint8_t tag = TAG_INIT;
  if (tab_size(&t->p) < N_FIXED) {
    tag = TAG_SPECIAL;
  } else if (len > 2 && s[0] == '#' && s[1] == '#') {
    tag = TAG_CONT;
    s += 2;
    len -= 2;
  }
  if (tag == TAG_INIT && tab_find(&t->p, TAG_SPECIAL, s, len) >= 0) return 1;
  int added;
  if (tab_add(&t->p, tag, s, len, &added) < 0) return -1;
  if (!added) return 1;
  if (tag != TAG_SPECIAL && len > t->max_body) t->max_body = (uint32_t)len;
  return 0;
}

static void byte_name(char out[7], unsigned b) {
  static const char hex[] = "0123456789ABCDEF";
  memcpy(out, "<0x", 3);
  out[3] = hex[b >> 4];
  out[4] = hex[b & 15];
  out[5] = '>';
  out[6] = '\0';
}

nn_tokenizer *nn__tok_base(uint32_t max_word) {
  nn_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->max_word = max_word;
  for (int i = 0; i < NN_TOK_N_SPECIAL; i++)
    if (nn__tok_piece_add(t, SPECIALS[i], strlen(SPECIALS[i])) != 0) goto fail;
  for (unsigned b = 0; b < NN_TOK_N_BYTE; b++) {
    char name[7];
    byte_name(name, b);
    if (nn__tok_piece_add(t, name, 6) != 0) goto fail;
  }
  return t;
fail:
  nn_tokenizer_free(t);
  return NULL;
}

uint32_t nn_tokenizer_size(const nn_tokenizer *t) { return tab_size(&t->p); }

const char *nn_tokenizer_piece(const nn_tokenizer *t, int32_t id) {
  return id >= 0 && (uint32_t)id < tab_size(&t->p) ? piece_str(&t->p, (uint32_t)id) : NULL;
}

int32_t nn_tokenizer_id(const nn_tokenizer *t, const char *piece) {
  size_t len = strlen(piece);
  if (len > 2 && piece[0] == '#' && piece[1] == '#') return tab_find(&t->p, TAG_CONT, piece + 2, len - 2);
  int32_t id = tab_find(&t->p, TAG_SPECIAL, piece, len);
  return id >= 0 ? id : tab_find(&t->p, TAG_INIT, piece, len);
}

/* ---- encoding ---------------------------------------------------------- */

typedef struct {
  int32_t *ids, *word;
  int n, max;
} enc_out;

static void enc_push(enc_out *e, int32_t id, int32_t word) {
  if (e->n >= e->max) return;
  e->ids[e->n] = id;
  if (e->word) e->word[e->n] = word;
  e->n++;
}

/* Greedy longest-match-first over w[0..len); a position no piece matches
 * gives its character's bytes and matching resumes after it. A placeholder
 * in the vocabulary is the longest match of its own token. */
static void encode_word(const nn_tokenizer *t, const char *w, size_t len, int32_t k, enc_out *e) {
  int greedy = len <= t->max_word;
  size_t start = 0;
  while (start < len && e->n < e->max) {
    uint8_t tag = start ? TAG_CONT : TAG_INIT;
    size_t cl = utf8_len((unsigned char)w[start]);
    size_t end = greedy ? start + t->max_body : start + cl;
    if (end > len) end = len;
    int32_t id = -1;
    for (; end > start; end--) {
      if (end < len && ((unsigned char)w[end] & 0xC0) == 0x80) continue;
      id = tab_find(&t->p, tag, w + start, end - start);
      if (id >= 0 || !greedy) break;
    }
    if (id >= 0) {
      enc_push(e, id, k);
      start = end;
      continue;
    }
    for (size_t b = 0; b < cl && start + b < len; b++) enc_push(e, NN_TOK_BYTE0 + (unsigned char)w[start + b], k);
    start += cl;
  }
}

finch_status nn_tokenizer_words(const nn_tokenizer *t, const char *text, nn_tokens *out, finch_err *err) {
  return nn_tokenize_symbols(text, out, err);
}

int nn_tokenizer_encode(const nn_tokenizer *t, const char *text, int32_t *ids, int32_t *word, int max_len) {
  if (!t || !text || !ids || max_len < 2) return -2;
  nn_tokens tk = {0};
  finch_status st = nn_tokenize_symbols(text, &tk, NULL);
  if (st != FINCH_OK) {
    nn_tokens_free(&tk);
    return st == FINCH_EFORMAT || st == FINCH_EINVAL ? -1 : -2;
  }
  enc_out e = {ids, word, 0, max_len};
  enc_push(&e, NN_TOK_CLS, -1);
  for (size_t k = 0; k < tk.n && e.n < e.max; k++)
    encode_word(t, tk.norm + tk.tok[k].off, tk.tok[k].len, (int32_t)k, &e);
  nn_tokens_free(&tk);
  return e.n;
}

/* ---- serialisation ----------------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

finch_status nn_tokenizer_save(const nn_tokenizer *t, unsigned char **buf, size_t *len, finch_err *err) {
  *buf = NULL;
  *len = 0;
  size_t total = HEADER;
  uint32_t n = nn_tokenizer_size(t);
  for (uint32_t i = 0; i < n; i++) total += 4 + (size_t)piece_len(&t->p, i);
  unsigned char *b = malloc(total);
  if (!b) return finch_err_set(err, FINCH_ENOMEM, "out of memory for a %zu-byte tokenizer blob", total);
  memcpy(b, NN_TOKENIZER_MAGIC, 4);
  put_u32(b + 4, NN_TOKENIZER_VERSION);
  put_u32(b + 8, n);
  put_u32(b + 12, NN_TOK_N_SPECIAL);
  put_u32(b + 16, NN_TOK_N_BYTE);
  put_u32(b + 20, t->max_word);
  size_t at = HEADER;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t plen = piece_len(&t->p, i);
    put_u32(b + at, plen);
    memcpy(b + at + 4, piece_str(&t->p, i), plen);
    at += 4 + (size_t)plen;
  }
  *buf = b;
  *len = total;
  return FINCH_OK;
}

finch_status nn_tokenizer_load(nn_tokenizer **out, const unsigned char *buf, size_t len, finch_err *err) {
  *out = NULL;
  if (len < HEADER)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: %zu bytes, shorter than the %d-byte header", len, HEADER);
  if (memcmp(buf, NN_TOKENIZER_MAGIC, 4) != 0)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: bad magic at offset 0 (expected \"%s\")", NN_TOKENIZER_MAGIC);
  uint32_t version = get_u32(buf + 4), n = get_u32(buf + 8), ns = get_u32(buf + 12), nb = get_u32(buf + 16),
           max_word = get_u32(buf + 20);
  if (version != NN_TOKENIZER_VERSION)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: unsupported version %u at offset 4 (expected %u)", version,
                         NN_TOKENIZER_VERSION);
  if (ns != NN_TOK_N_SPECIAL || nb != NN_TOK_N_BYTE)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: %u specials and %u byte tokens (expected %d and %d)", ns, nb,
                         NN_TOK_N_SPECIAL, NN_TOK_N_BYTE);
  if (max_word < 1 || max_word > 65535)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: max_word %u at offset 20 is out of range 1..65535", max_word);
  if (n < N_FIXED || n > INT32_MAX || (size_t)n > (len - HEADER) / 5)
    return finch_err_set(err, FINCH_EFORMAT,
                         "tokenizer: n_pieces %u at offset 8 does not fit: needs %d..%zu for a %zu-byte blob", n,
                         N_FIXED, (len - HEADER) / 5, len);
  nn_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return finch_err_set(err, FINCH_ENOMEM, "out of memory for the tokenizer");
  t->max_word = max_word;
  finch_status st = FINCH_OK;
  size_t at = HEADER;
  for (uint32_t i = 0; i < n; i++) {
    if (len - at < 4) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u: length at offset %zu runs past the end (%zu bytes)",
                         i, at, len);
      goto out;
    }
    uint32_t plen = get_u32(buf + at);
    if (plen < 1 || plen > MAX_PIECE) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u: length %u at offset %zu is out of range 1..%d", i,
                         plen, at, MAX_PIECE);
      goto out;
    }
    at += 4;
    if (plen > len - at) {
      st = finch_err_set(err, FINCH_EFORMAT,
                         "tokenizer: piece %u: %u bytes at offset %zu run past the end of the %zu-byte blob", i, plen,
                         at, len);
      goto out;
    }
    const char *s = (const char *)buf + at;
    if (memchr(s, '\0', plen) || !finch_utf8_valid(s, plen, NULL)) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u at offset %zu is not NUL-free UTF-8", i, at);
      goto out;
    }
    char want[7];
    const char *fixed = NULL;
    if (i < NN_TOK_N_SPECIAL) {
      fixed = SPECIALS[i];
    } else if (i < N_FIXED) {
      byte_name(want, i - NN_TOK_BYTE0);
      fixed = want;
    }
    if (fixed && (strlen(fixed) != plen || memcmp(fixed, s, plen) != 0)) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u at offset %zu is \"%.*s\", expected \"%s\"", i, at,
                         (int)(plen > 32 ? 32 : plen), s, fixed);
      goto out;
    }
    if (plen == 2 && s[0] == '#' && s[1] == '#') {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u at offset %zu is an empty continuation \"##\"", i,
                         at);
      goto out;
    }
    int rc = nn__tok_piece_add(t, s, plen);
    if (rc < 0) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory loading tokenizer piece %u", i);
      goto out;
    }
    if (rc > 0) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u \"%.*s\" at offset %zu is a duplicate", i,
                         (int)(plen > 32 ? 32 : plen), s, at);
      goto out;
    }
    at += plen;
  }
  if (at != len) st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: %zu trailing bytes after the last piece", len - at);
out:
  if (st != FINCH_OK) {
    nn_tokenizer_free(t);
    return st;
  }
  *out = t;
  return FINCH_OK;
}
