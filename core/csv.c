/* Streaming RFC 4180 reader; the contract is in core/csv.h.
 *
 * Input goes through a private fread buffer (the FILE's own locking and
 * per-byte call overhead would dominate otherwise). A record is parsed into
 * one growing byte buffer that holds every field NUL-terminated, back to
 * back. Field starts are kept as offsets while parsing, because the buffer may
 * move as it grows, and become pointers once the record is complete.
 *
 * Beyond RFC 4180:
 *   - a UTF-8 byte-order mark at the very start of the input is skipped
 *     (spreadsheet exports carry one, and it would otherwise glue itself to
 *     the first header name);
 *   - a CR not followed by LF in an unquoted field is kept as data;
 *   - a NUL byte is malformed input: fields are C strings and would be cut.
 *
 * Resynchronisation. An error found in mid-record skips the rest of the
 * physical line on which it was found. An opening quote that is never closed
 * would otherwise swallow the rest of the input as one reject, so from the
 * first line break inside a record on, the raw bytes are kept as well; if the
 * input ends inside the quotes, reading resumes with those bytes, that is on
 * the line after the one the bad record started on. */
#include "core/csv.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { CSV_IO_SIZE = 1 << 16 };

struct finch_csv {
  FILE *fp;   /* not owned */
  char *name; /* for messages */

  /* Input: io[pos, len) is unread. After an unterminated quote io holds the
   * replayed bytes instead of file data, and its capacity is io_cap. */
  unsigned char *io;
  size_t io_cap, pos, len;
  int eof;        /* fp has reported EOF or an error; never read it again */
  int read_error; /* ferror(fp) was seen */
  int started;    /* the byte-order-mark check has been done */
  size_t line;    /* line of the next unread byte, 1-based */

  /* Raw bytes of the current record after its first line break, kept while
   * recording is set; raw_lost when they could not all be kept. */
  unsigned char *raw;
  size_t raw_len, raw_cap;
  int recording, raw_lost;

  /* The current record: field bytes, field start offsets into rec, and the
   * pointer array handed to the caller. */
  char *rec;
  size_t rec_len, rec_cap;
  size_t *offs;
  size_t n_offs, offs_cap;
  char **fields;
  size_t fields_cap;
  size_t rec_line; /* line on which the last returned record started */
};

/* Grows *buf (element size elem) to hold at least need elements. */
static int csv_reserve(void **buf, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 1;
  size_t n = *cap ? *cap : 64;
  while (n < need) {
    if (n > ((size_t)-1 / 2) / elem) return 0;
    n *= 2;
  }
  void *p = realloc(*buf, n * elem);
  if (!p) return 0;
  *buf = p;
  *cap = n;
  return 1;
}

finch_csv *finch_csv_open(FILE *fp, const char *name) {
  if (!fp) return NULL;
  finch_csv *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->fp = fp;
  r->name = strdup(name ? name : "<csv>");
  r->io = malloc(CSV_IO_SIZE);
  r->io_cap = CSV_IO_SIZE;
  r->line = 1;
  if (!r->name || !r->io) {
    finch_csv_close(r);
    return NULL;
  }
  return r;
}

void finch_csv_close(finch_csv *r) {
  if (!r) return;
  free(r->name);
  free(r->io);
  free(r->raw);
  free(r->rec);
  free(r->offs);
  free(r->fields);
  free(r);
}

size_t finch_csv_line(const finch_csv *r) { return r ? r->rec_line : 0; }

/* Refills io from the file; 0 at end of input. */
static int csv_fill(finch_csv *r) {
  if (r->eof) return 0;
  r->pos = 0;
  r->len = fread(r->io, 1, r->io_cap, r->fp);
  if (r->len == 0) {
    r->eof = 1;
    if (ferror(r->fp)) r->read_error = 1;
    return 0;
  }
  return 1;
}

