/* The charts are written with fprintf into an open_memstream buffer; every
 * coordinate goes through "%.2f" and every caller string through esc(), so
 * the bytes depend on the input alone. Each chart is laid out in its own
 * unit space (the viewBox), scaled by the page. */
#include "evaluate/svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INK "#1a1a1a"
#define GRID "#d0d0d0"
#define LABEL_MAX 24

/* Series colours: dark enough to print, distinct in grey as well. */
static const char *const COLOURS[] = {"#1f4e79", "#b03a2e", "#1e7b34", "#6a1b9a", "#b85c00", "#37474f"};
static const char *const DASHES[] = {"", "6 3", "2 2", "8 3 2 3", "1 3", "10 4"};
#define N_STYLES 6

/* ---- text ------------------------------------------------------------------------ */

/* Whether s has more than max_chars UTF-8 characters (max_chars 0: never). */
static int too_long(const char *s, size_t max_chars) {
  size_t chars = 0;
  for (const unsigned char *p = (const unsigned char *)s; max_chars && *p; p++)
    if ((*p & 0xC0) != 0x80 && ++chars > max_chars) return 1;
  return 0;
}

/* Writes s XML-escaped; when it is longer than max_chars characters (0 =
 * no limit), its first max_chars - 1 characters and an ellipsis, cut on a
 * UTF-8 character boundary. */
static void esc_n(FILE *fp, const char *s, size_t max_chars) {
  if (!s) return;
  int cut = too_long(s, max_chars);
  size_t chars = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if ((*p & 0xC0) != 0x80 && cut && ++chars == max_chars) {
      fputs("\xE2\x80\xA6", fp);
      return;
    }
    switch (*p) {
    case '&': fputs("&amp;", fp); break;
    case '<': fputs("&lt;", fp); break;
    case '>': fputs("&gt;", fp); break;
    case '"': fputs("&quot;", fp); break;
    case '\'': fputs("&#39;", fp); break;
    default:
      if (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r') fputc('?', fp);
      else fputc(*p, fp);
    }
  }
}

static void esc(FILE *fp, const char *s) { esc_n(fp, s, 0); }

/* A text element at (x, y): anchor start|middle|end, extra attributes (a
 * transform) or "", the text cut to max_chars with a tooltip of the whole. */
static void text(FILE *fp, double x, double y, double size, const char *anchor, const char *extra, const char *s,
                 size_t max_chars) {
  fprintf(fp, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.2f\" text-anchor=\"%s\"%s%s>", x, y, size, anchor,
          *extra ? " " : "", extra);
  if (too_long(s, max_chars)) {
    fputs("<title>", fp);
    esc(fp, s);
    fputs("</title>", fp);
  }
  esc_n(fp, s, max_chars);
  fputs("</text>\n", fp);
}

/* ---- document -------------------------------------------------------------------- */

typedef struct {
  FILE *fp;
  char *buf;
  size_t len;
} doc;

static int doc_open(doc *d, double w, double h, const char *title) {
  d->buf = NULL;
  d->fp = open_memstream(&d->buf, &d->len);
  if (!d->fp) return -1;
  fprintf(d->fp,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" height=\"%.0f\" "
          "viewBox=\"0 0 %.0f %.0f\" role=\"img\" font-family=\"sans-serif\" fill=\"" INK "\">\n<title>",
          w, h, w, h);
  esc(d->fp, title ? title : "");
  fprintf(d->fp, "</title>\n<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", w, h);
  text(d->fp, w / 2, 22, 15, "middle", "font-weight=\"bold\"", title ? title : "", 0);
  return 0;
}

static char *doc_close(doc *d) {
  fputs("</svg>\n", d->fp);
  int bad = ferror(d->fp);
  if (fclose(d->fp) || bad) {
    free(d->buf);
    return NULL;
  }
  return d->buf;
}

/* ---- axes ------------------------------------------------------------------------ */

typedef struct {
  double lo, hi;   /* data range */
  double p0, p1;   /* pixel positions of lo and hi */
  int log;         /* log10 scale */
} axis;

