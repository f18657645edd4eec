/* serve/rollout, serve/labeling and serve/auth without a database: stages,
 * canary buckets, the decision of each stage, the gate's statistics, Cohen's
 * kappa, bearer headers and the token bucket. */
#include <math.h>
#include <stdint.h>

#include "serve/auth.h"
#include "serve/labeling.h"
#include "serve/rollout.h"
#include "tests/test.h"

static void test_stages(void) {
  for (int s = 0; s < FINCH_STAGE_COUNT; s++) CHECK_INT_EQ(finch_stage_parse(finch_stage_name((finch_stage)s)), s);
  CHECK_INT_EQ(finch_stage_parse("beta"), -1);
  CHECK_INT_EQ(finch_stage_parse(NULL), -1);
  CHECK(!finch_stage_needs_gate(FINCH_STAGE_SHADOW));
  CHECK(finch_stage_needs_gate(FINCH_STAGE_CANARY));
  CHECK(finch_stage_needs_gate(FINCH_STAGE_PRIMARY));
  CHECK(finch_stage_needs_gate(FINCH_STAGE_RETIRED));
}

static void test_buckets(void) {
  /* Pinned: SHA-256 of "default\x1f" "conv-1", first 53 bits over 2^53
   * (computed independently with Python's hashlib). */
  CHECK_NEAR(finch_rollout_bucket("default", "conv-1"), 0.013604432990711457, 1e-15);
  CHECK_NEAR(finch_rollout_bucket("bank-a", "c42"), 0.6520354696030926, 1e-15);
  /* Stable across calls, and salted by deployment. */
  CHECK(finch_rollout_bucket("default", "conv-1") == finch_rollout_bucket("default", "conv-1"));
  CHECK(finch_rollout_bucket("other", "conv-1") != finch_rollout_bucket("default", "conv-1"));
  /* Uniform enough: the share under 0.3 of 20000 ids is 0.3 +- 0.015
   * (about 4.6 standard deviations). */
  int under = 0;
  double lo = 1, hi = 0;
  for (int i = 0; i < 20000; i++) {
    char id[32];
    snprintf(id, sizeof id, "conversation-%d", i);
    double b = finch_rollout_bucket("default", id);
    if (b < lo) lo = b;
    if (b > hi) hi = b;
    under += b < 0.3;
  }
  CHECK(lo >= 0.0);
  CHECK(hi < 1.0);
  CHECK_NEAR(under / 20000.0, 0.3, 0.015);
}

static finch_rollout_decision decide(finch_stage stage, const char *rule, const char *model, double conf,
                                     double bucket) {
  finch_rollout_policy p = {.stage = stage, .canary_share = 0.25, .min_confidence = 0.6, .oos_label = "oos"};
  finch_rollout_inputs in = {.rule_intent = rule, .model_intent = model, .model_confidence = conf, .bucket = bucket};
  return finch_rollout_decide(&p, &in);
}

