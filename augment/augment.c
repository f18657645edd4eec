#include "augment/augment.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/text.h"

#define MAX_WORDS 256

void finch_augment_eda(const char *text, unsigned long long stream, double p_delete, int n_swap, char *out) {
  finch_rng rng = {stream};
  char *copy = strdup(text);
  if (!copy) {
    strcpy(out, text);
    return;
  }
  char *words[MAX_WORDS];
  int n = 0;
  for (char *tok = strtok(copy, " "); tok && n < MAX_WORDS; tok = strtok(NULL, " ")) words[n++] = tok;
  /* Random deletion: each word with probability p_delete, one always kept. */
  int keep[MAX_WORDS], nk = 0;
  for (int i = 0; i < n; i++)
    if (n == 1 || finch_rng_uniform(&rng) >= p_delete) keep[nk++] = i;
  if (nk == 0) keep[nk++] = (int)finch_rng_below(&rng, (uint64_t)n);
  /* Random swaps of two kept positions. */
  for (int s = 0; s < n_swap && nk >= 2; s++) {
    int a = (int)finch_rng_below(&rng, (uint64_t)nk), b = (int)finch_rng_below(&rng, (uint64_t)nk);
    int t = keep[a];
    keep[a] = keep[b];
    keep[b] = t;
  }
  size_t o = 0;
  for (int i = 0; i < nk; i++) {
    size_t len = strlen(words[keep[i]]);
    if (i) out[o++] = ' ';
    memcpy(out + o, words[keep[i]], len);
    o += len;
  }
  out[o] = '\0';
  free(copy);
}

typedef struct {
  const char *id, *text, *label, *hash;
} parent;

static finch_status flush_rows(finch_db *db, finch_copybuf *b, long long *inserted, finch_err *err) {
  finch_status st = finch_db_copy_begin(db,
      "COPY augment_stage (parent_id, text, text_norm, label, method_params, content_hash) FROM STDIN", err);
  if (st) return st;
  st = finch_db_copy_put(db, b->buf, b->len, err);
  finch_status end = finch_db_copy_end(db, err);
  finch_copybuf_reset(b);
  if (st || end) return st ? st : end;
  PGresult *r = finch_db_query(db,
      "WITH ins AS (INSERT INTO utterances (dataset_id, text, text_norm, label, split, origin,"
      " parent_id, method, method_params, content_hash)"
      " SELECT p.dataset_id, s.text, s.text_norm, s.label, 'train', 'augmented', s.parent_id, 'eda',"
      " s.method_params::jsonb, s.content_hash FROM augment_stage s JOIN utterances p ON p.id = s.parent_id"
      " ON CONFLICT (dataset_id, content_hash) DO NOTHING RETURNING 1) SELECT count(*) FROM ins",
      0, NULL, err);
  if (!r) return FINCH_EDB;
  *inserted += atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  return finch_db_exec(db, "TRUNCATE augment_stage", err);
}

