/* The complexity score: terms in [0,1], ordered as intended, and the
 * monotone alpha map. */
#include "distill/complexity.h"
#include "tests/test.h"

int main(void) {
  const char *fin[] = {
      "card arrived",
      "my card has not arrived",
      "where is my card",
      "why was my card payment declined at the shop yesterday, I have enough money and the card is not blocked",
      "top up failed",
      "can I get a refund because the merchant charged me twice, but I never received the goods",
      "exchange rate",
      "pin blocked",
      "how long does a transfer take",
      "what is the fee for an international transfer and is there a limit",
  };
  const char *gen[] = {"book a table for two tonight", "what is the weather in paris", "play some music",
                       "find me a flight to london on friday", "set an alarm for seven", "how long does it take"};
  /* Corpora of a realistic size for the frequency ratios: each list 20 times. */
  const char *fin20[200], *gen20[120];
  for (int r = 0; r < 20; r++) {
    for (int i = 0; i < 10; i++) fin20[10 * r + i] = fin[i];
    for (int i = 0; i < 6; i++) gen20[6 * r + i] = gen[i];
  }
  finch_err err;
  finch_complexity_model *m = NULL;
  CHECK_INT_EQ(finch_complexity_fit(&m, fin20, 200, gen20, 120, &err), FINCH_OK);
  finch_complexity lo, hi, f;
  finch_complexity_score(m, "card arrived", &lo);
  finch_complexity_score(m, fin[5], &hi);
  CHECK(hi.c > lo.c);
  CHECK(hi.syntactic > lo.syntactic);
  for (int i = 0; i < 10; i++) {
    finch_complexity_score(m, fin[i], &f);
    CHECK(f.lexical >= 0 && f.lexical <= 1 && f.syntactic >= 0 && f.syntactic <= 1 && f.domain >= 0 && f.domain <= 1);
    CHECK_NEAR(f.c, 0.4 * f.lexical + 0.3 * f.syntactic + 0.3 * f.domain, 1e-12);
  }
  /* Finance words score as domain-specific, general ones do not. */
  finch_complexity d1, d2;
  finch_complexity_score(m, "card transfer refund", &d1);
  finch_complexity_score(m, "play music tonight", &d2);
  CHECK(d1.domain > d2.domain);
  finch_complexity_free(m);

  /* Without a general corpus, the domain term is 0. */
  CHECK_INT_EQ(finch_complexity_fit(&m, fin, 10, NULL, 0, &err), FINCH_OK);
  finch_complexity_score(m, "card transfer refund", &d1);
  CHECK_NEAR(d1.domain, 0.0, 0);
  finch_complexity_free(m);

  /* The alpha map: 0.4 up to 0.3, then linear to 0.7 at 1, never decreasing. */
  finch_alpha_map am = FINCH_ALPHA_MAP_DEFAULT;
  CHECK_NEAR(finch_complexity_alpha(0.0, &am), 0.4, 1e-12);
  CHECK_NEAR(finch_complexity_alpha(0.3, &am), 0.4, 1e-12);
  CHECK_NEAR(finch_complexity_alpha(0.65, &am), 0.55, 1e-12);
  CHECK_NEAR(finch_complexity_alpha(1.0, &am), 0.7, 1e-12);
  double prev = 0;
  for (double c = 0; c <= 1.0; c += 0.01) {
    double a = finch_complexity_alpha(c, &am);
    CHECK(a >= prev - 1e-12);
    prev = a;
  }
  TEST_DONE();
}
