#include "ingest/ingest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/redact.h"
#include "core/source.h"
#include "core/text.h"
#include "ingest/formats.h"
#include "ingest/internal.h"

/* ---- arena: one allocation per MiB of row strings, freed at once ---- */

struct ingest_arena_block {
  ingest_arena_block *next;
  size_t used, cap;
  char data[];
};

char *ingest_arena_strdup(ingest_arena *a, const char *s) {
  if (!s) return NULL;
  size_t len = strlen(s) + 1;
  ingest_arena_block *b = a->head;
  if (!b || b->cap - b->used < len) {
    size_t cap = len > (1u << 20) ? len : (1u << 20);
    b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
  }
  char *p = b->data + b->used;
  memcpy(p, s, len);
  b->used += len;
  return p;
}

void ingest_arena_free(ingest_arena *a) {
  while (a->head) {
    ingest_arena_block *n = a->head->next;
    free(a->head);
    a->head = n;
  }
}

/* ---- the label set fixed by --labels ---- */

typedef struct {
  char **names;
  size_t n;
} label_set;

static void label_set_free(label_set *ls) {
  for (size_t i = 0; i < ls->n; i++) free(ls->names[i]);
  free(ls->names);
}

static int label_set_add(label_set *ls, const char *s, size_t len) {
  char **nn = realloc(ls->names, (ls->n + 1) * sizeof *nn);
  if (!nn) return -1;
  ls->names = nn;
  char *norm = NULL;
  if (finch_text_normalize(s, len, 0, &norm, NULL)) return -1;
  ls->names[ls->n++] = norm;
  return 0;
}

/* A JSON array of names (like BANKING77's categories.json) or one name a line. */
static finch_status label_set_load(label_set *ls, const char *path, finch_err *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return finch_err_set(err, FINCH_EIO, "--labels %s: cannot open", path);
  int ch;
  while ((ch = getc(fp)) == ' ' || ch == '\n' || ch == '\r' || ch == '\t') {}
  ungetc(ch, fp);
  finch_status st = FINCH_OK;
  if (ch == '[') {
    json_error_t je;
    json_t *arr = json_loadf(fp, 0, &je);
    if (!json_is_array(arr)) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s:%d: not a JSON array of label names: %s", path, je.line, je.text);
    } else {
      for (size_t i = 0; !st && i < json_array_size(arr); i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s) st = finch_err_set(err, FINCH_EFORMAT, "%s: element %zu is not a string", path, i);
        else if (label_set_add(ls, s, strlen(s))) st = finch_err_set(err, FINCH_EFORMAT, "%s: label %zu is not valid UTF-8", path, i);
      }
    }
    json_decref(arr);
  } else {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;
    while (!st && (len = getline(&line, &cap, fp)) >= 0) {
      lineno++;
      while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
      if (len && label_set_add(ls, line, (size_t)len))
        st = finch_err_set(err, FINCH_EFORMAT, "%s:%d: not valid UTF-8", path, lineno);
    }
    free(line);
  }
  fclose(fp);
  if (!st && ls->n == 0) st = finch_err_set(err, FINCH_EFORMAT, "%s: no labels", path);
  if (!st) qsort(ls->names, ls->n, sizeof *ls->names, finch_cmp_str);
  return st;
}

/* ---- reading: records -> checked, normalised, redacted rows ---- */

static int add_reject(ingest_table *t, long long line, const char *field, const char *reason) {
  if (t->nrej == t->caprej) {
    size_t cap = t->caprej ? 2 * t->caprej : 64;
    ingest_reject *nr = realloc(t->rej, cap * sizeof *nr);
    if (!nr) return -1;
    t->rej = nr;
    t->caprej = cap;
  }
  ingest_reject *r = &t->rej[t->nrej++];
  r->line = line;
  snprintf(r->field, sizeof r->field, "%s", field ? field : "record");
  snprintf(r->reason, sizeof r->reason, "%s", reason);
  return 0;
}

typedef struct {
  const finch_ingest_opts *o;
  const char *name;
  finch_redactor *red;
  label_set labels;
  ingest_table *t;
  finch_ingest_result *res;
  long long seq;
} reader;

/* A text field other than the utterance: valid UTF-8, NFKC. NULL stays NULL. */
static int clean_field(reader *rd, const char *in, const char **out, const char *field, long long line) {
  *out = NULL;
  if (!in) return 0;
  char *norm = NULL;
  finch_err e;
  if (finch_text_normalize(in, strlen(in), 0, &norm, &e)) {
    finch_warn("%s:%lld: %s in field %s", rd->name, line, e.msg, field);
    add_reject(rd->t, line, field, e.msg);
    return -1;
  }
  *out = ingest_arena_strdup(&rd->t->arena, norm);
  free(norm);
  return *out ? 0 : -2;
}

