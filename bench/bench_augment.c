/* Augmentation speed before teacher scoring: variants per second of each
 * method, and of the four taking turns as `finch augment` does, over the
 * BANKING77 training texts (from $FINCH_DATA_DIR or ../shared/data).
 *
 *   bench_augment [variants]                                               */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "augment/methods.h"
#include "core/csv.h"
#include "core/paths.h"
#include "core/text.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  long want = argc > 1 ? atol(argv[1]) : 200000;
  char dir[1024], path[1100];
  finch_data_dir(dir, sizeof dir);
  snprintf(path, sizeof path, "%s/banking77/train.csv", dir);
  FILE *fp = fopen(path, "rb");
  if (!fp) return fprintf(stderr, "%s: not found (set FINCH_DATA_DIR)\n", path), 1;
  finch_csv *csv = finch_csv_open(fp, path);
  char **f, **texts = NULL;
  size_t nf, n = 0, cap = 0;
  finch_err err;
  int rc;
  while ((rc = finch_csv_next(csv, &f, &nf, &err)) != 0) {
    if (rc < 0 || nf != 2 || strcmp(f[0], "text") == 0) continue;
    char *t;
    if (finch_text_normalize(f[0], strlen(f[0]), 0, &t, &err)) continue;
    if (n == cap) texts = realloc(texts, (cap = cap ? 2 * cap : 16384) * sizeof *texts);
    texts[n++] = t;
  }
  finch_csv_close(csv);
  fclose(fp);
  const finch_aug_method *ms[] = {&finch_aug_eda, &finch_aug_synonyms, &finch_aug_entities, &finch_aug_noise};
  void *st[4];
  for (int m = 0; m < 4; m++)
    if (ms[m]->open(&st[m], &err)) return fprintf(stderr, "%s: %s\n", ms[m]->name, err.msg), 1;
  char out[4096], params[1024];
  printf("%zu source texts, %ld attempts for each line below\n", n, want);
  for (int m = 0; m <= 4; m++) {
    long made = 0;
    double t0 = now_s();
    for (long a = 0; a < want; a++) {
      int mi = m < 4 ? m : (int)(a % 4);
      made += ms[mi]->apply(st[mi], texts[a % (long)n], (uint64_t)a * 0x9E3779B97F4A7C15ull, out, sizeof out,
                            params, sizeof params);
    }
    double dt = now_s() - t0;
    printf("%-9s %8ld variants from %ld attempts in %.3f s: %.0f variants/s\n", m < 4 ? ms[m]->name : "all four",
           made, want, dt, (double)made / dt);
  }
  for (int m = 0; m < 4; m++) ms[m]->close(st[m]);
  for (size_t i = 0; i < n; i++) free(texts[i]);
  free(texts);
  return 0;
}
