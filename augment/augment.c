#include "augment/augment.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "augment/methods.h"
#include "core/clock.h"
#include "core/dataset.h"
#include "core/hash.h"
#include "core/models.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/text.h"
#include "nn/model.h"
#include "nn/model_arch.h"

static const finch_aug_method *const known[] = {&finch_aug_eda, &finch_aug_synonyms, &finch_aug_entities,
                                                &finch_aug_noise, &finch_aug_templates};
#define N_KNOWN (sizeof known / sizeof known[0])

static finch_status parse_methods(const char *list, const finch_aug_method **out, size_t *n, finch_err *err) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", list ? list : "eda,synonyms,entities,noise,templates");
  *n = 0;
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    const finch_aug_method *m = NULL;
    for (size_t i = 0; i < N_KNOWN; i++)
      if (strcmp(known[i]->name, tok) == 0) m = known[i];
    if (!m) return finch_err_set(err, FINCH_EINVAL, "unknown augmentation method '%s' (eda, synonyms, entities, noise, templates)", tok);
    for (size_t i = 0; i < *n; i++)
      if (out[i] == m) m = NULL;
    if (m && *n < FINCH_AUGMENT_MAX_METHODS) out[(*n)++] = m;
  }
  if (*n == 0) return finch_err_set(err, FINCH_EINVAL, "no augmentation method given");
  return FINCH_OK;
}

/* A set of content hashes (their first 64 bits), so that the target counts
 * distinct rows: a variant already stored, or already made in this run, is
 * not counted and another attempt is made. */
typedef struct {
  uint64_t *slots; /* 0 = empty */
  size_t cap, n;
} hash_set;

static uint64_t hash_key(const char *hex) {
  uint64_t k = strtoull((char[17]){hex[0], hex[1], hex[2], hex[3], hex[4], hex[5], hex[6], hex[7], hex[8], hex[9],
                                   hex[10], hex[11], hex[12], hex[13], hex[14], hex[15], 0},
                        NULL, 16);
  return k ? k : 1;
}

static int hash_set_has(const hash_set *h, uint64_t k) {
  if (!h->cap) return 0;
  for (size_t j = k & (h->cap - 1); h->slots[j]; j = (j + 1) & (h->cap - 1))
    if (h->slots[j] == k) return 1;
  return 0;
}

/* Adds k; returns 1 when it was new, 0 when present, -1 out of memory. */
static int hash_set_add(hash_set *h, uint64_t k) {
  if (2 * (h->n + 1) > h->cap) {
    size_t cap = h->cap ? 2 * h->cap : 1 << 16;
    uint64_t *ns = calloc(cap, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i < h->cap; i++)
      if (h->slots[i]) {
        size_t j = h->slots[i] & (cap - 1);
        while (ns[j]) j = (j + 1) & (cap - 1);
        ns[j] = h->slots[i];
      }
    free(h->slots);
    h->slots = ns;
    h->cap = cap;
  }
  size_t j = k & (h->cap - 1);
  while (h->slots[j]) {
    if (h->slots[j] == k) return 0;
    j = (j + 1) & (h->cap - 1);
  }
  h->slots[j] = k;
  h->n++;
  return 1;
}

/* The stream of attempt a on a parent: a function of (seed, parent hash, a) only. */
static uint64_t stream_of(unsigned long long seed, const char *hash, long long attempt) {
  char key[160], hex[FINCH_SHA256_HEX_LEN];
  int len = snprintf(key, sizeof key, "%llu:%s:%lld", seed, hash, attempt);
  finch_sha256_hex(key, (size_t)len, hex);
  return strtoull(hex + 48, NULL, 16);
}

