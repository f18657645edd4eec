#include "evaluate/report_html.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evaluate/report_html_internal.h"

/* ---- text ----------------------------------------------------------------------- */

/* Writes s with the five XML-special characters escaped. */
void finch_report__esc(FILE *fp, const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
    case '<': fputs("&lt;", fp); break;
    case '>': fputs("&gt;", fp); break;
    case '&': fputs("&amp;", fp); break;
    case '"': fputs("&quot;", fp); break;
    case '\'': fputs("&#39;", fp); break;
    default: fputc(*s, fp);
    }
  }
}

/* A key as a heading or column name: underscores read as spaces. */
static void key_text(FILE *fp, const char *k) {
  char buf[128];
  snprintf(buf, sizeof buf, "%s", k);
  for (char *p = buf; *p; p++)
    if (*p == '_') *p = ' ';
  finch_report__esc(fp, buf);
}

/* A scalar as text: numbers with at most 6 significant digits, null as
 * "n/a" (an undefined figure, never 0). */
void finch_report__scalar(FILE *fp, const json_t *v) {
  if (json_is_string(v)) finch_report__esc(fp, json_string_value(v));
  else if (json_is_integer(v)) fprintf(fp, "%lld", (long long)json_integer_value(v));
  else if (json_is_real(v)) fprintf(fp, "%.6g", json_real_value(v));
  else if (json_is_true(v)) fputs("yes", fp);
  else if (json_is_false(v)) fputs("no", fp);
  else if (json_is_null(v) || !v) fputs("<span class=\"na\">n/a</span>", fp);
}

static int is_scalar(const json_t *v) { return !json_is_object(v) && !json_is_array(v); }

/* 1 when a is a non-empty array of objects whose values are all scalars:
 * such an array reads best as a table. */
static int is_table(const json_t *a) {
  if (!json_is_array(a) || !json_array_size(a)) return 0;
  size_t i;
  const json_t *row;
  json_array_foreach(a, i, row) {
    if (!json_is_object(row)) return 0;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)row, k, v) if (!is_scalar(v)) return 0;
  }
  return 1;
}


/* An array of flat objects as a table; the columns are the first row's keys
 * in order, then any others in order of first appearance. */
void finch_report__table(FILE *fp, const json_t *a) {
  json_t *cols = json_array();
  size_t i;
  const json_t *row;
  json_array_foreach(a, i, row) {
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)row, k, v) {
      size_t j;
      const json_t *c;
      int seen = 0;
      json_array_foreach(cols, j, c) seen |= !strcmp(json_string_value(c), k);
      if (!seen) json_array_append_new(cols, json_string(k));
    }
  }
  fputs("<table class=\"grid\"><thead><tr>", fp);
  size_t j;
  const json_t *c;
  json_array_foreach(cols, j, c) {
    fputs("<th>", fp);
    key_text(fp, json_string_value(c));
    fputs("</th>", fp);
  }
  fputs("</tr></thead><tbody>", fp);
  json_array_foreach(a, i, row) {
    fputs("<tr>", fp);
    json_array_foreach(cols, j, c) {
      const json_t *v = json_object_get(row, json_string_value(c));
      fputs(json_is_number(v) ? "<td class=\"num\">" : "<td>", fp);
      finch_report__scalar(fp, v);
      fputs("</td>", fp);
    }
    fputs("</tr>", fp);
  }
  fputs("</tbody></table>", fp);
  json_decref(cols);
}

/* An object as a two-column table of its keys, in the body's (sorted) order. */
static void object(FILE *fp, const json_t *o, int depth) {
  fputs("<table class=\"kv\"><tbody>", fp);
  const char *k;
  const json_t *v;
  json_object_foreach((json_t *)o, k, v) {
    fputs("<tr><th>", fp);
    key_text(fp, k);
    fputs("</th><td>", fp);
    finch_report__value(fp, v, depth + 1);
    fputs("</td></tr>", fp);
  }
  fputs("</tbody></table>", fp);
}

