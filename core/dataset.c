/* Reading a dataset's utterances (core/dataset.h). Every read of utterances
 * by dataset name goes through select_rows(), so the join, the filters and
 * their meaning are written once. */
#include "core/dataset.h"

#include <limits.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/paths.h"
#include "core/text.h"

/* What select_rows() filters on; unset fields do not filter. */
typedef struct {
  const char *name;  /* one dataset */
  const char *names; /* or several, comma-separated */
  const char *split;
  finch_dataset_origin origin;
  int labelled; /* 1 = label IS NOT NULL */
} row_filter;

/* SELECT cols FROM the dataset's utterances WHERE the filters, then tail
 * (ORDER BY, GROUP BY). Only fixed text goes into the statement; the
 * dataset names and the split are parameters. */
static PGresult *select_rows(finch_db *db, const char *cols, const row_filter *f, const char *tail, finch_err *err) {
  char sql[1024];
  const char *p[2];
  int np = 0;
  size_t k = (size_t)snprintf(sql, sizeof sql, "SELECT %s FROM utterances u JOIN datasets d ON d.id = u.dataset_id",
                              cols);
  p[np++] = f->names ? f->names : f->name;
  k += (size_t)snprintf(sql + k, sizeof sql - k, f->names ? " WHERE d.name = ANY(string_to_array($1, ','))"
                                                         : " WHERE d.name = $1");
  if (f->split) {
    p[np++] = f->split;
    k += (size_t)snprintf(sql + k, sizeof sql - k, " AND u.split = $2");
  }
  if (f->labelled) k += (size_t)snprintf(sql + k, sizeof sql - k, " AND u.label IS NOT NULL");
  if (f->origin == FINCH_DATASET_SOURCE) k += (size_t)snprintf(sql + k, sizeof sql - k, " AND u.origin = 'source'");
  if (f->origin == FINCH_DATASET_AUGMENTED)
    k += (size_t)snprintf(sql + k, sizeof sql - k, " AND u.origin = 'augmented'");
  snprintf(sql + k, sizeof sql - k, "%s", tail);
  return finch_db_query(db, sql, np, p, err);
}

static row_filter filter_of(const finch_dataset_query *q) {
  row_filter f = {.name = q->dataset, .split = q->split, .origin = q->origin, .labelled = !q->unlabelled};
  return f;
}

finch_status finch_dataset_check(finch_db *db, const char *dataset, const char *split, finch_err *err) {
  if (split && strcmp(split, "train") != 0 && strcmp(split, "dev") != 0 && strcmp(split, "test") != 0)
    return finch_err_set(err, FINCH_EINVAL, "no split '%s' (the splits are train, dev and test)", split);
  if (!dataset || !*dataset) return finch_err_set(err, FINCH_EINVAL, "no dataset named (give --dataset NAME)");
  const char *p[] = {dataset};
  PGresult *r = finch_db_query(db, "SELECT 1 FROM datasets WHERE name = $1", 1, p, err);
  if (!r) return FINCH_EDB;
  int exists = PQntuples(r) > 0;
  PQclear(r);
  return exists ? FINCH_OK
                : finch_err_set(err, FINCH_ENOTFOUND, "dataset '%s' does not exist (run finch ingest first)", dataset);
}

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* Columns of the rows query. */
enum { COL_ID, COL_TEXT, COL_LABEL, COL_AUGMENTED };

/* One block for a split of n rows and the nl label names (copied in),
 * with text_bytes more for the rows' texts (their NULs included); *chars
 * points where the texts go. NULL when out of memory. */
static finch_dataset_split *split_block(size_t n, const char *const *names, size_t nl, size_t text_bytes,
                                        char **chars) {
  size_t off_texts = align_up(sizeof(finch_dataset_split), alignof(max_align_t));
  size_t off_names = off_texts + n * sizeof(char *);
  size_t off_ids = align_up(off_names + nl * sizeof(char *), alignof(long long));
  size_t off_labels = align_up(off_ids + n * sizeof(long long), alignof(int32_t));
  size_t off_aug = off_labels + n * sizeof(int32_t);
  size_t off_chars = off_aug + n, total = off_chars + text_bytes;
  for (size_t l = 0; l < nl; l++) total += strlen(names[l]) + 1;
  char *block = malloc(total);
  if (!block) return NULL;
  finch_dataset_split *s = (finch_dataset_split *)block;
  s->n = n;
  s->n_labels = nl;
  s->texts = (const char **)(block + off_texts);
  s->label_names = (const char **)(block + off_names);
  s->ids = (long long *)(block + off_ids);
  s->labels = (int32_t *)(block + off_labels);
  s->augmented = (unsigned char *)(block + off_aug);
  char *c = block + off_chars;
  for (size_t l = 0; l < nl; l++) {
    size_t len = strlen(names[l]) + 1;
    s->label_names[l] = memcpy(c, names[l], len);
    c += len;
  }
  *chars = c;
  return s;
}

