/* The dataset loader on a small ingested dataset with a holdout row, an
 * augmented variant and an unlabelled row: rows in id order, label indices
 * into a strcmp-sorted label set, the augmented flag, split, origin and label
 * filters, a holdout indexed in the training label set, text_norm, counts,
 * general-domain texts, a missing dataset named in the error, and
 * negatives: another dataset's source rows under one label, split and
 * domain filters, a seeded sample, merged with the training rows in id
 * order over the union of the label lists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/dataset.h"
#include "ingest/ingest.h"
#include "tests/dbtest.h"
#include "tests/test.h"

static const char csv[] =
    "text,category\n"
    "My card hasn't arrived yet,card_arrival\n"
    "what is the exchange rate,exchange_rate\n"
    "when will my card come,card_arrival\n"
    "EXCHANGE RATE for EUR please,exchange_rate\n"
    "rate for yen today,exchange_rate\n";

/* The loaded texts joined by '|', to compare with the database's order. */
static void joined(const finch_dataset_split *s, char *buf, size_t n) {
  size_t k = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < s->n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? "|" : "", s->texts[i]);
}

static void query_str(finch_db *db, const char *sql, char *buf, size_t n) {
  finch_err err;
  PGresult *r = finch_db_query(db, sql, 0, NULL, &err);
  if (!r) {
    fprintf(stderr, "%s: %s\n", sql, err.msg);
    exit(1);
  }
  snprintf(buf, n, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
}

int main(void) {
  /* A data directory of our own, with a two-line Wikipedia corpus. */
  char data[512], dir[600], wiki[700];
  snprintf(data, sizeof data, "%s/test_dataset_data", test_tmpdir());
  snprintf(dir, sizeof dir, "%s/clinc150", data);
  mkdir(data, 0755);
  mkdir(dir, 0755);
  snprintf(wiki, sizeof wiki, "%s/wiki_sents.txt", dir);
  test_write_file(wiki, "the river flows\nbirds sing\n", 27);
  setenv("FINCH_DATA_DIR", data, 1);

  finch_db *db = test_db_open();
  finch_err err;
  char path[512];
  snprintf(path, sizeof path, "%s/test_dataset.csv", test_tmpdir());
  test_write_file(path, csv, sizeof csv - 1);
  finch_ingest_opts io = {.source = path, .format = "banking77", .dataset = "t", .seed = 1};
  finch_ingest_result ir;
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  CHECK_INT_EQ(ir.inserted, 5);
  test_exec(db, "UPDATE utterances SET split = 'dev' WHERE text = 'rate for yen today'");
  test_exec(db, "INSERT INTO utterances (dataset_id, text, text_norm, label, split, content_hash)"
              " SELECT id, 'what is my balance', 'what is my balance', 'balance', 'dev', 'h-dev' FROM datasets");
  test_exec(db, "INSERT INTO utterances (dataset_id, text, text_norm, label, origin, parent_id, method, content_hash)"
              " SELECT dataset_id, 'my card has not arrived yet', 'my card has not arrived yet', label, 'augmented',"
              " id, 'eda', 'h-aug' FROM utterances WHERE text = 'My card hasn''t arrived yet'");
  test_exec(db, "INSERT INTO utterances (dataset_id, text, text_norm, content_hash)"
              " SELECT id, 'hello there', 'hello there', 'h-none' FROM datasets");

  /* Training rows: labelled, every origin, in id order. */
  finch_dataset_split *train = NULL;
  finch_dataset_query q = {.dataset = "t", .split = "train"};
  CHECK_INT_EQ(finch_dataset_split_load(db, &q, &train, &err), FINCH_OK);
  CHECK_INT_EQ(train->n, 5);
  CHECK_INT_EQ(train->n_labels, 2);
  CHECK_STR_EQ(train->label_names[0], "card_arrival");
  CHECK_STR_EQ(train->label_names[1], "exchange_rate");
  char got[1024], want[1024];
  joined(train, got, sizeof got);
  query_str(db, "SELECT string_agg(text, '|' ORDER BY id) FROM utterances WHERE split = 'train' AND label IS NOT NULL",
            want, sizeof want);
  CHECK_STR_EQ(got, want);
  int n_aug = 0;
  for (size_t i = 0; i < train->n; i++) {
    if (i) CHECK(train->ids[i] > train->ids[i - 1]);
    const char *t = train->texts[i];
    CHECK_INT_EQ(train->labels[i], strstr(t, "card") ? 0 : 1);
    CHECK_INT_EQ(train->augmented[i], strcmp(t, "my card has not arrived yet") == 0);
    n_aug += train->augmented[i];
  }
  CHECK_INT_EQ(n_aug, 1);
  CHECK_INT_EQ(train->ids[train->n - 1], test_scalar(db, "SELECT max(id) FROM utterances WHERE label IS NOT NULL"
                                                         " AND split = 'train'"));

  /* Unlabelled rows on request: label -1, the label set unchanged. */
  finch_dataset_split *all = NULL;
  q.unlabelled = 1;
  CHECK_INT_EQ(finch_dataset_split_load(db, &q, &all, &err), FINCH_OK);
  CHECK_INT_EQ(all->n, 6);
  CHECK_INT_EQ(all->n_labels, 2);
  CHECK_STR_EQ(all->texts[5], "hello there");
  CHECK_INT_EQ(all->labels[5], -1);
  finch_dataset_split_free(all);
  q.unlabelled = 0;

  /* Origin filters. */
  finch_dataset_split *src = NULL, *aug = NULL;
  q.origin = FINCH_DATASET_SOURCE;
  CHECK_INT_EQ(finch_dataset_split_load(db, &q, &src, &err), FINCH_OK);
  CHECK_INT_EQ(src->n, 4);
  q.origin = FINCH_DATASET_AUGMENTED;
  CHECK_INT_EQ(finch_dataset_split_load(db, &q, &aug, &err), FINCH_OK);
  CHECK_INT_EQ(aug->n, 1);
  CHECK_INT_EQ(aug->augmented[0], 1);
  CHECK_INT_EQ(aug->n_labels, 1);
  CHECK_STR_EQ(aug->label_names[aug->labels[0]], "card_arrival");
  finch_dataset_split_free(src);
  finch_dataset_split_free(aug);
  q.origin = FINCH_DATASET_ANY_ORIGIN;

  /* The holdout in the training label set: a label never trained on is -1. */
  finch_dataset_split *dev = NULL;
  finch_dataset_query qd = {.dataset = "t", .split = "dev", .label_set = train};
  CHECK_INT_EQ(finch_dataset_split_load(db, &qd, &dev, &err), FINCH_OK);
  finch_dataset_split_free(train); /* the holdout owns its copy of the label set */
  CHECK_INT_EQ(dev->n, 2);
  CHECK_INT_EQ(dev->n_labels, 2);
  CHECK_STR_EQ(dev->label_names[1], "exchange_rate");
  CHECK_STR_EQ(dev->texts[0], "rate for yen today");
  CHECK_INT_EQ(dev->labels[0], 1);
  CHECK_STR_EQ(dev->texts[1], "what is my balance");
  CHECK_INT_EQ(dev->labels[1], -1);
  finch_dataset_split_free(dev);

  /* The holdout with its own label set, as evaluation reads it. */
  qd.label_set = NULL;
  CHECK_INT_EQ(finch_dataset_split_load(db, &qd, &dev, &err), FINCH_OK);
  CHECK_INT_EQ(dev->n_labels, 2);
  CHECK_STR_EQ(dev->label_names[0], "balance");
  CHECK_STR_EQ(dev->label_names[1], "exchange_rate");
  CHECK_INT_EQ(dev->labels[0], 1);
  CHECK_INT_EQ(dev->labels[1], 0);
  finch_dataset_split_free(dev);

  /* Every split; text_norm. */
  finch_dataset_split *every = NULL;
  finch_dataset_query qa = {.dataset = "t", .text_norm = 1};
  CHECK_INT_EQ(finch_dataset_split_load(db, &qa, &every, &err), FINCH_OK);
  CHECK_INT_EQ(every->n, 7);
  CHECK_INT_EQ(every->n_labels, 3);
  int folded = 0;
  for (size_t i = 0; i < every->n; i++) folded += strcmp(every->texts[i], "exchange rate for eur please") == 0;
  CHECK_INT_EQ(folded, 1);
  finch_dataset_split_free(every);

  /* An empty split of an existing dataset is no error; a missing dataset is, by name. */
  finch_dataset_split *none = NULL;
  finch_dataset_query qt = {.dataset = "t", .split = "test"};
  CHECK_INT_EQ(finch_dataset_split_load(db, &qt, &none, &err), FINCH_OK);
  CHECK_INT_EQ(none->n, 0);
  CHECK_INT_EQ(none->n_labels, 0);
  finch_dataset_split_free(none);
  none = NULL;
  finch_dataset_query qm = {.dataset = "nosuch", .split = "train"};
  CHECK_INT_EQ(finch_dataset_split_load(db, &qm, &none, &err), FINCH_ENOTFOUND);
  CHECK(none == NULL);
  CHECK_CONTAINS(err.msg, "dataset 'nosuch' does not exist");

  /* Counts per label (unlabelled rows as a NULL group) and per method. */
  finch_dataset_query qc = {.dataset = "t", .unlabelled = 1};
  PGresult *c = finch_dataset_counts(db, &qc, 0, &err);
  CHECK(c != NULL);
  CHECK_INT_EQ(PQntuples(c), 4);
  CHECK_STR_EQ(PQgetvalue(c, 0, 0), "balance");
  CHECK_STR_EQ(PQgetvalue(c, 1, 0), "card_arrival");
  CHECK_INT_EQ(atoll(PQgetvalue(c, 1, 1)), 3);
  CHECK(PQgetisnull(c, 3, 0));
  PQclear(c);
  qc.origin = FINCH_DATASET_AUGMENTED;
  c = finch_dataset_counts(db, &qc, 1, &err);
  CHECK(c != NULL);
  CHECK_INT_EQ(PQntuples(c), 1);
  CHECK_STR_EQ(PQgetvalue(c, 0, 1), "eda");
  CHECK_INT_EQ(atoll(PQgetvalue(c, 0, 2)), 1);
  PQclear(c);

  /* General texts: every row of the named datasets; the Wikipedia lines,
   * newline kept, after them or in their place. */
  finch_dataset_texts *g = NULL;
  CHECK_INT_EQ(finch_dataset_general_texts(db, "t", 0, &g, &err), FINCH_OK);
  CHECK_INT_EQ(g->n, 8);
  finch_dataset_texts_free(g);
  CHECK_INT_EQ(finch_dataset_general_texts(db, "t,other", 1, &g, &err), FINCH_OK);
  CHECK_INT_EQ(g->n, 10);
  CHECK_STR_EQ(g->texts[8], "the river flows\n");
  CHECK_STR_EQ(g->texts[9], "birds sing\n");
  finch_dataset_texts_free(g);
  CHECK_INT_EQ(finch_dataset_general_texts(db, NULL, 0, &g, &err), FINCH_OK);
  CHECK_INT_EQ(g->n, 2);
  CHECK_STR_EQ(g->texts[0], "the river flows\n");
  finch_dataset_texts_free(g);

  /* Negatives from a second dataset "g": four source rows (two of a
   * finance domain, one dev), one augmented. */
  test_exec(db, "INSERT INTO datasets (name, format) VALUES ('g', 'clinc150')");
  test_exec(db, "INSERT INTO utterances (dataset_id, text, text_norm, label, split, meta, content_hash)"
              " SELECT d.id, v.t, v.t, v.l, v.s, v.m::jsonb, 'g-' || v.t FROM datasets d,"
              " (VALUES ('play some jazz', 'play_music', 'train', '{\"domain\": \"music\"}'),"
              "         ('book a table', 'book', 'train', NULL),"
              "         ('freeze my account', 'freeze', 'train', '{\"domain\": \"banking\"}'),"
              "         ('is it raining', 'weather', 'dev', '{\"domain\": \"weather\"}')) v(t, l, s, m)"
              " WHERE d.name = 'g'");
  test_exec(db, "INSERT INTO utterances (dataset_id, text, text_norm, label, origin, parent_id, method, content_hash)"
              " SELECT dataset_id, 'book a table please', 'book a table please', label, 'augmented', id, 'eda',"
              " 'g-aug' FROM utterances WHERE text = 'book a table'");
  finch_dataset_split *neg = NULL, *merged = NULL;
  finch_negatives_query nq = {.names = "g", .split = "train", .negatives_exclude = "banking,credit_cards", .seed = 5};
  CHECK_INT_EQ(finch_dataset_negatives_load(db, &nq, &neg, &err), FINCH_OK);
  CHECK_INT_EQ(neg->n, 2); /* not the banking row, not the dev row, not the augmented one */
  CHECK_INT_EQ(neg->n_labels, 1);
  CHECK_STR_EQ(neg->label_names[0], "oos");
  CHECK(neg->ids[0] < neg->ids[1]);
  CHECK(neg->labels[0] == 0 && neg->labels[1] == 0);
  finch_dataset_split_free(neg);
  nq.negatives_exclude = "banking,book"; /* a domain and an intent */
  CHECK_INT_EQ(finch_dataset_negatives_load(db, &nq, &neg, &err), FINCH_OK);
  CHECK_INT_EQ(neg->n, 1);
  CHECK_STR_EQ(neg->texts[0], "play some jazz");
  finch_dataset_split_free(neg);
  nq.split = NULL;
  nq.negatives_exclude = NULL;
  nq.label = "none_of_these";
  CHECK_INT_EQ(finch_dataset_negatives_load(db, &nq, &neg, &err), FINCH_OK);
  CHECK_INT_EQ(neg->n, 4);
  CHECK_STR_EQ(neg->label_names[0], "none_of_these");
  finch_dataset_split_free(neg);
  /* A seeded sample: the same two rows for the same seed. */
  nq.max = 2;
  char first[256], again[256];
  CHECK_INT_EQ(finch_dataset_negatives_load(db, &nq, &neg, &err), FINCH_OK);
  CHECK_INT_EQ(neg->n, 2);
  joined(neg, first, sizeof first);
  finch_dataset_split_free(neg);
  CHECK_INT_EQ(finch_dataset_negatives_load(db, &nq, &neg, &err), FINCH_OK);
  joined(neg, again, sizeof again);
  CHECK_STR_EQ(first, again);
  finch_dataset_split_free(neg);
  nq.names = "g,nosuch";
  CHECK_INT_EQ(finch_dataset_negatives_load(db, &nq, &neg, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "dataset 'nosuch' does not exist");
  CHECK(neg == NULL);
  /* Merged with t's training rows: id order, labels remapped into the union. */
  nq = (finch_negatives_query){.names = "g", .split = "train", .seed = 5};
  CHECK_INT_EQ(finch_dataset_negatives_load(db, &nq, &neg, &err), FINCH_OK);
  CHECK_INT_EQ(finch_dataset_split_load(db, &q, &train, &err), FINCH_OK);
  CHECK_INT_EQ(finch_dataset_split_merge(train, neg, &merged, &err), FINCH_OK);
  CHECK_INT_EQ(merged->n, train->n + neg->n);
  CHECK_INT_EQ(merged->n_labels, 3);
  CHECK_STR_EQ(merged->label_names[2], "oos");
  for (size_t i = 1; i < merged->n; i++) CHECK(merged->ids[i - 1] < merged->ids[i]);
  size_t n_oos = 0, n_card = 0;
  for (size_t i = 0; i < merged->n; i++) {
    n_oos += merged->labels[i] == 2;
    n_card += merged->labels[i] == 0 && strstr(merged->texts[i], "card") != NULL;
  }
  CHECK_INT_EQ(n_oos, neg->n);
  CHECK_INT_EQ(n_card, 3);
  CHECK_STR_EQ(merged->texts[merged->n - 1], "freeze my account");
  finch_dataset_split_free(merged);
  finch_dataset_split_free(neg);
  finch_dataset_split_free(train);

  finch_db_close(db);
  return test_failures_ ? 1 : 0;
}
