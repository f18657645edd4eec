/* Augmentation methods: each makes label-preserving variants of one
 * utterance. A method is a small module behind this table; augment.c picks
 * parents, seeds a stream per (seed, parent, variant) and stores what the
 * methods return, with the method's name and parameters, linked to the parent.
 *
 * Text in and out is NFKC-normalised UTF-8 with single spaces between words
 * (ingest's `text` column); PII placeholders such as <CARD> are single words
 * that methods leave alone unless they substitute entities. */
#ifndef FINCH_AUGMENT_METHODS_H
#define FINCH_AUGMENT_METHODS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
  const char *name; /* "eda", "synonyms", "entities", "noise" */
  /* Loads the method's resources (WordNet, lexicons); *state may stay NULL.
   * Errors name the file and line that could not be read. */
  finch_status (*open)(void **state, finch_err *err);
  void (*close)(void *state);
  /* Writes one variant of text into out (cap bytes, NUL-terminated) and a
   * JSON object describing the edit into params (params_cap bytes, e.g.
   * {"replaced": ["charge", "fee"]}); the variant depends only on text and
   * stream. Returns 1 when a variant different from text was made, 0 when the
   * method does not apply to this text. apply() only reads state, so one
   * state may serve several threads. */
  int (*apply)(const void *state, const char *text, uint64_t stream, char *out, size_t cap, char *params,
               size_t params_cap);
  /* Optional (NULL for most methods): sees every parent and its intent
   * before any apply(), for methods that learn from the training rows. */
  finch_status (*prepare)(void *state, const char *const *texts, const char *const *labels, size_t n,
                          finch_err *err);
} finch_aug_method;

extern const finch_aug_method finch_aug_eda;
extern const finch_aug_method finch_aug_synonyms;
extern const finch_aug_method finch_aug_entities;
extern const finch_aug_method finch_aug_noise;
extern const finch_aug_method finch_aug_templates;

/* An entity mention found by the finance lexicons (augment/entities.c):
 * type is "amount", "currency", "date", "merchant", "brand", "country",
 * "atm", "bank" or "pii". */
typedef struct {
  size_t start, len;
  const char *type;
} finch_aug_mention;

/* Finds up to max mentions in text, in order, not overlapping; returns how many. */
size_t finch_aug_find_entities(const char *text, finch_aug_mention *out, size_t max);

/* Finance terms that carry intent and must never be swapped, deleted or
 * misspelt (card, PIN, transfer, top-up, refund, exchange rate, direct debit,
 * ...). text points at a word (or phrase start); returns the length in bytes
 * of the protected term starting there, 0 when none. Case-insensitive. */
size_t finch_aug_protected_at(const char *text);

#endif