/* The split of r's rows (columns COL_*), labels indexed in q->label_set's
 * list or else in the rows' own sorted label list. r is not cleared. */
static finch_status split_of_result(PGresult *r, const finch_dataset_query *q, const char *what,
                                    finch_dataset_split **out, finch_err *err);

finch_status finch_dataset_split_load(finch_db *db, const finch_dataset_query *q, finch_dataset_split **out,
                                      finch_err *err) {
  *out = NULL;
  if (!q->dataset) return finch_err_set(err, FINCH_EINVAL, "dataset query: no dataset named");
  row_filter f = filter_of(q);
  PGresult *r = select_rows(db, q->text_norm ? "u.id, u.text_norm, u.label, u.origin = 'augmented'"
                                             : "u.id, u.text, u.label, u.origin = 'augmented'",
                            &f, " ORDER BY u.id", err);
  if (!r) return FINCH_EDB;
  finch_status st = PQntuples(r) ? FINCH_OK : finch_dataset_check(db, q->dataset, NULL, err);
  if (!st) st = split_of_result(r, q, q->dataset, out, err); /* an empty split of an existing dataset is no error */
  PQclear(r);
  return st;
}

finch_status finch_dataset_negatives_load(finch_db *db, const finch_negatives_query *q, finch_dataset_split **out,
                                          finch_err *err) {
  *out = NULL;
  if (!q->names || !*q->names) return finch_err_set(err, FINCH_EINVAL, "negatives: no datasets named");
  const char *pn[] = {q->names};
  PGresult *r = finch_db_query(db, "SELECT n FROM unnest(string_to_array($1, ',')) n"
                                   " WHERE NOT EXISTS (SELECT 1 FROM datasets d WHERE d.name = n) LIMIT 1", 1, pn, err);
  if (!r) return FINCH_EDB;
  if (PQntuples(r) > 0) {
    finch_status st = finch_err_set(err, FINCH_ENOTFOUND, "negatives: dataset '%s' does not exist (ingest it first)",
                                    PQgetvalue(r, 0, 0));
    PQclear(r);
    return st;
  }
  PQclear(r);
  char seed_s[32], max_s[32];
  snprintf(seed_s, sizeof seed_s, "%llu", q->seed);
  snprintf(max_s, sizeof max_s, "%zu", q->max);
  const char *label = q->label && *q->label ? q->label : "oos";
  const char *p[] = {q->names, q->split, q->negatives_exclude && *q->negatives_exclude ? q->negatives_exclude : "", seed_s,
                     q->max ? max_s : NULL, label};
  /* The seeded sample, then in id order (every split's rows ascend by id). */
  r = finch_db_query(db, "SELECT id, text, $6::text, false FROM (SELECT u.id, u.text FROM utterances u"
                         " JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = ANY(string_to_array($1, ',')) AND ($2::text IS NULL OR u.split = $2)"
                         " AND u.origin = 'source'"
                         " AND coalesce(u.meta->>'domain', '') <> ALL(string_to_array($3, ','))"
                         " AND coalesce(u.label, '') <> ALL(string_to_array($3, ','))"
                         " ORDER BY row_number() OVER (PARTITION BY u.dataset_id, u.label"
                         " ORDER BY md5(u.content_hash || $4), u.id), md5(u.content_hash || $4), u.id"
                         " LIMIT $5::bigint) s ORDER BY id", 6, p, err);
  if (!r) return FINCH_EDB;
  finch_dataset_query dq = {.dataset = q->names};
  finch_status st = split_of_result(r, &dq, q->names, out, err);
  PQclear(r);
  return st;
}