static int reject(reader *rd, long long line, const char *field, const char *fmt, const char *arg) {
  char reason[256];
  snprintf(reason, sizeof reason, fmt, arg);
  finch_warn("%s:%lld: %s", rd->name, line, reason);
  return add_reject(rd->t, line, field, reason) ? -2 : -1;
}

/* 0 stored, -1 rejected, -2 out of memory. */
static int take_record(reader *rd, const finch_record *rec) {
  ingest_table *t = rd->t;
  long long line = rec->line;
  char *text = NULL, *red = NULL, *fold = NULL;
  finch_err e;
  int rc = -1;
  if (finch_text_normalize(rec->text, strlen(rec->text), 0, &text, &e)) {
    finch_warn("%s:%lld: %s in field text", rd->name, line, e.msg);
    return add_reject(t, line, "text", e.msg) ? -2 : -1;
  }
  size_t max = rd->o->max_text_bytes ? rd->o->max_text_bytes : 16384;
  if (!*text) {
    rc = reject(rd, line, "text", "empty %s", "text");
    goto out;
  }
  if (strlen(text) > max) {
    char n[32];
    snprintf(n, sizeof n, "%zu", max);
    rc = reject(rd, line, "text", "text longer than %s bytes", n);
    goto out;
  }
  uint64_t *counts = rd->res->pii_counts;
  if (finch_redact(rd->red, text, strlen(text), &red, counts, &e)) {
    rc = reject(rd, line, "text", "%s", e.msg);
    goto out;
  }
  if (finch_text_normalize(red, strlen(red), FINCH_TEXT_FOLD, &fold, &e)) {
    rc = reject(rd, line, "text", "%s", e.msg);
    goto out;
  }
  ingest_row row = {.turn = rec->turn, .line = line, .seq = rd->seq++};
  int c;
  if ((c = clean_field(rd, rec->label, &row.label, "label", line)) || (c = clean_field(rd, rec->dialogue_id, &row.dialogue_id, "dialogue_id", line)) ||
      (c = clean_field(rd, rec->speaker, &row.speaker, "speaker", line))) {
    rc = c;
    goto out;
  }
  if (row.label && !*row.label) row.label = NULL;
  if (row.label && rd->labels.n && !bsearch(&row.label, rd->labels.names, rd->labels.n, sizeof(char *), finch_cmp_str)) {
    rc = reject(rd, line, "label", "unknown label '%s' (not in --labels)", row.label);
    goto out;
  }
  row.text = ingest_arena_strdup(&t->arena, red);
  row.text_norm = ingest_arena_strdup(&t->arena, fold);
  static const char *const splits[] = {"train", "dev", "test"};
  for (int k = 0; rec->split && k < 3; k++)
    if (strcmp(rec->split, splits[k]) == 0) row.split = splits[k];
  if (rec->split && !row.split) {
    rc = reject(rd, line, "split", "unknown split '%s' (train, dev or test)", rec->split);
    goto out;
  }
  row.meta = ingest_arena_strdup(&t->arena, rec->meta_json);
  if (!row.text || !row.text_norm || (rec->meta_json && !row.meta)) {
    rc = -2;
    goto out;
  }
  char pos[64] = "";
  if (row.dialogue_id) snprintf(pos, sizeof pos, "%d", row.turn);
  finch_sha256 *h = finch_sha256_new();
  if (!h) {
    rc = -2;
    goto out;
  }
  /* The position is the dialogue id and turn: the same words at another
   * point of a dialogue are another row. */
  finch_sha256_update(h, row.text_norm, strlen(row.text_norm));
  finch_sha256_update(h, "\x1f", 1);
  if (row.label) finch_sha256_update(h, row.label, strlen(row.label));
  finch_sha256_update(h, "\x1f", 1);
  if (row.dialogue_id) {
    finch_sha256_update(h, row.dialogue_id, strlen(row.dialogue_id));
    finch_sha256_update(h, ":", 1);
    finch_sha256_update(h, pos, strlen(pos));
  }
  finch_sha256_final(h, row.hash);
  if (t->n == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 4096;
    ingest_row *nr = realloc(t->rows, cap * sizeof *nr);
    if (!nr) {
      rc = -2;
      goto out;
    }
    t->rows = nr;
    t->cap = cap;
  }
  t->rows[t->n++] = row;
  rc = 0;
out:
  free(text);
  free(red);
  free(fold);
  return rc;
}

