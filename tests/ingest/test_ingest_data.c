/* Ingest on real data (when $FINCH_DATA_DIR has it), personal data that must
 * never be stored, hostile text, a fixed label set and dialogue holdouts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/paths.h"
#include "ingest/ingest.h"
#include "tests/dbtest.h"
#include "tests/test.h"

static finch_ingest_result ingest(finch_db *db, const char *src, const char *format, const char *dataset,
                                  double holdout, finch_status want) {
  finch_ingest_opts o = {.source = src, .format = format, .dataset = dataset, .holdout = holdout, .seed = 42};
  finch_ingest_result r;
  finch_err err;
  finch_status st = finch_ingest_run(db, &o, &r, &err);
  if (st != want) fprintf(stderr, "ingest %s: %s\n", src, st ? err.msg : "ok");
  CHECK_INT_EQ(st, want);
  return r;
}

static long long count(finch_db *db, const char *fmt, const char *arg) {
  char sql[1024];
  snprintf(sql, sizeof sql, fmt, arg);
  return test_scalar(db, sql);
}

static void real_data(finch_db *db) {
  char dir[1024], path[1200];
  finch_data_dir(dir, sizeof dir);
  snprintf(path, sizeof path, "%s/banking77/train.csv", dir);
  if (!finch_file_exists(path)) {
    printf("SKIP part: real data not found at %s\n", dir);
    return;
  }
  finch_ingest_result r = ingest(db, path, "banking77", "banking77", 0.1, FINCH_OK);
  CHECK_INT_EQ(r.read, 10003);
  CHECK_INT_EQ(r.inserted, 9999); /* 4 repeat a row after whitespace normalisation */
  CHECK_INT_EQ(r.rejected, 0);
  CHECK_INT_EQ(count(db, "SELECT count(DISTINCT label) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = '%s'", "banking77"), 77);
  CHECK_INT_EQ(count(db, "SELECT count(DISTINCT label) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = '%s' AND split = 'dev'", "banking77"), 77);

  snprintf(path, sizeof path, "%s/clinc150/train_val.json", dir);
  r = ingest(db, path, "clinc150", "clinc150", 0.1, FINCH_OK);
  CHECK_INT_EQ(r.read, 18200);
  CHECK_INT_EQ(count(db, "SELECT count(DISTINCT label) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = '%s'", "clinc150"), 151);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = '%s' AND label = 'oos'", "clinc150") > 0, 1);
  /* The source's own splits are kept: val is dev, no holdout is carved. */
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = '%s' AND split = 'dev'", "clinc150"), r.dev);
  CHECK(r.dev >= 3000 && r.dev <= 3100);

  snprintf(path, sizeof path, "%s/sgd_banks/dialogues.json", dir);
  r = ingest(db, path, "sgd", "sgd_banks", 0.1, FINCH_OK);
  CHECK_INT_EQ(count(db, "SELECT count(DISTINCT dialogue_id) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = '%s'", "sgd_banks"), 727);
  /* Every turn in order: turn indices 0..n-1 in each dialogue. */
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM (SELECT dialogue_id, max(turn_index) + 1 AS n, count(*) AS c,"
                         " count(DISTINCT turn_index) AS k FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = '%s' GROUP BY dialogue_id) x WHERE n <> c OR k <> c", "sgd_banks"), 0);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = '%s' AND speaker = 'user' AND label IS NULL", "sgd_banks"), 0);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                         " WHERE d.name = '%s' AND speaker = 'system' AND label IS NOT NULL", "sgd_banks"), 0);
  /* The holdout takes whole dialogues. */
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM (SELECT dialogue_id FROM utterances u JOIN datasets d"
                         " ON d.id = u.dataset_id WHERE d.name = '%s' GROUP BY dialogue_id"
                         " HAVING count(DISTINCT split) > 1) x", "sgd_banks"), 0);
  long long dev_dialogues = count(db, "SELECT count(DISTINCT dialogue_id) FROM utterances u JOIN datasets d"
                                      " ON d.id = u.dataset_id WHERE d.name = '%s' AND split = 'dev'", "sgd_banks");
  CHECK_INT_EQ(dev_dialogues, 73); /* round(0.1 * 727) */
}

static const char pii_jsonl[] =
    "{\"text\": \"my card 4111 1111 1111 1111 was charged twice\", \"label\": \"charged_twice\"}\n"
    "{\"text\": \"send it to jane.doe@example.com please\", \"label\": \"contact\"}\n"
    "{\"text\": \"my IBAN is GB82 WEST 1234 5698 7654 32\", \"label\": \"transfer\"}\n"
    "{\"text\": \"call me on +44 20 7946 0958\", \"label\": \"contact\"}\n"
    "{\"text\": \"card ending 1234 declined for \\u00a3250.00 on 12/03/2024\", \"label\": \"declined\"}\n"
    "{\"text\": \"reference 4111 1111 1111 1112 is wrong\", \"label\": \"charged_twice\"}\n"
    "{\"text\": \"'); DROP TABLE utterances; -- \\\\ \\\" ok\", \"label\": \"hostile\"}\n"
    "{\"text\": \"tab\\there and \\\\N and \\\\.\", \"label\": \"hostile\"}\n"
    "{\"text\": \"nul \\u0000 byte\", \"label\": \"hostile\"}\n"
    "{\"text\": \"unknown label row\", \"label\": \"not_in_set\"}\n"
    "{\"text\": \"\\u4f60\\u597d my card has not arrived\", \"label\": \"charged_twice\"}\n";

