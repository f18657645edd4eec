/* Text -> feature rows for the bag-of-n-grams model.
 *
 * A text is normalised with finch_text_normalize(FINCH_TEXT_FOLD) (NFKC, case
 * fold, white space collapsed), typographic apostrophes become ASCII ', and it
 * is split into tokens:
 *   - words: runs of letters, marks, digits and apostrophes (leading and
 *     trailing apostrophes dropped, so quotes are not part of a word);
 *   - placeholders: "<" [letters digits _]+ ">" kept whole, e.g. "<card>";
 *   - CJK ideographs and kana: one token per character (no spaces to split on);
 *   - everything else (punctuation, symbols, spaces) separates tokens.
 * Each token gives feature rows:
 *   - an in-vocabulary word: its vocabulary row in [0, V);
 *   - an out-of-vocabulary word: one hashed row;
 *   - with word_ngrams >= 2: one hashed row per pair of adjacent tokens;
 *   - with maxn > 0: one hashed row per character n-gram, minn <= n <= maxn
 *     code points, of "<" word ">" (not for placeholders).
 * Hashed rows lie in [V, V + buckets). The hash is FNV-1a 64 over the UTF-8
 * bytes with a kind tag, finalised by splitmix64's mixer, so rows are the same
 * on every platform and a model file is portable. With buckets = 0 the hashed
 * rows are absent.
 *
 * A featurizer is immutable once built, so concurrent nn_featurize() calls
 * are safe. */
#ifndef FINCH_NN_FEATURES_H
#define FINCH_NN_FEATURES_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
  uint32_t buckets;
  uint32_t minn, maxn;  /* maxn = 0: no character n-grams */
  uint32_t word_ngrams; /* 1 or 2 */
  uint32_t min_count;   /* vocabulary threshold (build only) */
} nn_feat_config;

typedef struct nn_featurizer nn_featurizer;

enum { NN_TOKEN_WORD = 0, NN_TOKEN_PLACEHOLDER = 1, NN_TOKEN_CJK = 2, NN_TOKEN_SYMBOL = 3 };

typedef struct {
  uint32_t off, len; /* byte span in the normalised text */
  uint32_t kind;     /* NN_TOKEN_* */
} nn_token;

/* Tokens of one text. norm is the normalised text the spans point into. */
typedef struct {
  char *norm;
  nn_token *tok;
  size_t n, cap;
} nn_tokens;

/* A growable list of feature rows. Reused across calls to save allocations. */
typedef struct {
  uint32_t *ids;
  size_t n, cap;
} nn_ids;

/* Normalises and tokenises text into *out, whose previous content is replaced
 * (out must be zeroed before first use). FINCH_EFORMAT for invalid UTF-8. */
finch_status nn_tokenize(const char *text, nn_tokens *out, finch_err *err);
/* As nn_tokenize, with the same words, placeholders and CJK tokens, but each
 * punctuation or symbol code point (including a word's dropped leading and
 * trailing apostrophes) is kept as a token of its own, NN_TOKEN_SYMBOL, in
 * text order; only white space separates silently. The subword tokenizer
 * (nn/tokenizer.h) splits text this way. */
finch_status nn_tokenize_symbols(const char *text, nn_tokens *out, finch_err *err);
void nn_tokens_free(nn_tokens *t);

/* Builds the vocabulary from n texts: words seen at least cfg->min_count
 * times, ordered by count (descending) then bytes, so the order is
 * deterministic. Fails naming the text index on invalid UTF-8. */
finch_status nn_featurizer_build(nn_featurizer **out, const char *const *texts, size_t n,
                                 const nn_feat_config *cfg, finch_err *err);
/* Rebuilds a featurizer from a stored vocabulary (row i = words[i]).
 * Duplicate words are FINCH_EFORMAT. */
finch_status nn_featurizer_from_words(nn_featurizer **out, const char *const *words, size_t n_words,
                                      const nn_feat_config *cfg, finch_err *err);
void nn_featurizer_free(nn_featurizer *f);

const nn_feat_config *nn_featurizer_config(const nn_featurizer *f);
size_t nn_featurizer_n_words(const nn_featurizer *f);
/* Word i (0 <= i < n_words), valid for the featurizer's lifetime. */
const char *nn_featurizer_word(const nn_featurizer *f, size_t i);
/* Vocabulary row of a (normalised) word of len bytes, or -1. */
int64_t nn_featurizer_lookup(const nn_featurizer *f, const char *word, size_t len);
/* Total rows: n_words + buckets. */
size_t nn_featurizer_rows(const nn_featurizer *f);

/* Feature rows of text into out (replacing its content); out must be zeroed
 * before first use and released with nn_ids_free. An empty text gives no
 * rows. tok is scratch (zeroed before first use, freed by the caller) so a
 * loop can reuse it; NULL uses a temporary. */
finch_status nn_featurize(const nn_featurizer *f, const char *text, nn_ids *out, nn_tokens *tok,
                          finch_err *err);
void nn_ids_free(nn_ids *ids);

/* FNV-1a 64 of a kind tag byte followed by len bytes of s, then mixed. */
uint64_t nn_feature_hash(uint8_t tag, const char *s, size_t len);

#endif