static void progress_line(const finch_ingest_opts *o, const finch_source *src, long long rows, double t0, int done) {
  if (!o->progress) return;
  double dt = finch_clock_s() - t0;
  long long bytes = finch_source_raw_bytes(src), size = finch_source_size(src);
  char eta[48] = "";
  if (size > 0 && bytes > 0 && !done)
    snprintf(eta, sizeof eta, ", ETA %.0f s", dt * (double)(size - bytes) / (double)bytes);
  fprintf(stderr, "\rreading: %lld rows, %.0f rows/s, %.1f MB%s%s   ", rows, dt > 0 ? (double)rows / dt : 0.0,
          (double)bytes / 1e6, eta, done ? "\n" : "");
}

static finch_status read_all(reader *rd, finch_source *src, finch_err *err) {
  finch_format_opts fo = {rd->o->text_col, rd->o->label_col, rd->o->domains_path};
  finch_format_reader *fr;
  finch_status st = finch_format_open(&fr, rd->o->format, finch_source_file(src), rd->name, &fo, err);
  if (st) return st;
  finch_record rec;
  const char *field;
  finch_err rerr;
  int rc;
  double t0 = finch_clock_s(), last = t0;
  while ((rc = finch_format_next(fr, &rec, &field, &rerr)) != 0) {
    if (rd->o->stop && *rd->o->stop) break;
    if (rc == -2) {
      st = finch_err_set(err, rerr.code ? rerr.code : FINCH_EFORMAT, "%s", rerr.msg);
      break;
    }
    rd->res->read++;
    if (rc == -1) {
      const char *msg = rerr.msg, *colon = strstr(rerr.msg, ": ");
      if (colon) msg = colon + 2; /* the reader's message starts with name:line */
      finch_warn("%s", rerr.msg);
      if (add_reject(rd->t, rec.line, field, msg)) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      if (st) break;
      continue;
    }
    if (take_record(rd, &rec) == -2) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory reading %s", rd->name);
      break;
    }
    if ((rd->res->read & 4095) == 0 && finch_clock_s() - last > 0.2) {
      last = finch_clock_s();
      progress_line(rd->o, src, rd->res->read, t0, 0);
    }
  }
  progress_line(rd->o, src, rd->res->read, t0, 1);
  finch_format_close(fr);
  return st;
}

/* ---- duplicates, splits, order ---- */