static void pii_and_hostile(finch_db *db) {
  char path[512], labels[512];
  snprintf(path, sizeof path, "%s/test_ingest_pii.jsonl", test_tmpdir());
  test_write_file(path, pii_jsonl, sizeof pii_jsonl - 1);
  snprintf(labels, sizeof labels, "%s/test_ingest_labels.txt", test_tmpdir());
  static const char set[] = "charged_twice\ncontact\ntransfer\ndeclined\nhostile\n";
  test_write_file(labels, set, sizeof set - 1);
  finch_ingest_opts o = {.source = path, .format = "jsonl", .dataset = "pii", .labels_path = labels, .seed = 1};
  finch_ingest_result r;
  finch_err err;
  CHECK_INT_EQ(finch_ingest_run(db, &o, &r, &err), FINCH_OK);
  CHECK_INT_EQ(r.read, 11);
  /* Rejected: the NUL byte and the unknown label. */
  CHECK_INT_EQ(r.rejected, 2);
  CHECK_INT_EQ(r.inserted, 9);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM ingest_rejects WHERE reason LIKE '%s'", "%not_in_set%"), 1);
  /* Placeholders stored; the raw values nowhere. */
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text = '%s'", "my card <CARD> was charged twice"), 1);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text = '%s'", "send it to <EMAIL> please"), 1);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text = '%s'", "my IBAN is <IBAN>"), 1);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text = '%s'", "call me on <PHONE>"), 1);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text_norm LIKE '%s'", "%<card>%"), 1);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM (SELECT text || coalesce(text_norm, '') AS t FROM utterances"
                         " UNION ALL SELECT reason FROM ingest_rejects) x WHERE t ~ '%s'",
                     "4111 1111 1111 1111|jane\\.doe|GB82|7946"), 0);
  /* Look-alikes that carry intent survive. */
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text = '%s'",
                     "card ending 1234 declined for £250.00 on 12/03/2024"), 1);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text = '%s'", "reference 4111 1111 1111 1112 is wrong"), 1);
  /* Hostile text stored literally. */
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text = %s",
                     "$x$'); DROP TABLE utterances; -- \\ \" ok$x$"), 1);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text = %s", "$x$tab here and \\N and \\.$x$"), 1);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM utterances WHERE text LIKE '%s'", "你好%"), 1);
  /* Redaction counts on the run. */
  CHECK_INT_EQ(count(db, "SELECT (redactions->>'card')::int FROM ingest_runs WHERE id = %s", "(SELECT max(id) FROM ingest_runs)"), 1);
  CHECK_INT_EQ(count(db, "SELECT (redactions->>'iban')::int FROM ingest_runs WHERE id = %s", "(SELECT max(id) FROM ingest_runs)"), 1);

  /* A 1 MB line is rejected as over-long, not truncated; the rest goes in. */
  snprintf(path, sizeof path, "%s/test_ingest_long.jsonl", test_tmpdir());
  FILE *fp = fopen(path, "w");
  fprintf(fp, "{\"text\": \"");
  for (int i = 0; i < (1 << 20); i++) fputc('a' + i % 26, fp);
  fprintf(fp, "\", \"label\": \"long\"}\n{\"text\": \"short one\", \"label\": \"long\"}\n");
  fclose(fp);
  finch_ingest_result r2 = ingest(db, path, "jsonl", "long", 0, FINCH_OK);
  CHECK_INT_EQ(r2.read, 2);
  CHECK_INT_EQ(r2.rejected, 1);
  CHECK_INT_EQ(r2.inserted, 1);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM ingest_rejects WHERE reason LIKE '%s'", "text longer than%"), 1);
}

/* gzip is recognised by its magic, whatever the file is called, and a
 * file:// URL is a source like a path. */
static void gzip_and_urls(finch_db *db) {
  char path[512], url[600];
  snprintf(path, sizeof path, "%s/test_ingest_gz.jsonl", test_tmpdir());
  gzFile gz = gzopen(path, "wb");
  for (int i = 0; i < 300; i++) gzprintf(gz, "{\"text\": \"row %d about my card\", \"label\": \"l%d\"}\n", i, i % 3);
  gzclose(gz);
  finch_ingest_result r = ingest(db, path, "jsonl", "gz", 0.1, FINCH_OK);
  CHECK_INT_EQ(r.read, 300);
  CHECK_INT_EQ(r.inserted, 300);
  CHECK_INT_EQ(r.dev, 30);
  snprintf(url, sizeof url, "file://%s", path);
  r = ingest(db, url, "jsonl", "gz", 0.1, FINCH_OK);
  CHECK_INT_EQ(r.read, 300);
  CHECK_INT_EQ(r.inserted, 0);
  CHECK_INT_EQ(count(db, "SELECT count(*) FROM ingest_runs WHERE source = '%s' AND source_sha256 IS NOT NULL", path), 2);
  r = ingest(db, "ftp://example.invalid/x", "jsonl", "gz", 0, FINCH_EINVAL);
}

int main(void) {
  finch_db *db = test_db_open();
  real_data(db);
  gzip_and_urls(db);
  pii_and_hostile(db);
  finch_db_close(db);
  TEST_DONE();
}
