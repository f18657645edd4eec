/* External teachers (distill/external.h): soft labels from a JSONL file or an
 * OpenAI-compatible completions endpoint, stored in teacher_outputs. */
#include "distill/external.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "core/hash.h"
#include "core/http.h"
#include "core/log.h"
#include "core/models.h"
#include "core/redact.h"
#include "core/text.h"

/* Part of an endpoint teacher's identity: a new prompt is a new teacher. */
#define EXT_PROMPT_VERSION "finch-external-prompt-v1"
#define EXT_PROMPT_HEAD "Classify the intent of a bank customer's message. Intents:\n"
#define EXT_SUM_TOL 1e-3
#define EXT_MAX_RETRY_AFTER_S 60
#define EXT_MAX_DELAY_MS 30000
#define EXT_MAX_UNKNOWN 10 /* unknown labels named in the error */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

/* --- the dataset: its label list and labelled training rows -------------- */

typedef struct {
  PGresult *rows;   /* id, text_norm */
  PGresult *lres;   /* distinct labels */
  size_t n;         /* training rows */
  long long *ids;   /* (n) ascending */
  char **labels;    /* (C) sorted by strcmp; point into lres */
  size_t C;
  char *labels_json; /* the label list as a JSON array (malloc'd) */
  size_t nb;        /* text_norm hash buckets (a power of 2) */
  size_t *bucket;   /* (nb) first row + 1 of the chain, 0 = empty */
  size_t *next;     /* (n) next row + 1 with the same hash */
} ext_data;

static void ext_data_free(ext_data *d) {
  PQclear(d->rows);
  PQclear(d->lres);
  free(d->ids);
  free(d->labels);
  free(d->labels_json);
  free(d->bucket);
  free(d->next);
  memset(d, 0, sizeof *d);
}

static uint64_t ext_hash(const char *s) { /* FNV-1a */
  uint64_t h = 14695981039346656037ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static int ext_label_find(const ext_data *d, const char *s) {
  char **hit = bsearch(&s, d->labels, d->C, sizeof *d->labels, cmp_str);
  return hit ? (int)(hit - d->labels) : -1;
}

static long ext_row_by_id(const ext_data *d, long long id) {
  long long *hit = bsearch(&id, d->ids, d->n, sizeof *d->ids, cmp_ll);
  return hit ? (long)(hit - d->ids) : -1;
}

static finch_status ext_data_load(finch_db *db, const char *dataset, int with_hash, ext_data *d, finch_err *err) {
  memset(d, 0, sizeof *d);
  const char *p[] = {dataset};
  PGresult *r = finch_db_query(db, "SELECT count(*) FROM datasets WHERE name = $1", 1, p, err);
  if (!r) return FINCH_EDB;
  int exists = atoll(PQgetvalue(r, 0, 0)) > 0;
  PQclear(r);
  if (!exists) return finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' does not exist (run finch ingest first)", dataset);
  d->rows = finch_db_query(db, "SELECT u.id, u.text_norm FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                               " WHERE d.name = $1 AND u.split = 'train' AND u.label IS NOT NULL ORDER BY u.id",
                           1, p, err);
  if (!d->rows) return FINCH_EDB;
  d->lres = finch_db_query(db, "SELECT DISTINCT u.label FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                               " WHERE d.name = $1 AND u.split = 'train' AND u.label IS NOT NULL", 1, p, err);
  if (!d->lres) return FINCH_EDB;
  d->n = (size_t)PQntuples(d->rows);
  d->C = (size_t)PQntuples(d->lres);
  if (d->C < 2)
    return finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' has %zu labelled training intents; need at least 2",
                         dataset, d->C);
  d->ids = malloc((d->n + 1) * sizeof *d->ids);
  d->labels = malloc(d->C * sizeof *d->labels);
  if (!d->ids || !d->labels) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; i < d->n; i++) d->ids[i] = strtoll(PQgetvalue(d->rows, (int)i, 0), NULL, 10);
  for (size_t c = 0; c < d->C; c++) d->labels[c] = PQgetvalue(d->lres, (int)c, 0);
  qsort(d->labels, d->C, sizeof *d->labels, cmp_str); /* strcmp order, as distill sorts */
  json_t *a = json_array();
  for (size_t c = 0; a && c < d->C; c++) json_array_append_new(a, json_string(d->labels[c]));
  d->labels_json = a ? json_dumps(a, JSON_COMPACT) : NULL;
  json_decref(a);
  if (!d->labels_json) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  if (!with_hash) return FINCH_OK;
  d->nb = 16;
  while (d->nb < 2 * d->n) d->nb *= 2;
  d->bucket = calloc(d->nb, sizeof *d->bucket);
  d->next = calloc(d->n + 1, sizeof *d->next);
  if (!d->bucket || !d->next) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = d->n; i-- > 0;) { /* chains in ascending row order */
    size_t b = (size_t)(ext_hash(PQgetvalue(d->rows, (int)i, 1)) & (d->nb - 1));
    d->next[i] = d->bucket[b];
    d->bucket[b] = i + 1;
  }
  return FINCH_OK;
}

/* The first training row (+1) whose text_norm is norm; 0 when none. Continue
 * a chain with ext_text_next. */
static size_t ext_text_next(const ext_data *d, const char *norm, size_t after) {
  size_t k = after ? d->next[after - 1] : d->bucket[ext_hash(norm) & (d->nb - 1)];
  for (; k; k = d->next[k - 1])
    if (strcmp(PQgetvalue(d->rows, (int)(k - 1), 1), norm) == 0) return k;
  return 0;
}

/* --- the teacher's registration and its outputs --------------------------- */