static void test_decisions(void) {
  finch_rollout_decision d;
  /* assist: rules answer, suggestion shown, tasks on disagreement or doubt. */
  d = decide(FINCH_STAGE_ASSIST, "card_arrival", "card_arrival", 0.9, 0.1);
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_RULES);
  CHECK_STR_EQ(d.intent, "card_arrival");
  CHECK_NEAR(d.confidence, 1.0, 0);
  CHECK(d.suggest);
  CHECK_INT_EQ(d.task, FINCH_TASK_NONE);
  d = decide(FINCH_STAGE_ASSIST, "exchange_rate", "card_arrival", 0.9, 0.1);
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_RULES);
  CHECK_STR_EQ(d.intent, "exchange_rate");
  CHECK_INT_EQ(d.task, FINCH_TASK_DISAGREE);
  d = decide(FINCH_STAGE_ASSIST, "card_arrival", "card_arrival", 0.4, 0.1);
  CHECK_INT_EQ(d.task, FINCH_TASK_UNSURE);
  d = decide(FINCH_STAGE_ASSIST, NULL, "card_arrival", 0.9, 0.1);
  CHECK_INT_EQ(d.task, FINCH_TASK_DISAGREE);
  CHECK(d.intent == NULL);
  CHECK_NEAR(d.confidence, 0.0, 0);
  /* shadow: rules answer, no suggestion in the reply, tasks still made. */
  d = decide(FINCH_STAGE_SHADOW, "exchange_rate", "card_arrival", 0.9, 0.1);
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_RULES);
  CHECK(!d.suggest);
  CHECK_INT_EQ(d.task, FINCH_TASK_DISAGREE);
  /* canary: the bucket decides. */
  d = decide(FINCH_STAGE_CANARY, "exchange_rate", "card_arrival", 0.9, 0.2);
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_MODEL);
  CHECK(d.in_canary);
  CHECK_STR_EQ(d.intent, "card_arrival");
  d = decide(FINCH_STAGE_CANARY, "exchange_rate", "card_arrival", 0.9, 0.25);
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_RULES);
  CHECK(!d.in_canary);
  CHECK_INT_EQ(d.task, FINCH_TASK_NONE);
  /* primary: the model, except when unsure or out of scope and a rule fires. */
  d = decide(FINCH_STAGE_PRIMARY, "exchange_rate", "card_arrival", 0.9, 0.9);
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_MODEL);
  CHECK_NEAR(d.confidence, 0.9, 1e-12);
  d = decide(FINCH_STAGE_PRIMARY, "exchange_rate", "card_arrival", 0.5, 0.9);
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_RULES);
  CHECK(d.fallback);
  CHECK_STR_EQ(d.intent, "exchange_rate");
  d = decide(FINCH_STAGE_PRIMARY, "exchange_rate", "oos", 0.99, 0.9);
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_RULES);
  CHECK(d.fallback);
  d = decide(FINCH_STAGE_PRIMARY, NULL, "card_arrival", 0.3, 0.9); /* no rule: the model's answer stands */
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_MODEL);
  CHECK(!d.fallback);
  /* retired: never the rules. */
  d = decide(FINCH_STAGE_RETIRED, "exchange_rate", "card_arrival", 0.3, 0.9);
  CHECK_INT_EQ(d.engine, FINCH_ENGINE_MODEL);
  CHECK_INT_EQ(d.task, FINCH_TASK_NONE);
  /* A conversation keeps its engine: the decision depends on the bucket
   * only, and a larger share keeps everyone already in. */
  for (int i = 0; i < 200; i++) {
    char id[32];
    snprintf(id, sizeof id, "c%d", i);
    double b = finch_rollout_bucket("default", id);
    finch_rollout_decision d1 = decide(FINCH_STAGE_CANARY, "x", "y", 0.9, b);
    finch_rollout_decision d2 = decide(FINCH_STAGE_CANARY, "x", "y", 0.9, finch_rollout_bucket("default", id));
    CHECK_INT_EQ(d1.engine, d2.engine);
    finch_rollout_policy wider = {.stage = FINCH_STAGE_CANARY, .canary_share = 0.5, .min_confidence = 0.6};
    finch_rollout_inputs in = {.rule_intent = "x", .model_intent = "y", .model_confidence = 0.9, .bucket = b};
    if (d1.in_canary) CHECK(finch_rollout_decide(&wider, &in).in_canary);
  }
}

/* A small LCG, so the simulation is the same on every machine. */
static double unif(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*s >> 11) / 9007199254740992.0;
}

static void test_statistics(void) {
  CHECK_NEAR(finch_normal_quantile(0.5), 0.0, 1e-9);
  CHECK_NEAR(finch_normal_quantile(0.95), 1.6448536269514722, 1e-8);
  CHECK_NEAR(finch_normal_quantile(0.975), 1.959963984540054, 1e-8);
  CHECK_NEAR(finch_normal_quantile(0.01), -2.3263478740408408, 1e-8);
  CHECK_NEAR(finch_normal_quantile(0.999), 3.090232306167813, 1e-7);
  CHECK(isnan(finch_normal_quantile(1.0)));
  double lo, hi;
  /* Wilson 95% for 8/10 (Newcombe 1998a, table I): 0.4902 to 0.9433. */
  finch_wilson_interval(8, 10, 1.959963984540054, &lo, &hi);
  CHECK_NEAR(lo, 0.4902, 1e-4);
  CHECK_NEAR(hi, 0.9433, 1e-4);
  finch_wilson_interval(0, 0, 1.96, &lo, &hi);
  CHECK_NEAR(lo, 0, 0);
  CHECK_NEAR(hi, 1, 0);
  /* Paired difference: contains the estimate, antisymmetric in b and c,
   * symmetric around 0 when b = c. */
  double lo2, hi2;
  finch_paired_diff_interval(30, 12, 3, 5, 1.645, &lo, &hi);
  double theta = (12.0 - 3.0) / 50.0;
  CHECK(lo < theta && theta < hi);
  CHECK(lo > 0.0);
  finch_paired_diff_interval(30, 3, 12, 5, 1.645, &lo2, &hi2);
  CHECK_NEAR(lo2, -hi, 1e-12);
  CHECK_NEAR(hi2, -lo, 1e-12);
  finch_paired_diff_interval(30, 6, 6, 8, 1.645, &lo, &hi);
  CHECK_NEAR(lo, -hi, 1e-12);
  CHECK(lo < 0);
  /* Coverage of the one-sided 95% lower bound, simulated: pairs with
   * P(both right) 0.6, P(only model) 0.15, P(only rules) 0.05, P(neither)
   * 0.2, so the true difference is 0.10. The bound must fall under 0.10 in
   * about 95% of 2000 samples of 120 pairs (0.93..0.985 allows for the
   * simulation's own error and the method's known slight conservatism). */
  uint64_t seed = 12345;
  int covered = 0, reps = 2000;
  for (int rep = 0; rep < reps; rep++) {
    long a = 0, b = 0, c = 0, d = 0;
    for (int i = 0; i < 120; i++) {
      double u = unif(&seed);
      if (u < 0.6) a++;
      else if (u < 0.75) b++;
      else if (u < 0.8) c++;
      else d++;
    }
    finch_paired_diff_interval(a, b, c, d, finch_normal_quantile(0.95), &lo, &hi);
    covered += lo <= 0.10;
  }
  CHECK(covered >= (int)(0.93 * reps));
  CHECK(covered <= (int)(0.985 * reps));
}

