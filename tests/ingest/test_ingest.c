/* Ingest of banking77-format CSV: normalisation, rejects with file and line,
 * a stratified seeded holdout, idempotency, and clear errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest.h"
#include "tests/dbtest.h"
#include "tests/test.h"

static const char csv[] =
    "text,category\n"
    "My card hasn't arrived yet,card_arrival\n"                     /* 2 */
    "\"Where is my card, it's been a week\",card_arrival\n"         /* 3 */
    "\"Card still not here.\nIt was ordered Monday\",card_arrival\n" /* 4-5: multi-line */
    "when will my card come,card_arrival\n"                         /* 6 */
    "\"unterminated, card_arrival\n"                                /* 7: malformed */
    "what is the exchange rate,exchange_rate\n"                     /* 8 */
    "EXCHANGE RATE for \xEF\xBC\xA5\xEF\xBC\xB5\xEF\xBC\xB2 please,exchange_rate\n" /* 9 */
    "three,fields,here\n"                                           /* 10 */
    "bad \xC3\x28 utf8,exchange_rate\n"                             /* 11 */
    "   ,exchange_rate\n"                                           /* 12: empty text */
    "how much to change dollars,exchange_rate\n"                    /* 13 */
    "My card hasn't arrived yet,card_arrival\n"                     /* 14: repeat of 2 */
    "rate for yen today,exchange_rate\n";                           /* 15 */

int main(void) {
  finch_db *db = test_db_open();
  finch_err err;
  char path[512];
  snprintf(path, sizeof path, "%s/test_ingest.csv", test_tmpdir());
  test_write_file(path, csv, sizeof csv - 1);

  finch_ingest_opts o = {.source = path, .format = "banking77", .dataset = "t", .holdout = 0.25, .seed = 3};
  finch_ingest_result r;
  CHECK_INT_EQ(finch_ingest_run(db, &o, &r, &err), FINCH_OK);
  CHECK_INT_EQ(r.read, 13);
  CHECK_INT_EQ(r.rejected, 4);
  CHECK_INT_EQ(r.inserted, 8);
  CHECK_INT_EQ(r.duplicate, 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances"), 8);
  CHECK_INT_EQ(test_scalar(db, "SELECT rows_rejected FROM ingest_runs"), 4);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM ingest_runs WHERE status = 'done'"), 1);

  /* Rejects are stored with their line and reason. */
  PGresult *res = finch_db_query(db, "SELECT line, field, reason FROM ingest_rejects ORDER BY line", 0, NULL, &err);
  CHECK(res && PQntuples(res) == 4);
  if (res && PQntuples(res) == 4) {
    CHECK_INT_EQ(atoll(PQgetvalue(res, 0, 0)), 7);
    CHECK_CONTAINS(PQgetvalue(res, 0, 2), "unterminated");
    CHECK_INT_EQ(atoll(PQgetvalue(res, 1, 0)), 10);
    CHECK_CONTAINS(PQgetvalue(res, 1, 2), "expected 2 fields, found 3");
    CHECK_INT_EQ(atoll(PQgetvalue(res, 2, 0)), 11);
    CHECK_STR_EQ(PQgetvalue(res, 2, 1), "text");
    CHECK_CONTAINS(PQgetvalue(res, 2, 2), "invalid UTF-8 at byte 4");
    CHECK_INT_EQ(atoll(PQgetvalue(res, 3, 0)), 12);
    CHECK_CONTAINS(PQgetvalue(res, 3, 2), "empty text");
  }
  PQclear(res);

  /* Normalised and case-folded forms; the source line of a multi-line record. */
  res = finch_db_query(db, "SELECT text, text_norm FROM utterances WHERE source_line = 9", 0, NULL, &err);
  CHECK(res && PQntuples(res) == 1);
  if (res && PQntuples(res) == 1) {
    CHECK_STR_EQ(PQgetvalue(res, 0, 0), "EXCHANGE RATE for EUR please");
    CHECK_STR_EQ(PQgetvalue(res, 0, 1), "exchange rate for eur please");
  }
  PQclear(res);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances WHERE source_line = 4"
                               " AND text = 'Card still not here. It was ordered Monday'"), 1);

  /* Stratified holdout: round(0.25 * 4) = 1 dev row per intent. */
  CHECK_INT_EQ(r.dev, 2);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(DISTINCT label) FROM utterances WHERE split = 'dev'"), 2);

  /* Idempotent: the same file again inserts nothing and keeps the splits. */
  PGresult *before = finch_db_query(db, "SELECT string_agg(content_hash || split, ',' ORDER BY content_hash)"
                                        " FROM utterances", 0, NULL, &err);
  finch_ingest_result r2;
  CHECK_INT_EQ(finch_ingest_run(db, &o, &r2, &err), FINCH_OK);
  CHECK_INT_EQ(r2.inserted, 0);
  CHECK_INT_EQ(r2.duplicate, 9);
  PGresult *after = finch_db_query(db, "SELECT string_agg(content_hash || split, ',' ORDER BY content_hash)"
                                       " FROM utterances", 0, NULL, &err);
  CHECK(before && after);
  if (before && after) CHECK_STR_EQ(PQgetvalue(before, 0, 0), PQgetvalue(after, 0, 0));
  PQclear(before);
  PQclear(after);

  /* The split does not depend on row order: a shuffled copy in a new dataset
   * with the same seed puts the same rows in dev. */
  static const char shuffled[] =
      "text,category\n"
      "rate for yen today,exchange_rate\n"
      "when will my card come,card_arrival\n"
      "how much to change dollars,exchange_rate\n"
      "\"Where is my card, it's been a week\",card_arrival\n"
      "what is the exchange rate,exchange_rate\n"
      "My card hasn't arrived yet,card_arrival\n"
      "\"Card still not here.\nIt was ordered Monday\",card_arrival\n"
      "EXCHANGE RATE for \xEF\xBC\xA5\xEF\xBC\xB5\xEF\xBC\xB2 please,exchange_rate\n";
  char path2[512];
  snprintf(path2, sizeof path2, "%s/test_ingest_shuffled.csv", test_tmpdir());
  test_write_file(path2, shuffled, sizeof shuffled - 1);
  finch_ingest_opts o2 = o;
  o2.source = path2;
  o2.dataset = "t2";
  CHECK_INT_EQ(finch_ingest_run(db, &o2, &r2, &err), FINCH_OK);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances a JOIN utterances b USING (content_hash)"
                               " WHERE a.dataset_id < b.dataset_id AND a.split = b.split"), 8);

  /* Errors: missing file, bad header, unknown format. Nothing is stored. */
  long long runs = test_scalar(db, "SELECT count(*) FROM ingest_runs");
  o.source = "/no/such/file.csv";
  CHECK_INT_EQ(finch_ingest_run(db, &o, &r, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "/no/such/file.csv");
  CHECK_CONTAINS(err.msg, "No such file");
  char path3[512];
  snprintf(path3, sizeof path3, "%s/test_ingest_header.csv", test_tmpdir());
  test_write_file(path3, "utterance,intent\nhi,greet\n", 26);
  o.source = path3;
  CHECK_INT_EQ(finch_ingest_run(db, &o, &r, &err), FINCH_EFORMAT);
  CHECK_CONTAINS(err.msg, "test_ingest_header.csv:1: expected the header 'text,category'");
  o.format = "xml";
  CHECK_INT_EQ(finch_ingest_run(db, &o, &r, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "unknown input format 'xml'");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM ingest_runs"), runs);
  finch_db_close(db);
  TEST_DONE();
}