static double amap(const axis *a, double v) {
  double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
  return a->p0 + t * (a->p1 - a->p0);
}

/* A tick step of 1, 2 or 5 times a power of ten giving about 5 ticks. */
static double nice_step(double span) {
  double raw = span / 5, p = pow(10, floor(log10(raw))), m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/* Widens [lo, hi] to a non-empty range on tick steps (linear, with a margin
 * of 4% each side that does not leave [0, 1] when the data lie in it) or on
 * decades (log). */
static void axis_range(axis *a, double lo, double hi) {
  if (!(lo <= hi)) lo = 0, hi = 1;
  if (!a->log && hi > lo) {
    double m = 0.04 * (hi - lo), lo2 = lo - m, hi2 = hi + m;
    if (lo >= 0 && lo2 < 0) lo2 = 0;
    if (lo >= 0 && hi <= 1 && hi2 > 1) hi2 = 1;
    lo = lo2, hi = hi2;
  }
  if (a->log) {
    a->lo = pow(10, floor(log10(lo)));
    a->hi = pow(10, ceil(log10(hi)));
    if (a->hi <= a->lo) a->hi = a->lo * 10;
    return;
  }
  if (hi - lo < 1e-12 * fmax(1, fabs(hi))) {
    double pad = lo == 0 ? 1 : fabs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  double s = nice_step(hi - lo);
  a->lo = floor(lo / s) * s;
  a->hi = ceil(hi / s) * s;
}

/* Decimals enough to tell ticks step apart. */
static int decimals(double step) {
  int d = (int)ceil(-log10(step) - 1e-9);
  return d < 0 ? 0 : d > 6 ? 6 : d;
}

/* Ticks, grid lines and tick labels of x (horizontal, at the plot bottom yb)
 * or y (vertical, at the plot's left xl), across to the other side. */
static void draw_axis(FILE *fp, const axis *a, int vertical, double other0, double other1) {
  double vals[64];
  int n = 0, dec = 0;
  if (a->log) {
    for (double v = a->lo; v <= a->hi * 1.000001 && n < 64; v *= 10) vals[n++] = v;
  } else {
    double s = nice_step(a->hi - a->lo);
    dec = decimals(s);
    for (int k = 0; n < 64; k++) {
      double v = a->lo + k * s;
      if (v > a->hi + s * 1e-6) break;
      vals[n++] = fabs(v) < s * 1e-9 ? 0 : v;
    }
  }
  for (int k = 0; k < n; k++) {
    double p = amap(a, vals[k]);
    char lab[48];
    if (a->log) snprintf(lab, sizeof lab, "%g", vals[k]);
    else snprintf(lab, sizeof lab, "%.*f", dec, vals[k]);
    if (vertical) {
      fprintf(fp, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"" GRID "\" stroke-width=\"0.5\"/>\n",
              other0, p, other1, p);
      fprintf(fp, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"" INK "\"/>\n", other0 - 4, p,
              other0, p);
      text(fp, other0 - 6, p + 4, 11, "end", "", lab, 0);
    } else {
      fprintf(fp, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"" GRID "\" stroke-width=\"0.5\"/>\n",
              p, other0, p, other1);
      fprintf(fp, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"" INK "\"/>\n", p, other0, p,
              other0 + 4);
      text(fp, p, other0 + 17, 11, "middle", "", lab, 0);
    }
  }
}

/* A plot frame (x0, y0)-(x1, y1) with both axes and their titles. */
static void frame(FILE *fp, const axis *ax, const axis *ay, const char *x_title, const char *y_title) {
  double x0 = ax->p0, x1 = ax->p1, y0 = ay->p1, y1 = ay->p0;
  draw_axis(fp, ax, 0, y1, y0);
  draw_axis(fp, ay, 1, x0, x1);
  fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"" INK "\"/>\n", x0,
          y0, x1 - x0, y1 - y0);
  text(fp, (x0 + x1) / 2, y1 + 38, 12, "middle", "", x_title ? x_title : "", 0);
  char rot[96];
  snprintf(rot, sizeof rot, "transform=\"rotate(-90 %.2f %.2f)\"", x0 - 48, (y0 + y1) / 2);
  text(fp, x0 - 48, (y0 + y1) / 2, 12, "middle", rot, y_title ? y_title : "", 0);
}

/* Marker k (shape by series) at (x, y): circle, square, triangle, diamond,
 * cross, plus. */
static void marker(FILE *fp, int k, double x, double y, const char *colour, int filled) {
  const char *fill = filled ? colour : "#ffffff";
  switch (k % N_STYLES) {
  case 0:
    fprintf(fp, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"%s\" stroke=\"%s\"/>\n", x, y, fill, colour);
    break;
  case 1:
    fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"7\" height=\"7\" fill=\"%s\" stroke=\"%s\"/>\n", x - 3.5, y - 3.5,
            fill, colour);
    break;
  case 2:
    fprintf(fp, "<path d=\"M%.2f %.2fL%.2f %.2fL%.2f %.2fZ\" fill=\"%s\" stroke=\"%s\"/>\n", x, y - 4.5, x + 4, y + 3,
            x - 4, y + 3, fill, colour);
    break;
  case 3:
    fprintf(fp, "<path d=\"M%.2f %.2fL%.2f %.2fL%.2f %.2fL%.2f %.2fZ\" fill=\"%s\" stroke=\"%s\"/>\n", x, y - 4.5,
            x + 4.5, y, x, y + 4.5, x - 4.5, y, fill, colour);
    break;
  case 4:
    fprintf(fp, "<path d=\"M%.2f %.2fL%.2f %.2fM%.2f %.2fL%.2f %.2f\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", x - 4,
            y - 4, x + 4, y + 4, x - 4, y + 4, x + 4, y - 4, colour);
    break;
  default:
    fprintf(fp, "<path d=\"M%.2f %.2fL%.2f %.2fM%.2f %.2fL%.2f %.2f\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", x - 4.5,
            y, x + 4.5, y, x, y - 4.5, x, y + 4.5, colour);
  }
}

