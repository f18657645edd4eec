/* A streaming RFC 4180 CSV reader.
 *
 * Fields may be quoted with '"'; a quoted field may contain commas, CR/LF and
 * doubled quotes ("" for "). Records end at LF or CRLF. Errors name the source
 * and the line on which the bad record starts. */
#ifndef FINCH_CORE_CSV_H
#define FINCH_CORE_CSV_H

#include <stddef.h>
#include <stdio.h>

#include "core/status.h"

typedef struct finch_csv finch_csv;

/* name is used in error messages (a path, or "<stdin>"). The reader does not
 * own fp. */
finch_csv *finch_csv_open(FILE *fp, const char *name);
void finch_csv_close(finch_csv *r);

/* Reads the next record. Returns 1 with *fields and *nfields set (valid until the
 * next call), 0 at end of input, -1 on a malformed record (err says where;
 * the reader resynchronises at the next line, so the caller may count the
 * reject and go on). */
int finch_csv_next(finch_csv *r, char ***fields, size_t *nfields, finch_err *err);

/* Line number (1-based) on which the last returned record started. */
size_t finch_csv_line(const finch_csv *r);

/* Reads the first record and checks that it is exactly the n names given;
 * otherwise FINCH_EFORMAT naming the file and the header expected. */
finch_status finch_csv_expect_header(finch_csv *r, const char *const *names, size_t n, finch_err *err);

#endif