static int cmp_hash_seq(const void *a, const void *b) {
  const ingest_row *x = a, *y = b;
  int c = strcmp(x->hash, y->hash);
  return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static int cmp_seq(const void *a, const void *b) {
  const ingest_row *x = a, *y = b;
  return (x->seq > y->seq) - (x->seq < y->seq);
}

typedef struct {
  char key[FINCH_SHA256_HEX_LEN];
  const char *group; /* label or dialogue id */
  size_t row;
} split_key;

static int cmp_split_key(const void *a, const void *b) {
  const split_key *x = a, *y = b;
  int c = strcmp(x->group ? x->group : "", y->group ? y->group : "");
  return c ? c : strcmp(x->key, y->key);
}

static int cmp_key_only(const void *a, const void *b) {
  return strcmp(((const split_key *)a)->key, ((const split_key *)b)->key);
}

/* Drops repeats of a content hash (the first in source order stays) and
 * returns how many. */
static size_t drop_repeats(ingest_table *t) {
  qsort(t->rows, t->n, sizeof *t->rows, cmp_hash_seq);
  size_t o = 0;
  for (size_t i = 0; i < t->n; i++)
    if (o == 0 || strcmp(t->rows[o - 1].hash, t->rows[i].hash) != 0) t->rows[o++] = t->rows[i];
  size_t dropped = t->n - o;
  t->n = o;
  qsort(t->rows, t->n, sizeof *t->rows, cmp_seq);
  return dropped;
}

static void seeded_key(unsigned long long seed, const char *s, char out[FINCH_SHA256_HEX_LEN]) {
  finch_sha256 *h = finch_sha256_new();
  char sd[32];
  int n = snprintf(sd, sizeof sd, "%llu:", seed);
  finch_sha256_update(h, sd, (size_t)n);
  finch_sha256_update(h, s, strlen(s));
  finch_sha256_final(h, out);
}

/* Returns the split policy: "source", "holdout" or "none". */
static const char *assign_splits(ingest_table *t, double holdout, unsigned long long seed, finch_err *err, int *oom) {
  *oom = 0;
  int has_split = 0, has_dialogues = 0;
  for (size_t i = 0; i < t->n; i++) {
    has_split |= t->rows[i].split != NULL;
    has_dialogues |= t->rows[i].dialogue_id != NULL;
  }
  if (has_split) {
    for (size_t i = 0; i < t->n; i++)
      if (!t->rows[i].split) t->rows[i].split = "train";
    return "source";
  }
  for (size_t i = 0; i < t->n; i++) t->rows[i].split = "train";
  if (holdout <= 0 || t->n == 0) return "none";
  split_key *k = malloc(t->n * sizeof *k);
  if (!k) {
    *oom = 1;
    finch_err_set(err, FINCH_ENOMEM, "out of memory");
    return NULL;
  }
  if (has_dialogues) {
    /* Whole dialogues: the first round(F * D) dialogues in seeded order. */
    for (size_t i = 0; i < t->n; i++) {
      k[i].group = NULL;
      k[i].row = i;
      seeded_key(seed, t->rows[i].dialogue_id ? t->rows[i].dialogue_id : t->rows[i].hash, k[i].key);
    }
    qsort(k, t->n, sizeof *k, cmp_key_only);
    size_t dialogues = 0;
    for (size_t i = 0; i < t->n; i++) dialogues += i == 0 || strcmp(k[i - 1].key, k[i].key) != 0;
    size_t want = (size_t)(holdout * (double)dialogues + 0.5), seen = 0;
    for (size_t i = 0; i < t->n; i++) {
      seen += i == 0 || strcmp(k[i - 1].key, k[i].key) != 0;
      if (seen <= want) t->rows[k[i].row].split = "dev";
    }
  } else {
    /* Stratified: within each label, the first round(F * n_label) rows in
     * seeded order of their content hash. Unlabelled rows stay in train. */
    size_t m = 0;
    for (size_t i = 0; i < t->n; i++) {
      if (!t->rows[i].label) continue;
      k[m].group = t->rows[i].label;
      k[m].row = i;
      seeded_key(seed, t->rows[i].hash, k[m].key);
      m++;
    }
    qsort(k, m, sizeof *k, cmp_split_key);
    for (size_t i = 0; i < m;) {
      size_t j = i;
      while (j < m && strcmp(k[j].group, k[i].group) == 0) j++;
      size_t want = (size_t)(holdout * (double)(j - i) + 0.5);
      for (size_t r = i; r < i + want; r++) t->rows[k[r].row].split = "dev";
      i = j;
    }
  }
  free(k);
  return "holdout";
}

/* ---- resume: the run's own options ---- */

/* Fills o with the run's own settings; the strings live in *keep, and
 * rules (one slot) holds the run's extra redaction rules file. */
static finch_status resume_opts(finch_db *db, long long id, finch_ingest_opts *o, PGresult **keep,
                                const char **rules, finch_err *err) {
  char ids[32];
  snprintf(ids, sizeof ids, "%lld", id);
  const char *p[] = {ids};
  PGresult *r = finch_db_query(db,
      "SELECT d.name, r.format, r.source, r.holdout, r.seed, r.status, r.params->>'text_col',"
      " r.params->>'label_col', r.params->>'domains', r.params->>'labels', r.params->>'batch_rows',"
      " r.params->>'max_text_bytes', r.params->'pii_rules'->>0"
      " FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id WHERE r.id = $1",
      1, p, err);
  if (!r) return FINCH_EDB;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return finch_err_set(err, FINCH_ENOTFOUND, "ingest run %lld does not exist", id);
  }
  const char *c[13];
  for (int i = 0; i < 13; i++) c[i] = PQgetisnull(r, 0, i) ? NULL : PQgetvalue(r, 0, i);
  o->dataset = c[0];
  o->format = c[1];
  if (!o->source) o->source = c[2];
  o->holdout = c[3] ? atof(c[3]) : 0;
  o->seed = c[4] ? strtoull(c[4], NULL, 10) : 0;
  o->text_col = c[6];
  o->label_col = c[7];
  o->domains_path = c[8];
  o->labels_path = c[9];
  o->batch_rows = c[10] ? (size_t)atoll(c[10]) : 0;
  o->max_text_bytes = c[11] ? (size_t)atoll(c[11]) : 0;
  /* The same redaction rules, or the rows would not hash the same. */
  rules[0] = c[12];
  o->pii_rules = rules;
  o->n_pii_rules = c[12] ? 1 : 0;
  if (strcmp(o->source, "<stdin>") == 0 || strcmp(o->source, "-") == 0) {
    PQclear(r);
    return finch_err_set(err, FINCH_EINVAL, "run %lld read standard input: give the same input again as the source", id);
  }
  *keep = r;
  return FINCH_OK;
}

/* ---- the run ---- */