finch_status finch_augment_run(finch_db *db, const finch_augment_opts *opts, finch_augment_result *res,
                               finch_err *err) {
  memset(res, 0, sizeof *res);
  double p_delete = opts->p_delete > 0 ? opts->p_delete : 0.1;
  int n_swap = opts->n_swap > 0 ? opts->n_swap : 1;
  if (p_delete >= 1) return finch_err_set(err, FINCH_EINVAL, "p_delete %g must be below 1", p_delete);
  const char *p[] = {opts->dataset};
  PGresult *parents = finch_db_query(db,
      "SELECT u.id, u.text, u.label, u.content_hash FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
      " WHERE d.name = $1 AND u.split = 'train' AND u.origin = 'source' AND u.label IS NOT NULL"
      " ORDER BY u.id", 1, p, err);
  if (!parents) return FINCH_EDB;
  long long np = PQntuples(parents);
  if (np == 0) {
    PQclear(parents);
    return finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' has no training rows to augment (run finch ingest first)",
                         opts->dataset);
  }
  res->parents = np;
  long long target = opts->target > 0 ? opts->target : 2 * np;
  long long per_parent = (target + np - 1) / np;

  char params[256];
  snprintf(params, sizeof params,
           "{\"method\": \"eda\", \"p_delete\": %g, \"n_swap\": %d, \"seed\": %llu, \"target\": %lld}",
           p_delete, n_swap, opts->seed, target);
  const char *p2[] = {opts->dataset, params};
  PGresult *r = finch_db_query(db,
      "INSERT INTO augment_runs (dataset_id, params) SELECT id, $2::jsonb FROM datasets WHERE name = $1"
      " RETURNING id", 2, p2, err);
  if (!r) {
    PQclear(parents);
    return FINCH_EDB;
  }
  res->run_id = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);

  finch_status st = finch_db_exec(db,
      "CREATE TEMP TABLE IF NOT EXISTS augment_stage (parent_id bigint, text text, text_norm text,"
      " label text, method_params text, content_hash text)", err);
  if (!st) st = finch_db_exec(db, "BEGIN", err);
  finch_copybuf b = {0};
  size_t cap = 0;
  char *variant = NULL, *seen = NULL;
  for (long long i = 0; !st && i < np && res->generated < target; i++) {
    const char *id = PQgetvalue(parents, (int)i, 0), *text = PQgetvalue(parents, (int)i, 1);
    const char *label = PQgetvalue(parents, (int)i, 2), *hash = PQgetvalue(parents, (int)i, 3);
    size_t len = strlen(text);
    if (len + 1 > cap) {
      cap = 2 * len + 2;
      char *nv = realloc(variant, cap), *ns = realloc(seen, cap * (size_t)(per_parent + 1));
      if (nv) variant = nv;
      if (ns) seen = ns;
      if (!nv || !ns) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
        break;
      }
    }
    char key[128];
    int klen = snprintf(key, sizeof key, "%llu:%s", opts->seed, hash);
    char seedhex[FINCH_SHA256_HEX_LEN];
    finch_sha256_hex(key, (size_t)klen, seedhex);
    finch_rng rng = {strtoull(seedhex + 48, NULL, 16)};
    long long made = 0;
    for (long long attempt = 0; made < per_parent && attempt < 4 * per_parent; attempt++) {
      finch_augment_eda(text, finch_rng_next(&rng), p_delete, n_swap, variant);
      if (strcmp(variant, text) == 0) continue;
      int repeat = 0;
      for (long long k = 0; k < made && !repeat; k++) repeat = strcmp(seen + (size_t)k * cap, variant) == 0;
      if (repeat) continue;
      strcpy(seen + (size_t)made * cap, variant);
      char *norm = NULL;
      if (finch_text_normalize(variant, strlen(variant), FINCH_TEXT_FOLD, &norm, err)) {
        st = err->code;
        break;
      }
      char chash[FINCH_SHA256_HEX_LEN], mp[128];
      finch_utterance_hash(norm, label, "", chash);
      snprintf(mp, sizeof mp, "{\"p_delete\": %g, \"n_swap\": %d, \"seed\": %llu, \"variant\": %lld}",
               p_delete, n_swap, opts->seed, attempt);
      int bad = finch_copybuf_field(&b, id, 0) || finch_copybuf_field(&b, variant, 0) ||
                finch_copybuf_field(&b, norm, 0) || finch_copybuf_field(&b, label, 0) ||
                finch_copybuf_field(&b, mp, 0) || finch_copybuf_field(&b, chash, 1);
      free(norm);
      if (bad) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
        break;
      }
      made++;
      if (++res->generated >= target) break;
    }
    if (!st && b.len > (4u << 20)) st = flush_rows(db, &b, &res->inserted, err);
  }
  if (!st && b.len) st = flush_rows(db, &b, &res->inserted, err);
  finch_copybuf_free(&b);
  free(variant);
  free(seen);
  PQclear(parents);
  char run[32], gen[32], ins[32];
  snprintf(run, sizeof run, "%lld", res->run_id);
  snprintf(gen, sizeof gen, "%lld", res->generated);
  snprintf(ins, sizeof ins, "%lld", res->inserted);
  const char *p3[] = {run, gen, ins};
  if (!st)
    st = finch_db_run(db, "UPDATE augment_runs SET status = 'done', finished_at = now(), rows_generated = $2,"
                          " rows_inserted = $3 WHERE id = $1", 3, p3, err);
  if (!st) return finch_db_exec(db, "COMMIT", err);
  PQclear(PQexec(finch_db_conn(db), "ROLLBACK"));
  finch_err ignore;
  finch_db_run(db, "UPDATE augment_runs SET status = 'failed', finished_at = now() WHERE id = $1", 1, p3,
               &ignore);
  return st;
}
