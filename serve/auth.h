/* API keys, roles and per-key rate limits for the HTTP server.
 *
 * Keys. A key is "fk_" followed by 40 lower-case hex digits (160 random bits
 * from OpenSSL's RAND_bytes). Only its SHA-256 (hex) is stored, in api_keys
 * (schemas/007_rollout.sql), with a name, a role and its first 11 characters
 * (prefix) for telling keys apart; `finch keys create` prints the key once.
 * Clients send "Authorization: Bearer <key>".
 *
 * Roles. integration (turns, /v1/intent), labeler (labelling endpoints),
 * admin (everything, including rollout changes). Every endpoint but
 * /healthz names the roles it admits; admin is admitted everywhere.
 *
 * Rate limit. A token bucket per key: `burst` tokens, refilled at `rate`
 * tokens a second; a request takes one, and a request that finds none is
 * refused with the seconds until one is back (429 with Retry-After). The
 * buckets live in one server process: two servers give a key twice the rate. */
#ifndef FINCH_SERVE_AUTH_H
#define FINCH_SERVE_AUTH_H

#include <libpq-fe.h>
#include <stddef.h>

#include "core/status.h"

typedef enum {
  FINCH_ROLE_INTEGRATION = 1,
  FINCH_ROLE_LABELER = 2,
  FINCH_ROLE_ADMIN = 4,
} finch_role;

/* "integration", "labeler", "admin". */
const char *finch_role_name(finch_role r);
/* Returns -1 for anything else. */
int finch_role_parse(const char *name);
/* 1 when a key of role r may use an endpoint admitting the roles in mask. */
int finch_role_allows(finch_role r, unsigned mask);

enum { FINCH_API_KEY_LEN = 43, FINCH_API_KEY_PREFIX_LEN = 11 }; /* "fk_" + 40 hex; without the NUL */

typedef struct {
  long long id;
  char name[128];
  finch_role role;
} finch_principal;

/* Makes a key, stores its hash and writes an audit_log row (action
 * key.create, actor as given). key receives the key (NUL-terminated); it is
 * not stored anywhere. *id (may be NULL) gets the row id. */
finch_status finch_auth_key_create(PGconn *c, const char *name, finch_role role, const char *actor,
                                   char key[FINCH_API_KEY_LEN + 1], long long *id, finch_err *err);

/* Revokes key id (audited as key.revoke); FINCH_ENOTFOUND when no active key has it. */
finch_status finch_auth_key_revoke(PGconn *c, long long id, const char *actor, finch_err *err);

/* Looks up an active key: FINCH_ENOTFOUND when it is unknown or revoked. */
finch_status finch_auth_lookup(PGconn *c, const char *key, size_t len, finch_principal *out, finch_err *err);

/* The key of an "Authorization: Bearer <key>" header value (scheme
 * case-insensitive, surrounding blanks skipped): a pointer into header and
 * its length; NULL when the header is absent or not a bearer token. */
const char *finch_auth_bearer(const char *header, size_t *len);

typedef struct finch_ratelimit finch_ratelimit;

/* rate tokens a second (> 0), burst tokens at most (>= 1). NULL when out of
 * memory. */
finch_ratelimit *finch_ratelimit_new(double rate, double burst);
void finch_ratelimit_free(finch_ratelimit *rl);
/* Takes one token from key_id's bucket at time now_s (any monotonic clock,
 * seconds). Returns 1 when allowed; 0 when refused, with *retry_after_s the
 * seconds until a token is back. Thread-safe. */
int finch_ratelimit_take(finch_ratelimit *rl, long long key_id, double now_s, double *retry_after_s);

#endif