static void test_gate(void) {
  enum { N = 60 };
  finch_labeled_pair p[N];
  finch_gate_opts o = finch_gate_opts_default();
  finch_gate_result r;
  /* 40 tasks the model gets right and the rules wrong: passes. */
  for (int i = 0; i < 40; i++) p[i] = (finch_labeled_pair){"card_arrival", "card_arrival", "exchange_rate"};
  CHECK_INT_EQ(finch_rollout_gate_eval(p, 40, &o, &r, NULL), FINCH_OK);
  CHECK(r.pass);
  CHECK_INT_EQ(r.n, 40);
  CHECK_INT_EQ(r.model_only, 40);
  CHECK_NEAR(r.model_acc, 1.0, 0);
  CHECK_NEAR(r.rules_acc, 0.0, 0);
  CHECK(r.lower > 0.8);
  CHECK_INT_EQ(r.n_intents, 1);
  json_t *j = finch_gate_result_json(&r);
  CHECK(j && json_is_true(json_object_get(j, "pass")));
  CHECK_INT_EQ(json_integer_value(json_object_get(j, "n")), 40);
  json_decref(j);
  finch_gate_result_free(&r);
  /* Too few tasks. */
  finch_rollout_gate_eval(p, 10, &o, &r, NULL);
  CHECK(!r.pass);
  CHECK_CONTAINS(r.reason, "fewer than the 30");
  finch_gate_result_free(&r);
  /* The window keeps only the newest (first) pairs. */
  o.window = 10;
  finch_rollout_gate_eval(p, 40, &o, &r, NULL);
  CHECK_INT_EQ(r.n, 10);
  finch_gate_result_free(&r);
  o = finch_gate_opts_default();
  /* Equally good: the bound is not above the margin. */
  for (int i = 0; i < 40; i++)
    p[i] = i % 2 ? (finch_labeled_pair){"a", "a", "b"} : (finch_labeled_pair){"a", "b", "a"};
  finch_rollout_gate_eval(p, 40, &o, &r, NULL);
  CHECK(!r.pass);
  CHECK_NEAR(r.diff, 0.0, 1e-12);
  CHECK_CONTAINS(r.reason, "is not above the margin");
  finch_gate_result_free(&r);
  /* Better overall, but one intent under the floor. */
  for (int i = 0; i < 40; i++) p[i] = (finch_labeled_pair){"card_arrival", "card_arrival", NULL};
  for (int i = 40; i < 46; i++) p[i] = (finch_labeled_pair){"request_refund", "exchange_rate", "request_refund"};
  finch_rollout_gate_eval(p, 46, &o, &r, NULL);
  CHECK(r.lower > o.margin);
  CHECK(!r.pass);
  CHECK_CONTAINS(r.reason, "intent request_refund");
  CHECK_INT_EQ(r.n_intents, 2);
  CHECK_STR_EQ(r.intents[1].intent, "request_refund");
  CHECK(r.intents[1].below_floor);
  finch_gate_result_free(&r);
  /* ...unless it has fewer tasks than intent_min_n. */
  o.intent_min_n = 7;
  finch_rollout_gate_eval(p, 46, &o, &r, NULL);
  CHECK(r.pass);
  finch_gate_result_free(&r);
  o.confidence = 1.5;
  CHECK_INT_EQ(finch_rollout_gate_eval(p, 46, &o, &r, NULL), FINCH_EINVAL);
  finch_gate_result_free(&r);
}