finch_status finch_ingest_run(finch_db *db, const finch_ingest_opts *opts, finch_ingest_result *res,
                              finch_err *err) {
  memset(res, 0, sizeof *res);
  double t0 = finch_clock_s();
  finch_ingest_opts o = *opts;
  PGresult *resumed = NULL;
  const char *resume_rules[1] = {NULL};
  finch_status st = FINCH_OK;
  int locked = 0; /* the dataset's advisory lock */
  if (o.resume_run_id) {
    st = resume_opts(db, o.resume_run_id, &o, &resumed, resume_rules, err);
    if (st) return st;
  }
  if (!o.format || !o.dataset || !o.source) {
    PQclear(resumed);
    return finch_err_set(err, FINCH_EINVAL, "ingest needs a source, a format and a dataset");
  }
  if (o.holdout < 0 || o.holdout >= 1) {
    PQclear(resumed);
    return finch_err_set(err, FINCH_EINVAL, "holdout %g is outside [0, 1)", o.holdout);
  }
  ingest_table t = {0};
  reader rd = {.o = &o, .name = o.source, .t = &t, .res = res};
  finch_source *src = NULL;
  if (o.labels_path) st = label_set_load(&rd.labels, o.labels_path, err);
  if (!st) st = finch_redactor_open(&rd.red, o.pii_rules, o.n_pii_rules, err);
  if (!st) {
    res->n_pii_types = finch_redactor_n_types(rd.red);
    if (res->n_pii_types > FINCH_INGEST_MAX_PII_TYPES)
      st = finch_err_set(err, FINCH_EINVAL, "the redaction rules define %zu types; at most %d are supported",
                         res->n_pii_types, FINCH_INGEST_MAX_PII_TYPES);
    for (size_t i = 0; !st && i < res->n_pii_types; i++)
      snprintf(res->pii_types[i], sizeof res->pii_types[i], "%s", finch_redactor_type(rd.red, i));
  }
  if (!st) st = finch_source_open(&src, o.source, NULL, err);
  char sha[FINCH_SHA256_HEX_LEN] = "", lineage[4096] = "";
  if (!st) {
    snprintf(lineage, sizeof lineage, "%s", finch_source_lineage(src));
    st = read_all(&rd, src, err);
    finch_err cerr;
    finch_status cst = finch_source_close(src, sha, &cerr);
    if (!st && cst) st = finch_err_set(err, cst, "%s", cerr.msg);
  }
  if (!st && o.stop && *o.stop) {
    res->stopped = 1;
    finch_info("stopped while reading %s: nothing stored", o.source);
    goto out;
  }
  double t_read = finch_clock_s();
  finch_debug("read %lld records in %.2f s", res->read, t_read - t0);
  ingest_run run = {0};
  const char *policy = NULL;
  if (!st) {
    res->rejected = (long long)t.nrej;
    drop_repeats(&t);
    int oom;
    policy = assign_splits(&t, o.holdout, o.seed, err, &oom);
    if (oom) st = FINCH_ENOMEM;
  }
  if (!st) st = ingest_lock_dataset(db, o.dataset, o.stop, &locked, err);
  if (!st && !locked) {
    res->stopped = 1;
    finch_info("stopped while waiting for dataset %s: nothing stored", o.dataset);
    goto out;
  }
  if (!st)
    st = o.resume_run_id ? ingest_run_open(db, o.resume_run_id, sha, t.n, &run, err)
                         : ingest_run_create(db, &o, lineage, sha, policy, t.n, &run, err);
  if (st) goto out;
  res->run_id = run.id;
  if (o.resume_run_id) finch_info("resuming run %lld at row %lld of %zu", run.id, run.rows_loaded, t.n);
  st = ingest_load_rows(db, &t, &run, o.batch_rows, o.load_jobs, o.stop, o.progress,
                        &res->inserted, &res->dev, &res->stopped, err);
  res->seconds = finch_clock_s() - t0;
  finch_debug("loaded in %.2f s", finch_clock_s() - t_read);
  if (!st) {
    st = ingest_run_finish(db, &t, &run, lineage, res, res->stopped, &res->inserted, &res->dev, err);
  }
  if (st) ingest_run_fail(db, run.id, err->msg);
  res->duplicate = res->read - res->rejected - res->inserted;
  if (res->stopped)
    finch_info("stopped at a batch boundary; continue with: finch ingest --resume %lld", run.id);
out:
  if (locked) ingest_unlock_dataset(db, o.dataset);
  res->seconds = finch_clock_s() - t0;
  finch_redactor_free(rd.red);
  label_set_free(&rd.labels);
  ingest_arena_free(&t.arena);
  free(t.rows);
  free(t.rej);
  PQclear(resumed);
  return st;
}