static void csv_record_raw(finch_csv *r, int c) {
  if (r->raw_len == r->raw_cap &&
      !csv_reserve((void **)&r->raw, &r->raw_cap, r->raw_len + 1, 1)) {
    r->recording = 0;
    r->raw_lost = 1;
    return;
  }
  r->raw[r->raw_len++] = (unsigned char)c;
}

static inline int csv_getc(finch_csv *r) {
  if (r->pos == r->len && !csv_fill(r)) return EOF;
  int c = r->io[r->pos++];
  if (r->recording) csv_record_raw(r, c);
  return c;
}

/* Appends one byte to the current field; 0 when out of memory. */
static inline int csv_put(finch_csv *r, int c) {
  if (r->rec_len == r->rec_cap &&
      !csv_reserve((void **)&r->rec, &r->rec_cap, r->rec_len + 1, 1))
    return 0;
  r->rec[r->rec_len++] = (char)c;
  return 1;
}

static int csv_begin_field(finch_csv *r) {
  if (r->n_offs == r->offs_cap &&
      !csv_reserve((void **)&r->offs, &r->offs_cap, r->n_offs + 1, sizeof *r->offs))
    return 0;
  r->offs[r->n_offs++] = r->rec_len;
  return 1;
}

/* Skips the BOM if the input starts with one. Reads until three bytes are
 * buffered (a pipe may deliver fewer) or the input ends. */
static void csv_skip_bom(finch_csv *r) {
  r->started = 1;
  while (r->len < 3 && !r->eof) {
    size_t n = fread(r->io + r->len, 1, r->io_cap - r->len, r->fp);
    if (n == 0) {
      r->eof = 1;
      if (ferror(r->fp)) r->read_error = 1;
    }
    r->len += n;
  }
  if (r->len >= 3 && memcmp(r->io, "\xEF\xBB\xBF", 3) == 0) r->pos = 3;
}

/* Consumes the rest of the physical line; c is the byte already read. */
static void csv_skip_line(finch_csv *r, int c) {
  r->recording = 0;
  while (c != '\n' && c != EOF) c = csv_getc(r);
  if (c == '\n') r->line++;
}

/* Makes the kept raw bytes the next input, so that reading resumes on the
 * line after the one the current record started on. Only called at end of
 * input, when io holds nothing unread. */
static void csv_replay(finch_csv *r, size_t start_line) {
  r->recording = 0;
  if (r->raw_lost || r->raw_len == 0) return;
  unsigned char *io = r->io;
  size_t io_cap = r->io_cap;
  r->io = r->raw;
  r->io_cap = r->raw_cap;
  r->pos = 0;
  r->len = r->raw_len;
  r->raw = io;
  r->raw_cap = io_cap;
  r->raw_len = 0;
  r->line = start_line + 1;
}