static finch_status flush_rows(finch_db *db, finch_copybuf *b, finch_augment_result *res, double tau,
                               finch_err *err) {
  finch_status st = finch_db_copy_begin(db,
      "COPY augment_stage (dataset_id, parent_id, text, text_norm, label, method, method_params, content_hash,"
      " augment_run_id, probs) FROM STDIN", err);
  if (st) return st;
  st = finch_db_copy_put(db, b->buf, b->len, err);
  finch_status end = finch_db_copy_end(db, err);
  finch_copybuf_reset(b);
  if (st || end) return st ? st : end;
  char teacher[32], temp[32];
  snprintf(teacher, sizeof teacher, "%lld", res->teacher_id);
  snprintf(temp, sizeof temp, "%g", tau);
  const char *p[] = {res->teacher_id ? teacher : NULL, temp};
  PGresult *r = finch_db_query(db,
      "WITH ins AS (INSERT INTO utterances (dataset_id, text, text_norm, label, split, origin, parent_id, method,"
      " method_params, content_hash, augment_run_id)"
      " SELECT dataset_id, text, text_norm, label, 'train', 'augmented', parent_id, method, method_params::jsonb,"
      " content_hash, augment_run_id FROM augment_stage"
      " ON CONFLICT (dataset_id, content_hash) DO NOTHING RETURNING id, method, content_hash),"
      " t AS (INSERT INTO teacher_outputs (model_id, utterance_id, temperature, probs)"
      " SELECT $1::bigint, ins.id, $2::real, s.probs::real[] FROM ins JOIN augment_stage s USING (content_hash)"
      " WHERE $1::bigint IS NOT NULL AND s.probs IS NOT NULL ON CONFLICT DO NOTHING)"
      " SELECT method, count(*) FROM ins GROUP BY method", 2, p, err);
  if (!r) return FINCH_EDB;
  for (int i = 0; i < PQntuples(r); i++) {
    long long k = atoll(PQgetvalue(r, i, 1));
    res->inserted += k;
    for (size_t m = 0; m < res->n_methods; m++)
      if (strcmp(res->method_names[m], PQgetvalue(r, i, 0)) == 0) res->method_inserted[m] += k;
  }
  PQclear(r);
  return finch_db_exec(db, "TRUNCATE augment_stage", err);
}

/* The guard's teacher: opts->teacher (a file, id, alias, best or latest),
 * else the dataset's best registered teacher that passed the quality gate;
 * NULL (no guard) when there is none or "none" was asked. */
static finch_status open_teacher(finch_db *db, const finch_augment_opts *o, nn_model **m, long long *id,
                                 finch_err *err) {
  *m = NULL;
  *id = 0;
  if (o->teacher && strcmp(o->teacher, "none") == 0) return FINCH_OK;
  char path[4096];
  finch_status st = finch_models_resolve_in(db, o->teacher ? o->teacher : "best", "teacher", o->dataset, path,
                                            sizeof path, id, NULL, err);
  if (st == FINCH_ENOTFOUND && !o->teacher) {
    finch_info("%s: candidates are not label-guarded", err->msg);
    return FINCH_OK;
  }
  if (!st && *id) {
    char status[16], why[256];
    if ((st = finch_models_status(db, *id, status, sizeof status, why, sizeof why, err)) != FINCH_OK) return st;
    if (strcmp(status, "ok") != 0) finch_warn("label guard: teacher %lld failed the quality gate (%s)", *id, why);
  }
  if (!st) st = nn_model_load(m, path, err);
  return st;
}

/* Candidates guarded by the teacher in one batch at most. */
enum { AUG_BATCH = 64 };

/* A candidate variant waiting for the guard. */
typedef struct {
  char *text, *norm, *mp;
  char chash[FINCH_SHA256_HEX_LEN];
  uint64_t key;
  size_t mi;
} aug_cand;