static void no_data(FILE *fp, const axis *ax, const axis *ay) {
  text(fp, (ax->p0 + ax->p1) / 2, (ay->p0 + ay->p1) / 2, 13, "middle", "fill=\"#666666\"", "no data", 0);
}

/* ---- heat map -------------------------------------------------------------------- */

/* White to #08306b by t in [0, 1]. */
static void ramp(double t, char out[8]) {
  if (!(t >= 0)) t = 0;
  if (t > 1) t = 1;
  int r = (int)lround(255 + t * (8 - 255)), g = (int)lround(255 + t * (48 - 255)), b = (int)lround(255 + t * (107 - 255));
  snprintf(out, 8, "#%02x%02x%02x", r, g, b);
}

static void index_label(char *buf, size_t size, const char *const *labels, size_t i, const char **out) {
  if (labels && labels[i]) {
    *out = labels[i];
  } else {
    snprintf(buf, size, "%zu", i);
    *out = buf;
  }
}

/* A cell's value as printed: integers without decimals. */
static void cell_text(char *buf, size_t size, double v) {
  if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, size, "%.0f", v);
  else snprintf(buf, size, "%.2f", v);
}

char *finch_svg_heatmap(const char *title, const char *const *row_labels, const char *const *col_labels,
                        const double *values, size_t rows, size_t cols, const char *x_title, const char *y_title) {
  size_t most = rows > cols ? rows : cols;
  double cell = most ? 600.0 / (double)most : 28;
  if (cell > 28) cell = 28;
  if (cell < 6) cell = 6;
  double font = cell * 0.8 < 11 ? cell * 0.8 : 11;
  double lab_w = font * 0.62 * LABEL_MAX + 8; /* room for a cut label */
  double gx = 70 + lab_w, gy = 48, gw = cell * (double)cols, gh = cell * (double)rows;
  double legend_x = gx + gw + 24;
  double W = legend_x + 90, H = gy + gh + lab_w + 50;
  if (H < gy + 260) H = gy + 260;
  double vmin = 0, vmax = 0;
  int any = 0;
  for (size_t i = 0; values && i < rows * cols; i++) {
    if (isnan(values[i])) continue;
    if (!any || values[i] > vmax) vmax = values[i];
    if (values[i] < vmin) vmin = values[i];
    any = 1;
  }
  if (vmax < 0) vmax = 0;
  double span = vmax > vmin ? vmax - vmin : 1;
  doc d;
  if (doc_open(&d, W, H, title)) return NULL;
  FILE *fp = d.fp;
  char colour[8], nb[32], lb[32], lb2[32], tip[64];
  const char *name, *name2;
  for (size_t r = 0; values && r < rows; r++) {
    for (size_t c = 0; c < cols; c++) {
      double v = values[r * cols + c], x = gx + cell * (double)c, y = gy + cell * (double)r;
      int nan = isnan(v);
      if (!nan && v <= vmin) continue;
      if (nan) snprintf(colour, sizeof colour, "#bdbdbd");
      else ramp(sqrt((v - vmin) / span), colour);
      fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"", x, y, cell, cell, colour);
      if (rows * cols <= 900) {
        index_label(lb, sizeof lb, row_labels, r, &name);
        index_label(lb2, sizeof lb2, col_labels, c, &name2);
        fputs("><title>", fp);
        esc(fp, name);
        fputs(" / ", fp);
        esc(fp, name2);
        if (nan) snprintf(tip, sizeof tip, ": no value");
        else cell_text(nb, sizeof nb, v), snprintf(tip, sizeof tip, ": %s", nb);
        esc(fp, tip);
        fputs("</title></rect>\n", fp);
      } else {
        fputs("/>\n", fp);
      }
    }
  }
  /* Values in the cells, light on dark, where they fit. */
  if (values && most <= 25)
    for (size_t r = 0; r < rows; r++)
      for (size_t c = 0; c < cols; c++) {
        double v = values[r * cols + c];
        if (isnan(v)) continue;
        cell_text(nb, sizeof nb, v);
        text(fp, gx + cell * ((double)c + 0.5), gy + cell * ((double)r + 0.5) + font * 0.35, font * 0.9, "middle",
             sqrt((v - vmin) / span) > 0.55 ? "fill=\"#ffffff\"" : "", nb, 0);
      }
  fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"" INK "\"/>\n", gx, gy,
          gw, gh);
  for (size_t r = 0; r < rows; r++) {
    index_label(lb, sizeof lb, row_labels, r, &name);
    text(fp, gx - 4, gy + cell * ((double)r + 0.5) + font * 0.35, font, "end", "", name, LABEL_MAX);
  }
  for (size_t c = 0; c < cols; c++) {
    char rot[96];
    double x = gx + cell * ((double)c + 0.5) + font * 0.35, y = gy + gh + 4;
    snprintf(rot, sizeof rot, "transform=\"rotate(-90 %.2f %.2f)\"", x, y);
    index_label(lb, sizeof lb, col_labels, c, &name);
    text(fp, x, y, font, "end", rot, name, LABEL_MAX);
  }
  text(fp, gx + gw / 2, gy + gh + lab_w + 30, 12, "middle", "", x_title ? x_title : "", 0);
  char rot[96];
  snprintf(rot, sizeof rot, "transform=\"rotate(-90 %.2f %.2f)\"", 24.0, gy + gh / 2);
  text(fp, 24, gy + gh / 2, 12, "middle", rot, y_title ? y_title : "", 0);
  /* The scale: 20 steps from the largest value (top) to the smallest, the
   * colour by the square root of the value's place in the range, so that the
   * few errors of a confusion matrix show beside its diagonal. */
  for (int k = 0; k < 20; k++) {
    ramp(1 - (k + 0.5) / 20, colour);
    fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"16\" height=\"10\" fill=\"%s\"/>\n", legend_x, gy + 10.0 * k,
            colour);
  }
  fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"16\" height=\"200\" fill=\"none\" stroke=\"" INK "\"/>\n", legend_x,
          gy);
  cell_text(nb, sizeof nb, any ? vmax : 0);
  text(fp, legend_x + 20, gy + 8, 10, "start", "", nb, 0);
  cell_text(nb, sizeof nb, any ? vmin : 0);
  text(fp, legend_x + 20, gy + 200, 10, "start", "", nb, 0);
  if (any && vmax > vmin) { /* the middle of the bar: a quarter of the range */
    double q = vmin + span / 4;
    if (q != floor(q)) snprintf(nb, sizeof nb, "%.2f", q);
    else cell_text(nb, sizeof nb, q);
    text(fp, legend_x + 20, gy + 104, 10, "start", "", nb, 0);
  }
  text(fp, legend_x, gy + 216, 9, "start", "", "(square-root scale)", 0);
  if (!any) text(fp, gx + gw / 2, gy + gh / 2 + 4, 13, "middle", "fill=\"#666666\"", "no data", 0);
  return doc_close(&d);
}

