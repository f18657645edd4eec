/* ingest/formats on the public data sets in FINCH_DATA_DIR (default:
 * FINCH_SOURCE_DIR/../shared/data), when present: banking77, clinc150 and
 * the SGD dialogues read to the end, their counts and labels checked, and the
 * jsonl reader's two paths compared on real data. The small fixtures are in
 * test_formats.c. */
#include "ingest/formats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/ingest/format_check.h"
#include "tests/test.h"

static char data_dir[4096];

static FILE *open_data(const char *rel, char *path, size_t cap) {
  snprintf(path, cap, "%s/%s", data_dir, rel);
  FILE *fp = fopen(path, "rb");
  if (!fp) printf("skip %s: cannot open %s: %s\n", rel, path, strerror(errno));
  return fp;
}

/* Distinct strings, for counting labels (a few hundred at most). */
typedef struct {
  char **v;
  size_t n, cap;
} strset;

static void strset_add(strset *s, const char *x) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->v[i], x) == 0) return;
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 64;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
    if (!s->v) abort();
  }
  s->v[s->n] = strdup(x);
  if (!s->v[s->n++]) abort();
}

static int strset_has(const strset *s, const char *x) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->v[i], x) == 0) return 1;
  return 0;
}

static void strset_free(strset *s) {
  for (size_t i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void test_real_banking77(void) {
  char path[4200];
  FILE *fp = open_data("banking77/train.csv", path, sizeof path);
  if (!fp) return;
  finch_format_reader *r;
  finch_err err;
  CHECK_INT_EQ(finch_format_open(&r, "banking77", fp, path, NULL, &err), FINCH_OK);
  finch_record rec;
  const char *field;
  long long n = 0, bad = 0;
  strset labels = {0};
  int rc;
  while ((rc = finch_format_next(r, &rec, &field, &err)) != 0) {
    if (rc != 1) {
      if (bad++ < 5) TEST_FAIL_("%s", err.msg);
      continue;
    }
    n++;
    strset_add(&labels, rec.label);
  }
  CHECK_INT_EQ(n, 10003);
  CHECK_INT_EQ(bad, 0);
  CHECK_INT_EQ(labels.n, 77);
  strset_free(&labels);
  finch_format_close(r);
  fclose(fp);
}

static void test_real_clinc150(void) {
  char path[4200], dpath[4200];
  FILE *fp = open_data("clinc150/train_val.json", path, sizeof path);
  if (!fp) return;
  snprintf(dpath, sizeof dpath, "%s/clinc150/domains.json", data_dir);
  for (int with_domains = 0; with_domains < 2; with_domains++) {
    rewind(fp);
    finch_format_opts opts = {.domains_path = with_domains ? dpath : NULL};
    finch_format_reader *r;
    finch_err err;
    CHECK_INT_EQ(finch_format_open(&r, "clinc150", fp, path, &opts, &err), FINCH_OK);
    finch_record rec;
    const char *field;
    long long n = 0, bad = 0, train = 0, dev = 0, oos = 0, banking = 0, no_meta = 0;
    strset labels = {0};
    int rc;
    while ((rc = finch_format_next(r, &rec, &field, &err)) != 0) {
      if (rc != 1) {
        if (bad++ < 5) TEST_FAIL_("%s", err.msg);
        continue;
      }
      CHECK_INT_EQ(rec.line, ++n);
      strset_add(&labels, rec.label);
      train += strcmp(rec.split, "train") == 0;
      dev += strcmp(rec.split, "dev") == 0;
      oos += strcmp(rec.label, "oos") == 0;
      if (!rec.meta_json) no_meta++;
      else if (strcmp(rec.meta_json, "{\"domain\":\"banking\"}") == 0) banking++;
      if (with_domains && strcmp(rec.label, "transfer") == 0) CHECK_STR_EQ(rec.meta_json, "{\"domain\":\"banking\"}");
      if (with_domains && strcmp(rec.label, "oos") == 0) CHECK_STR_EQ(rec.meta_json, "{\"domain\":\"oos\"}");
    }
    CHECK_INT_EQ(n, 18200);
    CHECK_INT_EQ(bad, 0);
    CHECK_INT_EQ(labels.n, 151);
    CHECK(strset_has(&labels, "oos"));
    CHECK_INT_EQ(train, 15100);
    CHECK_INT_EQ(dev, 3100);
    CHECK_INT_EQ(oos, 200);
    /* 15 banking intents of 100 train + 20 val rows each. */
    CHECK_INT_EQ(banking, with_domains ? 15 * 120 : 0);
    CHECK_INT_EQ(no_meta, with_domains ? 0 : 18200);
    strset_free(&labels);
    finch_format_close(r);
  }
  fclose(fp);
}

static void test_real_sgd_banks(void) {
  char path[4200];
  FILE *fp = open_data("sgd_banks/dialogues.json", path, sizeof path);
  if (!fp) return;
  finch_format_reader *r;
  finch_err err;
  CHECK_INT_EQ(finch_format_open(&r, "sgd", fp, path, NULL, &err), FINCH_OK);
  finch_record rec;
  const char *field;
  long long n = 0, bad = 0, dialogues = 0, user = 0, system = 0, banks = 0;
  char prev_id[64] = "";
  int next_turn = 0, rc;
  strset ids = {0}, labels = {0};
  while ((rc = finch_format_next(r, &rec, &field, &err)) != 0) {
    if (rc != 1) {
      if (bad++ < 5) TEST_FAIL_("%s", err.msg);
      continue;
    }
    CHECK_INT_EQ(rec.line, ++n);
    if (strcmp(rec.dialogue_id, prev_id) != 0) {
      /* A new dialogue: never seen before, and it starts at turn 0. */
      CHECK(!strset_has(&ids, rec.dialogue_id));
      strset_add(&ids, rec.dialogue_id);
      snprintf(prev_id, sizeof prev_id, "%s", rec.dialogue_id);
      dialogues++;
      next_turn = 0;
    }
    CHECK_INT_EQ(rec.turn, next_turn);
    next_turn++;
    CHECK(rec.split == NULL);
    CHECK(rec.meta_json != NULL);
    if (strcmp(rec.speaker, "user") == 0) {
      user++;
      CHECK(rec.label != NULL);
      if (rec.label) strset_add(&labels, rec.label);
      if (rec.meta_json && strcmp(rec.meta_json, "{\"service\":\"Banks_1\"}") == 0) banks++;
    } else {
      CHECK_STR_EQ(rec.speaker, "system");
      CHECK(rec.label == NULL);
      system++;
    }
  }
  CHECK_INT_EQ(dialogues, 727);
  CHECK_INT_EQ(n, 13654);
  CHECK_INT_EQ(bad, 0);
  CHECK_INT_EQ(user, 6827);
  CHECK_INT_EQ(system, 6827);
  /* CheckBalance, TransferMoney, NONE and the other services' intents. */
  CHECK(strset_has(&labels, "CheckBalance") && strset_has(&labels, "TransferMoney"));
  CHECK(strset_has(&labels, "NONE"));
  CHECK_INT_EQ(labels.n, 9);
  CHECK(banks > 3000);
  printf("sgd_banks: %lld turns in %lld dialogues, %zu user labels, %lld user turns about Banks_1\n", n,
         dialogues, labels.n, banks);
  strset_free(&ids);
  strset_free(&labels);
  finch_format_close(r);
  fclose(fp);
}

/* The general SGD turns, gzipped: read through zcat, a pipe. */
static void test_real_sgd_general(void) {
  char path[4200], cmd[4300];
  snprintf(path, sizeof path, "%s/sgd_general/turns.jsonl.gz", data_dir);
  if (access(path, R_OK) != 0) {
    printf("skip sgd_general: cannot read %s\n", path);
    return;
  }
  if (system("command -v zcat >/dev/null 2>&1") != 0) {
    printf("skip sgd_general: no zcat\n");
    return;
  }
  snprintf(cmd, sizeof cmd, "zcat '%s'", path);
  FILE *fp = popen(cmd, "r");
  if (!fp) {
    printf("skip sgd_general: cannot run %s\n", cmd);
    return;
  }
  finch_format_reader *r;
  finch_err err;
  CHECK_INT_EQ(finch_format_open(&r, "jsonl", fp, "turns.jsonl", NULL, &err), FINCH_OK);
  finch_record rec;
  const char *field;
  long long n = 0, bad = 0, user = 0, labelled = 0;
  int rc;
  double t0 = now_s();
  while ((rc = finch_format_next(r, &rec, &field, &err)) != 0) {
    if (rc != 1) {
      if (bad++ < 5) TEST_FAIL_("%s", err.msg);
      continue;
    }
    n++;
    if (rec.speaker && strcmp(rec.speaker, "user") == 0) user++;
    if (rec.label) labelled++;
    CHECK(rec.dialogue_id != NULL && rec.turn >= 0);
  }
  double dt = now_s() - t0;
  finch_format_close(r);
  CHECK_INT_EQ(pclose(fp), 0);
  /* Both parsers over every line of the real file. */
  fp = popen(cmd, "r");
  test_strbuf all = {0};
  char chunk[1 << 16];
  size_t got;
  while (fp && (got = fread(chunk, 1, sizeof chunk, fp)) > 0) test_sb_addn(&all, chunk, got);
  if (fp) CHECK_INT_EQ(pclose(fp), 0);
  if (all.s) test_compare_jsonl_paths(all.s, all.len, "turns.jsonl");
  free(all.s);
  CHECK_INT_EQ(n, 210102);
  CHECK_INT_EQ(bad, 0);
  CHECK_INT_EQ(labelled, user);
  printf("sgd_general: %lld turns, %lld user, %.0f rows/s through zcat\n", n, user, dt > 0 ? (double)n / dt : 0);
}

int main(void) {
  const char *env = getenv("FINCH_DATA_DIR");
  snprintf(data_dir, sizeof data_dir, "%s", env && *env ? env : FINCH_SOURCE_DIR "/../shared/data");
  if (access(data_dir, R_OK | X_OK) != 0) {
    printf("skip the public data sets: %s is absent\n", data_dir);
  } else {
    test_real_banking77();
    test_real_clinc150();
    test_real_sgd_banks();
    test_real_sgd_general();
  }
  TEST_DONE();
}
