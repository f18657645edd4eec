/* Input formats: each turns a byte stream into records of raw fields. The
 * records are validated, normalised and redacted by ingest, not here.
 *
 *   banking77  CSV with header text,category
 *   csv        any CSV with a header; text and label columns chosen by name
 *              or 0-based index (opts.text_col, opts.label_col)
 *   clinc150   JSON object with lists train, val, test, oos_train, oos_val,
 *              oos_test of [text, intent]; val -> split dev; oos_* rows get
 *              label "oos"; meta {"domain": D} from opts.domains_path
 *              (domains.json: domain -> [intents]) when given
 *   sgd        Schema-Guided Dialogue: a JSON list of dialogues (or one
 *              dialogue object), each turn a record in order with dialogue
 *              id, turn index and speaker ("user"/"system"); a user turn's
 *              label is the active_intent of the frame of the service the
 *              turn is about ("NONE" kept as a label); system turns have no
 *              label; meta {"service": S}
 *   jsonl      one JSON object a line: text (required), label, dialogue_id,
 *              turn, speaker, split, meta (an object, kept as jsonb)
 */
#ifndef FINCH_INGEST_FORMATS_H
#define FINCH_INGEST_FORMATS_H

#include <stdio.h>

#include "core/status.h"

typedef struct {
  const char *text;        /* raw, as in the source (may be invalid UTF-8) */
  const char *label;       /* NULL when the row has none */
  const char *split;       /* "train", "dev" or "test"; NULL when the source has none */
  const char *dialogue_id; /* NULL for single queries */
  int turn;                /* -1 for single queries */
  const char *speaker;     /* "user", "system", or NULL */
  const char *meta_json;   /* a JSON object text, or NULL */
  long long line;          /* line (CSV, JSONL) or record number (JSON) for messages */
} finch_record;

/* csv's label_col that loads text without labels. */
#define FINCH_CSV_NO_LABEL "none"

typedef struct {
  const char *text_col, *label_col; /* csv: names or 0-based indices; label_col NULL: the column named
                                       label, category or intent, else an error; FINCH_CSV_NO_LABEL: none */
  const char *domains_path;         /* clinc150: domains.json, may be NULL */
} finch_format_opts;

typedef struct finch_format_reader finch_format_reader;

/* name is used in messages. The reader does not own fp. A format that cannot
 * start (unknown name, bad header, not JSON) fails here with FINCH_EFORMAT
 * or FINCH_EINVAL. */
finch_status finch_format_open(finch_format_reader **out, const char *format, FILE *fp, const char *name,
                               const finch_format_opts *opts, finch_err *err);

/* 1: *rec holds the next record (valid until the next call); 0: end;
 * -1: one malformed record, err says where ("name:line: reason") and which
 * field (*field, may be NULL), rec->line is its line or record number, and
 * the reader goes on; -2: the input cannot be
 * read any further (err says why). */
int finch_format_next(finch_format_reader *r, finch_record *rec, const char **field, finch_err *err);
void finch_format_close(finch_format_reader *r);

/* "banking77, csv, clinc150, sgd, jsonl" for help texts. */
const char *finch_format_names(void);

#endif