/* ---- line chart ------------------------------------------------------------------ */

static void legend_entry(FILE *fp, int k, double x, double y, const char *name, int line) {
  const char *colour = COLOURS[k % N_STYLES], *dash = DASHES[k % N_STYLES];
  if (line)
    fprintf(fp, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"2\"%s%s%s/>\n", x,
            y, x + 24, y, colour, *dash ? " stroke-dasharray=\"" : "", dash, *dash ? "\"" : "");
  marker(fp, k, x + 12, y, colour, 1);
  text(fp, x + 30, y + 4, 11, "start", "", name ? name : "", 28);
}

char *finch_svg_lines(const char *title, const char *x_title, const char *y_title, const finch_svg_series *series,
                      size_t n_series) {
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (size_t s = 0; s < n_series; s++)
    for (size_t i = 0; i < series[s].n; i++) {
      double x = series[s].x[i], y = series[s].y[i];
      if (!isfinite(x) || !isfinite(y)) continue;
      xlo = fmin(xlo, x), xhi = fmax(xhi, x), ylo = fmin(ylo, y), yhi = fmax(yhi, y);
    }
  int any = xlo <= xhi;
  const double W = 820, H = 440;
  axis ax = {0, 1, 80, 600, 0}, ay = {0, 1, H - 60, 44, 0};
  axis_range(&ax, any ? xlo : 0, any ? xhi : 1);
  axis_range(&ay, any ? ylo : 0, any ? yhi : 1);
  doc d;
  if (doc_open(&d, W, H, title)) return NULL;
  FILE *fp = d.fp;
  frame(fp, &ax, &ay, x_title, y_title);
  if (!any) no_data(fp, &ax, &ay);
  for (size_t s = 0; s < n_series; s++) {
    const finch_svg_series *sr = &series[s];
    const char *colour = COLOURS[s % N_STYLES], *dash = DASHES[s % N_STYLES];
    int drawing = 0; /* a piece of line is open */
    for (size_t i = 0; i < sr->n; i++) {
      double x = sr->x[i], y = sr->y[i];
      if (!isfinite(x) || !isfinite(y)) {
        if (drawing) fputs("\"/>\n", fp); /* a gap: the next point starts a new piece */
        drawing = 0;
      } else if (!drawing) {
        fprintf(fp, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s%s%s d=\"M%.2f %.2f", colour,
                *dash ? " stroke-dasharray=\"" : "", dash, *dash ? "\"" : "", amap(&ax, x), amap(&ay, y));
        drawing = 1;
      } else {
        fprintf(fp, "L%.2f %.2f", amap(&ax, x), amap(&ay, y));
      }
    }
    if (drawing) fputs("\"/>\n", fp);
    for (size_t i = 0; i < sr->n; i++) {
      double x = sr->x[i], y = sr->y[i];
      if (!isfinite(x) || !isfinite(y)) continue;
      int alone = (i == 0 || !isfinite(sr->x[i - 1]) || !isfinite(sr->y[i - 1])) &&
                  (i + 1 == sr->n || !isfinite(sr->x[i + 1]) || !isfinite(sr->y[i + 1]));
      if (sr->n <= 60 || alone) marker(fp, (int)s, amap(&ax, x), amap(&ay, y), colour, 1);
    }
  }
  for (size_t s = 0; s < n_series; s++) legend_entry(fp, (int)s, 620, 60 + 20.0 * (double)s, series[s].name, 1);
  return doc_close(&d);
}