/* Records "name:line: <message>" for the current record and returns -1. */
static int csv_fail(finch_csv *r, finch_err *err, finch_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int csv_fail(finch_csv *r, finch_err *err, finch_status code, const char *fmt, ...) {
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  finch_err_set(err, code, "%s:%zu: %s", r->name, r->rec_line, what);
  return -1;
}

/* The input failed (not merely ended): reported once, as a reject of the
 * record in progress; the next call then says end of input. */
static int csv_read_failed(finch_csv *r, finch_err *err) {
  r->read_error = 0;
  return csv_fail(r, err, FINCH_EIO, "read error");
}

int finch_csv_next(finch_csv *r, char ***fields, size_t *nfields, finch_err *err) {
  *fields = NULL;
  *nfields = 0;
  r->rec_len = 0;
  r->n_offs = 0;
  r->raw_len = 0;
  r->raw_lost = 0;
  r->recording = 0;
  if (!r->started) csv_skip_bom(r);

  int c = csv_getc(r);
  r->rec_line = r->line;
  if (c == EOF) return r->read_error ? csv_read_failed(r, err) : 0;

  /* One field per iteration; c holds the field's first byte. */
  for (;;) {
    size_t field = r->n_offs + 1;
    if (!csv_begin_field(r)) goto nomem;
    if (c == '"') {
      for (;;) {
        c = csv_getc(r);
        if (c == '"') {
          c = csv_getc(r);
          if (c != '"') break; /* closing quote; c is the byte after it */
        } else if (c == EOF) {
          if (r->read_error) return csv_read_failed(r, err);
          csv_fail(r, err, FINCH_EFORMAT, "unterminated quoted field (field %zu)", field);
          csv_replay(r, r->rec_line);
          return -1;
        } else if (c == '\0') {
          csv_fail(r, err, FINCH_EFORMAT, "NUL byte in field %zu", field);
          csv_skip_line(r, c);
          return -1;
        }
        if (!csv_put(r, c)) goto nomem;
        if (c == '\n') {
          r->line++;
          if (!r->recording && !r->raw_lost) r->recording = 1;
        }
      }
      if (c == '\r') {
        c = csv_getc(r);
        if (c == EOF) break;
        if (c != '\n') {
          csv_fail(r, err, FINCH_EFORMAT,
                   "unexpected character after closing quote in field %zu", field);
          csv_skip_line(r, c);
          return -1;
        }
      }
      if (c != ',' && c != '\n' && c != EOF) {
        csv_fail(r, err, FINCH_EFORMAT, "unexpected character after closing quote in field %zu",
                 field);
        csv_skip_line(r, c);
        return -1;
      }
    } else {
      while (c != ',' && c != '\n' && c != EOF) {
        if (c == '\r') {
          c = csv_getc(r);
          if (c == '\n' || c == EOF) break;
          if (!csv_put(r, '\r')) goto nomem;
          continue; /* c is not examined yet */
        }
        if (c == '"') {
          csv_fail(r, err, FINCH_EFORMAT, "unexpected quote in unquoted field %zu", field);
          csv_skip_line(r, c);
          return -1;
        }
        if (c == '\0') {
          csv_fail(r, err, FINCH_EFORMAT, "NUL byte in field %zu", field);
          csv_skip_line(r, c);
          return -1;
        }
        if (!csv_put(r, c)) goto nomem;
        c = csv_getc(r);
      }
    }
    if (!csv_put(r, '\0')) goto nomem;
    if (c != ',') break; /* '\n' or EOF: the record is complete */
    c = csv_getc(r);
  }
  if (c == '\n') r->line++;
  r->recording = 0;
  if (r->read_error) return csv_read_failed(r, err);

  if (!csv_reserve((void **)&r->fields, &r->fields_cap, r->n_offs, sizeof *r->fields))
    return csv_fail(r, err, FINCH_ENOMEM, "out of memory for %zu fields", r->n_offs);
  for (size_t i = 0; i < r->n_offs; i++) r->fields[i] = r->rec + r->offs[i];
  *fields = r->fields;
  *nfields = r->n_offs;
  return 1;

nomem:
  csv_fail(r, err, FINCH_ENOMEM, "out of memory after %zu bytes of record", r->rec_len);
  csv_skip_line(r, c);
  return -1;
}

finch_status finch_csv_expect_header(finch_csv *r, const char *const *names, size_t n, finch_err *err) {
  char **f;
  size_t nf;
  finch_err rerr;
  int rc = finch_csv_next(r, &f, &nf, &rerr);
  int ok = rc > 0 && nf == n;
  for (size_t i = 0; ok && i < n; i++) ok = strcmp(f[i], names[i]) == 0;
  if (ok) return FINCH_OK;
  char want[512];
  size_t o = 0;
  for (size_t i = 0; i < n && o < sizeof want; i++)
    o += (size_t)snprintf(want + o, sizeof want - o, "%s%s", i ? "," : "", names[i]);
  return finch_err_set(err, FINCH_EFORMAT, "%s:1: expected the header '%s'", r->name, want);
}
