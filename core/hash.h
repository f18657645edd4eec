/* SHA-256 through OpenSSL's EVP interface, as lower-case hex. */
#ifndef FINCH_CORE_HASH_H
#define FINCH_CORE_HASH_H

#include <stddef.h>

#include "core/status.h"

#define FINCH_SHA256_HEX_LEN 65 /* 64 hex digits + NUL */

void finch_sha256_hex(const void *data, size_t len, char out[FINCH_SHA256_HEX_LEN]);

/* Incremental form, for content hashes made of several fields. */
typedef struct finch_sha256 finch_sha256;
finch_sha256 *finch_sha256_new(void);
void finch_sha256_update(finch_sha256 *h, const void *data, size_t len);
/* Writes the hex digest and frees h. */
void finch_sha256_final(finch_sha256 *h, char out[FINCH_SHA256_HEX_LEN]);

/* The content hash of an utterance: SHA-256 over the case-folded text, the
 * label ("" for none) and the dialogue position ("" for a single query),
 * separated by U+001F. Unique per dataset in the utterances table. */
void finch_utterance_hash(const char *text_norm, const char *label, const char *position,
                          char out[FINCH_SHA256_HEX_LEN]);

finch_status finch_sha256_file(const char *path, char out[FINCH_SHA256_HEX_LEN], finch_err *err);

#endif