/* ---- reliability diagram --------------------------------------------------------- */

static void reliability_panel(FILE *fp, const finch_calib_bin *bins, size_t n_bins, double x0, const char *head) {
  const double size = 300, y0 = 70, strip = 40;
  axis ax = {0, 1, x0, x0 + size, 0}, ay = {0, 1, y0 + size, y0, 0};
  long long total = 0, most = 0;
  double ece = 0;
  for (size_t b = 0; b < n_bins; b++) {
    total += bins[b].count;
    if (bins[b].count > most) most = bins[b].count;
  }
  for (size_t b = 0; b < n_bins; b++)
    if (bins[b].count) ece += (double)bins[b].count / (double)total * fabs(bins[b].accuracy - bins[b].confidence);
  char h[160];
  snprintf(h, sizeof h, "%s (ECE %.4f, %lld rows)", head, ece, total);
  text(fp, x0 + size / 2, y0 - 12, 12, "middle", "", h, 0);
  for (size_t b = 0; b < n_bins; b++) {
    const finch_calib_bin *c = &bins[b];
    if (!c->count) continue;
    double xa = amap(&ax, c->lo), xb = amap(&ax, c->hi), ya = amap(&ay, c->accuracy);
    fprintf(fp,
            "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#9ecae1\" stroke=\"#1f4e79\">"
            "<title>confidence %.3f-%.3f: %lld rows, accuracy %.4f, mean confidence %.4f</title></rect>\n",
            xa, ya, xb - xa, ay.p0 - ya, c->lo, c->hi, c->count, c->accuracy, c->confidence);
    double yc = amap(&ay, c->confidence);
    fprintf(fp, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#b03a2e\" stroke-width=\"2\"/>\n", xa,
            yc, xb, yc);
    double share = (double)c->count / (double)most; /* the fullest bin fills the strip */
    fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#636363\"/>\n", xa,
            y0 + size + 44 + strip * (1 - share), xb - xa, strip * share);
  }
  fprintf(fp,
          "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"" INK "\" stroke-dasharray=\"5 4\"/>\n",
          ax.p0, ay.p0, ax.p1, ay.p1);
  frame(fp, &ax, &ay, "confidence", "accuracy");
  fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"" INK "\"/>\n", x0,
          y0 + size + 44, size, strip);
  text(fp, x0 - 6, y0 + size + 44 + strip / 2 + 4, 10, "end", "", "rows", 0);
  char most_s[48];
  snprintf(most_s, sizeof most_s, "%lld", most);
  text(fp, x0 + size + 4, y0 + size + 44 + 9, 9, "start", "", most_s, 0);
}