finch_status finch_dataset_split_merge(const finch_dataset_split *a, const finch_dataset_split *b,
                                       finch_dataset_split **out, finch_err *err) {
  *out = NULL;
  const size_t n = a->n + b->n;
  const char **names = malloc((a->n_labels + b->n_labels + 1) * sizeof *names);
  if (!names) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  size_t nl = 0;
  for (size_t l = 0; l < a->n_labels; l++) names[nl++] = a->label_names[l];
  for (size_t l = 0; l < b->n_labels; l++) names[nl++] = b->label_names[l];
  qsort(names, nl, sizeof *names, finch_cmp_str);
  size_t u = 0;
  for (size_t i = 0; i < nl; i++)
    if (!u || strcmp(names[u - 1], names[i])) names[u++] = names[i];
  nl = u;
  size_t text_bytes = 0;
  for (size_t i = 0; i < a->n; i++) text_bytes += strlen(a->texts[i]) + 1;
  for (size_t i = 0; i < b->n; i++) text_bytes += strlen(b->texts[i]) + 1;
  char *chars;
  finch_dataset_split *s = split_block(n, names, nl, text_bytes, &chars);
  if (!s) {
    free(names);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory merging %zu rows", n);
  }
  free(names);
  /* Both inputs ascend by id; so does the merge. */
  size_t i = 0, j = 0;
  for (size_t k = 0; k < n; k++) {
    const finch_dataset_split *src = j >= b->n || (i < a->n && a->ids[i] <= b->ids[j]) ? a : b;
    size_t r = src == a ? i++ : j++;
    size_t len = strlen(src->texts[r]) + 1;
    s->texts[k] = memcpy(chars, src->texts[r], len);
    chars += len;
    s->ids[k] = src->ids[r];
    s->augmented[k] = src->augmented[r];
    s->labels[k] = -1;
    if (src->labels[r] >= 0) {
      const char *lab = src->label_names[src->labels[r]];
      const char **hit = bsearch(&lab, s->label_names, nl, sizeof *s->label_names, finch_cmp_str);
      s->labels[k] = hit ? (int32_t)(hit - s->label_names) : -1;
    }
  }
  *out = s;
  return FINCH_OK;
}

static finch_status split_of_result(PGresult *r, const finch_dataset_query *q, const char *what,
                                    finch_dataset_split **out, finch_err *err) {
  const size_t n = (size_t)PQntuples(r);
  finch_status st = FINCH_OK;
  const char **names = NULL; /* the label set, pointing into r or into q->label_set */
  size_t nl = 0;
  if (q->label_set) {
    names = malloc((q->label_set->n_labels + 1) * sizeof *names);
    if (!names) goto oom;
    for (; nl < q->label_set->n_labels; nl++) names[nl] = q->label_set->label_names[nl];
  } else {
    names = malloc((n + 1) * sizeof *names);
    if (!names) goto oom;
    for (size_t i = 0; i < n; i++)
      if (!PQgetisnull(r, (int)i, COL_LABEL)) names[nl++] = PQgetvalue(r, (int)i, COL_LABEL);
    qsort(names, nl, sizeof *names, finch_cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < nl; i++)
      if (!u || strcmp(names[u - 1], names[i])) names[u++] = names[i];
    nl = u;
  }

  /* One block: the struct, the pointer arrays, ids, label indices, flags,
   * then the strings. */
  size_t text_bytes = 0;
  for (size_t i = 0; i < n; i++) text_bytes += (size_t)PQgetlength(r, (int)i, COL_TEXT) + 1;
  char *chars;
  finch_dataset_split *s = split_block(n, names, nl, text_bytes, &chars);
  if (!s) goto oom;
  for (size_t i = 0; i < n; i++) {
    size_t len = (size_t)PQgetlength(r, (int)i, COL_TEXT) + 1;
    s->texts[i] = memcpy(chars, PQgetvalue(r, (int)i, COL_TEXT), len);
    chars += len;
    s->ids[i] = strtoll(PQgetvalue(r, (int)i, COL_ID), NULL, 10);
    s->augmented[i] = PQgetvalue(r, (int)i, COL_AUGMENTED)[0] == 't';
    const char *lab = PQgetisnull(r, (int)i, COL_LABEL) ? NULL : PQgetvalue(r, (int)i, COL_LABEL);
    const char **hit = lab ? bsearch(&lab, s->label_names, nl, sizeof *s->label_names, finch_cmp_str) : NULL;
    s->labels[i] = hit ? (int32_t)(hit - s->label_names) : -1;
  }
  *out = s;
  goto out;
oom:
  st = finch_err_set(err, FINCH_ENOMEM, "out of memory loading dataset '%s'", what);
out:
  free(names);
  return st;
}

