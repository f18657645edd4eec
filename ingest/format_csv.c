/* CSV formats over core/csv: banking77 (header exactly text,category) and
 * csv (any header; text and label columns chosen by name or 0-based index).
 *
 * csv's label column, when none is given, is the header's column named
 * label, category or intent (case-insensitive, in that order of preference);
 * a header with none of them is refused, naming its columns, rather than
 * loaded with every label NULL. The label column "none" loads text alone.
 *
 * Every data record must have as many fields as the header: a record with
 * more is as suspect as one with fewer (an unquoted comma in the text would
 * otherwise shift the label silently). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/csv.h"
#include "ingest/format_impl.h"

typedef struct {
  finch_format_reader base;
  finch_csv *csv;
  size_t ncols;        /* fields a record must have */
  size_t text, label;  /* column indices */
  int has_label;
} csv_reader;

static int csv_next(finch_format_reader *base, finch_record *rec, const char **field, finch_err *err) {
  csv_reader *r = (csv_reader *)base;
  char **f;
  size_t nf;
  finch_err cerr;
  int rc = finch_csv_next(r->csv, &f, &nf, &cerr);
  rec->line = (long long)finch_csv_line(r->csv);
  if (rc == 0) return 0;
  if (rc < 0) {
    /* The reader's message already says "name:line: ...". */
    if (err) *err = cerr;
    if (cerr.code == FINCH_EIO) return -2;
    *field = "record";
    return -1;
  }
  if (nf != r->ncols) {
    *field = "record";
    finch_err_set(err, FINCH_EFORMAT, "%s:%lld: expected %zu fields, found %zu", base->name, rec->line,
                  r->ncols, nf);
    return -1;
  }
  rec->text = f[r->text];
  rec->label = r->has_label ? f[r->label] : NULL;
  return 1;
}

static void csv_free(finch_format_reader *base) {
  csv_reader *r = (csv_reader *)base;
  finch_csv_close(r->csv);
  free(r);
}

static csv_reader *csv_reader_new(FILE *fp, const char *name) {
  csv_reader *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->base.next = csv_next;
  r->base.free = csv_free;
  r->csv = finch_csv_open(fp, name);
  if (!r->csv) {
    free(r);
    return NULL;
  }
  return r;
}

finch_status finch_format__banking77_open(finch_format_reader **out, FILE *fp, const char *name,
                                          const finch_format_opts *opts, finch_err *err) {
  (void)opts;
  *out = NULL;
  csv_reader *r = csv_reader_new(fp, name);
  if (!r) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  static const char *const header[] = {"text", "category"};
  finch_status st = finch_csv_expect_header(r->csv, header, 2, err);
  if (st) {
    csv_free(&r->base);
    return st;
  }
  r->ncols = 2;
  r->text = 0;
  r->label = 1;
  r->has_label = 1;
  *out = &r->base;
  return FINCH_OK;
}

/* "'a', 'b', 'c'" for messages, cut short with ", ..." when it does not fit
 * in cap (at least 8) bytes. */
static void list_columns(char *buf, size_t cap, char **cols, size_t n) {
  size_t o = 0, room = cap - 6; /* keeps space for ", ..." */
  buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    int w = snprintf(buf + o, room - o, "%s'%s'", i ? ", " : "", cols[i]);
    if (w < 0 || (size_t)w >= room - o) {
      strcpy(buf + o, i ? ", ..." : "...");
      return;
    }
    o += (size_t)w;
  }
}

/* Resolves a column given by name or, when all digits, by 0-based index. */
static finch_status find_column(const char *spec, const char *what, char **cols, size_t n, const char *name,
                                size_t *idx, finch_err *err) {
  size_t digits = strspn(spec, "0123456789");
  char list[640];
  if (*spec && spec[digits] == '\0') {
    unsigned long long i = strtoull(spec, NULL, 10);
    if (i < n && digits <= 19) {
      *idx = (size_t)i;
      return FINCH_OK;
    }
    list_columns(list, sizeof list, cols, n);
    return finch_err_set(err, FINCH_EINVAL,
                         "%s:1: %s column %s is out of range: the header has %zu column%s (%s)", name, what,
                         spec, n, n == 1 ? "" : "s", list);
  }
  for (size_t i = 0; i < n; i++)
    if (strcmp(cols[i], spec) == 0) {
      *idx = i;
      return FINCH_OK;
    }
  list_columns(list, sizeof list, cols, n);
  return finch_err_set(err, FINCH_EINVAL, "%s:1: no %s column '%s' in the header; its columns are %s", name,
                       what, spec, list);
}

/* The label column by its conventional names, when none was given. */
static finch_status detect_label(char **cols, size_t n, size_t text, const char *name, size_t *idx, finch_err *err) {
  static const char *const names[] = {"label", "category", "intent"};
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
    for (size_t i = 0; i < n; i++)
      if (i != text && strcasecmp(cols[i], names[k]) == 0) {
        *idx = i;
        return FINCH_OK;
      }
  char list[640];
  list_columns(list, sizeof list, cols, n);
  return finch_err_set(err, FINCH_EINVAL,
                       "%s:1: no label column: none of the header's columns (%s) is named label, category or "
                       "intent; give the label column (--label-col COL), or --label-col " FINCH_CSV_NO_LABEL
                       " to load unlabelled text",
                       name, list);
}

finch_status finch_format__csv_open(finch_format_reader **out, FILE *fp, const char *name,
                                    const finch_format_opts *opts, finch_err *err) {
  *out = NULL;
  csv_reader *r = csv_reader_new(fp, name);
  if (!r) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  char **cols;
  size_t n;
  finch_err cerr;
  finch_status st = FINCH_OK;
  int rc = finch_csv_next(r->csv, &cols, &n, &cerr);
  if (rc < 0) {
    if (err) *err = cerr;
    st = cerr.code;
  } else if (rc == 0) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s:1: empty input: expected a header line", name);
  } else {
    /* The header's fields stay valid until the next read, which is after open. */
    r->ncols = n;
    st = find_column(opts->text_col ? opts->text_col : "text", "text", cols, n, name, &r->text, err);
    if (!st && opts->label_col && strcmp(opts->label_col, FINCH_CSV_NO_LABEL) != 0) {
      st = find_column(opts->label_col, "label", cols, n, name, &r->label, err);
      r->has_label = 1;
    } else if (!st && !opts->label_col) {
      st = detect_label(cols, n, r->text, name, &r->label, err);
      r->has_label = 1;
    }
  }
  if (st) {
    csv_free(&r->base);
    return st;
  }
  *out = &r->base;
  return FINCH_OK;
}
