/* API keys and rate limits (serve/auth.h). */
#include "serve/auth.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/hash.h"
#include "core/db.h"

static const struct {
  finch_role role;
  const char *name;
} roles[] = {{FINCH_ROLE_INTEGRATION, "integration"}, {FINCH_ROLE_LABELER, "labeler"}, {FINCH_ROLE_ADMIN, "admin"}};

const char *finch_role_name(finch_role r) {
  for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
    if (roles[i].role == r) return roles[i].name;
  return "unknown";
}

int finch_role_parse(const char *name) {
  for (size_t i = 0; name && i < sizeof roles / sizeof roles[0]; i++)
    if (strcmp(name, roles[i].name) == 0) return (int)roles[i].role;
  return -1;
}

int finch_role_allows(finch_role r, unsigned mask) { return r == FINCH_ROLE_ADMIN || (mask & (unsigned)r) != 0; }

static finch_status auth_audit(PGconn *c, const char *actor, const char *action, const char *subject, json_t *details,
                               finch_err *err) {
  char *text = details ? json_dumps(details, JSON_COMPACT) : NULL;
  json_decref(details);
  if (!text) return finch_err_set(err, FINCH_ENOMEM, "keys: out of memory");
  const char *p[4] = {actor, action, subject, text};
  finch_status st = finch_db_run_on(
      c, "INSERT INTO audit_log (actor, action, subject, details) VALUES ($1, $2, $3, $4::jsonb)", 4, p, err);
  free(text);
  return st;
}

finch_status finch_auth_key_create(PGconn *c, const char *name, finch_role role, const char *actor,
                                   char key[FINCH_API_KEY_LEN + 1], long long *id, finch_err *err) {
  key[0] = '\0';
  if (!name || !*name) return finch_err_set(err, FINCH_EINVAL, "keys: a key needs a name");
  if (strlen(name) > 120) return finch_err_set(err, FINCH_EINVAL, "keys: name is longer than 120 bytes");
  if (finch_role_parse(finch_role_name(role)) < 0)
    return finch_err_set(err, FINCH_EINVAL, "keys: unknown role %d", (int)role);
  unsigned char raw[20];
  if (RAND_bytes(raw, sizeof raw) != 1)
    return finch_err_set(err, FINCH_EINTERNAL, "keys: OpenSSL RAND_bytes failed");
  char k[FINCH_API_KEY_LEN + 1];
  memcpy(k, "fk_", 3);
  for (size_t i = 0; i < sizeof raw; i++) snprintf(k + 3 + 2 * i, 3, "%02x", raw[i]);
  char hash[FINCH_SHA256_HEX_LEN], prefix[FINCH_API_KEY_PREFIX_LEN + 1];
  finch_sha256_hex(k, FINCH_API_KEY_LEN, hash);
  memcpy(prefix, k, FINCH_API_KEY_PREFIX_LEN);
  prefix[FINCH_API_KEY_PREFIX_LEN] = '\0';
  finch_status st = finch_db_begin_on(c, err);
  if (st) return st;
  const char *p[4] = {name, finch_role_name(role), hash, prefix};
  PGresult *r = finch_db_query_on(c, "INSERT INTO api_keys (name, role, key_sha256, prefix) VALUES ($1, $2, $3, $4) RETURNING id",
                                  4, p, err);
  if (!r) {
    finch_db_rollback_on(c);
    return FINCH_EDB;
  }
  long long kid = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  char subject[32];
  snprintf(subject, sizeof subject, "api_key/%lld", kid);
  if ((st = auth_audit(c, actor && *actor ? actor : "unknown", "key.create", subject,
                       json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)kid, "name", name, "role",
                                 finch_role_name(role), "prefix", prefix),
                       err)) ||
      (st = finch_db_commit_on(c, err))) {
    finch_db_rollback_on(c);
    return st;
  }
  memcpy(key, k, sizeof k);
  if (id) *id = kid;
  return FINCH_OK;
}

finch_status finch_auth_key_revoke(PGconn *c, long long id, const char *actor, finch_err *err) {
  char ids[32], subject[48];
  snprintf(ids, sizeof ids, "%lld", id);
  snprintf(subject, sizeof subject, "api_key/%lld", id);
  finch_status st = finch_db_begin_on(c, err);
  if (st) return st;
  const char *p[1] = {ids};
  PGresult *r = finch_db_query_on(c, "UPDATE api_keys SET revoked_at = now() WHERE id = $1::bigint AND revoked_at IS NULL", 1,
                                  p, err);
  if (!r) {
    finch_db_rollback_on(c);
    return FINCH_EDB;
  }
  int n = atoi(PQcmdTuples(r));
  PQclear(r);
  if (n == 0) {
    finch_db_rollback_on(c);
    return finch_err_set(err, FINCH_ENOTFOUND, "keys: no active key with id %lld", id);
  }
  if ((st = auth_audit(c, actor && *actor ? actor : "unknown", "key.revoke", subject, json_pack("{s:I}", "id", (json_int_t)id),
                       err)) ||
      (st = finch_db_commit_on(c, err))) {
    finch_db_rollback_on(c);
    return st;
  }
  return FINCH_OK;
}