finch_status finch_augment_run(finch_db *db, const finch_augment_opts *opts, finch_augment_result *res,
                               finch_err *err) {
  memset(res, 0, sizeof *res);
  double t0 = finch_clock_s();
  const finch_aug_method *methods[FINCH_AUGMENT_MAX_METHODS];
  size_t nm;
  finch_status st = parse_methods(opts->methods, methods, &nm, err);
  if (!st) st = finch_dataset_check(db, opts->dataset, NULL, err);
  if (st) return st;
  void *states[FINCH_AUGMENT_MAX_METHODS] = {0};
  size_t opened = 0;
  for (; opened < nm && !st; opened++) st = methods[opened]->open(&states[opened], err);
  res->n_methods = nm;
  for (size_t m = 0; m < nm; m++) res->method_names[m] = methods[m]->name;
  PGresult *parents = NULL;
  const char *p[] = {opts->dataset};
  nn_model *teacher = NULL;
  float *probs = NULL;
  double threshold = opts->guard_threshold > 0 ? opts->guard_threshold : 0.5;
  double tau = opts->temperature > 0 ? opts->temperature : 2.0;
  if (!st) st = open_teacher(db, opts, &teacher, &res->teacher_id, err);
  const size_t C_t = teacher ? nn_model_n_labels(teacher) : 0;
  aug_cand *cands = malloc(AUG_BATCH * sizeof *cands);
  const char **ctexts = malloc(AUG_BATCH * sizeof *ctexts);
  if (!st && (!cands || !ctexts || (teacher && !(probs = malloc((size_t)AUG_BATCH * C_t * sizeof *probs)))))
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  if (!st) {
    parents = finch_db_query(db,
        "SELECT u.id, u.text, u.label, u.content_hash, u.text_norm, u.dataset_id FROM utterances u"
        " JOIN datasets d ON d.id = u.dataset_id"
        " WHERE d.name = $1 AND u.split = 'train' AND u.origin = 'source' AND u.label IS NOT NULL"
        " ORDER BY u.label, u.id", 1, p, err);
    if (!parents) st = FINCH_EDB;
  }
  hash_set seen = {0};
  if (!st) {
    PGresult *h = finch_db_query(db, "SELECT u.content_hash FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                                     " WHERE d.name = $1", 1, p, err);
    if (!h) st = FINCH_EDB;
    for (int i = 0; h && !st && i < PQntuples(h); i++)
      if (hash_set_add(&seen, hash_key(PQgetvalue(h, i, 0))) < 0) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    PQclear(h);
  }
  long long np = parents ? PQntuples(parents) : 0;
  /* Methods that learn from the training rows see them all first. */
  for (size_t m = 0; !st && m < nm; m++) {
    if (!methods[m]->prepare || np == 0) continue;
    const char **tx = malloc((size_t)np * sizeof *tx), **lb = malloc((size_t)np * sizeof *lb);
    if (!tx || !lb) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    } else {
      for (long long i = 0; i < np; i++) {
        tx[i] = PQgetvalue(parents, (int)i, 1);
        lb[i] = PQgetvalue(parents, (int)i, 2);
      }
      st = methods[m]->prepare(states[m], tx, lb, (size_t)np, err);
    }
    free(tx);
    free(lb);
  }
  if (!st && np == 0)
    st = finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' has no training rows to augment (run finch ingest first)",
                       opts->dataset);
  long long n_labels = 0;
  for (long long i = 0; !st && i < np; i++)
    n_labels += i == 0 || strcmp(PQgetvalue(parents, (int)i, 2), PQgetvalue(parents, (int)(i - 1), 2)) != 0;
  res->parents = np;
  long long target = opts->target > 0 ? opts->target : 2 * np;
  /* The target is what the dataset should hold: rows from earlier runs count. */
  PGresult *existing = NULL;
  if (!st) {
    finch_dataset_query q = {.dataset = opts->dataset, .origin = FINCH_DATASET_AUGMENTED, .unlabelled = 1};
    existing = finch_dataset_counts(db, &q, 0, err);
    if (!existing) st = FINCH_EDB;
  }
  long long have = 0;
  for (int e = 0; existing && e < PQntuples(existing); e++) have += atoll(PQgetvalue(existing, e, 1));
  long long wanted = target > have ? target - have : 0;

  char params[512], mlist[128] = "";
  for (size_t m = 0; m < nm; m++) {
    strncat(mlist, m ? "\", \"" : "", sizeof mlist - strlen(mlist) - 1);
    strncat(mlist, methods[m]->name, sizeof mlist - strlen(mlist) - 1);
  }
  snprintf(params, sizeof params,
           "{\"methods\": [\"%s\"], \"seed\": %llu, \"target\": %lld, \"balance\": \"%s\"}", mlist, opts->seed,
           target, opts->proportional ? "proportional" : "uniform");
  if (!st) {
    const char *p2[] = {opts->dataset, params};
    PGresult *r = finch_db_query(db,
        "INSERT INTO augment_runs (dataset_id, params) SELECT id, $2::jsonb FROM datasets WHERE name = $1"
        " RETURNING id", 2, p2, err);
    if (!r) st = FINCH_EDB;
    else {
      res->run_id = atoll(PQgetvalue(r, 0, 0));
      PQclear(r);
    }
  }
  if (!st)
    st = finch_db_exec(db,
        "CREATE TEMP TABLE IF NOT EXISTS augment_stage (dataset_id bigint, parent_id bigint, text text,"
        " text_norm text, label text, method text, method_params text, content_hash text, augment_run_id bigint,"
        " probs text);"
        "TRUNCATE augment_stage; BEGIN", err);
  char runid[32];
  snprintf(runid, sizeof runid, "%lld", res->run_id);
  finch_copybuf b = {0};
  size_t cap = 0;
  char *variant = NULL;
  char mp[1024];
  double last = t0;
  for (long long i = 0; !st && i < np && res->generated < wanted;) {
    /* One intent: parents [i, j). */
    const char *label = PQgetvalue(parents, (int)i, 2);
    long long j = i;
    while (j < np && strcmp(PQgetvalue(parents, (int)j, 2), label) == 0) j++;
    long long n_l = j - i;
    long long quota = opts->proportional ? (target * n_l + np - 1) / np : (target + n_labels - 1) / n_labels;
    long long made_l = 0;
    for (int e = 0; existing && e < PQntuples(existing); e++)
      if (strcmp(PQgetvalue(existing, e, 0), label) == 0) quota -= atoll(PQgetvalue(existing, e, 1));
    /* Passes over the intent's parents until its quota is met: short texts
     * run out of new variants sooner, so later passes ask the others for
     * more. Pass q starts at attempt q * 2^32, so passes never share a stream. */
    for (int pass = 0; !st && pass < 6 && made_l < quota && res->generated < wanted; pass++) {
      long long per_parent = (quota - made_l + n_l - 1) / n_l, span = 4 * per_parent + 4;
      long long a0 = pass == 0 ? 0 : (long long)pass << 32;
      for (long long k = i; !st && k < j && made_l < quota && res->generated < wanted; k++) {
        const char *id = PQgetvalue(parents, (int)k, 0), *text = PQgetvalue(parents, (int)k, 1);
        const char *hash = PQgetvalue(parents, (int)k, 3), *pnorm = PQgetvalue(parents, (int)k, 4);
        const char *dsid = PQgetvalue(parents, (int)k, 5);
        size_t need = 4 * strlen(text) + 256;
        if (need > cap) {
          char *nv = realloc(variant, need);
          if (!nv) {
            st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
            break;
          }
          variant = nv;
          cap = need;
        }
        /* Rounds: the candidates still wanted, generated in attempt order,
         * then guarded by the teacher in one batch and kept in that order,
         * so the rows kept are those of one candidate at a time while the
         * teacher's forward passes run batched. */
        long long made = 0, a = a0;
        const int li = teacher ? nn_model_label_index(teacher, label) : -1;
        while (!st && made < per_parent && a < a0 + span && made_l < quota && res->generated < wanted) {
          long long want = per_parent - made;
          if (quota - made_l < want) want = quota - made_l;
          if (wanted - res->generated < want) want = wanted - res->generated;
          if (want > AUG_BATCH) want = AUG_BATCH;
          size_t nb = 0;
          for (; !st && (long long)nb < want && a < a0 + span; a++) {
            size_t mi = (size_t)((k - i) + a) % nm;
            if (!methods[mi]->apply(states[mi], text, stream_of(opts->seed, hash, a), variant, cap, mp, sizeof mp))
              continue;
            char *norm = NULL;
            if (finch_text_normalize(variant, strlen(variant), FINCH_TEXT_FOLD, &norm, NULL)) continue;
            if (!*norm || strcmp(norm, pnorm) == 0) { /* a case- or space-only change is no new row */
              free(norm);
              continue;
            }
            aug_cand *c = &cands[nb];
            finch_utterance_hash(norm, label, "", c->chash);
            c->key = hash_key(c->chash);
            /* A twin of a candidate earlier in the round counts as a
             * duplicate even when the guard then drops that twin (one at a
             * time, the guard would have judged it alike: the same normalised
             * text). */
            int dup = hash_set_has(&seen, c->key);
            for (size_t q = 0; !dup && q < nb; q++) dup = cands[q].key == c->key;
            if (dup) {
              res->duplicates++;
              free(norm);
              continue;
            }
            c->mi = mi;
            c->norm = norm;
            c->text = strdup(variant);
            c->mp = strdup(mp);
            if (!c->text || !c->mp) {
              free(c->text), free(c->mp), free(norm);
              st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
              break;
            }
            ctexts[nb++] = c->text;
          }
          /* The label guard, and the teacher's soft labels for the kept rows:
           * softmax(z / tau) is p^(1/tau) renormalised, so one forward pass
           * serves both. */
          if (!st && li >= 0 && nb) st = nn_model_predict_many(teacher, ctexts, nb, probs, NULL, 1.0f, err);
          for (size_t q = 0; q < nb; q++) {
            aug_cand *c = &cands[q];
            char *plist = NULL;
            int keep = !st;
            if (keep && li >= 0) {
              float *pr = probs + q * C_t;
              size_t top = 0;
              for (size_t cc = 1; cc < C_t; cc++)
                if (pr[cc] > pr[top]) top = cc;
              if ((int)top != li && pr[top] >= threshold) {
                res->method_dropped[c->mi]++;
                keep = 0;
              } else {
                size_t o = 0;
                double z = 0;
                for (size_t cc = 0; cc < C_t; cc++) z += (pr[cc] = powf(pr[cc], (float)(1.0 / tau)));
                for (size_t cc = 0; cc < C_t; cc++) pr[cc] = (float)(pr[cc] / z);
                plist = malloc(C_t * 16 + 3);
                if (plist) {
                  plist[o++] = '{';
                  for (size_t cc = 0; cc < C_t; cc++) o += (size_t)sprintf(plist + o, "%s%.5g", cc ? "," : "", pr[cc]);
                  plist[o++] = '}';
                  plist[o] = '\0';
                }
              }
            }
            if (keep && hash_set_add(&seen, c->key) < 0) {
              st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
              keep = 0;
            }
            if (keep && (finch_copybuf_field(&b, dsid, 0) || finch_copybuf_field(&b, id, 0) ||
                         finch_copybuf_field(&b, c->text, 0) || finch_copybuf_field(&b, c->norm, 0) ||
                         finch_copybuf_field(&b, label, 0) || finch_copybuf_field(&b, methods[c->mi]->name, 0) ||
                         finch_copybuf_field(&b, c->mp, 0) || finch_copybuf_field(&b, c->chash, 0) ||
                         finch_copybuf_field(&b, runid, 0) || finch_copybuf_field(&b, plist, 1))) {
              st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
              keep = 0;
            }
            if (keep) {
              made++;
              made_l++;
              res->generated++;
            }
            free(plist);
            free(c->norm);
            free(c->text);
            free(c->mp);
          }
        }
        if (!st && b.len > (8u << 20)) st = flush_rows(db, &b, res, tau, err);
        if (opts->progress && finch_clock_s() - last > 0.2) {
          last = finch_clock_s();
          fprintf(stderr, "\raugment: %lld / %lld variants, %.0f/s   ", res->generated, wanted,
                  (double)res->generated / (last - t0));
        }
      }
    }
    i = j;
  }
  if (!st && b.len) st = flush_rows(db, &b, res, tau, err);
  if (opts->progress) fprintf(stderr, "\raugment: %lld / %lld variants%30s\n", res->generated, wanted, "");
  finch_copybuf_free(&b);
  free(variant);
  free(probs);
  free(cands);
  free(ctexts);
  free(seen.slots);
  nn_model_free(teacher);
  PQclear(parents);
  PQclear(existing);
  for (size_t m = 0; m < opened; m++) methods[m]->close(states[m]);
  res->seconds = finch_clock_s() - t0;
  if (res->run_id == 0) return st;
  char gen[32], ins[32];
  snprintf(gen, sizeof gen, "%lld", res->generated);
  snprintf(ins, sizeof ins, "%lld", res->inserted);
  char dropped[512] = "{";
  for (size_t m = 0; m < nm; m++)
    snprintf(dropped + strlen(dropped), sizeof dropped - strlen(dropped), "%s\"%s\": %lld", m ? ", " : "",
             methods[m]->name, res->method_dropped[m]);
  strncat(dropped, "}", sizeof dropped - strlen(dropped) - 1);
  const char *p3[] = {runid, gen, ins, dropped};
  if (!st)
    st = finch_db_run(db, "UPDATE augment_runs SET status = 'done', finished_at = now(), rows_generated = $2,"
                          " rows_inserted = $3, dropped = $4::jsonb WHERE id = $1", 4, p3, err);
  if (!st) return finch_db_exec(db, "COMMIT", err);
  finch_db_rollback(db);
  finch_err ignore;
  finch_db_run(db, "UPDATE augment_runs SET status = 'failed', finished_at = now() WHERE id = $1", 1, p3, &ignore);
  return st;
}
