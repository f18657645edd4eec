/* The HTML report: one self-contained page from the report's body.
 *   - every section of the body is on the page, under its heading; labels
 *     are escaped; the charts are inline SVG;
 *   - nothing refers outside the page: no scripts, no src/href, no url();
 *     the only "http" is each chart's SVG namespace, which is never fetched;
 *   - the same body gives the same bytes; the sign-off lists the approvals
 *     and marks one that names a different body;
 *   - opened in headless Chromium (when installed): no image is broken, the
 *     page makes no request at all, the charts are rendered, and a
 *     screenshot of the whole page is written (a PNG of a stated minimum
 *     size), kept under the build directory for a person to look at. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/paths.h"
#include "evaluate/report_html.h"
#include "evaluate/results.h"
#include "tests/chromium.h"
#include "tests/test.h"

enum { N = 60, C = 4 };
static const char *const LABELS[C] = {"card_arrival", "top_up<failed>", "exchange_rate", "pin & blocked"};

static json_t *make_body(void) {
  int32_t gold[N], pred[N];
  float probs[N * C];
  for (int i = 0; i < N; i++) {
    gold[i] = i % C;
    pred[i] = (i % 7 == 0) ? (i + 1) % C : gold[i];
    float conf = 0.4f + 0.6f * (float)((i * 37) % 100) / 100.0f;
    for (int k = 0; k < C; k++) probs[i * C + k] = k == pred[i] ? conf : (1 - conf) / (C - 1);
  }
  finch_results_in in = {gold, pred, probs, N, C, LABELS, 42, 200, 0};
  json_t *results = NULL;
  finch_err err;
  if (finch_results_json(&in, &results, &err) != FINCH_OK) {
    TEST_FAIL_("finch_results_json: %s", err.msg);
    return NULL;
  }
  return json_pack("{s:s, s:s, s:{s:s, s:s, s:i}, s:{s:s, s:s}, s:{s:s, s:s, s:i, s:s}, s:[{s:s, s:i}], s:o, "
                   "s:{s:f, s:f}, s:{s:f, s:s}, s:{s:f, s:f}, s:[s, s]}",
                   "title", "Evaluation of model 7 <student>", "purpose_and_intended_use",
                   "Intent recognition for financial customer service.", "model", "sha256",
                   "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12", "arch", "bow", "params",
                   2544653, "software", "version", "0.1.0", "commit", "0123456789abcdef", "data", "dataset", "b77",
                   "split", "dev", "n", N, "rows_sha256", "feedfeed", "lineage", "kind", "teacher", "id", 3,
                   "results", results, "latency", "p50_ms", 0.027, "p99_ms", 0.09, "cost", "per_1000_requests_usd",
                   0.0001, "formula", "p50 x price", "baseline", "accuracy", 0.41, "coverage", 0.55, "limitations",
                   "intent pin & blocked: F1 under 0.8", "calibration is fitted on these rows");
}

static size_t count(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

static void test_page(const json_t *body) {
  json_t *appr = json_pack("[{s:s, s:s, s:s, s:s, s:s}, {s:s, s:s, s:s, s:s, s:s}]", "reviewer", "A. Reviewer",
                           "decision", "approve", "comment", "fit for <assisted> labelling", "created_at",
                           "2026-12-08 10:00:00+00", "body_sha256", "aaaa", "reviewer", "B. Second", "decision",
                           "reject", "comment", "older body", "created_at", "2026-12-08 11:00:00+00", "body_sha256",
                           "bbbb");
  json_t *meas = json_pack("{s:f, s:s}", "latency_ms_p50", 0.0271, "command_line", "finch eval --model 7");
  char *html = finch_report_html(body, "aaaa", meas, appr);
  CHECK(html != NULL);
  if (!html) return;
  CHECK(strstr(html, "Measurements of this run</h2>") && strstr(html, "finch eval --model 7"));
  char *again = finch_report_html(body, "aaaa", meas, appr);
  CHECK(again && !strcmp(html, again));
  free(again);
  json_decref(meas);
  static const char *const headings[] = {"Purpose and intended use", "Model identity", "Software", "Data", "Lineage",
                                         "Results", "Latency", "Cost", "Baseline: the legacy rules", "Limitations",
                                         "Sign-off"};
  for (size_t i = 0; i < sizeof headings / sizeof *headings; i++) {
    char h[128];
    snprintf(h, sizeof h, "%s</h2>", headings[i]);
    CHECK(strstr(html, h) != NULL);
  }
  CHECK(count(html, "<svg") >= 3); /* reliability, coverage, confusion */
  CHECK_INT_EQ(count(html, "<svg"), count(html, "</svg>"));
  CHECK(!strstr(html, "<script") && !strstr(html, "src=") && !strstr(html, "href=") && !strstr(html, "url("));
  CHECK_INT_EQ(count(html, "http"), count(html, "xmlns=\"http://www.w3.org/2000/svg\""));
  CHECK(strstr(html, "top_up&lt;failed&gt;") && !strstr(html, "top_up<failed>"));
  CHECK(strstr(html, "Evaluation of model 7 &lt;student&gt;") != NULL);
  CHECK(strstr(html, "fit for &lt;assisted&gt; labelling") != NULL);
  CHECK_INT_EQ(count(html, "(a different body)"), 1);
  free(html);
  /* No approvals: the block says how to give one. */
  html = finch_report_html(body, "aaaa", NULL, NULL);
  CHECK(html && strstr(html, "No decision recorded"));
  free(html);
  json_decref(appr);
}

/* The page in headless Chromium (tests/chromium.h): no broken image, no
 * request at all, the charts rendered, the title as escaped; a screenshot
 * of the whole page kept under the test directory. */
static void test_chromium(const json_t *body) {
  if (!chromium_installed()) {
    printf("SKIP chromium part: %s is not installed (scripts/install-deps.sh installs it)\n", CHROMIUM_BIN);
    return;
  }
  const char *tmp = getenv("FINCH_TEST_TMP");
  char dir[4096], cmd[9000], page[4200], png[4200];
  snprintf(dir, sizeof dir, "%s/report-html", tmp && *tmp ? tmp : "/tmp");
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
  CHECK_INT_EQ(system(cmd), 0);
  snprintf(page, sizeof page, "%s/report.html", dir);
  snprintf(png, sizeof png, "%s/report.png", dir);
  finch_err err;
  CHECK_INT_EQ(finch_report_write_html(page, body, "aaaa", NULL, NULL, &err), FINCH_OK);
  chromium_view v;
  CHECK_INT_EQ(chromium_view_page(page, dir, png, 1200, 6000, &v), 0);
  printf("chromium: images=%d broken=%d rendered charts=%d resources requested=%d; screenshot %s, %u x %u, %ld "
         "bytes\n", v.images, v.broken, v.charts, v.resources, png, v.png_w, v.png_h, v.png_bytes);
  CHECK_INT_EQ(v.broken, 0);
  CHECK_INT_EQ(v.resources, 0);
  CHECK(v.charts >= 3);
  CHECK_STR_EQ(v.title, "Evaluation of model 7 &lt;student&gt;");
  CHECK(v.png_w == 1200 && v.png_h == 6000);
  CHECK(v.png_bytes > 50000); /* a blank page of this size compresses to a few kB */
}

int main(void) {
  json_t *body = make_body();
  CHECK(body != NULL);
  if (body) {
    test_page(body);
    test_chromium(body);
  }
  json_decref(body);
  TEST_DONE();
}