static finch_status ext_teacher(finch_db *db, const char *dataset, const ext_data *d, const char *path,
                                const char *sha, long long bytes, const char *source, const char *model,
                                const char *name, long long *id, int *reused, finch_err *err) {
  const char *p[] = {dataset, sha, d->labels_json};
  PGresult *r = finch_db_query(db, "SELECT m.id FROM models m JOIN datasets d ON d.id = m.dataset_id"
                                   " WHERE d.name = $1 AND m.arch = 'external' AND m.sha256 = $2"
                                   " AND m.config->'labels' = $3::jsonb ORDER BY m.id DESC LIMIT 1",
                               3, p, err);
  if (!r) return FINCH_EDB;
  *reused = PQntuples(r) > 0;
  *id = *reused ? atoll(PQgetvalue(r, 0, 0)) : 0;
  PQclear(r);
  if (*reused) return FINCH_OK;
  json_t *labels = json_loads(d->labels_json, 0, NULL);
  json_t *cfg = json_pack("{s:o, s:s, s:s?, s:s?}", "labels", labels, "source", source, "model", model, "name", name);
  char *cfg_s = cfg ? json_dumps(cfg, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(cfg);
  if (!cfg_s) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  finch_model_rec rec = {.kind = "teacher", .stage = "finance", .arch = "external", .dtype = "f32",
                         .dataset = dataset, .path = path, .sha256 = sha, .params = 0, .bytes = bytes,
                         .config_json = cfg_s};
  finch_status st = finch_models_register(db, &rec, id, err);
  free(cfg_s);
  return st;
}

/* Stores probs (m,C) for ids (m) at temperature, replacing earlier outputs;
 * inside the caller's transaction. */
static finch_status ext_store(finch_db *db, long long model_id, const char *temp, const long long *ids,
                              const float *probs, size_t m, size_t C, finch_err *err) {
  finch_status st = finch_db_exec(db, "CREATE TEMP TABLE finch_ext_in (utterance_id bigint, probs real[])"
                                      " ON COMMIT DROP", err);
  if (st) return st;
  st = finch_db_copy_begin(db, "COPY finch_ext_in (utterance_id, probs) FROM STDIN", err);
  if (st) return st;
  size_t cap = 32 + C * 18;
  char *line = malloc(cap);
  if (!line) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; !st && i < m; i++) {
    size_t k = (size_t)snprintf(line, cap, "%lld\t{", ids[i]);
    for (size_t c = 0; c < C; c++)
      k += (size_t)snprintf(line + k, cap - k, "%s%.9g", c ? "," : "", (double)probs[i * C + c]);
    k += (size_t)snprintf(line + k, cap - k, "}\n");
    st = finch_db_copy_put(db, line, k, err);
  }
  free(line);
  finch_err later; /* the first error is the one to report */
  finch_status end = finch_db_copy_end(db, st ? &later : err);
  if (st) return st;
  if (end) return end;
  char mid[32];
  snprintf(mid, sizeof mid, "%lld", model_id);
  const char *p[] = {mid, temp};
  return finch_db_run(db, "INSERT INTO teacher_outputs (model_id, utterance_id, temperature, probs)"
                          " SELECT $1, utterance_id, $2::real, probs FROM finch_ext_in"
                          " ON CONFLICT (model_id, utterance_id, temperature)"
                          " DO UPDATE SET probs = EXCLUDED.probs, created_at = now()", 2, p, err);
}

static void ext_rollback(finch_db *db) { PQclear(PQexec(finch_db_conn(db), "ROLLBACK")); }

/* Training rows with a stored output of model_id at temp. */
static finch_status ext_count_stored(finch_db *db, long long model_id, const char *temp, const char *dataset,
                                     long long *n, finch_err *err) {
  char mid[32];
  snprintf(mid, sizeof mid, "%lld", model_id);
  const char *p[] = {mid, temp, dataset};
  PGresult *r = finch_db_query(db, "SELECT count(*) FROM teacher_outputs t JOIN utterances u ON u.id = t.utterance_id"
                                   " JOIN datasets d ON d.id = u.dataset_id WHERE t.model_id = $1"
                                   " AND t.temperature = $2::real AND d.name = $3 AND u.split = 'train'"
                                   " AND u.label IS NOT NULL", 3, p, err);
  if (!r) return FINCH_EDB;
  *n = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  return FINCH_OK;
}

/* --- JSONL ----------------------------------------------------------------- */

typedef struct {
  const ext_data *d;
  const char *path;
  double T;
  finch_redactor *red;
  float *probs;    /* (n,C) */
  long *line_of;   /* (n) the line that gave the row, 0 = none */
  int *hdr;        /* header label k -> label index, -1 unknown */
  size_t nhdr;
  int have_hdr;
  char *unknown[EXT_MAX_UNKNOWN];
  long unknown_line[EXT_MAX_UNKNOWN];
  size_t n_unknown; /* distinct unknown labels, all counted */
  double *v;        /* (C) the line's values */
  unsigned char *given; /* (C) */
  size_t *match;    /* rows the line matched */
  size_t nmatch, capmatch;
} ext_jsonl;

static void ext_unknown(ext_jsonl *j, const char *label, long line) {
  for (size_t i = 0; i < j->n_unknown && i < EXT_MAX_UNKNOWN; i++)
    if (strcmp(j->unknown[i], label) == 0) return;
  if (j->n_unknown < EXT_MAX_UNKNOWN) {
    j->unknown[j->n_unknown] = strdup(label);
    j->unknown_line[j->n_unknown] = line;
    if (!j->unknown[j->n_unknown]) return;
  }
  j->n_unknown++;
}

static finch_status ext_match_add(ext_jsonl *j, size_t row, finch_err *err) {
  if (j->nmatch == j->capmatch) {
    size_t cap = j->capmatch ? 2 * j->capmatch : 16;
    size_t *p = realloc(j->match, cap * sizeof *p);
    if (!p) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
    j->match = p;
    j->capmatch = cap;
  }
  j->match[j->nmatch++] = row;
  return FINCH_OK;
}

/* The training rows a line names, by id or by text, into j->match. */
static finch_status ext_jsonl_target(ext_jsonl *j, json_t *o, long line, finch_err *err) {
  j->nmatch = 0;
  const char *idkey = json_object_get(o, "utterance_id") ? "utterance_id" : "id";
  json_t *id = json_object_get(o, idkey);
  if (id) {
    long long v = -1;
    if (json_is_integer(id)) {
      v = json_integer_value(id);
    } else if (json_is_string(id)) {
      const char *s = json_string_value(id);
      char *end;
      errno = 0;
      v = *s >= '0' && *s <= '9' ? strtoll(s, &end, 10) : -1;
      if (v >= 0 && (errno || *end)) v = -1;
    }
    if (v < 0)
      return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field %s: not an utterance id (a non-negative integer)",
                           j->path, line, idkey);
    long row = ext_row_by_id(j->d, v);
    return row < 0 ? FINCH_OK : ext_match_add(j, (size_t)row, err);
  }
  json_t *text = json_object_get(o, "text");
  if (!text)
    return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field utterance_id: missing (each line needs "
                         "\"utterance_id\" or \"text\")", j->path, line);
  if (!json_is_string(text))
    return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field text: not a string", j->path, line);
  /* As ingest stores it: normalised, redacted, case-folded. */
  const char *s = json_string_value(text);
  char *norm = NULL, *red = NULL, *fold = NULL;
  finch_err e;
  finch_status st = finch_text_normalize(s, json_string_length(text), 0, &norm, &e);
  if (!st) st = finch_redact(j->red, norm, strlen(norm), &red, NULL, &e);
  if (!st) st = finch_text_normalize(red, strlen(red), FINCH_TEXT_FOLD, &fold, &e);
  free(norm);
  free(red);
  if (st) return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field text: %s", j->path, line, e.msg);
  for (size_t k = ext_text_next(j->d, fold, 0); !st && k; k = ext_text_next(j->d, fold, k))
    st = ext_match_add(j, k - 1, err);
  free(fold);
  return st;
}

