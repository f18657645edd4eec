/* Redaction throughput: ns per utterance for clean text, text with numbers
 * that are not PII (amounts, dates, references), and text with PII, one
 * thread. Reads the rules from FINCH_PII_RULES or core/pii_rules.conf.
 * Usage: bench_redact [iterations per utterance, default 200000] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/redact.h"

static const char *const clean[] = {
    "I was charged twice for the same coffee, can you help me?",
    "Why has my card payment not gone through yet, please advise",
    "How do I change the PIN on my new card before I travel abroad",
    "My top-up seems to have failed and the app shows an error now",
};
static const char *const numbers[] = {
    "I paid £1,250.00 on 12/03/2024 at 10:30 but it shows $100",
    "Card ending in 4242 was declined twice, ref 1234567812345678",
    "Exchange rate on 2024-03-12 was 1.17, I lost 3% on 1 000 EUR",
};
static const char *const pii[] = {
    "My card 4111 1111 1111 1111 was declined, mail me at a.b@example.com",
    "Send it to GB82 WEST 1234 5698 7654 32 or call +44 20 7946 0958",
    "sort code 20-00-00 account 12345678, my SSN is 123-45-6789",
};

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double bench(finch_redactor *r, const char *const *texts, size_t n, long iters, uint64_t *counts) {
  double t0 = now_ns();
  for (long it = 0; it < iters; it++)
    for (size_t i = 0; i < n; i++) {
      char *out;
      finch_err err;
      if (finch_redact(r, texts[i], strlen(texts[i]), &out, counts, &err) != FINCH_OK) {
        fprintf(stderr, "bench_redact: %s\n", err.msg);
        exit(1);
      }
      free(out);
    }
  return (now_ns() - t0) / ((double)iters * (double)n);
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : 200000;
  finch_redactor *r;
  finch_err err;
  if (finch_redactor_open(&r, NULL, 0, &err) != FINCH_OK) {
    fprintf(stderr, "bench_redact: %s\n", err.msg);
    return 1;
  }
  uint64_t *counts = calloc(finch_redactor_n_types(r), sizeof *counts);
  if (!counts) return 1;
  bench(r, clean, 4, iters / 10 + 1, counts); /* warm up */
  double c = bench(r, clean, sizeof clean / sizeof *clean, iters, counts);
  double m = bench(r, numbers, sizeof numbers / sizeof *numbers, iters, counts);
  double p = bench(r, pii, sizeof pii / sizeof *pii, iters, counts);
  printf("redact ns/utterance: clean %.0f, numbers without PII %.0f, with PII %.0f\n", c, m, p);
  printf("=> %.0f clean utterances/s per core\n", 1e9 / c);
  free(counts);
  finch_redactor_free(r);
  return 0;
}
