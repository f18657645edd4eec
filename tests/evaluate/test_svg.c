/* evaluate/svg.c: every chart is one balanced XML element tree with a
 * <title> and a viewBox, refers to nothing outside itself, escapes the
 * caller's text, is the same bytes on a second call, and survives the edge
 * cases (no points, all NaN, one point, a 151 x 151 heat map). */
#include <stdint.h>

#include "evaluate/svg.h"
#include "tests/test.h"

#define XMLNS "xmlns=\"http://www.w3.org/2000/svg\""

/* Checks that s is one element tree: every <name ...> closed by </name> in
 * order or self-closed, attribute values quoted without '<', every '&' an
 * entity, nothing but white space outside the root. Returns NULL or why not. */
static const char *xml_check(const char *s) {
  static char why[160];
  const char *stack[4096];
  size_t len[4096];
  int depth = 0, roots = 0;
  for (const char *p = s; *p;) {
    if (*p == '&') {
      const char *e = strchr(p, ';');
      static const char *const ent[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&#39;"};
      int ok = 0;
      for (size_t k = 0; k < 5; k++) ok |= e && (size_t)(e - p + 1) == strlen(ent[k]) && !strncmp(p, ent[k], strlen(ent[k]));
      if (!ok) return snprintf(why, sizeof why, "bad entity at %.20s", p), why;
      p = e + 1;
      continue;
    }
    if (*p == '>') return snprintf(why, sizeof why, "stray '>' at offset %zu", (size_t)(p - s)), why;
    if (*p != '<') {
      if (!depth && !strchr(" \n\t", *p)) return "text outside the root";
      p++;
      continue;
    }
    int closing = p[1] == '/';
    const char *name = p + 1 + closing, *q = name;
    while (*q && !strchr(" \n\t/>", *q)) q++;
    size_t n = (size_t)(q - name);
    if (!n) return snprintf(why, sizeof why, "empty tag name at offset %zu", (size_t)(p - s)), why;
    /* The attributes: quoted values, no '<' inside. */
    while (*q && *q != '>') {
      if (*q == '"') {
        const char *e = strchr(q + 1, '"');
        if (!e) return "unterminated attribute";
        if (memchr(q, '<', (size_t)(e - q))) return "'<' in an attribute value";
        q = e;
      } else if (*q == '<') {
        return snprintf(why, sizeof why, "'<' inside tag %.*s", (int)n, name), why;
      }
      q++;
    }
    if (!*q) return "unterminated tag";
    int self = q[-1] == '/';
    if (closing) {
      if (!depth || len[depth - 1] != n || strncmp(stack[depth - 1], name, n))
        return snprintf(why, sizeof why, "</%.*s> closes %.*s", (int)n, name, depth ? (int)len[depth - 1] : 0,
                        depth ? stack[depth - 1] : ""),
               why;
      depth--;
    } else if (!self) {
      if (!depth) roots++;
      if (depth == 4096) return "too deep";
      stack[depth] = name, len[depth] = n, depth++;
    }
    p = q + 1;
  }
  if (depth) return snprintf(why, sizeof why, "<%.*s> never closed", (int)len[depth - 1], stack[depth - 1]), why;
  if (roots != 1) return "not one root element";
  return NULL;
}

static size_t count(const char *s, const char *needle) {
  size_t n = 0;
  for (const char *p = s; (p = strstr(p, needle)); p++) n++;
  return n;
}

/* The checks every chart passes; frees a and b (two calls' outputs). */
static void check_svg(const char *what, char *a, char *b) {
  if (!a || !b) {
    TEST_FAIL_("%s: NULL output", what);
    free(a), free(b);
    return;
  }
  const char *why = xml_check(a);
  if (why) TEST_FAIL_("%s: not well formed: %s", what, why);
  if (strcmp(a, b)) TEST_FAIL_("%s: two calls differ", what);
  if (strncmp(a, "<svg " XMLNS, strlen("<svg " XMLNS))) TEST_FAIL_("%s: does not open with <svg xmlns", what);
  /* The namespace name is the one URI, and is never fetched. */
  if (count(a, "http") != 1) TEST_FAIL_("%s: %zu http strings", what, count(a, "http"));
  if (strstr(a, "<script") || strstr(a, "href") || strstr(a, "url(") || strstr(a, "@import") || strstr(a, "<image") ||
      strstr(a, "<foreignObject"))
    TEST_FAIL_("%s: an external reference or script", what);
  if (strstr(a, " onload") || strstr(a, " onclick") || strstr(a, " id=")) TEST_FAIL_("%s: a handler or an id", what);
  if (!strstr(a, "viewBox=\"0 0 ")) TEST_FAIL_("%s: no viewBox", what);
  if (!strstr(a, "\">\n<title>")) TEST_FAIL_("%s: <title> is not the first child", what);
  if (!strstr(a, "fill=\"#ffffff\"")) TEST_FAIL_("%s: no white background", what);
  if (strstr(a, "nan") || strstr(a, "inf")) TEST_FAIL_("%s: a non-finite number printed", what);
  free(a), free(b);
}

static const char *NASTY = "a<b & \"c\" 'd' >e";
static const char *NASTY_ESC = "a&lt;b &amp; &quot;c&quot; &#39;d&#39; &gt;e";

static void test_heatmap(void) {
  const char *labels[3] = {NASTY, "plain", "a very long label that goes on and on past the cut"};
  double v[9] = {5, 1, 0, 0, 7, 2, NAN, 0, 3};
#define HM() finch_svg_heatmap(NASTY, labels, labels, v, 3, 3, "predicted", "gold")
  char *s = HM();
  if (s) {
    CHECK_CONTAINS(s, NASTY_ESC);
    CHECK(!strstr(s, NASTY));
    CHECK_CONTAINS(s, ">5</text>"); /* values printed in small grids */
    CHECK_CONTAINS(s, "\xE2\x80\xA6"); /* the long label cut with an ellipsis */
    CHECK_CONTAINS(s, "<title>a very long label that goes on and on past the cut</title>");
    CHECK_CONTAINS(s, "#bdbdbd"); /* the NaN cell */
    CHECK_CONTAINS(s, "#08306b"); /* the largest value, darkest */
  }
  check_svg("heatmap", s, HM());
  check_svg("heatmap NULL labels", finch_svg_heatmap("t", NULL, NULL, v, 3, 3, NULL, NULL),
            finch_svg_heatmap("t", NULL, NULL, v, 3, 3, NULL, NULL));
  check_svg("heatmap empty", finch_svg_heatmap(NULL, NULL, NULL, NULL, 0, 0, NULL, NULL),
            finch_svg_heatmap(NULL, NULL, NULL, NULL, 0, 0, NULL, NULL));
  double one = 4;
  check_svg("heatmap 1x1", finch_svg_heatmap("t", labels, labels, &one, 1, 1, "x", "y"),
            finch_svg_heatmap("t", labels, labels, &one, 1, 1, "x", "y"));
  double nans[4] = {NAN, NAN, NAN, NAN};
  check_svg("heatmap all NaN", finch_svg_heatmap("t", NULL, NULL, nans, 2, 2, "x", "y"),
            finch_svg_heatmap("t", NULL, NULL, nans, 2, 2, "x", "y"));

  /* CLINC150's 151 labels: a diagonal-heavy confusion matrix, UTF-8 labels. */
  enum { L = 151 };
  double *m = calloc(L * L, sizeof *m);
  char **names = malloc(L * sizeof *names);
  for (size_t i = 0; i < L; i++) {
    names[i] = malloc(64);
    snprintf(names[i], 64, "intent_%03zu_caf\xC3\xA9_with_a_long_suffix", i);
    m[i * L + i] = 30 + (double)(i % 7);
    m[i * L + (i * 37 + 11) % L] += (double)(i % 5);
  }
  char *a = finch_svg_heatmap("CLINC150", (const char *const *)names, (const char *const *)names, m, L, L, "predicted",
                              "gold");
  if (a) {
    CHECK(strlen(a) < 2000000);
    CHECK_CONTAINS(a, "intent_150");
    CHECK(!strstr(a, "\xC3\xE2")); /* no character split by the cut */
  }
  check_svg("heatmap 151x151", a,
            finch_svg_heatmap("CLINC150", (const char *const *)names, (const char *const *)names, m, L, L,
                              "predicted", "gold"));
  for (size_t i = 0; i < L; i++) free(names[i]);
  free(names), free(m);
}

static void test_lines(void) {
  double x[6] = {1, 2, 3, 4, 5, 6}, y1[6] = {0.9, 0.7, NAN, 0.5, 0.45, 0.4}, y2[6] = {1.2, 0.8, 0.6, 0.6, 0.55, 0.5};
  double nx[3] = {NAN, NAN, NAN};
  finch_svg_series s[3] = {{"train loss", x, y1, 6}, {NASTY, x, y2, 6}, {"empty", x, nx, 3}};
  char *a = finch_svg_lines(NASTY, "epoch", "loss", s, 3);
  if (a) {
    CHECK_CONTAINS(a, NASTY_ESC);
    CHECK_INT_EQ(count(a, "<path fill=\"none\""), 3); /* the gap splits the first line in two */
    CHECK_CONTAINS(a, "stroke-dasharray"); /* the second series is dashed */
    CHECK_CONTAINS(a, ">epoch</text>");
  }
  check_svg("lines", a, finch_svg_lines(NASTY, "epoch", "loss", s, 3));
  check_svg("lines none", finch_svg_lines("t", "x", "y", NULL, 0), finch_svg_lines("t", "x", "y", NULL, 0));
  finch_svg_series nan_only = {"n", nx, nx, 3};
  char *b = finch_svg_lines("t", "x", "y", &nan_only, 1);
  if (b) CHECK_CONTAINS(b, "no data");
  check_svg("lines all NaN", b, finch_svg_lines("t", "x", "y", &nan_only, 1));
  double px = 3, py = 0.5;
  finch_svg_series single = {"one", &px, &py, 1};
  char *c = finch_svg_lines("t", "x", "y", &single, 1);
  if (c) CHECK_CONTAINS(c, "<circle"); /* a lone point still shows */
  check_svg("lines one point", c, finch_svg_lines("t", "x", "y", &single, 1));
  /* Many series: the styles cycle. */
  finch_svg_series many[8];
  for (int k = 0; k < 8; k++) many[k] = (finch_svg_series){"s", x, y2, 6};
  check_svg("lines 8 series", finch_svg_lines("t", "x", "y", many, 8), finch_svg_lines("t", "x", "y", many, 8));
}

static void test_reliability(void) {
  finch_calib_bin before[15], after[15];
  int total = 0;
  for (int b = 0; b < 15; b++) {
    before[b] = (finch_calib_bin){b / 15.0, (b + 1) / 15.0, b % 4 ? b : 0, (b + 0.5) / 15, (b + 0.5) / 15 * 0.8};
    after[b] = (finch_calib_bin){b / 15.0, (b + 1) / 15.0, b % 4 ? b : 0, (b + 0.5) / 15, (b + 0.5) / 15 * 0.97};
    total += b % 4 ? b : 0;
  }
  char *a = finch_svg_reliability(NASTY, before, after, 15);
  if (a) {
    CHECK_CONTAINS(a, NASTY_ESC);
    CHECK_CONTAINS(a, "before temperature scaling (ECE ");
    CHECK_CONTAINS(a, "after temperature scaling (ECE ");
    char rows[64];
    snprintf(rows, sizeof rows, ", %d rows)", total);
    CHECK_CONTAINS(a, rows);
    CHECK_CONTAINS(a, "stroke-dasharray=\"5 4\""); /* the diagonal */
  }
  check_svg("reliability", a, finch_svg_reliability(NASTY, before, after, 15));
  check_svg("reliability one panel", finch_svg_reliability("t", before, NULL, 15),
            finch_svg_reliability("t", before, NULL, 15));
  finch_calib_bin empty[15];
  for (int b = 0; b < 15; b++) empty[b] = (finch_calib_bin){b / 15.0, (b + 1) / 15.0, 0, 0, 0};
  check_svg("reliability empty bins", finch_svg_reliability("t", empty, empty, 15),
            finch_svg_reliability("t", empty, empty, 15));
  check_svg("reliability no bins", finch_svg_reliability("t", NULL, NULL, 0), finch_svg_reliability("t", NULL, NULL, 0));
}

static void test_front(void) {
  finch_svg_point p[5] = {{"teacher (bert+slr)", 12.5, 0.938, 1},
                          {"student", 0.05, 0.917, 1},
                          {NASTY, 0.4, 0.90, 0},
                          {"rules", 0.01, 0.41, 1},
                          {"broken", NAN, 0.5, 1}};
  char *a = finch_svg_scatter_front(NASTY, "latency p50 (ms)", "accuracy", p, 5);
  if (a) {
    CHECK_CONTAINS(a, NASTY_ESC);
    CHECK_CONTAINS(a, "latency p50 (ms) (log scale)"); /* 0.01 .. 12.5 spans three decades */
    CHECK_CONTAINS(a, "<path fill=\"none\""); /* the step line */
    CHECK_INT_EQ(count(a, "<circle"), 4 + 2);    /* four points, two in the key */
    CHECK(!strstr(a, "broken"));
  }
  check_svg("front", a, finch_svg_scatter_front(NASTY, "latency p50 (ms)", "accuracy", p, 5));
  /* Linear when the range is narrow. */
  finch_svg_point q[2] = {{"a", 1, 0.5, 1}, {"b", 2, 0.7, 1}};
  char *b = finch_svg_scatter_front("t", "x", "y", q, 2);
  if (b) CHECK(!strstr(b, "log scale"));
  check_svg("front linear", b, finch_svg_scatter_front("t", "x", "y", q, 2));
  check_svg("front none", finch_svg_scatter_front("t", "x", "y", NULL, 0),
            finch_svg_scatter_front("t", "x", "y", NULL, 0));
  check_svg("front one", finch_svg_scatter_front("t", "x", "y", q, 1), finch_svg_scatter_front("t", "x", "y", q, 1));
  finch_svg_point nan2[2] = {{"x", NAN, NAN, 1}, {"y", NAN, 1, 0}};
  check_svg("front all NaN", finch_svg_scatter_front("t", "x", "y", nan2, 2),
            finch_svg_scatter_front("t", "x", "y", nan2, 2));
}

/* The checker itself rejects what it should. */
static void test_checker(void) {
  CHECK(xml_check("<svg><g></g></svg>") == NULL);
  CHECK(xml_check("<svg><g></svg>") != NULL);
  CHECK(xml_check("<svg><g/></svg><svg></svg>") != NULL);
  CHECK(xml_check("<svg>a & b</svg>") != NULL);
  CHECK(xml_check("<svg a=\"<\"></svg>") != NULL);
  CHECK(xml_check("<svg>a > b</svg>") != NULL);
  CHECK(xml_check("<svg>&lt;&amp;</svg>") == NULL);
}

int main(void) {
  test_checker();
  test_heatmap();
  test_lines();
  test_reliability();
  test_front();
  TEST_DONE();
}