static finch_status ext_jsonl_number(ext_jsonl *j, json_t *v, long line, const char *field, const char *label,
                                     size_t k, double *out, finch_err *err) {
  if (!json_is_number(v)) {
    if (label) return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field %s.%s: not a number", j->path, line, field, label);
    return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field %s[%zu]: not a number", j->path, line, field, k);
  }
  *out = json_number_value(v);
  return FINCH_OK;
}

/* The line's distribution into j->v (C), from "probs" or "logits". */
static finch_status ext_jsonl_values(ext_jsonl *j, json_t *o, long line, long long *renormalised, finch_err *err) {
  const ext_data *d = j->d;
  json_t *probs = json_object_get(o, "probs"), *logits = json_object_get(o, "logits");
  if (probs && logits)
    return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: fields probs and logits: give one, not both", j->path, line);
  if (!probs && !logits)
    return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field probs: missing (each line needs \"probs\" or "
                         "\"logits\")", j->path, line);
  const char *field = probs ? "probs" : "logits";
  json_t *vals = probs ? probs : logits;
  memset(j->given, 0, d->C);
  size_t n_given = 0;
  double extra = 0; /* mass on unknown labels, for the sum check */
  double lmax = -INFINITY;
  if (json_is_object(vals)) {
    const char *key;
    json_t *v;
    json_object_foreach(vals, key, v) {
      double x = 0;
      finch_status st = ext_jsonl_number(j, v, line, field, key, 0, &x, err);
      if (st) return st;
      if (probs && x < 0)
        return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field probs.%s: negative probability %g", j->path, line,
                             key, x);
      if (probs && x > 1 + EXT_SUM_TOL)
        return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field probs.%s: probability %g is above 1", j->path,
                             line, key, x);
      int c = ext_label_find(d, key);
      if (c < 0) {
        ext_unknown(j, key, line);
        extra += probs ? x : 0;
        continue;
      }
      j->v[c] = x;
      j->given[c] = 1;
      n_given++;
      if (x > lmax) lmax = x;
    }
  } else if (json_is_array(vals)) {
    if (!j->have_hdr)
      return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field %s: an array needs a first line {\"labels\": [...]} "
                           "naming its order", j->path, line, field);
    if (json_array_size(vals) != j->nhdr)
      return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field %s: %zu values for %zu header labels", j->path, line,
                           field, json_array_size(vals), j->nhdr);
    for (size_t k = 0; k < j->nhdr; k++) {
      double x = 0;
      finch_status st = ext_jsonl_number(j, json_array_get(vals, k), line, field, NULL, k, &x, err);
      if (st) return st;
      if (probs && x < 0)
        return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field probs[%zu]: negative probability %g", j->path, line,
                             k, x);
      if (probs && x > 1 + EXT_SUM_TOL)
        return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field probs[%zu]: probability %g is above 1", j->path,
                             line, k, x);
      int c = j->hdr[k];
      if (c < 0) {
        extra += probs ? x : 0;
        continue;
      }
      j->v[c] = x;
      j->given[c] = 1;
      n_given++;
      if (x > lmax) lmax = x;
    }
  } else {
    return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field %s: expected an object of label: value (or an array)",
                         j->path, line, field);
  }
  if (n_given == 0) {
    if (extra > 0 || j->n_unknown) return FINCH_OK; /* only unknown labels: reported at the end */
    return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field %s: no labels", j->path, line, field);
  }
  double sum = 0;
  if (probs) {
    for (size_t c = 0; c < d->C; c++) sum += j->given[c] ? j->v[c] : 0;
    double total = sum + extra;
    if (total > 1 + EXT_SUM_TOL)
      return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field probs: sums to %.6g, more than 1", j->path, line, total);
    if (n_given == d->C && total < 1 - EXT_SUM_TOL)
      return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field probs: sums to %.6g over every label, not 1 (within "
                           "%g)", j->path, line, total, EXT_SUM_TOL);
    if (!(sum > 0))
      return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field probs: no probability mass on the dataset's labels",
                           j->path, line);
    if (fabs(sum - 1) > 1e-6) (*renormalised)++;
    for (size_t c = 0; c < d->C; c++) j->v[c] = j->given[c] ? j->v[c] / sum : 0;
  } else {
    for (size_t c = 0; c < d->C; c++)
      if (j->given[c]) sum += (j->v[c] = exp((j->v[c] - lmax) / j->T));
    for (size_t c = 0; c < d->C; c++) j->v[c] = j->given[c] ? j->v[c] / sum : 0;
  }
  return FINCH_OK;
}

/* The optional first line {"labels": [...]}. */
static finch_status ext_jsonl_header(ext_jsonl *j, json_t *labels, long line, finch_err *err) {
  if (!json_is_array(labels) || json_array_size(labels) == 0)
    return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field labels: expected a non-empty array of label names",
                         j->path, line);
  j->nhdr = json_array_size(labels);
  j->hdr = malloc(j->nhdr * sizeof *j->hdr);
  if (!j->hdr) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t k = 0; k < j->nhdr; k++) {
    json_t *s = json_array_get(labels, k);
    if (!json_is_string(s))
      return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field labels[%zu]: not a string", j->path, line, k);
    j->hdr[k] = ext_label_find(j->d, json_string_value(s));
    if (j->hdr[k] < 0) ext_unknown(j, json_string_value(s), line);
    for (size_t q = 0; q < k; q++)
      if (j->hdr[k] >= 0 && j->hdr[q] == j->hdr[k])
        return finch_err_set(err, FINCH_EFORMAT, "%s:%ld: field labels[%zu]: '%s' repeats labels[%zu]", j->path,
                             line, k, json_string_value(s), q);
  }
  j->have_hdr = 1;
  return FINCH_OK;
}

static int ext_blank(const char *s) {
  for (; *s; s++)
    if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return 0;
  return 1;
}

