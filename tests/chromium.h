/* Opening an HTML page in headless Chromium (Debian's chromium) from a
 * test: the page is framed by a probe page whose script (the page under
 * test has none) counts its images, broken images, charts rendered at a
 * visible size and every resource the page requested, with DNS mapped to
 * nowhere so that a stray reference could not reach the network either;
 * and a screenshot of it. Header-only: each test is one executable. */
#ifndef FINCH_TESTS_CHROMIUM_H
#define FINCH_TESTS_CHROMIUM_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test.h"

#define CHROMIUM_BIN "/usr/bin/chromium"
#define CHROMIUM_FLAGS                                                                                            \
  "--headless=new --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files "                   \
  "--host-resolver-rules='MAP * ~NOTFOUND' --virtual-time-budget=5000"

typedef struct {
  int images, broken, charts, resources;
  char title[256];
  unsigned png_w, png_h;
  long png_bytes;
} chromium_view;

static int chromium_installed(void) { return access(CHROMIUM_BIN, X_OK) == 0; }

/* Opens page (an absolute path) with dir as the browser's home and the
 * probe's place, and writes a screenshot of width x height to png. 0 on
 * success with v filled; -1 when the probe or the screenshot failed. */
static int chromium_view_page(const char *page, const char *dir, const char *png, unsigned width, unsigned height,
                              chromium_view *v) {
  memset(v, 0, sizeof *v);
  char probe[4200], cmd[9000];
  snprintf(probe, sizeof probe, "%s/probe.html", dir);
  FILE *fp = fopen(probe, "w");
  if (!fp) return -1;
  fprintf(fp,
          "<!DOCTYPE html><html><body><iframe id=\"r\" src=\"file://%s\" style=\"width:1200px;height:900px\"></iframe>"
          "<pre id=\"result\">pending</pre><script>window.addEventListener('load',function(){"
          "var f=document.getElementById('r'),d=f.contentDocument,w=f.contentWindow,b=0;"
          "for(var i=0;i<d.images.length;i++)if(!d.images[i].complete||d.images[i].naturalWidth===0)b++;"
          "var n=0;d.querySelectorAll('svg').forEach(function(s){var r=s.getBoundingClientRect();"
          "if(r.width>50&&r.height>50)n++;});"
          "document.getElementById('result').textContent='images='+d.images.length+' broken='+b+' svgs='+n+"
          "' resources='+w.performance.getEntriesByType('resource').length+' title='+d.title;});</script>"
          "</body></html>\n",
          page);
  fclose(fp);
  snprintf(cmd, sizeof cmd, "HOME='%s' timeout 120 %s %s --dump-dom 'file://%s' 2>/dev/null", dir, CHROMIUM_BIN,
           CHROMIUM_FLAGS, probe);
  int status;
  char *dom = test_run(cmd, &status);
  const char *res = dom ? strstr(dom, "id=\"result\">") : NULL;
  int ok = res && sscanf(res, "id=\"result\">images=%d broken=%d svgs=%d resources=%d", &v->images, &v->broken,
                         &v->charts, &v->resources) == 4;
  const char *t = res ? strstr(res, " title=") : NULL;
  if (t) {
    size_t k = strcspn(t + 7, "<");
    snprintf(v->title, sizeof v->title, "%.*s", (int)k, t + 7);
  }
  free(dom);
  if (!ok) return -1;
  snprintf(cmd, sizeof cmd, "HOME='%s' timeout 120 %s %s --window-size=%u,%u --screenshot='%s' 'file://%s' >/dev/null 2>&1",
           dir, CHROMIUM_BIN, CHROMIUM_FLAGS, width, height, png, page);
  if (system(cmd) != 0) return -1;
  FILE *pf = fopen(png, "rb");
  if (!pf) return -1;
  unsigned char h[24];
  int good = fread(h, 1, sizeof h, pf) == sizeof h && !memcmp(h, "\x89PNG\r\n\x1a\n", 8);
  if (good) {
    v->png_w = (unsigned)h[16] << 24 | (unsigned)h[17] << 16 | (unsigned)h[18] << 8 | h[19];
    v->png_h = (unsigned)h[20] << 24 | (unsigned)h[21] << 16 | (unsigned)h[22] << 8 | h[23];
    fseek(pf, 0, SEEK_END);
    v->png_bytes = ftell(pf);
  }
  fclose(pf);
  return good ? 0 : -1;
}

#endif
