/* Subword tokenizer (WordPiece) for the transformer encoder (nn/tfm.h).
 *
 * Pre-tokenisation is nn/features' (nn_tokenize_symbols): the text is
 * normalised with finch_text_normalize(FINCH_TEXT_FOLD) (NFKC, case fold,
 * white space collapsed), so "ＣＡＲＤ" and "card" are the same, and split into
 * words, placeholders ("<card>"), CJK characters (one per token) and
 * punctuation/symbol characters (one per token). Both models therefore see
 * the same words; nn_tokenizer_words() returns them.
 *
 * Vocabulary, in id order:
 *   0..4     [PAD] [UNK] [CLS] [SEP] [MASK]             (NN_TOK_*)
 *   5..260   byte tokens <0x00> .. <0xFF>                (NN_TOK_BYTE0 + byte)
 *   261..    the placeholders <card> <iban> <email> <phone> <ssn> <account>,
 *            then other placeholders seen >= min_freq times in training;
 *   then     the alphabet: each character seen >= min_freq times, most
 *            frequent first, as a word-initial piece "c" and, when it occurs
 *            inside words, a continuation piece "##c";
 *   then     merged pieces in the order they were learned.
 * Merges are BPE by frequency over word types (as the HuggingFace
 * WordPiece trainer does): the most frequent adjacent pair (ties: lower
 * ids first) is merged until the vocabulary holds vocab_size pieces or no
 * pair occurs min_freq times. Training is deterministic and does not depend
 * on the order of the texts beyond their multiset.
 *
 * Encoding, per pre-token: a placeholder in the vocabulary is one token;
 * otherwise greedy longest-match-first WordPiece ("##" marks a piece that
 * continues a word). Where no piece matches at a position, that character's
 * UTF-8 bytes become byte tokens and matching resumes after it, so every
 * valid UTF-8 text encodes without [UNK] and a rare character costs only its
 * own bytes. Words longer than max_word bytes (100) are split into character
 * pieces (bytes for unknown characters) without the longest-match search.
 *
 * Serialised form (nn_tokenizer_save / nn_tokenizer_load), little-endian,
 * stored inside the model file:
 *   offset  size  field
 *   0       4     magic "FTOK"
 *   4       4     u32 version (NN_TOKENIZER_VERSION = 1)
 *   8       4     u32 n_pieces, total including specials and bytes
 *   12      4     u32 n_special = 5
 *   16      4     u32 n_byte = 256
 *   20      4     u32 max_word, bytes (1 .. 65535)
 *   24      ...   n_pieces times: u32 len (1 .. 1024), len bytes of UTF-8
 *                 (no NUL), piece i having id i
 * The blob ends exactly after the last piece. Specials and byte tokens must
 * be the names above, in order; no piece may repeat.
 *
 * A tokenizer is immutable once built: concurrent encode calls are safe. */
#ifndef FINCH_NN_TOKENIZER_H
#define FINCH_NN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "nn/features.h"

#define NN_TOKENIZER_MAGIC "FTOK"
#define NN_TOKENIZER_VERSION 1u

typedef struct nn_tokenizer nn_tokenizer;

enum { NN_TOK_PAD = 0, NN_TOK_UNK = 1, NN_TOK_CLS = 2, NN_TOK_SEP = 3, NN_TOK_MASK = 4 };
enum { NN_TOK_BYTE0 = 5, NN_TOK_N_SPECIAL = 5, NN_TOK_N_BYTE = 256 };

/* Learns a vocabulary of at most vocab_size pieces (>= 267: specials, bytes
 * and the six placeholders) from n texts; see the top of this file. Fails
 * naming the text index on invalid UTF-8 (FINCH_EFORMAT). min_freq 0 acts
 * as 1. *out is the caller's, released with nn_tokenizer_free. */
finch_status nn_tokenizer_train(nn_tokenizer **out, const char *const *texts, size_t n, uint32_t vocab_size,
                                uint32_t min_freq, finch_err *err);

/* Encodes text as [CLS] followed by its pieces, truncated to max_len ids in
 * total (max_len >= 2; smaller values return -2).
 * ids (max_len) receives the ids; word (max_len), may be NULL, receives for
 * each id the index of its pre-token in nn_tokenizer_words()' list (-1 for
 * [CLS]). Returns the number of ids written, -1 when text is invalid UTF-8
 * (or over 4 GiB), -2 on a bad argument or out of memory. */
int nn_tokenizer_encode(const nn_tokenizer *t, const char *text, int32_t *ids, int32_t *word, int max_len);

/* The pre-tokens of text exactly as nn_tokenizer_encode splits it
 * (nn_tokenize_symbols): out->tok[k] is word k of the encoder's word[]
 * output, with its kind, so callers can hash character n-grams of whole
 * words. out must be zeroed before first use, is reusable and is released
 * with nn_tokens_free. FINCH_EFORMAT for invalid UTF-8. */
finch_status nn_tokenizer_words(const nn_tokenizer *t, const char *text, nn_tokens *out, finch_err *err);

uint32_t nn_tokenizer_size(const nn_tokenizer *t);
/* Piece id ("##ing", "<0xE2>", "[CLS]"), valid for the tokenizer's lifetime;
 * NULL when id is out of range. */
const char *nn_tokenizer_piece(const nn_tokenizer *t, int32_t id);
/* Id of a piece by its exact name, or -1 when absent. */
int32_t nn_tokenizer_id(const nn_tokenizer *t, const char *piece);

/* Serialises t (format above) into *buf, malloc'd and owned by the caller,
 * of *len bytes. */
finch_status nn_tokenizer_save(const nn_tokenizer *t, unsigned char **buf, size_t *len, finch_err *err);
/* Parses a blob written by nn_tokenizer_save. Every length is checked
 * against len; malformed input is FINCH_EFORMAT naming the field and its
 * offset. buf is not retained. */
finch_status nn_tokenizer_load(nn_tokenizer **out, const unsigned char *buf, size_t len, finch_err *err);
void nn_tokenizer_free(nn_tokenizer *t);

#endif