void finch_report__value(FILE *fp, const json_t *v, int depth) {
  if (is_scalar(v)) {
    finch_report__scalar(fp, v);
  } else if (json_is_object(v)) {
    if (depth > 8) fputs("&hellip;", fp);
    else object(fp, v, depth);
  } else if (is_table(v)) {
    finch_report__table(fp, v);
  } else if (!json_array_size(v)) {
    fputs("<span class=\"na\">none</span>", fp);
  } else {
    size_t i;
    const json_t *e;
    int flat = 1;
    json_array_foreach(v, i, e) flat &= is_scalar(e);
    if (flat) {
      json_array_foreach(v, i, e) {
        if (i) fputs(", ", fp);
        finch_report__scalar(fp, e);
      }
    } else {
      fputs("<ol>", fp);
      json_array_foreach(v, i, e) {
        fputs("<li>", fp);
        finch_report__value(fp, e, depth + 1);
        fputs("</li>", fp);
      }
      fputs("</ol>", fp);
    }
  }
}

/* An SVG string into the page, in a figure with a caption, and freed. */
void finch_report__figure(FILE *fp, char *svg, const char *caption) {
  if (!svg) return;
  fputs("<figure>", fp);
  fputs(svg, fp);
  fputs("<figcaption>", fp);
  finch_report__esc(fp, caption);
  fputs("</figcaption></figure>\n", fp);
  free(svg);
}


/* ---- the page ------------------------------------------------------------------- */

