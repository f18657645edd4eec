/* BERT's WordPiece tokenizer, read from a Hugging Face tokenizer.json.
 *
 * The tokenizer.json fields read (anything else is ignored):
 *   model.type                       "WordPiece"
 *   model.vocab                      {token: id}; ids 0..N-1, each once
 *   model.unk_token                  default "[UNK]"; must be in the vocabulary
 *   model.continuing_subword_prefix  default "##"
 *   model.max_input_chars_per_word   default 100
 *   normalizer                       null, or "BertNormalizer" with clean_text,
 *                                    handle_chinese_chars, strip_accents (null:
 *                                    follows lowercase) and lowercase
 *   pre_tokenizer                    "BertPreTokenizer"
 *   post_processor                   "TemplateProcessing" whose single template
 *                                    is <special> $A <special>, "BertProcessing",
 *                                    or null ([CLS] and [SEP] from the vocabulary)
 *   padding.pad_token                default "[PAD]"; must be in the vocabulary
 *   added_tokens                     [{content, id, ...}]: matched in the raw
 *                                    text before anything else and kept whole;
 *                                    normalized, lstrip, rstrip and single_word
 *                                    must be false (as for BERT's special tokens)
 * The file's own "truncation" and "padding" lengths are ignored: the caller
 * gives the length to nn_bert_tok_encode.
 *
 * Encoding, as the reference implementation (Hugging Face `tokenizers`) does:
 *   1. The added tokens are cut out of the raw text (leftmost, then longest).
 *   2. BertNormalizer on each remaining piece: clean_text drops U+0000, U+FFFD
 *      and control characters (categories Cc, Cf, Co; tab, newline and
 *      carriage return excepted) and turns white space into ' ';
 *      handle_chinese_chars puts spaces around CJK ideographs (BERT's code
 *      point blocks); strip_accents takes NFD and drops non-spacing marks
 *      (Mn); lowercase maps each character to lower case.
 *   3. BertPreTokenizer splits on white space and isolates every punctuation
 *      character (Unicode P* categories and all ASCII punctuation, `$+<=>^|~`
 *      and the back-quote included).
 *   4. WordPiece: a word longer than max_input_chars_per_word characters is
 *      [UNK]; otherwise the longest vocabulary prefix, then the longest
 *      "##"-prefixed piece of the rest, and so on; a word with a rest that no
 *      piece matches is one [UNK].
 *   5. [CLS] ids [SEP], the ids cut to max_len - 2.
 * Character properties come from utf8proc. The reference takes its categories
 * from Unicode 8.0, utf8proc from a newer version: a character assigned or
 * re-categorised since 2015 (a new punctuation mark, format control or
 * combining mark) can tokenise differently. Emoji, accents, CJK and every
 * script in use before then give the reference's ids. */
#ifndef FINCH_NN_BERT_TOKENIZER_H
#define FINCH_NN_BERT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* A loaded tokenizer: opaque, read-only after nn_bert_tok_load, so any
 * number of threads may encode with it at once. */
typedef struct nn_bert_tok nn_bert_tok_t;

typedef struct {
  int32_t vocab_size;
  int32_t unk_id, cls_id, sep_id, pad_id;
  int max_word_chars;
  int clean_text, chinese_chars, strip_accents, lowercase;
} nn_bert_tok_info;

/* Reads path. On success *out is a handle the caller releases with
 * nn_bert_tok_free; on failure *out is NULL and err names the file and the
 * field at fault (FINCH_EIO or FINCH_ENOTFOUND when it cannot be read,
 * FINCH_EFORMAT when it is malformed or not a BERT WordPiece tokenizer). */
finch_status nn_bert_tok_load(const char *path, nn_bert_tok_t **out, finch_err *err);
/* The same from the bytes of a tokenizer.json in memory (buf, len bytes,
 * the caller's); name stands for the file in errors. */
finch_status nn_bert_tok_load_bytes(const char *name, const void *buf, size_t len, nn_bert_tok_t **out,
                                   finch_err *err);
void nn_bert_tok_free(nn_bert_tok_t *t); /* NULL is harmless */

nn_bert_tok_info nn_bert_tok_get_info(const nn_bert_tok_t *t);

/* Encodes text[0..len) (UTF-8; NUL bytes are characters like others) as
 * [CLS] tokens [SEP] into ids, at most max_len (>= 2) of them, and sets *n to
 * their count. Text past the last id that fits is checked for valid UTF-8
 * but not tokenised. Fails with FINCH_EFORMAT on invalid UTF-8 (naming the
 * byte offset), FINCH_EINVAL on max_len < 2, FINCH_ENOMEM. */
finch_status nn_bert_tok_encode(const nn_bert_tok_t *t, const char *text, size_t len, int max_len, int32_t *ids,
                                int *n, finch_err *err);

/* The id of token (exact bytes), or -1. */
int32_t nn_bert_tok_id(const nn_bert_tok_t *t, const char *token, size_t len);
/* The token of id, NUL-terminated and owned by the handle, or NULL. */
const char *nn_bert_tok_token(const nn_bert_tok_t *t, int32_t id);

#endif