void finch_dataset_split_free(finch_dataset_split *s) { free(s); }

PGresult *finch_dataset_counts(finch_db *db, const finch_dataset_query *q, int by_method, finch_err *err) {
  row_filter f = filter_of(q);
  return by_method ? select_rows(db, "u.label, u.method, count(*)", &f, " GROUP BY 1, 2 ORDER BY 1, 2", err)
                   : select_rows(db, "u.label, count(*)", &f, " GROUP BY 1 ORDER BY 1", err);
}

/* NUL-terminated strings back to back, counted, before they are laid out
 * as a finch_dataset_texts. */
typedef struct {
  char *buf;
  size_t len, cap, n;
} text_buf;

static int text_buf_add(text_buf *b, const char *s, size_t len) {
  if (b->len + len + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (b->len + len + 1 > cap) cap *= 2;
    char *nb = realloc(b->buf, cap);
    if (!nb) return -1;
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, s, len);
  b->buf[b->len + len] = '\0';
  b->len += len + 1;
  b->n++;
  return 0;
}

static finch_status add_named(finch_db *db, const char *names, text_buf *b, finch_err *err) {
  row_filter f = {.names = names};
  PGresult *r = select_rows(db, "u.text", &f, "", err);
  if (!r) return FINCH_EDB;
  finch_status st = FINCH_OK;
  for (int i = 0; !st && i < PQntuples(r); i++)
    if (text_buf_add(b, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0)))
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory reading general datasets '%s'", names);
  if (!st && PQntuples(r) == 0) finch_warn("general datasets '%s' have no rows: the domain term is 0", names);
  PQclear(r);
  return st;
}

static finch_status add_wiki(text_buf *b, finch_err *err) {
  char dir[PATH_MAX], path[PATH_MAX + 64];
  finch_data_dir(dir, sizeof dir);
  snprintf(path, sizeof path, "%s/clinc150/wiki_sents.txt", dir);
  FILE *fp = fopen(path, "r");
  if (!fp) {
    finch_info("no general-domain corpus (%s absent, no --general): the domain term is 0", path);
    return FINCH_OK;
  }
  finch_status st = FINCH_OK;
  char *line = NULL;
  size_t lcap = 0;
  ssize_t len;
  while (!st && (len = getline(&line, &lcap, fp)) > 0)
    if (text_buf_add(b, line, strlen(line))) st = finch_err_set(err, FINCH_ENOMEM, "out of memory reading %s", path);
  free(line);
  fclose(fp);
  return st;
}

/* b laid out as one finch_dataset_texts allocation into *out (b's buffer freed). */
static finch_status texts_of(text_buf *b, finch_status st, finch_dataset_texts **out, finch_err *err);

finch_status finch_dataset_general_texts(finch_db *db, const char *names, int with_wiki, finch_dataset_texts **out,
                                         finch_err *err) {
  *out = NULL;
  text_buf b = {0};
  const int named = names && *names;
  finch_status st = named ? add_named(db, names, &b, err) : FINCH_OK;
  if (!st && (with_wiki || !named)) st = add_wiki(&b, err);
  return texts_of(&b, st, out, err);
}

static finch_status texts_of(text_buf *bp, finch_status st, finch_dataset_texts **out, finch_err *err) {
  text_buf b = *bp;
  size_t off_texts = align_up(sizeof(finch_dataset_texts), alignof(max_align_t));
  size_t off_chars = off_texts + b.n * sizeof(char *);
  char *block = st ? NULL : malloc(off_chars + b.len + 1);
  if (!st && !block) st = finch_err_set(err, FINCH_ENOMEM, "out of memory for %zu texts", b.n);
  if (!st) {
    finch_dataset_texts *t = (finch_dataset_texts *)block;
    t->n = b.n;
    t->texts = (const char **)(block + off_texts);
    char *chars = block + off_chars;
    if (b.len) memcpy(chars, b.buf, b.len);
    for (size_t i = 0; i < b.n; i++) {
      t->texts[i] = chars;
      chars += strlen(chars) + 1;
    }
    *out = t;
  }
  free(b.buf);
  return st;
}

void finch_dataset_texts_free(finch_dataset_texts *t) { free(t); }
