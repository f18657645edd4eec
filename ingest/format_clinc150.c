/* clinc150: the CLINC150 JSON object (clinc/oos-eval data_full.json and its
 * kin). Keys train, val, test, oos_train, oos_val, oos_test, any subset, each
 * a list of [text, intent]; other keys are ignored. Records come in the
 * document's key order; record numbers count every list element from 1.
 *
 * With opts.domains_path (domains.json: {"banking": ["transfer", ...], ...})
 * each record gets meta {"domain":"banking"}, out-of-scope rows
 * {"domain":"oos"}; an intent that no domain lists gets no meta. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/format_impl.h"

static const struct {
  const char *key, *split;
  int oos;
} clinc_lists[] = {
    {"train", "train", 0},    {"val", "dev", 0},        {"test", "test", 0},
    {"oos_train", "train", 1}, {"oos_val", "dev", 1}, {"oos_test", "test", 1},
};
enum { CLINC_NLISTS = sizeof clinc_lists / sizeof clinc_lists[0] };

typedef struct {
  finch_format_reader base;
  json_t *root;
  json_t *meta_cache;  /* domain -> meta text (finch_format__meta) */
  json_t *domain_meta; /* intent -> that text, shared with meta_cache; NULL without domains */
  const char *oos_meta;
  void *iter;   /* the root's key being read, or the next to look at */
  int list;     /* clinc_lists index of the list being read; -1 between lists */
  json_t *rows; /* that list */
  size_t i;     /* next element of rows */
  long long n;  /* elements read so far */
} clinc_reader;

static int clinc_list_of(const char *key) {
  for (int k = 0; k < CLINC_NLISTS; k++)
    if (strcmp(clinc_lists[k].key, key) == 0) return k;
  return -1;
}

static int clinc_next(finch_format_reader *base, finch_record *rec, const char **field, finch_err *err) {
  clinc_reader *r = (clinc_reader *)base;
  while (r->list < 0 || r->i >= json_array_size(r->rows)) {
    if (r->list >= 0) r->iter = json_object_iter_next(r->root, r->iter);
    r->list = -1;
    if (!r->iter) return 0;
    int k = clinc_list_of(json_object_iter_key(r->iter));
    if (k < 0) {
      r->iter = json_object_iter_next(r->root, r->iter);
      continue;
    }
    r->list = k;
    r->rows = json_object_iter_value(r->iter);
    r->i = 0;
  }
  size_t i = r->i++;
  json_t *row = json_array_get(r->rows, i);
  rec->line = ++r->n;
  json_t *text = json_array_get(row, 0), *intent = json_array_get(row, 1);
  if (!json_is_array(row) || json_array_size(row) != 2 || !json_is_string(text) || !json_is_string(intent)) {
    *field = "record";
    finch_err_set(err, FINCH_EFORMAT, "%s: record %lld (%s[%zu]): expected [text, intent]", base->name, rec->line,
                  clinc_lists[r->list].key, i);
    return -1;
  }
  const char *label = json_string_value(intent);
  int oos = clinc_lists[r->list].oos || strcmp(label, "oos") == 0;
  rec->text = json_string_value(text);
  rec->label = oos ? "oos" : label;
  rec->split = clinc_lists[r->list].split;
  if (r->domain_meta) rec->meta_json = oos ? r->oos_meta : json_string_value(json_object_get(r->domain_meta, label));
  return 1;
}

static void clinc_free(finch_format_reader *base) {
  clinc_reader *r = (clinc_reader *)base;
  json_decref(r->root);
  json_decref(r->domain_meta);
  json_decref(r->meta_cache);
  free(r);
}

/* Loads domains.json into r->domain_meta: intent -> meta text. An intent
 * listed under two domains keeps the first. */
static finch_status clinc_load_domains(clinc_reader *r, const char *path, finch_err *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return finch_err_set(err, FINCH_EIO, "cannot open %s: %s", path, strerror(errno));
  json_error_t je;
  json_t *doms = json_loadf(fp, 0, &je);
  fclose(fp);
  if (!doms) return finch_format__json_error(err, path, &je);
  finch_status st = FINCH_OK;
  json_t *cache = r->meta_cache = json_object();
  r->domain_meta = json_object();
  if (!cache || !r->domain_meta) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  if (!st && !json_is_object(doms))
    st = finch_err_set(err, FINCH_EFORMAT, "%s: expected an object of domain -> [intents]", path);
  if (!st) r->oos_meta = finch_format__meta(cache, "domain", "oos");
  if (!st && !r->oos_meta) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  const char *domain;
  json_t *intents;
  json_object_foreach(doms, domain, intents) {
    if (st) break;
    if (!json_is_array(intents)) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: domain '%s': expected a list of intents", path, domain);
      break;
    }
    const char *meta = finch_format__meta(cache, "domain", domain);
    if (!meta) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    size_t j;
    json_t *intent;
    json_array_foreach(intents, j, intent) {
      if (st) break;
      if (!json_is_string(intent)) {
        st = finch_err_set(err, FINCH_EFORMAT, "%s: domain '%s': intent %zu is not a string", path, domain, j);
        break;
      }
      const char *name = json_string_value(intent);
      if (!json_object_get(r->domain_meta, name) &&
          json_object_set(r->domain_meta, name, json_object_get(cache, domain)))
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
    }
  }
  json_decref(doms);
  return st;
}

finch_status finch_format__clinc150_open(finch_format_reader **out, FILE *fp, const char *name,
                                         const finch_format_opts *opts, finch_err *err) {
  *out = NULL;
  clinc_reader *r = calloc(1, sizeof *r);
  if (!r) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  r->base.next = clinc_next;
  r->base.free = clinc_free;
  r->list = -1;
  finch_status st = FINCH_OK;
  json_error_t je;
  r->root = json_loadf(fp, 0, &je);
  if (!r->root) st = finch_format__json_error(err, name, &je);
  if (!st && !json_is_object(r->root))
    st = finch_err_set(err, FINCH_EFORMAT, "%s: expected a JSON object of train, val, test, oos_* lists", name);
  int lists = 0;
  const char *key;
  json_t *val;
  json_object_foreach(st ? NULL : r->root, key, val) {
    if (clinc_list_of(key) < 0) continue;
    if (!json_is_array(val)) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: '%s' is not a list of [text, intent]", name, key);
      break;
    }
    lists++;
  }
  if (!st && !lists)
    st = finch_err_set(err, FINCH_EFORMAT,
                       "%s: none of the CLINC150 lists train, val, test, oos_train, oos_val, oos_test", name);
  if (!st && opts->domains_path) st = clinc_load_domains(r, opts->domains_path, err);
  if (st) {
    clinc_free(&r->base);
    return st;
  }
  r->iter = json_object_iter(r->root);
  *out = &r->base;
  return FINCH_OK;
}
