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

/* Runs cmd and returns its standard output (malloc'd), or NULL. */
static char *capture(const char *cmd) {
  FILE *p = popen(cmd, "r");
  if (!p) return NULL;
  char *out = NULL;
  size_t len = 0, cap = 0;
  char buf[4096];
  size_t r;
  while ((r = fread(buf, 1, sizeof buf, p)) > 0) {
    if (len + r + 1 > cap) {
      cap = (len + r + 1) * 2;
      char *g = realloc(out, cap);
      if (!g) break;
      out = g;
    }
    memcpy(out + len, buf, r);
    len += r;
    out[len] = '\0';
  }
  pclose(p);
  return out;
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

/* The page in headless Chromium, inside a probe page whose script (the
 * report has none) counts images, broken images, rendered charts and every
 * resource the report's frame requested; DNS is mapped to nowhere so that a
 * stray reference could not reach the network either. */
static void test_chromium(const json_t *body) {
  const char *bin = access("/usr/bin/chromium", X_OK) == 0 ? "/usr/bin/chromium" : NULL;
  if (!bin) {
    printf("SKIP chromium part: /usr/bin/chromium is not installed (scripts/install-deps.sh installs it)\n");
    return;
  }
  const char *tmp = getenv("FINCH_TEST_TMP");
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/report-html", tmp && *tmp ? tmp : "/tmp");
  char cmd[9000];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
  CHECK_INT_EQ(system(cmd), 0);
  char page[4200], probe[4200], png[4200];
  snprintf(page, sizeof page, "%s/report.html", dir);
  snprintf(probe, sizeof probe, "%s/probe.html", dir);
  snprintf(png, sizeof png, "%s/report.png", dir);
  finch_err err;
  CHECK_INT_EQ(finch_report_write_html(page, body, "aaaa", NULL, NULL, &err), FINCH_OK);
  FILE *fp = fopen(probe, "w");
  CHECK(fp != NULL);
  if (!fp) return;
  fputs("<!DOCTYPE html><html><body><iframe id=\"r\" src=\"report.html\" style=\"width:1200px;height:900px\"></iframe>"
        "<pre id=\"result\">pending</pre><script>window.addEventListener('load',function(){"
        "var f=document.getElementById('r'),d=f.contentDocument,w=f.contentWindow,b=0;"
        "for(var i=0;i<d.images.length;i++)if(!d.images[i].complete||d.images[i].naturalWidth===0)b++;"
        "var n=0;d.querySelectorAll('svg').forEach(function(s){var r=s.getBoundingClientRect();"
        "if(r.width>50&&r.height>50)n++;});"
        "document.getElementById('result').textContent='images='+d.images.length+' broken='+b+' svgs='+n+"
        "' resources='+w.performance.getEntriesByType('resource').length+' title='+d.title;});</script>"
        "</body></html>\n",
        fp);
  fclose(fp);
  const char *flags = "--headless=new --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files "
                      "--host-resolver-rules='MAP * ~NOTFOUND' --virtual-time-budget=5000";
  snprintf(cmd, sizeof cmd, "HOME='%s' timeout 120 %s %s --dump-dom 'file://%s' 2>/dev/null", dir, bin, flags, probe);
  char *dom = capture(cmd);
  CHECK(dom != NULL);
  const char *res = dom ? strstr(dom, "id=\"result\">") : NULL;
  CHECK(res != NULL);
  if (res) {
    int images = -1, broken = -1, svgs = -1, resources = -1;
    CHECK_INT_EQ(sscanf(res, "id=\"result\">images=%d broken=%d svgs=%d resources=%d", &images, &broken, &svgs,
                        &resources),
                 4);
    printf("chromium: images=%d broken=%d rendered charts=%d resources requested=%d\n", images, broken, svgs,
           resources);
    CHECK_INT_EQ(broken, 0);
    CHECK_INT_EQ(resources, 0);
    CHECK(svgs >= 3);
    CHECK(strstr(res, "title=Evaluation of model 7 &lt;student&gt;") != NULL);
  }
  free(dom);
  snprintf(cmd, sizeof cmd,
           "HOME='%s' timeout 120 %s %s --window-size=1200,6000 --screenshot='%s' 'file://%s' >/dev/null 2>&1", dir,
           bin, flags, png, page);
  CHECK_INT_EQ(system(cmd), 0);
  FILE *pf = fopen(png, "rb");
  CHECK(pf != NULL);
  if (pf) {
    unsigned char h[24];
    CHECK_INT_EQ(fread(h, 1, sizeof h, pf), sizeof h);
    CHECK(!memcmp(h, "\x89PNG\r\n\x1a\n", 8));
    unsigned w = (unsigned)h[16] << 24 | (unsigned)h[17] << 16 | (unsigned)h[18] << 8 | h[19];
    unsigned hh = (unsigned)h[20] << 24 | (unsigned)h[21] << 16 | (unsigned)h[22] << 8 | h[23];
    fseek(pf, 0, SEEK_END);
    long size = ftell(pf);
    fclose(pf);
    printf("chromium: screenshot %s, %u x %u, %ld bytes\n", png, w, hh, size);
    CHECK(w == 1200 && hh == 6000);
    CHECK(size > 50000); /* a blank page of this size compresses to a few kB */
  }
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
