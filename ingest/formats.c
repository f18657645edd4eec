/* The input-format table and the calls every format shares; the formats
 * themselves are in format_csv.c (banking77, csv), format_clinc150.c,
 * format_sgd.c and format_jsonl.c. */
#include "ingest/formats.h"

#include <stdlib.h>
#include <string.h>

#include "ingest/format_impl.h"

static const struct {
  const char *name;
  finch_format__open_fn *open;
} formats[] = {
    {"banking77", finch_format__banking77_open}, {"csv", finch_format__csv_open},
    {"clinc150", finch_format__clinc150_open},   {"sgd", finch_format__sgd_open},
    {"jsonl", finch_format__jsonl_open},
};

const char *finch_format_names(void) { return "banking77, csv, clinc150, sgd, jsonl"; }

finch_status finch_format_open(finch_format_reader **out, const char *format, FILE *fp, const char *name,
                               const finch_format_opts *opts, finch_err *err) {
  *out = NULL;
  if (!format) return finch_err_set(err, FINCH_EINVAL, "no input format given (one of %s)", finch_format_names());
  if (!fp) return finch_err_set(err, FINCH_EINVAL, "no input stream for format %s", format);
  finch_format__open_fn *open = NULL;
  for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
    if (strcmp(formats[i].name, format) == 0) open = formats[i].open;
  if (!open)
    return finch_err_set(err, FINCH_EINVAL, "unknown input format '%s' (one of %s)", format,
                         finch_format_names());
  static const finch_format_opts no_opts = {0};
  char *copy = strdup(name ? name : "<input>");
  if (!copy) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  finch_format_reader *r = NULL;
  finch_status st = open(&r, fp, copy, opts ? opts : &no_opts, err);
  if (st) {
    free(copy);
    return st;
  }
  r->name = copy;
  r->dead = 0;
  *out = r;
  return FINCH_OK;
}

int finch_format_next(finch_format_reader *r, finch_record *rec, const char **field, finch_err *err) {
  const char *no_field;
  if (!field) field = &no_field;
  *rec = (finch_record){.turn = -1};
  *field = NULL;
  if (r->dead) return 0;
  int rc = r->next(r, rec, field, err);
  if (rc == -2) r->dead = 1;
  return rc;
}

void finch_format_close(finch_format_reader *r) {
  if (!r) return;
  char *name = (char *)r->name;
  r->free(r);
  free(name);
}

finch_status finch_format__json_error(finch_err *err, const char *name, const json_error_t *je) {
  if (je->line < 1)
    return finch_err_set(err, FINCH_EFORMAT, "%s: %s", name, je->text);
  return finch_err_set(err, FINCH_EFORMAT, "%s:%d: invalid JSON: %s (column %d)", name, je->line, je->text,
                       je->column);
}

const char *finch_format__meta(json_t *cache, const char *key, const char *value) {
  json_t *hit = json_object_get(cache, value);
  if (hit) return json_string_value(hit);
  json_t *obj = json_pack("{s:s}", key, value);
  char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
  json_decref(obj);
  json_t *str = text ? json_string(text) : NULL;
  free(text);
  if (!str) return NULL;
  if (json_object_set_new(cache, value, str)) return NULL; /* str was released */
  return json_string_value(str);
}
