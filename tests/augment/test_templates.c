/* Templates: patterns mined per intent, filled with the intent's own values. */
#include <jansson.h>
#include <string.h>

#include "augment/methods.h"
#include "tests/test.h"

int main(void) {
  const char *texts[] = {
      "I paid £20 at Tesco and was charged twice",
      "why was I charged twice for $15.00 at Amazon",
      "my card got charged twice on Monday",
      "what is the exchange rate from USD to EUR",
      "exchange rate for yen please",
      "no entities in this one at all",
  };
  const char *labels[] = {"charged_twice", "charged_twice", "charged_twice", "exchange_rate", "exchange_rate",
                          "other"};
  const finch_aug_method *m = &finch_aug_templates;
  CHECK(m->prepare != NULL);
  void *st = NULL;
  finch_err err;
  CHECK_INT_EQ(m->open(&st, &err), FINCH_OK);
  CHECK_INT_EQ(m->prepare(st, texts, labels, 6, &err), FINCH_OK);
  char out[512], params[1024], first[512] = "";
  int distinct = 0, made = 0;
  for (uint64_t s = 1; s <= 200; s++) {
    if (!m->apply(st, texts[0], s, out, sizeof out, params, sizeof params)) continue;
    made++;
    /* A charged_twice shape, never an exchange_rate one. */
    CHECK(strstr(out, "charged twice") != NULL);
    CHECK(strstr(out, "exchange") == NULL);
    json_error_t je;
    json_t *j = json_loads(params, 0, &je);
    CHECK(j != NULL);
    const char *t = json_string_value(json_object_get(j, "template"));
    CHECK(t && strchr(t, '{'));
    json_decref(j);
    if (!first[0]) snprintf(first, sizeof first, "%s", out);
    else if (strcmp(first, out) != 0) distinct = 1;
  }
  CHECK(made > 100);
  CHECK(distinct);
  /* Deterministic. */
  char a[512], b[512], pa[1024], pb[1024];
  int ra = m->apply(st, texts[1], 7, a, sizeof a, pa, sizeof pa), rb = m->apply(st, texts[1], 7, b, sizeof b, pb, sizeof pb);
  CHECK_INT_EQ(ra, rb);
  if (ra) CHECK_STR_EQ(a, b);
  /* An intent with no entity mentions has no template; an unknown text is no parent. */
  CHECK_INT_EQ(m->apply(st, texts[5], 1, out, sizeof out, params, sizeof params), 0);
  CHECK_INT_EQ(m->apply(st, "never seen", 1, out, sizeof out, params, sizeof params), 0);
  /* Too small a buffer: 0, nothing written past it. */
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  for (uint64_t s = 1; s < 50; s++) CHECK_INT_EQ(m->apply(st, texts[0], s, tiny, 4, params, sizeof params), 0);
  CHECK(tiny[4] == 'x' && tiny[7] == 'x');
  m->close(st);
  TEST_DONE();
}