/* Reads the whole file into j->probs / j->line_of, validating every line. */
static finch_status ext_jsonl_read(ext_jsonl *j, FILE *fp, finch_external_result *res, finch_err *err) {
  const ext_data *d = j->d;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  long lineno = 0, first_unmatched = 0, first_dup = 0;
  int seen_data = 0;
  finch_status st = FINCH_OK;
  while (!st && (len = getline(&line, &cap, fp)) >= 0) {
    lineno++;
    if (ext_blank(line)) continue;
    json_error_t je;
    json_t *o = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &je);
    if (!o) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s:%ld: invalid JSON at column %d: %s", j->path, lineno, je.column,
                         je.text);
      break;
    }
    if (!json_is_object(o)) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s:%ld: expected a JSON object", j->path, lineno);
    } else if (!seen_data && !j->have_hdr && json_object_get(o, "labels") && !json_object_get(o, "probs") &&
               !json_object_get(o, "logits")) {
      st = ext_jsonl_header(j, json_object_get(o, "labels"), lineno, err);
    } else {
      seen_data = 1;
      res->n_lines++;
      st = ext_jsonl_target(j, o, lineno, err);
      if (!st) st = ext_jsonl_values(j, o, lineno, &res->n_renormalised, err);
      if (!st && j->nmatch == 0) {
        res->n_unmatched++;
        if (!first_unmatched) first_unmatched = lineno;
      }
      int dup = 0;
      for (size_t m = 0; !st && m < j->nmatch; m++) {
        size_t row = j->match[m];
        dup |= j->line_of[row] != 0;
        j->line_of[row] = lineno;
        for (size_t c = 0; c < d->C; c++) j->probs[row * d->C + c] = (float)j->v[c];
      }
      if (dup) {
        res->n_duplicate++;
        if (!first_dup) first_dup = lineno;
      }
    }
    json_decref(o);
  }
  free(line);
  if (st) return st;
  if (ferror(fp)) return finch_err_set(err, FINCH_EIO, "%s: read error: %s", j->path, strerror(errno));
  if (j->n_unknown) {
    char list[768];
    size_t k = 0;
    list[0] = '\0';
    for (size_t i = 0; i < j->n_unknown && i < EXT_MAX_UNKNOWN; i++)
      k += (size_t)snprintf(list + k, k < sizeof list ? sizeof list - k : 0, "%s%s (line %ld)", i ? ", " : "",
                            j->unknown[i], j->unknown_line[i]);
    return finch_err_set(err, FINCH_EFORMAT, "%s: %zu label%s not among the dataset's %zu training labels: %s%s",
                         j->path, j->n_unknown, j->n_unknown == 1 ? "" : "s", d->C, list,
                         j->n_unknown > EXT_MAX_UNKNOWN ? ", ..." : "");
  }
  if (res->n_lines == 0) return finch_err_set(err, FINCH_EFORMAT, "%s: no data lines", j->path);
  if (res->n_unmatched == res->n_lines)
    return finch_err_set(err, FINCH_ENOTFOUND, "%s: none of its %lld lines matches a labelled training row of the "
                         "dataset (by utterance_id or text)", j->path, res->n_lines);
  if (res->n_unmatched)
    finch_warn("%s: %lld of %lld lines match no labelled training row (first: line %ld)", j->path, res->n_unmatched,
               res->n_lines, first_unmatched);
  if (res->n_duplicate)
    finch_warn("%s: %lld line%s give rows an earlier line gave; the later line wins (first: line %ld)", j->path,
               res->n_duplicate, res->n_duplicate == 1 ? "" : "s", first_dup);
  if (res->n_renormalised)
    finch_info("%s: %lld line%s renormalised (labels left out, or sums within %g of 1)", j->path,
               res->n_renormalised, res->n_renormalised == 1 ? "" : "s", EXT_SUM_TOL);
  return FINCH_OK;
}

static void ext_temp_str(float t, char *buf, size_t n) { snprintf(buf, n, "%.9g", (double)t); }

finch_status finch_external_import(finch_db *db, const finch_external_import_opts *o, finch_external_result *res,
                                   finch_err *err) {
  memset(res, 0, sizeof *res);
  if (!o->dataset || !o->path) return finch_err_set(err, FINCH_EINVAL, "soft-labels import needs a dataset and a file");
  float T = o->temperature > 0 ? o->temperature : 1.0f;
  char temp[32];
  ext_temp_str(T, temp, sizeof temp);
  char sha[FINCH_SHA256_HEX_LEN];
  finch_status st = finch_sha256_file(o->path, sha, err);
  if (st) return st;
  FILE *fp = fopen(o->path, "rb");
  if (!fp) return finch_err_set(err, FINCH_EIO, "%s: %s", o->path, strerror(errno));
  struct stat sb;
  long long bytes = fstat(fileno(fp), &sb) == 0 ? (long long)sb.st_size : 0;
  char abspath[PATH_MAX];
  if (!realpath(o->path, abspath)) snprintf(abspath, sizeof abspath, "%s", o->path);

  ext_data d;
  ext_jsonl j = {.path = o->path, .T = T};
  long long *ids = NULL;
  float *out = NULL;
  int in_tx = 0;
  st = ext_data_load(db, o->dataset, 1, &d, err);
  if (st) goto done;
  j.d = &d;
  res->n_labels = (long long)d.C;
  res->n_train = (long long)d.n;
  st = finch_redactor_open(&j.red, NULL, 0, err);
  if (st) goto done;
  j.probs = calloc(d.n * d.C + 1, sizeof *j.probs);
  j.line_of = calloc(d.n + 1, sizeof *j.line_of);
  j.v = calloc(d.C, sizeof *j.v);
  j.given = calloc(d.C, 1);
  if (!j.probs || !j.line_of || !j.v || !j.given) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto done;
  }
  st = ext_jsonl_read(&j, fp, res, err);
  if (st) goto done;

  /* The rows that got a distribution, packed for COPY. */
  size_t m = 0;
  for (size_t i = 0; i < d.n; i++) m += j.line_of[i] != 0;
  ids = malloc((m + 1) * sizeof *ids);
  out = malloc((m * d.C + 1) * sizeof *out);
  if (!ids || !out) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto done;
  }
  m = 0;
  for (size_t i = 0; i < d.n; i++)
    if (j.line_of[i]) {
      ids[m] = d.ids[i];
      memcpy(out + m * d.C, j.probs + i * d.C, d.C * sizeof *out);
      m++;
    }
  st = finch_db_exec(db, "BEGIN", err);
  if (st) goto done;
  in_tx = 1;
  st = ext_teacher(db, o->dataset, &d, abspath, sha, bytes, "jsonl", NULL, o->name, &res->model_id, &res->reused,
                   err);
  if (!st) st = ext_store(db, res->model_id, temp, ids, out, m, d.C, err);
  if (!st) st = finch_db_exec(db, "COMMIT", err);
  if (!st) in_tx = 0;
  if (!st) st = ext_count_stored(db, res->model_id, temp, o->dataset, &res->n_labelled, err);
  res->n_unlabelled = res->n_train - res->n_labelled;
  if (!st)
    finch_info("%s: soft labels for %zu training row%s stored as teacher %lld (%s); %lld of %lld rows have none",
               o->path, m, m == 1 ? "" : "s", res->model_id, res->reused ? "registered earlier" : "registered now", res->n_unlabelled,
               res->n_train);