char *finch_svg_reliability(const char *title, const finch_calib_bin *before, const finch_calib_bin *after,
                            size_t n_bins) {
  int panels = after ? 2 : 1;
  double W = 90 + 390.0 * panels, H = 520;
  doc d;
  if (doc_open(&d, W, H, title)) return NULL;
  FILE *fp = d.fp;
  if (before) reliability_panel(fp, before, n_bins, 90, after ? "before temperature scaling" : "reliability");
  if (after) reliability_panel(fp, after, n_bins, 480, "after temperature scaling");
  /* The key, in words and shapes as well as colours. */
  double ky = H - 14;
  fprintf(fp, "<rect x=\"90\" y=\"%.2f\" width=\"14\" height=\"10\" fill=\"#9ecae1\" stroke=\"#1f4e79\"/>\n", ky - 9);
  text(fp, 110, ky, 11, "start", "", "bar: accuracy of the bin's rows", 0);
  fprintf(fp, "<line x1=\"290\" y1=\"%.2f\" x2=\"304\" y2=\"%.2f\" stroke=\"#b03a2e\" stroke-width=\"2\"/>\n", ky - 4,
          ky - 4);
  text(fp, 310, ky, 11, "start", "", "tick: their mean confidence", 0);
  fprintf(fp, "<line x1=\"480\" y1=\"%.2f\" x2=\"494\" y2=\"%.2f\" stroke=\"" INK "\" stroke-dasharray=\"5 4\"/>\n",
          ky - 4, ky - 4);
  text(fp, 500, ky, 11, "start", "", "dashed: perfect calibration", 0);
  return doc_close(&d);
}