finch_status finch_auth_lookup(PGconn *c, const char *key, size_t len, finch_principal *out, finch_err *err) {
  memset(out, 0, sizeof *out);
  if (len != FINCH_API_KEY_LEN) return finch_err_set(err, FINCH_ENOTFOUND, "unknown API key");
  char hash[FINCH_SHA256_HEX_LEN];
  finch_sha256_hex(key, len, hash);
  const char *p[1] = {hash};
  PGresult *r = finch_db_query_on(c, "SELECT id, name, role FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL", 1, p,
                                  err);
  if (!r) return FINCH_EDB;
  if (PQntuples(r) != 1) {
    PQclear(r);
    return finch_err_set(err, FINCH_ENOTFOUND, "unknown API key");
  }
  out->id = atoll(PQgetvalue(r, 0, 0));
  snprintf(out->name, sizeof out->name, "%s", PQgetvalue(r, 0, 1));
  int role = finch_role_parse(PQgetvalue(r, 0, 2));
  out->role = role < 0 ? FINCH_ROLE_INTEGRATION : (finch_role)role;
  PQclear(r);
  return role < 0 ? finch_err_set(err, FINCH_ENOTFOUND, "API key has an unknown role") : FINCH_OK;
}

const char *finch_auth_bearer(const char *header, size_t *len) {
  if (!header) return NULL;
  while (*header == ' ' || *header == '\t') header++;
  if (strncasecmp(header, "Bearer", 6) != 0 || (header[6] != ' ' && header[6] != '\t')) return NULL;
  const char *k = header + 6;
  while (*k == ' ' || *k == '\t') k++;
  size_t n = 0;
  while (k[n] && !isspace((unsigned char)k[n])) n++;
  const char *rest = k + n;
  while (*rest == ' ' || *rest == '\t') rest++;
  if (n == 0 || *rest) return NULL;
  *len = n;
  return k;
}

/* --- token buckets -------------------------------------------------------- */

typedef struct {
  long long key;
  double tokens, last;
} bucket;

struct finch_ratelimit {
  pthread_mutex_t lock;
  double rate, burst;
  bucket *b;
  size_t n, cap;
};

finch_ratelimit *finch_ratelimit_new(double rate, double burst) {
  if (!(rate > 0) || !(burst >= 1)) return NULL;
  finch_ratelimit *rl = calloc(1, sizeof *rl);
  if (!rl) return NULL;
  pthread_mutex_init(&rl->lock, NULL);
  rl->rate = rate;
  rl->burst = burst;
  return rl;
}

void finch_ratelimit_free(finch_ratelimit *rl) {
  if (!rl) return;
  pthread_mutex_destroy(&rl->lock);
  free(rl->b);
  free(rl);
}

int finch_ratelimit_take(finch_ratelimit *rl, long long key_id, double now_s, double *retry_after_s) {
  *retry_after_s = 0;
  pthread_mutex_lock(&rl->lock);
  size_t i = 0;
  while (i < rl->n && rl->b[i].key != key_id) i++; /* keys are few: a scan is enough */
  if (i == rl->n) {
    if (rl->n == rl->cap) {
      size_t nc = rl->cap ? rl->cap * 2 : 16;
      bucket *nb = realloc(rl->b, nc * sizeof *nb);
      if (!nb) {
        pthread_mutex_unlock(&rl->lock);
        return 1; /* out of memory: fail open rather than lock every client out */
      }
      rl->b = nb;
      rl->cap = nc;
    }
    rl->b[i] = (bucket){.key = key_id, .tokens = rl->burst, .last = now_s};
    rl->n++;
  }
  bucket *b = &rl->b[i];
  if (now_s > b->last) {
    b->tokens += (now_s - b->last) * rl->rate;
    if (b->tokens > rl->burst) b->tokens = rl->burst;
    b->last = now_s;
  }
  int ok = b->tokens >= 1.0;
  if (ok)
    b->tokens -= 1.0;
  else
    *retry_after_s = (1.0 - b->tokens) / rl->rate;
  pthread_mutex_unlock(&rl->lock);
  return ok;
}