done:
  if (in_tx) ext_rollback(db);
  fclose(fp);
  for (size_t i = 0; i < j.n_unknown && i < EXT_MAX_UNKNOWN; i++) free(j.unknown[i]);
  finch_redactor_free(j.red);
  free(j.probs);
  free(j.line_of);
  free(j.hdr);
  free(j.v);
  free(j.given);
  free(j.match);
  free(ids);
  free(out);
  ext_data_free(&d);
  return st;
}

/* --- the endpoint ---------------------------------------------------------- */

static pthread_once_t ext_curl_once = PTHREAD_ONCE_INIT;
static CURLcode ext_curl_rc = CURLE_OK;
static void ext_curl_init(void) { ext_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct {
  char *buf;
  size_t len, cap;
  int oom;
  long retry_after_s;
} ext_reply;

static size_t ext_write_cb(char *data, size_t size, size_t nmemb, void *ctx) {
  ext_reply *r = ctx;
  size_t n = size * nmemb;
  if (r->len + n + 1 > r->cap) {
    size_t cap = r->cap ? r->cap : 65536;
    while (cap < r->len + n + 1) cap *= 2;
    char *p = realloc(r->buf, cap);
    if (!p) {
      r->oom = 1;
      return 0;
    }
    r->buf = p;
    r->cap = cap;
  }
  memcpy(r->buf + r->len, data, n);
  r->len += n;
  r->buf[r->len] = '\0';
  return n;
}

static size_t ext_header_cb(char *line, size_t size, size_t nitems, void *ctx) {
  ext_reply *r = ctx;
  size_t n = size * nitems;
  long v = finch_http_retry_after(line, n, EXT_MAX_RETRY_AFTER_S);
  if (v >= 0) r->retry_after_s = v; /* an HTTP date: the backoff */
  return n;
}

static void ext_sleep_ms(long long ms) {
  struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static uint64_t ext_rand(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ULL;
}

typedef struct {
  CURL *easy;
  struct curl_slist *hdrs;
  char url[4096];     /* the request URL */
  char display[4096]; /* the URL without credentials, for messages */
  int max_retries;
  long backoff_ms;
  uint64_t rng;
  long long n_requests;
  char errbuf[CURL_ERROR_SIZE];
} ext_client;

/* Posts body; on success r->buf holds the 2xx answer. */
static finch_status ext_post(ext_client *cl, const char *body, ext_reply *r, finch_err *err) {
  curl_easy_setopt(cl->easy, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(cl->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
  curl_easy_setopt(cl->easy, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(cl->easy, CURLOPT_HEADERDATA, r);
  char *errbuf = cl->errbuf;
  for (int failures = 0;;) {
    r->len = 0;
    r->oom = 0;
    r->retry_after_s = 0;
    if (r->buf) r->buf[0] = '\0';
    errbuf[0] = '\0';
    cl->n_requests++;
    CURLcode rc = curl_easy_perform(cl->easy);
    long code = 0;
    curl_easy_getinfo(cl->easy, CURLINFO_RESPONSE_CODE, &code);
    if (r->oom) return finch_err_set(err, FINCH_ENOMEM, "POST %s: out of memory for the answer", cl->display);
    if (rc == CURLE_OK && code >= 200 && code < 300) return FINCH_OK;
    char reason[CURL_ERROR_SIZE + 256];
    int retry;
    if (rc == CURLE_OK) {
      retry = finch_http_retryable_status(code);
      snprintf(reason, sizeof reason, "HTTP %ld: %.200s", code, r->buf ? r->buf : "");
    } else {
      retry = finch_http_retryable_curl(rc);
      snprintf(reason, sizeof reason, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
    }
    if (!retry) return finch_err_set(err, FINCH_EIO, "POST %s: %s", cl->display, reason);
    if (++failures > cl->max_retries)
      return finch_err_set(err, FINCH_EIO, "POST %s: %s (gave up after %d attempt%s)", cl->display, reason, failures,
                           failures == 1 ? "" : "s");
    long long base = cl->backoff_ms;
    for (int i = 1; i < failures && base < EXT_MAX_DELAY_MS; i++) base *= 2;
    if (base > EXT_MAX_DELAY_MS) base = EXT_MAX_DELAY_MS;
    long long delay = base - base / 2 + (base / 2 > 0 ? (long long)(ext_rand(&cl->rng) % (uint64_t)(base / 2 + 1)) : 0);
    if (r->retry_after_s * 1000LL > delay) delay = r->retry_after_s * 1000LL;
    finch_warn("POST %s: %s; retry %d of %d in %lld ms", cl->display, reason, failures, cl->max_retries, delay);
    ext_sleep_ms(delay);
  }
}

/* url without "user:password@". */
static void ext_display_url(const char *url, char *out, size_t n) {
  const char *host = strstr(url, "://");
  host = host ? host + 3 : url;
  size_t hl = strcspn(host, "/?#");
  const char *at = memchr(host, '@', hl);
  if (!at) {
    snprintf(out, n, "%s", url);
    return;
  }
  snprintf(out, n, "%.*s%s", (int)(host - url), url, at + 1);
}

static finch_status ext_client_open(ext_client *cl, const finch_external_query_opts *o, finch_err *err) {
  memset(cl, 0, sizeof *cl);
  pthread_once(&ext_curl_once, ext_curl_init);
  if (ext_curl_rc != CURLE_OK)
    return finch_err_set(err, FINCH_EIO, "cannot initialise libcurl: %s", curl_easy_strerror(ext_curl_rc));
  size_t ul = strlen(o->url);
  while (ul > 0 && o->url[ul - 1] == '/') ul--;
  const char *suffix = "/v1/completions";
  if (ul >= 15 && strncmp(o->url + ul - 15, "/v1/completions", 15) == 0) suffix = "";
  else if (ul >= 3 && strncmp(o->url + ul - 3, "/v1", 3) == 0) suffix = "/completions";
  if (ul + strlen(suffix) + 1 > sizeof cl->url) return finch_err_set(err, FINCH_EINVAL, "the endpoint URL is too long");
  snprintf(cl->url, sizeof cl->url, "%.*s%s", (int)ul, o->url, suffix);
  ext_display_url(cl->url, cl->display, sizeof cl->display);
  if (strncmp(cl->url, "http://", 7) != 0 && strncmp(cl->url, "https://", 8) != 0)
    return finch_err_set(err, FINCH_EINVAL, "endpoint %s: not an http:// or https:// URL", cl->display);
  cl->max_retries = o->max_retries >= 0 ? o->max_retries : 5;
  cl->backoff_ms = o->backoff_ms > 0 ? o->backoff_ms : 500;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  cl->rng = ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ (uint64_t)(uintptr_t)cl;
  if (!cl->rng) cl->rng = 1;
  cl->easy = curl_easy_init();
  if (!cl->easy) return finch_err_set(err, FINCH_ENOMEM, "curl_easy_init failed");
  cl->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
  cl->hdrs = cl->hdrs ? curl_slist_append(cl->hdrs, "Expect:") : NULL;
  if (cl->hdrs && o->api_key && *o->api_key) {
    size_t kn = strlen(o->api_key) + 32;
    char *auth = malloc(kn);
    if (auth) {
      snprintf(auth, kn, "Authorization: Bearer %s", o->api_key);
      struct curl_slist *h = curl_slist_append(cl->hdrs, auth);
      memset(auth, 0, kn);
      free(auth);
      cl->hdrs = h;
    } else {
      cl->hdrs = NULL;
    }
  }
  if (!cl->hdrs) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  CURL *e = cl->easy;
  curl_easy_setopt(e, CURLOPT_URL, cl->url);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85: the _STR forms */
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, cl->hdrs);
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 15L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT, o->timeout_s > 0 ? o->timeout_s : 300L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "finch");
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cl->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, ext_write_cb);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, ext_header_cb);
  return FINCH_OK;
}

static void ext_client_close(ext_client *cl) {
  if (cl->easy) curl_easy_cleanup(cl->easy);
  curl_slist_free_all(cl->hdrs);
}

/* The log-likelihood of each label from a row's C echoed choices ch[0..C),
 * up to a constant: the sum of the logprobs of each choice's tokens after the
 * longest run of leading tokens that all C share (at least one token each is
 * kept), the last token (the one generated) left out. A shared token has the
 * same context, hence the same logprob, in every choice, so leaving it out
 * shifts every score alike, which softmax ignores. No character offsets are
 * needed: servers compute them differently for SentencePiece tokens. */
static finch_status ext_row_scores(json_t *const *ch, size_t C, size_t first, double *score, const char *where,
                                   finch_err *err) {
  json_t *toks0 = NULL;
  size_t keep = SIZE_MAX; /* shared leading tokens */
  for (size_t c = 0; c < C; c++) {
    json_t *lp = json_object_get(ch[c], "logprobs");
    json_t *toks = json_object_get(lp, "tokens"), *tlp = json_object_get(lp, "token_logprobs");
    if (!json_is_array(toks) || !json_is_array(tlp))
      return finch_err_set(err, FINCH_EFORMAT, "%s: choice %zu: no logprobs.tokens and token_logprobs (does the "
                           "server support \"echo\" with \"logprobs\"?)", where, first + c);
    size_t nt = json_array_size(toks);
    if (json_array_size(tlp) != nt || nt < 3)
      return finch_err_set(err, FINCH_EFORMAT, "%s: choice %zu: %zu tokens and %zu logprobs: not an echoed prompt",
                           where, first + c, nt, json_array_size(tlp));
    if (c == 0) {
      toks0 = toks;
      keep = nt;
    }
    size_t k = 0;
    while (k < keep && k < nt && json_equal(json_array_get(toks, k), json_array_get(toks0, k))) k++;
    keep = k < nt - 2 ? k : nt - 2;
  }
  for (size_t c = 0; c < C; c++) {
    json_t *tlp = json_object_get(json_object_get(ch[c], "logprobs"), "token_logprobs");
    size_t nt = json_array_size(tlp);
    double sum = 0;
    for (size_t k = keep; k + 1 < nt; k++) {
      json_t *v = json_array_get(tlp, k);
      if (!json_is_number(v))
        return finch_err_set(err, FINCH_EFORMAT, "%s: choice %zu: token %zu of the label has no logprob", where,
                             first + c, k);
      sum += json_number_value(v);
    }
    score[c] = sum;
  }
  return FINCH_OK;
}

finch_status finch_external_query(finch_db *db, const finch_external_query_opts *o, finch_external_result *res,
                                  finch_err *err) {
  memset(res, 0, sizeof *res);
  if (!o->dataset || !o->url || !o->model || !*o->url || !*o->model)
    return finch_err_set(err, FINCH_EINVAL, "soft-labels query needs a dataset, an endpoint URL and a model name");
  float T = o->temperature > 0 ? o->temperature : 1.0f;
  char temp[32];
  ext_temp_str(T, temp, sizeof temp);
  size_t batch = o->batch > 0 ? (size_t)o->batch : 8;
  ext_client cl;
  ext_data d;
  memset(&d, 0, sizeof d);
  finch_status st = ext_client_open(&cl, o, err);
  char *head = NULL, *body = NULL;
  size_t *todo = NULL;
  unsigned char *done = NULL;
  double *score = NULL;
  float *probs = NULL;
  long long *ids = NULL;
  char **prefix = NULL;
  ext_reply reply = {0};
  json_t *answer = NULL;
  if (st) goto out;
  st = ext_data_load(db, o->dataset, 0, &d, err);
  if (st) goto out;
  res->n_labels = (long long)d.C;
  res->n_train = (long long)d.n;

  /* The teacher: endpoint, model and prompt version. */
  size_t kn = strlen(cl.display) + strlen(o->model) + sizeof EXT_PROMPT_VERSION + 4;
  char *key = malloc(kn);
  if (!key) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(key, kn, "%s\n%s\n%s", cl.display, o->model, EXT_PROMPT_VERSION);
  char sha[FINCH_SHA256_HEX_LEN];
  finch_sha256_hex(key, strlen(key), sha);
  free(key);
  st = ext_teacher(db, o->dataset, &d, cl.display, sha, 0, "endpoint", o->model, o->name, &res->model_id,
                   &res->reused, err);
  if (st) goto out;

  /* Rows stored earlier at this temperature are skipped. */
  done = calloc(d.n + 1, 1);
  todo = malloc((d.n + 1) * sizeof *todo);
  if (!done || !todo) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  char mid[32];
  snprintf(mid, sizeof mid, "%lld", res->model_id);
  const char *p[] = {mid, temp};
  PGresult *r = finch_db_query(db, "SELECT utterance_id FROM teacher_outputs WHERE model_id = $1 AND temperature = $2::real",
                               2, p, err);
  if (!r) {
    st = FINCH_EDB;
    goto out;
  }
  for (int i = 0; i < PQntuples(r); i++) {
    long row = ext_row_by_id(&d, strtoll(PQgetvalue(r, i, 0), NULL, 10));
    if (row >= 0 && !done[row]) {
      done[row] = 1;
      res->n_cached++;
    }
  }
  PQclear(r);
  size_t ntodo = 0;
  for (size_t i = 0; i < d.n; i++)
    if (!done[i]) todo[ntodo++] = i;
  finch_info("endpoint teacher %lld (%s, model %s): %zu training row(s) to score, %lld already stored, %zu labels",
             res->model_id, cl.display, o->model, ntodo, res->n_cached, d.C);

  /* The prompt head is shared by every prompt: the label list. */
  size_t hn = sizeof EXT_PROMPT_HEAD;
  for (size_t c = 0; c < d.C; c++) hn += strlen(d.labels[c]) + 1;
  head = malloc(hn);
  score = malloc(batch * d.C * sizeof *score);
  probs = malloc(batch * d.C * sizeof *probs);
  ids = malloc(batch * sizeof *ids);
  prefix = calloc(batch, sizeof *prefix);
  if (!head || !score || !probs || !ids || !prefix) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  size_t k = (size_t)snprintf(head, hn, "%s", EXT_PROMPT_HEAD);
  for (size_t c = 0; c < d.C; c++) k += (size_t)snprintf(head + k, hn - k, "%s\n", d.labels[c]);

  PGresult *texts = NULL;
  for (size_t b0 = 0; !st && b0 < ntodo; b0 += batch) {
    size_t nb = ntodo - b0 < batch ? ntodo - b0 : batch;
    /* The rows' stored (redacted) text. */
    char *idl = malloc(nb * 24 + 4);
    if (!idl) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    size_t il = (size_t)sprintf(idl, "{");
    for (size_t i = 0; i < nb; i++) {
      ids[i] = d.ids[todo[b0 + i]];
      il += (size_t)sprintf(idl + il, "%s%lld", i ? "," : "", ids[i]);
    }
    sprintf(idl + il, "}");
    const char *tp[] = {idl};
    texts = finch_db_query(db, "SELECT u.id, u.text FROM utterances u WHERE u.id = ANY($1::bigint[]) ORDER BY u.id",
                           1, tp, err);
    free(idl);
    if (!texts) {
      st = FINCH_EDB;
      break;
    }
    if ((size_t)PQntuples(texts) != nb) {
      st = finch_err_set(err, FINCH_EINTERNAL, "training rows vanished while scoring (%d of %zu)", PQntuples(texts), nb);
      break;
    }
    /* ids ascend in todo, as in the query's ORDER BY. */
    json_t *prompts = json_array();
    for (size_t i = 0; prompts && i < nb; i++) {
      const char *t = PQgetvalue(texts, (int)i, 1);
      size_t pn = strlen(head) + strlen(t) + 32;
      free(prefix[i]);
      prefix[i] = malloc(pn);
      if (!prefix[i]) break;
      snprintf(prefix[i], pn, "%sMessage: %s\nIntent:", head, t);
      size_t qn = pn + 1;
      for (size_t c = 0; c < d.C; c++) {
        size_t cn = qn + strlen(d.labels[c]);
        char *q = malloc(cn);
        if (!q) break;
        snprintf(q, cn, "%s %s", prefix[i], d.labels[c]);
        json_array_append_new(prompts, json_string(q));
        free(q);
      }
    }
    PQclear(texts);
    texts = NULL;
    if (!prompts || json_array_size(prompts) != nb * d.C) {
      json_decref(prompts);
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    json_t *req = json_pack("{s:s, s:o, s:i, s:i, s:i, s:b}", "model", o->model, "prompt", prompts, "max_tokens", 1,
                            "temperature", 0, "logprobs", 1, "echo", 1);
    free(body);
    body = req ? json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(req);
    if (!body) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    st = ext_post(&cl, body, &reply, err);
    if (st) break;
    json_decref(answer);
    json_error_t je;
    answer = json_loadb(reply.buf ? reply.buf : "", reply.len, 0, &je);
    json_t *choices = json_object_get(answer, "choices");
    if (!json_is_array(choices) || json_array_size(choices) != nb * d.C) {
      st = finch_err_set(err, FINCH_EFORMAT, "POST %s: expected %zu choices, got %s", cl.display, nb * d.C,
                         !answer ? je.text : json_is_array(choices) ? "another number" : "no \"choices\" array");
      break;
    }
    json_t **bych = calloc(nb * d.C, sizeof *bych); /* choices by index */
    if (!bych) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      break;
    }
    for (size_t q = 0; !st && q < nb * d.C; q++) {
      json_t *ch = json_array_get(choices, q);
      json_t *iv = json_object_get(ch, "index");
      size_t idx = json_is_integer(iv) ? (size_t)json_integer_value(iv) : q;
      if (!json_is_object(ch) || (json_is_integer(iv) && json_integer_value(iv) < 0) || idx >= nb * d.C || bych[idx])
        st = finch_err_set(err, FINCH_EFORMAT, "POST %s: choice %zu has a bad or repeated index", cl.display, q);
      else
        bych[idx] = ch;
    }
    for (size_t i = 0; !st && i < nb; i++)
      st = ext_row_scores(bych + i * d.C, d.C, i * d.C, score + i * d.C, cl.display, err);
    free(bych);
    if (st) break;
    for (size_t i = 0; i < nb; i++) {
      double mx = -INFINITY, sum = 0;
      for (size_t c = 0; c < d.C; c++) mx = score[i * d.C + c] > mx ? score[i * d.C + c] : mx;
      for (size_t c = 0; c < d.C; c++) sum += exp((score[i * d.C + c] - mx) / T);
      for (size_t c = 0; c < d.C; c++) probs[i * d.C + c] = (float)(exp((score[i * d.C + c] - mx) / T) / sum);
    }
    st = finch_db_exec(db, "BEGIN", err);
    if (st) break;
    st = ext_store(db, res->model_id, temp, ids, probs, nb, d.C, err);
    if (!st) st = finch_db_exec(db, "COMMIT", err);
    if (st) {
      ext_rollback(db);
      break;
    }
    res->n_scored += (long long)nb;
    finch_info("scored %lld of %zu rows (%lld request%s)", res->n_scored, ntodo, cl.n_requests,
               cl.n_requests == 1 ? "" : "s");
  }
  PQclear(texts);
  if (!st) st = ext_count_stored(db, res->model_id, temp, o->dataset, &res->n_labelled, err);
  res->n_unlabelled = res->n_train - res->n_labelled;
out:
  res->n_requests = cl.n_requests;
  json_decref(answer);
  free(reply.buf);
  for (size_t i = 0; prefix && i < batch; i++) free(prefix[i]);
  free(prefix);
  free(head);
  free(body);
  free(todo);
  free(done);
  free(score);
  free(probs);
  free(ids);
  ext_data_free(&d);
  ext_client_close(&cl);
  return st;
}

/* --- soft labels for distillation ----------------------------------------- */

typedef struct {
  long long id;
  size_t i;
} ext_idx;

static int cmp_idx(const void *a, const void *b) {
  const ext_idx *x = a, *y = b;
  return x->id < y->id ? -1 : x->id > y->id ? 1 : (x->i > y->i) - (x->i < y->i);
}

finch_status finch_external_soft_labels(finch_db *db, long long teacher_model_id, const char *const *utterance_ids,
                                        size_t n, const char *const *labels, size_t C, float tau, float *probs_out,
                                        unsigned char *have, finch_err *err) {
  if (!(tau > 0)) return finch_err_set(err, FINCH_EINVAL, "soft labels: temperature %g is not positive", (double)tau);
  memset(probs_out, 0, n * C * sizeof *probs_out);
  memset(have, 0, n);
  if (n == 0 || C == 0) return FINCH_OK;
  char mid[32], ts[32];
  snprintf(mid, sizeof mid, "%lld", teacher_model_id);
  snprintf(ts, sizeof ts, "%.9g", (double)tau);
  const char *mp[] = {mid};
  PGresult *r = finch_db_query(db, "SELECT config->'labels' FROM models WHERE id = $1", 1, mp, err);
  if (!r) return FINCH_EDB;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return finch_err_set(err, FINCH_ENOTFOUND, "teacher %lld is not registered", teacher_model_id);
  }
  json_t *tl = PQgetisnull(r, 0, 0) ? NULL : json_loads(PQgetvalue(r, 0, 0), 0, NULL);
  PQclear(r);
  if (!json_is_array(tl)) {
    json_decref(tl);
    return finch_err_set(err, FINCH_EFORMAT, "teacher %lld: its config has no label list", teacher_model_id);
  }
  size_t Ct = json_array_size(tl);
  int *map = malloc((Ct + 1) * sizeof *map); /* teacher label -> caller label, -1 = dropped */
  ext_idx *ix = malloc(n * sizeof *ix);
  double *lp = malloc((Ct + 1) * sizeof *lp);
  char *idl = malloc(n * 22 + 3);
  finch_status st = FINCH_OK;
  if (!map || !ix || !lp || !idl) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t j = 0; j < Ct; j++) {
    const char *s = json_string_value(json_array_get(tl, j));
    map[j] = -1;
    for (size_t c = 0; s && c < C; c++)
      if (strcmp(labels[c], s) == 0) map[j] = (int)c;
  }
  size_t il = (size_t)sprintf(idl, "{");
  for (size_t i = 0; i < n; i++) {
    char *end;
    errno = 0;
    long long v = strtoll(utterance_ids[i], &end, 10);
    if (errno || end == utterance_ids[i] || *end || v < 0) {
      st = finch_err_set(err, FINCH_EINVAL, "soft labels: '%s' is not an utterance id", utterance_ids[i]);
      goto out;
    }
    ix[i] = (ext_idx){v, i};
    il += (size_t)sprintf(idl + il, "%s%lld", i ? "," : "", v);
  }
  sprintf(idl + il, "}");
  qsort(ix, n, sizeof *ix, cmp_idx);
  /* Per row, the output stored at the temperature closest to tau. */
  const char *p[] = {mid, idl, ts};
  r = finch_db_query(db, "SELECT DISTINCT ON (utterance_id) utterance_id, temperature, probs FROM teacher_outputs"
                         " WHERE model_id = $1 AND utterance_id = ANY($2::bigint[])"
                         " ORDER BY utterance_id, abs(temperature - $3::real), temperature", 3, p, err);
  if (!r) {
    st = FINCH_EDB;
    goto out;
  }
  for (int t = 0; t < PQntuples(r); t++) {
    long long id = strtoll(PQgetvalue(r, t, 0), NULL, 10);
    double e = strtod(PQgetvalue(r, t, 1), NULL) / (double)tau;
    /* probs: "{p0,p1,...}" over the teacher's labels */
    const char *s = PQgetvalue(r, t, 2);
    size_t j = 0;
    if (*s == '{') s++;
    while (*s && *s != '}' && j < Ct) {
      char *end;
      double v = strtod(s, &end);
      if (end == s) break;
      lp[j++] = v > 0 ? log(v) : -INFINITY;
      s = *end == ',' ? end + 1 : end;
    }
    if (j != Ct) {
      st = finch_err_set(err, FINCH_EFORMAT, "teacher %lld, utterance %lld: %zu probabilities for %zu labels",
                         teacher_model_id, id, j, Ct);
      break;
    }
    double mx = -INFINITY;
    for (size_t q = 0; q < Ct; q++)
      if (map[q] >= 0 && lp[q] * e > mx) mx = lp[q] * e;
    if (mx == -INFINITY) continue; /* no mass on the caller's labels */
    /* lower bound of the run of this id in ix */
    size_t lo = 0, hi = n;
    while (lo < hi) {
      size_t m = (lo + hi) / 2;
      if (ix[m].id < id) lo = m + 1;
      else hi = m;
    }
    if (lo == n || ix[lo].id != id) continue;
    float *row = probs_out + ix[lo].i * C;
    double sum = 0;
    for (size_t q = 0; q < Ct; q++)
      if (map[q] >= 0 && lp[q] > -INFINITY) sum += (row[map[q]] = (float)exp(lp[q] * e - mx));
    for (size_t c = 0; c < C; c++) row[c] = (float)(row[c] / sum);
    have[ix[lo].i] = 1;
    for (size_t m = lo + 1; m < n && ix[m].id == id; m++) { /* the same id asked for again */
      memcpy(probs_out + ix[m].i * C, row, C * sizeof *row);
      have[ix[m].i] = 1;
    }
  }
  PQclear(r);
out:
  json_decref(tl);
  free(map);
  free(ix);
  free(lp);
  free(idl);
  return st;
}
