/* Charts of an evaluation report as self-contained SVG 1.1 documents.
 *
 * Each function returns a malloc'd, NUL-terminated string (the caller frees
 * it), or NULL when out of memory. The documents are meant to be inlined in
 * the report's HTML page or written as .svg files, so they:
 *   - reference nothing outside themselves: no scripts, no links, no images,
 *     no web fonts (font-family is the generic sans-serif), no ids (so that
 *     several charts can share one page); the only URI is the SVG namespace
 *     name in xmlns="http://www.w3.org/2000/svg", which is never fetched;
 *   - are deterministic: coordinates and figures are printed with fixed
 *     formats, so the same input gives the same bytes;
 *   - escape every piece of caller text (& < > " ' become entities; control
 *     characters XML forbids become '?'); long labels are shortened on a
 *     UTF-8 character boundary with an ellipsis, the full text kept in a
 *     <title> tooltip where it was cut;
 *   - carry a <title> (the chart's title) as their first child, a viewBox
 *     and width/height, a white background and dark strokes, and tell series
 *     apart by marker shape and dash pattern as well as by colour, so that
 *     they print in black and white.
 * A NULL title or axis title is taken as "". */
#ifndef FINCH_EVALUATE_SVG_H
#define FINCH_EVALUATE_SVG_H

#include <stddef.h>

#include "evaluate/metrics.h"

/* A heat map of values (rows, cols), row-major: rows top to bottom, columns
 * left to right, e.g. a confusion matrix with gold labels as rows. The colour
 * runs from white at min(0, smallest value) to dark blue at the largest on a
 * square-root scale (so that a few errors show beside a full diagonal), with
 * a scale legend; a NaN cell is grey. Cells shrink with the label count (down
 * to 6 units at 150 labels) and labels with them; column labels are written
 * vertically under the grid; both are cut to 24 characters. The value is
 * printed in each cell when cells are large enough (up to 25 labels), and a
 * tooltip names each cell up to 30 x 30. Cells at the scale's minimum are not
 * drawn (the white background shows), so a sparse 151 x 151 matrix stays small.
 * row_labels / col_labels may be NULL: the indices are written instead. */
char *finch_svg_heatmap(const char *title, const char *const *row_labels, const char *const *col_labels,
                        const double *values, size_t rows, size_t cols, const char *x_title, const char *y_title);

/* One line of a line chart: n points (x[i], y[i]); a point with a NaN
 * coordinate is skipped and breaks the line (a gap). */
typedef struct {
  const char *name;
  const double *x, *y;
  size_t n;
} finch_svg_series;

/* A line chart: linear axes spanning every finite point with a 4% margin
 * (kept within [0, 1] when the points are), ticks at 1, 2 or 5 times a power
 * of ten, and a legend of the series' names. Series are
 * told apart by colour, dash pattern and marker shape (markers drawn when a
 * series has at most 60 points, or a point stands alone). Learning curves,
 * the accuracy/coverage curve. No series or no finite point gives empty axes
 * with "no data". */
char *finch_svg_lines(const char *title, const char *x_title, const char *y_title, const finch_svg_series *series,
                      size_t n_series);

/* A reliability diagram: per confidence bin, a bar up to the accuracy of its
 * rows and a tick at their mean confidence, the diagonal of perfect
 * calibration dashed, and under it a strip of the bins' shares of rows.
 * Empty bins draw nothing. before and after (n_bins each, as finch_ece and
 * finch_stats_calibration fill them) are two panels side by side, headed
 * with their ECE (recomputed from the bins); after may be NULL (one panel). */
char *finch_svg_reliability(const char *title, const finch_calib_bin *before, const finch_calib_bin *after,
                            size_t n_bins);

/* A model on the accuracy-latency plane. */
typedef struct {
  const char *name;
  double x, y;  /* e.g. latency (x, lower is better) and accuracy (y) */
  int on_front; /* nonzero: on the Pareto front (finch_stats_pareto) */
} finch_svg_point;

/* Every point labelled with its name, points on the front filled and the
 * others hollow, the front joined by a step line (from each front point
 * across at its y to the next one's x, then up), in x order. When every x is
 * above 0 and the largest is over 100 times the smallest, the x axis is
 * logarithmic (decade ticks; the axis title says so). Points with a NaN
 * coordinate are left out. */
char *finch_svg_scatter_front(const char *title, const char *x_title, const char *y_title, const finch_svg_point *pts,
                              size_t n);

#endif