static void test_kappa(void) {
  /* 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o 0.7, p_e 0.5,
   * kappa 0.4. */
  const char *a[50], *b[50];
  int k = 0;
  for (int i = 0; i < 20; i++, k++) a[k] = "yes", b[k] = "yes";
  for (int i = 0; i < 5; i++, k++) a[k] = "yes", b[k] = "no";
  for (int i = 0; i < 10; i++, k++) a[k] = "no", b[k] = "yes";
  for (int i = 0; i < 15; i++, k++) a[k] = "no", b[k] = "no";
  double po;
  CHECK_NEAR(finch_cohen_kappa(a, b, 50, &po), 0.4, 1e-12);
  CHECK_NEAR(po, 0.7, 1e-12);
  CHECK_NEAR(finch_cohen_kappa(a, a, 50, NULL), 1.0, 1e-12);
  CHECK(isnan(finch_cohen_kappa(a, b, 0, NULL)));
  const char *same[3] = {"x", "x", "x"};
  CHECK_NEAR(finch_cohen_kappa(same, same, 3, NULL), 1.0, 0);
  /* Many labels (the table grows). */
  const char *names[40], *c[40];
  char buf[40][8];
  for (int i = 0; i < 40; i++) {
    snprintf(buf[i], sizeof buf[i], "l%d", i);
    names[i] = buf[i];
    c[i] = buf[(i + 1) % 40];
  }
  CHECK(finch_cohen_kappa(names, c, 40, &po) < 0.0);
  CHECK_NEAR(po, 0.0, 0);
}

static void test_auth_pure(void) {
  size_t n = 0;
  const char *k = finch_auth_bearer("Bearer fk_abc", &n);
  CHECK(k && n == 6 && strncmp(k, "fk_abc", 6) == 0);
  k = finch_auth_bearer("  bearer   fk_abc  ", &n);
  CHECK(k && n == 6);
  CHECK(finch_auth_bearer("Basic dXNlcjpwYXNz", &n) == NULL);
  CHECK(finch_auth_bearer("Bearer", &n) == NULL);
  CHECK(finch_auth_bearer("Bearer a b", &n) == NULL);
  CHECK(finch_auth_bearer(NULL, &n) == NULL);
  CHECK_INT_EQ(finch_role_parse("labeler"), FINCH_ROLE_LABELER);
  CHECK_INT_EQ(finch_role_parse("root"), -1);
  CHECK(finch_role_allows(FINCH_ROLE_ADMIN, FINCH_ROLE_LABELER));
  CHECK(!finch_role_allows(FINCH_ROLE_INTEGRATION, FINCH_ROLE_LABELER));
  CHECK(finch_role_allows(FINCH_ROLE_LABELER, FINCH_ROLE_LABELER | FINCH_ROLE_INTEGRATION));

  finch_ratelimit *rl = finch_ratelimit_new(2.0, 3.0);
  CHECK(rl != NULL);
  double retry;
  for (int i = 0; i < 3; i++) CHECK(finch_ratelimit_take(rl, 1, 100.0, &retry));
  CHECK(!finch_ratelimit_take(rl, 1, 100.0, &retry));
  CHECK_NEAR(retry, 0.5, 1e-9);
  CHECK(finch_ratelimit_take(rl, 2, 100.0, &retry)); /* another key has its own bucket */
  CHECK(finch_ratelimit_take(rl, 1, 100.5, &retry)); /* refilled one token */
  CHECK(!finch_ratelimit_take(rl, 1, 100.5, &retry));
  CHECK(finch_ratelimit_take(rl, 1, 1000.0, &retry)); /* long idle: back to the burst, no more */
  CHECK(finch_ratelimit_take(rl, 1, 1000.0, &retry));
  CHECK(finch_ratelimit_take(rl, 1, 1000.0, &retry));
  CHECK(!finch_ratelimit_take(rl, 1, 1000.0, &retry));
  for (long long key = 10; key < 100; key++) CHECK(finch_ratelimit_take(rl, key, 1000.0, &retry));
  finch_ratelimit_free(rl);
  CHECK(finch_ratelimit_new(0, 1) == NULL);
}

int main(void) {
  test_stages();
  test_buckets();
  test_decisions();
  test_statistics();
  test_gate();
  test_kappa();
  test_auth_pure();
  TEST_DONE();
}
