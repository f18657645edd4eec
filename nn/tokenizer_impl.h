/* Internal to the tokenizer (nn/tokenizer.c: the record, encoding and the
 * blob; nn/tokenizer_train.c: learning the vocabulary): the record, the
 * limits and the keys of its string tables. */
#ifndef FINCH_NN_TOKENIZER_IMPL_H
#define FINCH_NN_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "nn/strtab.h"
#include "nn/tokenizer.h"

enum {
  MAX_WORD = 100,        /* bytes; longer words skip the longest-match search */
  MAX_PIECE = 1024,      /* bytes, a bound checked on load */
  N_FIXED = NN_TOK_N_SPECIAL + NN_TOK_N_BYTE,
  N_PLACEHOLDERS = 6,
  MIN_VOCAB = N_FIXED + N_PLACEHOLDERS,
  HEADER = 24,
};

/* Key tags. Pieces and the training counts live in string tables
 * (nn/strtab.h) keyed by a head that tells kinds apart, then a body:
 *   TAG_INIT     no head: the key is the word-initial piece itself;
 *   TAG_CONT     "##": the key is the continuation piece itself, "##" and
 *                its body (a word-initial piece never starts with "##" and
 *                more, see piece_add);
 *   TAG_SPECIAL  the byte 0xFF, then the name: specials and byte tokens. No
 *                UTF-8 text holds 0xFF, so text never matches them ("<0x41>"
 *                typed by a user is a placeholder-shaped word, not the byte
 *                0x41);
 *   the training counts' tags: the tag byte, then the counted string.
 * Lookups go by (tag, body) without copying, and the most frequent one, a
 * word-initial piece, hashes the body alone. */
enum {
  TAG_SPECIAL = 0xFF, TAG_INIT = 'i', TAG_CONT = 'c', /* pieces */
  TAG_WORD = 'w', TAG_PH = 'p', TAG_CH_INIT = 'x', TAG_CH_CONT = 'y' /* training counts */
};

struct nn_tokenizer {
  nn_strtab p;       /* piece i = entry i */
  uint32_t max_word; /* bytes */
  uint32_t max_body; /* longest TAG_INIT / TAG_CONT body, bytes */
};

/* ---- keys: tag and body in a string table ------------------------------- */

/* Writes tag's key head into head (2 bytes at most); returns its length. */
static inline size_t key_head(uint8_t tag, char *head) {
  if (tag == TAG_INIT) return 0;
  if (tag == TAG_CONT) {
    head[0] = head[1] = '#';
    return 2;
  }
  head[0] = (char)tag;
  return 1;
}

static inline int32_t tab_find(const nn_strtab *t, uint8_t tag, const char *body, size_t blen) {
  /* A word-initial body never starts with 0xFF, nor with "##" and more:
   * without a head, such a key would be another kind's. */
  if (tag == TAG_INIT && blen > 0 &&
      ((unsigned char)body[0] == TAG_SPECIAL || (blen > 2 && body[0] == '#' && body[1] == '#')))
    return -1;
  char head[2] = {0, 0};
  size_t hl = key_head(tag, head);
  return (int32_t)nn_strtab_find2(t, head, hl, body, blen);
}

/* Index of (tag, body), added when new (*added, may be NULL, says which);
 * -1 on out-of-memory. */
static inline int64_t tab_add(nn_strtab *t, uint8_t tag, const char *body, size_t blen, int *added) {
  char head[2] = {0, 0};
  size_t hl = key_head(tag, head);
  return nn_strtab_add2(t, head, hl, body, blen, added);
}

static inline uint32_t tab_size(const nn_strtab *t) { return (uint32_t)nn_strtab_size(t); }

/* Piece id's string ("##" included), NUL-terminated, and its length: its key
 * less the 0xFF of a special. */
static inline const char *piece_str(const nn_strtab *p, uint32_t id) {
  const char *k = nn_strtab_key(p, id);
  return k + ((unsigned char)k[0] == TAG_SPECIAL);
}
static inline uint32_t piece_len(const nn_strtab *p, uint32_t id) {
  return (uint32_t)nn_strtab_len(p, id) - ((unsigned char)nn_strtab_key(p, id)[0] == TAG_SPECIAL);
}


/* Bytes in the UTF-8 sequence led by c (the text is valid UTF-8). */
static inline size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* Adds piece s[0..len) as id nn_tokenizer_size(t). Ids below N_FIXED are
 * specials and bytes; "##x" is a continuation; the rest word-initial.
 * Returns 0, 1 when the piece already exists (not added), -1 on
 * out-of-memory. */
int nn__tok_piece_add(nn_tokenizer *t, const char *s, size_t len);
/* A tokenizer holding the specials and the byte tokens; NULL when out of memory. */
nn_tokenizer *nn__tok_base(uint32_t max_word);

#endif
