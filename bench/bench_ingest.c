/* Ingest throughput: finch ingest against plain `psql \copy` of the same rows.
 *
 * Generates N JSONL utterances (default 1,000,000; 10% carry personal data of
 * every type), ingests them with the finch binary into a fresh dataset, and in
 * the same run loads the same rows, already normalised and hashed, into the
 * same table (utterances, another dataset) with `psql \copy`: the bulk-load
 * floor that finch's checks, redaction, hashing and bookkeeping add to.
 * A second peer loads the same rows as two halves over two psql \copy at
 * once, as finch loads over two connections. Prints the rates and ratios. Uses the database finch resolves (embedded cluster
 * under $FINCH_HOME by default), database FINCH_DB_NAME=finch_bench.
 *
 *   bench_ingest [rows]                                                    */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/db.h"
#include "core/hash.h"
#include "core/rng.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* VACUUM and CHECKPOINT, so that each load starts on a table without dead
 * rows and with no checkpoint due. */
static int settle(finch_db *db, finch_err *err) {
  return finch_db_exec(db, "VACUUM utterances", err) || finch_db_exec(db, "CHECKPOINT", err);
}

static const char *verbs[] = {"send", "move", "transfer", "pay", "refund", "top up", "cancel", "check", "block", "change"};
static const char *objects[] = {"my card", "the payment", "my account", "the transfer", "my pin", "the fee",
                                "my balance", "the refund", "my savings", "the direct debit"};
static const char *tails[] = {"today", "please", "asap", "right now", "before friday", "again", "this week",
                              "for the rent", "it failed", "it is pending"};
static const char *pii[] = {"my card is 4111 1111 1111 1111", "iban GB82 WEST 1234 5698 7654 32",
                            "email me at ann.lee@example.org", "call +44 20 7946 0958",
                            "ssn 123-45-6789", "sort code 20-00-00 account 12345678"};

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  setenv("FINCH_DB_NAME", "finch_bench", 0);
  finch_err err;
  if (finch_config_load_env(&err)) return fprintf(stderr, "%s\n", err.msg), 1;
  finch_db *db;
  if (finch_db_open(&db, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
  if (finch_db_exec(db, "DELETE FROM datasets WHERE name IN ('bench', 'bench_peer');"
                        "INSERT INTO datasets (name, format) VALUES ('bench_peer', 'jsonl')", &err) ||
      settle(db, &err))
    return fprintf(stderr, "%s\n", err.msg), 1;
  PGresult *pr = finch_db_query(db, "SELECT id FROM datasets WHERE name = 'bench_peer'", 0, NULL, &err);
  if (!pr) return fprintf(stderr, "%s\n", err.msg), 1;
  char peer_id[32];
  snprintf(peer_id, sizeof peer_id, "%s", PQgetvalue(pr, 0, 0));
  PQclear(pr);
  char dir[] = "/tmp/finch-bench-XXXXXX";
  if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
  char jsonl[256], tsv[256];
  snprintf(jsonl, sizeof jsonl, "%s/utterances.jsonl", dir);
  snprintf(tsv, sizeof tsv, "%s/utterances.tsv", dir);
  FILE *fj = fopen(jsonl, "w"), *ft = fopen(tsv, "w");
  finch_rng rng = {7};
  for (long i = 0; i < n; i++) {
    char text[256];
    int v = (int)finch_rng_below(&rng, 10), o = (int)finch_rng_below(&rng, 10), t = (int)finch_rng_below(&rng, 10);
    if (i % 10 == 0)
      snprintf(text, sizeof text, "I want to %s %s, %s (request %ld)", verbs[v], objects[o], pii[(i / 10) % 6], i);
    else
      snprintf(text, sizeof text, "I want to %s %s %s (request %ld)", verbs[v], objects[o], tails[t], i);
    fprintf(fj, "{\"text\": \"%s\", \"label\": \"intent_%d\"}\n", text, v * 10 + o);
    /* The peer gets the rows as finch stores them: normalised, hashed. */
    char fold[256], hash[FINCH_SHA256_HEX_LEN];
    size_t k = 0;
    for (; text[k]; k++) fold[k] = (char)(text[k] >= 'A' && text[k] <= 'Z' ? text[k] + 32 : text[k]);
    fold[k] = '\0';
    finch_sha256_hex(fold, k, hash);
    fprintf(ft, "%s\t%s\t%s\tintent_%d\ttrain\tsource\t%s\n", peer_id, text, fold, v * 10 + o, hash);
  }
  fclose(fj);
  fclose(ft);

  char url[4096];
  if (finch_db_resolve_url(url, sizeof url, 1, &err)) return fprintf(stderr, "%s\n", err.msg), 1;

  char cmd[8192];
  snprintf(cmd, sizeof cmd, "'%s' ingest --format jsonl --dataset bench --holdout 0 --json '%s' > %s/finch.json",
           FINCH_BIN_PATH, jsonl, dir);
  double t0 = now_s();
  int rc1 = system(cmd);
  double finch_s = now_s() - t0;
  snprintf(cmd, sizeof cmd, "psql -q '%s' -c \"\\copy utterances (dataset_id, text, text_norm, label, split, origin,"
           " content_hash) FROM '%s'\"", url, tsv);
  t0 = now_s();
  int rc2 = system(cmd);
  double psql_s = now_s() - t0;
  if (rc1 || rc2) return fprintf(stderr, "a load failed (finch %d, psql %d)\n", rc1, rc2), 1;
  /* finch loads on two connections; so does this second peer: the same
   * file split in two halves, two psql \copy at once. */
  if (finch_db_exec(db, "DELETE FROM utterances WHERE dataset_id = (SELECT id FROM datasets WHERE name = 'bench_peer')",
                    &err) ||
      settle(db, &err))
    return fprintf(stderr, "%s\n", err.msg), 1;
  snprintf(cmd, sizeof cmd, "cd %s && split -n l/2 utterances.tsv half. && for h in half.aa half.ab; do"
           " psql -q '%s' -c \"\\copy utterances (dataset_id, text, text_norm, label, split, origin, content_hash)"
           " FROM '%s/$h'\" & done; wait", dir, url, dir);
  t0 = now_s();
  int rc3 = system(cmd);
  double psql2_s = now_s() - t0;
  if (rc3) return fprintf(stderr, "the two-stream psql load failed (%d)\n", rc3), 1;
  snprintf(cmd, sizeof cmd, "cat %s/finch.json", dir);
  if (system(cmd) != 0) return 1;
  printf("rows %ld\nfinch ingest: %.2f s, %.0f rows/s (read, normalise, redact, hash, split, COPY, commit)\n", n,
         finch_s, (double)n / finch_s);
  printf("psql \\copy:   %.2f s, %.0f rows/s (the same rows pre-normalised and hashed, into utterances)\n", psql_s,
         (double)n / psql_s);
  printf("psql \\copy x2: %.2f s, %.0f rows/s (the same rows, two halves loaded at once)\n", psql2_s,
         (double)n / psql2_s);
  printf("ratio finch/psql: %.2f; finch/psql x2: %.2f\n", psql_s / finch_s, psql2_s / finch_s);
  finch_db_exec(db, "DELETE FROM datasets WHERE name IN ('bench', 'bench_peer')", &err);
  finch_db_close(db);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : 1;
}
