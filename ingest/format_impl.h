/* Internal to the input formats (ingest/formats.c and ingest/format_*.c):
 * the reader base every format embeds, and the helpers they share. Not for
 * use outside ingest/format*.c. */
#ifndef FINCH_INGEST_FORMAT_IMPL_H
#define FINCH_INGEST_FORMAT_IMPL_H

#include <jansson.h>

#include "ingest/formats.h"

/* Every format's reader starts with this. formats.c owns name (a copy of the
 * caller's) and resets *rec and *field before each call of next, so next
 * fills only what the format has. On -1 next still sets rec->line. free
 * releases the format's own state and the struct itself, not name. */
struct finch_format_reader {
  int (*next)(finch_format_reader *r, finch_record *rec, const char **field, finch_err *err);
  void (*free)(finch_format_reader *r);
  const char *name; /* for messages; owned by formats.c */
  int dead;         /* next returned -2: every later call says end */
};

/* One per format. name stays valid for the reader's lifetime; opts is never
 * NULL. On failure *out is NULL and err says why. */
typedef finch_status finch_format__open_fn(finch_format_reader **out, FILE *fp, const char *name,
                                           const finch_format_opts *opts, finch_err *err);
finch_format__open_fn finch_format__banking77_open, finch_format__csv_open, finch_format__clinc150_open,
    finch_format__sgd_open, finch_format__jsonl_open;

/* jsonl: with on = 0 every line goes through jansson alone, not the fast
 * scanner first; for the tests, which compare the two. Other readers are left
 * as they are. */
void finch_format__jsonl_set_fast(finch_format_reader *r, int on);

/* Records a jansson load failure of the document `name` in err:
 * "name:LINE: invalid JSON: TEXT (column C)", or "name: TEXT" when jansson
 * names no line (it could not read the input). */
finch_status finch_format__json_error(finch_err *err, const char *name, const json_error_t *je);

/* The compact JSON text {"key":"value"}, made once per value and kept in
 * cache (a JSON object owned by the caller), so the pointer lives as long as
 * cache does. NULL when out of memory. */
const char *finch_format__meta(json_t *cache, const char *key, const char *value);

#endif
