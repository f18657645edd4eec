/* BANKING77 rows and the seeded holdout the benchmarks share
 * (bench_sparse_lr, bench_bert), so that their figures are on the same rows. */
#ifndef FINCH_BENCH_DATA_H
#define FINCH_BENCH_DATA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  char **text, **label; /* (n) each malloc'd */
  size_t n, cap;
} bench_rows;

/* Appends the rows of a text,category CSV to out; a malformed row is
 * reported with its line and skipped. -1 when the file cannot be read. */
int bench_read_rows(const char *path, bench_rows *out);

/* Label ids y (n) in order of first appearance, their names into labels
 * (room for n, pointing into r); returns their count. */
size_t bench_label_ids(const bench_rows *r, char **labels, int32_t *y);

/* The holdout: per label in order of first appearance, a Fisher-Yates
 * shuffle of its rows from one generator seeded 42, the first (k + 5) / 10
 * held out. Returns held (n, malloc'd), 1 = holdout. */
char *bench_holdout(const bench_rows *r, const int32_t *y, size_t nl);

#endif