static const char *const STYLE =
    "body{font-family:sans-serif;color:#111;background:#fff;max-width:1100px;margin:2em auto;padding:0 1em;"
    "line-height:1.4}"
    "h1{font-size:1.6em;border-bottom:2px solid #111;padding-bottom:.2em}"
    "h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #999;page-break-after:avoid}"
    "table{border-collapse:collapse;margin:.4em 0;font-size:.9em}"
    "th,td{border:1px solid #bbb;padding:.15em .45em;vertical-align:top;text-align:left}"
    "table.kv>tbody>tr>th{background:#f2f2f2;font-weight:600;white-space:nowrap}"
    "table.grid th{background:#e8e8e8}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".na{color:#777;font-style:italic}"
    ".hash{font-family:monospace;word-break:break-all}"
    "figure{margin:1em 0;page-break-inside:avoid}figcaption{font-size:.85em;color:#333}"
    "svg{max-width:100%;height:auto}"
    ".signoff{border:2px solid #111;padding:.6em 1em;page-break-inside:avoid}"
    ".approve{color:#075e07;font-weight:700}.reject{color:#9b0000;font-weight:700}"
    "@media print{body{margin:0;max-width:none}a{color:#111}}";

/* The sections in reading order, with their headings; any other top-level
 * key of the body follows under its own name. */
static const struct {
  const char *key, *title;
} SECTIONS[] = {
    {"purpose_and_intended_use", "Purpose and intended use"},
    {"model", "Model identity"},
    {"software", "Software"},
    {"data", "Data"},
    {"lineage", "Lineage"},
    {"results", "Results"},
    {"comparison", "Comparison"},
    {"latency", "Latency"},
    {"cost", "Cost"},
    {"baseline", "Baseline: the legacy rules"},
    {"monitoring", "Monitoring: the deployment in service"},
    {"limitations", "Limitations"},
};

static int known_section(const char *k) {
  for (size_t i = 0; i < sizeof SECTIONS / sizeof *SECTIONS; i++)
    if (!strcmp(SECTIONS[i].key, k)) return 1;
  return !strcmp(k, "title") || !strcmp(k, "signoff");
}

static void section(FILE *fp, const char *key, const char *title, const json_t *v) {
  fputs("<section id=\"", fp);
  finch_report__esc(fp, key);
  fputs("\"><h2>", fp);
  finch_report__esc(fp, title);
  fputs("</h2>\n", fp);
  if (!strcmp(key, "results") && json_is_object(v)) finch_report__results_html(fp, v);
  else if (!strcmp(key, "comparison") && json_is_object(v)) finch_report__comparison_html(fp, v);
  else if (!strcmp(key, "monitoring") && json_is_object(v)) finch_report__monitoring_html(fp, v);
  else if (json_is_string(v)) {
    fputs("<p>", fp);
    finch_report__esc(fp, json_string_value(v));
    fputs("</p>", fp);
  } else finch_report__value(fp, v, 0);
  fputs("</section>\n", fp);
}

static void signoff(FILE *fp, const char *sha, const json_t *approvals) {
  fputs("<section id=\"signoff\" class=\"signoff\"><h2>Sign-off</h2>\n<p>Report body SHA-256: <span class=\"hash\">",
        fp);
  finch_report__esc(fp, sha ? sha : "(not stored)");
  fputs("</span></p>\n", fp);
  if (!json_array_size(approvals)) {
    fputs("<p>No decision recorded. A reviewer records one with <code>finch report approve ID --reviewer NAME "
          "--decision approve|reject --comment TEXT</code>; decisions are append-only and name the body hash "
          "above.</p>\n",
          fp);
  } else {
    fputs("<table class=\"grid\"><thead><tr><th>reviewer</th><th>decision</th><th>comment</th><th>time</th>"
          "<th>body SHA-256 approved</th></tr></thead><tbody>",
          fp);
    size_t i;
    const json_t *a;
    json_array_foreach(approvals, i, a) {
      const char *d = json_string_value(json_object_get(a, "decision"));
      const char *bh = json_string_value(json_object_get(a, "body_sha256"));
      fputs("<tr><td>", fp);
      finch_report__scalar(fp, json_object_get(a, "reviewer"));
      fprintf(fp, "</td><td class=\"%s\">", d && !strcmp(d, "approve") ? "approve" : "reject");
      finch_report__scalar(fp, json_object_get(a, "decision"));
      fputs("</td><td>", fp);
      finch_report__scalar(fp, json_object_get(a, "comment"));
      fputs("</td><td>", fp);
      finch_report__scalar(fp, json_object_get(a, "created_at"));
      fputs("</td><td class=\"hash\">", fp);
      finch_report__esc(fp, bh ? bh : "");
      if (bh && sha && strcmp(bh, sha)) fputs(" <strong>(a different body)</strong>", fp);
      fputs("</td></tr>", fp);
    }
    fputs("</tbody></table>\n", fp);
  }
  fputs("<p>Reviewer: ______________________ &nbsp; Decision: approve / reject &nbsp; Date: ____________</p>"
        "</section>\n",
        fp);
}

char *finch_report_html(const json_t *body, const char *body_sha256, const json_t *measurements,
                        const json_t *approvals) {
  char *out = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&out, &len);
  if (!fp) return NULL;
  const json_t *model = json_object_get(body, "model");
  const char *title = json_string_value(json_object_get(body, "title"));
  fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>", fp);
  finch_report__esc(fp, title ? title : "finch evaluation report");
  fprintf(fp, "</title>\n<style>%s</style>\n</head><body>\n<h1>", STYLE);
  finch_report__esc(fp, title ? title : "finch evaluation report");
  fputs("</h1>\n", fp);
  const char *msha = json_string_value(json_object_get(model, "sha256"));
  if (msha) {
    fputs("<p>Model file SHA-256: <span class=\"hash\">", fp);
    finch_report__esc(fp, msha);
    fputs("</span></p>\n", fp);
  }
  for (size_t i = 0; i < sizeof SECTIONS / sizeof *SECTIONS; i++) {
    const json_t *v = json_object_get(body, SECTIONS[i].key);
    if (v) section(fp, SECTIONS[i].key, SECTIONS[i].title, v);
  }
  const char *k;
  const json_t *v;
  json_object_foreach((json_t *)body, k, v) if (!known_section(k)) section(fp, k, k, v);
  if (json_object_size(measurements)) {
    fputs("<section id=\"measurements\"><h2>Measurements of this run</h2>\n<p>Timings and cost differ from run to "
          "run on the same body: they are the first run's, kept beside the body and not part of its hash.</p>\n",
          fp);
    finch_report__pareto_html(fp, json_object_get(measurements, "pareto"));
    finch_report__value(fp, measurements, 0);
    fputs("</section>\n", fp);
  }
  signoff(fp, body_sha256, approvals);
  fputs("</body></html>\n", fp);
  if (fclose(fp) != 0) {
    free(out);
    return NULL;
  }
  return out;
}

finch_status finch_report_write_html(const char *path, const json_t *body, const char *body_sha256,
                                     const json_t *measurements, const json_t *approvals, finch_err *err) {
  char *html = finch_report_html(body, body_sha256, measurements, approvals);
  if (!html) return finch_err_set(err, FINCH_ENOMEM, "out of memory rendering the HTML report");
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *fp = fopen(tmp, "wb");
  finch_status st = FINCH_OK;
  if (!fp) {
    st = finch_err_set(err, FINCH_EIO, "cannot write %s: %s", tmp, strerror(errno));
  } else {
    size_t n = strlen(html);
    int bad = fwrite(html, 1, n, fp) != n;
    bad |= fclose(fp) != 0;
    if (bad || rename(tmp, path) != 0) {
      st = finch_err_set(err, FINCH_EIO, "cannot write %s: %s", path, strerror(errno));
      unlink(tmp);
    }
  }
  free(html);
  return st;
}
