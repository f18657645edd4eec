/* External teachers (distill/external.h): the dataset, the teacher's
 * registration and stored outputs, JSONL import and the soft labels
 * distillation reads; the completions endpoint is in external_query.c. */
#include "distill/external.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/dataset.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/models.h"
#include "core/redact.h"
#include "core/text.h"
#include "distill/external_internal.h"

#define EXT_SUM_TOL 1e-3
#define EXT_MAX_UNKNOWN 10 /* unknown labels named in the error */

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

/* --- the dataset: its label list and labelled training rows -------------- */

void distill__ext_data_free(ext_data *d) {
  finch_dataset_split_free(d->rows);
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
  const char *const *hit = bsearch(&s, d->labels, d->C, sizeof *d->labels, finch_cmp_str);
  return hit ? (int)(hit - d->labels) : -1;
}

long distill__ext_row_by_id(const ext_data *d, long long id) {
  long long *hit = bsearch(&id, d->ids, d->n, sizeof *d->ids, cmp_ll);
  return hit ? (long)(hit - d->ids) : -1;
}

finch_status distill__ext_data_load(finch_db *db, const char *dataset, int with_hash, ext_data *d, finch_err *err) {
  memset(d, 0, sizeof *d);
  /* Labelled training rows by text_norm, the form JSONL texts are matched in. */
  finch_dataset_query q = {.dataset = dataset, .split = "train", .text_norm = 1};
  finch_status st = finch_dataset_split_load(db, &q, &d->rows, err);
  if (st) return st;
  d->n = d->rows->n;
  d->ids = d->rows->ids;
  d->labels = d->rows->label_names;
  d->C = d->rows->n_labels;
  if (d->C < 2)
    return finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' has %zu labelled training intents; need at least 2",
                         dataset, d->C);
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
    size_t b = (size_t)(ext_hash(d->rows->texts[i]) & (d->nb - 1));
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
    if (strcmp(d->rows->texts[k - 1], norm) == 0) return k;
  return 0;
}

/* --- the teacher's registration and its outputs --------------------------- */

finch_status distill__ext_teacher(finch_db *db, const char *dataset, const ext_data *d, const char *path,
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

finch_status distill__ext_store(finch_db *db, long long model_id, const char *temp, const long long *ids,
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

finch_status distill__ext_count_stored(finch_db *db, long long model_id, const char *temp, const ext_data *d,
                                       long long *n, finch_err *err) {
  char mid[32];
  snprintf(mid, sizeof mid, "%lld", model_id);
  const char *p[] = {mid, temp};
  PGresult *r = finch_db_query(db, "SELECT utterance_id FROM teacher_outputs"
                                   " WHERE model_id = $1 AND temperature = $2::real", 2, p, err);
  if (!r) return FINCH_EDB;
  *n = 0; /* one output per (model, row, temperature): each row is counted once */
  for (int i = 0; i < PQntuples(r); i++) *n += distill__ext_row_by_id(d, strtoll(PQgetvalue(r, i, 0), NULL, 10)) >= 0;
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
    long row = distill__ext_row_by_id(j->d, v);
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

void distill__ext_temp_str(float t, char *buf, size_t n) { snprintf(buf, n, "%.9g", (double)t); }

finch_status finch_external_import(finch_db *db, const finch_external_import_opts *o, finch_external_result *res,
                                   finch_err *err) {
  memset(res, 0, sizeof *res);
  if (!o->dataset || !o->path) return finch_err_set(err, FINCH_EINVAL, "soft-labels import needs a dataset and a file");
  float T = o->temperature > 0 ? o->temperature : 1.0f;
  char temp[32];
  distill__ext_temp_str(T, temp, sizeof temp);
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
  st = distill__ext_data_load(db, o->dataset, 1, &d, err);
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
  st = distill__ext_teacher(db, o->dataset, &d, abspath, sha, bytes, "jsonl", NULL, o->name, &res->model_id, &res->reused,
                   err);
  if (!st) st = distill__ext_store(db, res->model_id, temp, ids, out, m, d.C, err);
  if (!st) st = finch_db_exec(db, "COMMIT", err);
  if (!st) in_tx = 0;
  if (!st) st = distill__ext_count_stored(db, res->model_id, temp, &d, &res->n_labelled, err);
  res->n_unlabelled = res->n_train - res->n_labelled;
  if (!st)
    finch_info("%s: soft labels for %zu training row%s stored as teacher %lld (%s); %lld of %lld rows have none",
               o->path, m, m == 1 ? "" : "s", res->model_id, res->reused ? "registered earlier" : "registered now", res->n_unlabelled,
               res->n_train);
done:
  if (in_tx) finch_db_rollback(db);
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
  distill__ext_data_free(&d);
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
