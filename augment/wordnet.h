/* WordNet 3.0 lexicon for the synonym method (internal to augment/).
 *
 * Reads the Debian wordnet-base files from a directory:
 *   index.{noun,verb,adj,adv}: one lemma a line,
 *     lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
 *     offsets are ordered by sense frequency; lines starting with two spaces
 *     are the licence header.
 *   data.{noun,verb,adj,adv}: one synset a line, found by byte offset,
 *     offset lex_filenum ss_type w_cnt(2 hex) word lex_id [word lex_id...] p_cnt ...
 *     words use '_' for spaces; adjectives may end in a marker "(a)", "(p)", "(ip)".
 * open keeps the data files in memory and indexes single-word lemmas with
 * their first two senses per part of speech; synonyms are resolved lazily
 * from those offsets. After open the lexicon is read-only, so one lexicon may
 * serve several threads. */
#ifndef FINCH_AUGMENT_WORDNET_H
#define FINCH_AUGMENT_WORDNET_H

#include <stddef.h>

#include "core/status.h"

typedef struct augment__wordnet augment__wordnet;

/* A word of a synset: points into the lexicon (valid until close), not
 * NUL-terminated, marker stripped, '_' kept. sense is the synset's rank for
 * the looked-up lemma, 0 for the most likely sense. */
typedef struct {
  const char *s;
  size_t len;
  unsigned sense;
} augment__wordnet_word;

/* Loads the lexicon from dir (NULL: $FINCH_WORDNET_DIR, else
 * /usr/share/wordnet). A missing directory or file is FINCH_ENOTFOUND, a
 * malformed index line FINCH_EFORMAT naming file and line. On success the
 * caller owns *out and frees it with augment__wordnet_close. */
finch_status augment__wordnet_open(const char *dir, augment__wordnet **out, finch_err *err);
void augment__wordnet_close(augment__wordnet *wn);

/* Whether lemma (lower-case, len bytes) is in the index. */
int augment__wordnet_has(const augment__wordnet *wn, const char *lemma, size_t len);

/* Writes up to max words of the lemma's synsets into out, most likely sense
 * first (parts of speech ordered by how often they were tagged, verbs first
 * on ties), and returns how many were written. The lemma itself is included
 * where it appears in a synset; the caller filters. */
size_t augment__wordnet_synonyms(const augment__wordnet *wn, const char *lemma, size_t len,
                                 augment__wordnet_word *out, size_t max);

#endif