/* ---- accuracy-latency front ------------------------------------------------------ */

static int cmp_xy(const void *pa, const void *pb) {
  const finch_svg_point *a = *(const finch_svg_point *const *)pa, *b = *(const finch_svg_point *const *)pb;
  if (a->x != b->x) return a->x < b->x ? -1 : 1;
  if (a->y != b->y) return a->y < b->y ? -1 : 1;
  return (a > b) - (a < b);
}

char *finch_svg_scatter_front(const char *title, const char *x_title, const char *y_title, const finch_svg_point *pts,
                              size_t n) {
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(pts[i].x) || !isfinite(pts[i].y)) continue;
    xlo = fmin(xlo, pts[i].x), xhi = fmax(xhi, pts[i].x), ylo = fmin(ylo, pts[i].y), yhi = fmax(yhi, pts[i].y);
    m++;
  }
  const finch_svg_point **front = malloc((n ? n : 1) * sizeof *front);
  if (!front) return NULL;
  const double W = 820, H = 460;
  axis ax = {0, 1, 90, 640, 0}, ay = {0, 1, H - 60, 44, 0};
  ax.log = m && xlo > 0 && xhi > 100 * xlo;
  axis_range(&ax, m ? xlo : 0, m ? xhi : 1);
  axis_range(&ay, m ? ylo : 0, m ? yhi : 1);
  char xt[256];
  snprintf(xt, sizeof xt, "%s%s", x_title ? x_title : "", ax.log ? " (log scale)" : "");
  doc d;
  if (doc_open(&d, W, H, title)) {
    free(front);
    return NULL;
  }
  FILE *fp = d.fp;
  frame(fp, &ax, &ay, xt, y_title);
  if (!m) no_data(fp, &ax, &ay);
  size_t nf = 0;
  for (size_t i = 0; i < n; i++)
    if (pts[i].on_front && isfinite(pts[i].x) && isfinite(pts[i].y)) front[nf++] = &pts[i];
  qsort(front, nf, sizeof *front, cmp_xy);
  if (nf) {
    fprintf(fp, "<path fill=\"none\" stroke=\"#1f4e79\" stroke-width=\"2\" d=\"M%.2f %.2f", amap(&ax, front[0]->x),
            amap(&ay, front[0]->y));
    for (size_t k = 1; k < nf; k++)
      fprintf(fp, "H%.2fV%.2f", amap(&ax, front[k]->x), amap(&ay, front[k]->y));
    fputs("\"/>\n", fp);
  }
  for (size_t i = 0; i < n; i++) {
    const finch_svg_point *p = &pts[i];
    if (!isfinite(p->x) || !isfinite(p->y)) continue;
    double x = amap(&ax, p->x), y = amap(&ay, p->y);
    fprintf(fp, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"5\" fill=\"%s\" stroke=\"#1f4e79\" stroke-width=\"1.5\"/>\n", x, y,
            p->on_front ? "#1f4e79" : "#ffffff");
    int right = x > ax.p0 + 0.7 * (ax.p1 - ax.p0); /* labels of the right side go left */
    text(fp, right ? x - 8 : x + 8, y - 7, 11, right ? "end" : "start", "", p->name ? p->name : "", 28);
  }
  fprintf(fp, "<circle cx=\"666\" cy=\"60\" r=\"5\" fill=\"#1f4e79\" stroke=\"#1f4e79\"/>\n");
  text(fp, 676, 64, 11, "start", "", "on the Pareto front", 0);
  fprintf(fp, "<circle cx=\"666\" cy=\"80\" r=\"5\" fill=\"#ffffff\" stroke=\"#1f4e79\" stroke-width=\"1.5\"/>\n");
  text(fp, 676, 84, 11, "start", "", "dominated", 0);
  free(front);
  return doc_close(&d);
}
