/* Monitoring (serve/monitor.h): turns recorded through finch_turn_record
 * (which stores their latency), labels given through finch_labeling_submit
 * and /v1/intent minutes written by the recorder, over two hours and three
 * models; every figure of serve_monitor_json is checked against values
 * recomputed here from what the serve functions returned, the latency
 * percentiles against the sorted latencies within the histogram's bound;
 * then the front on its own, the period bounds, an empty and an unknown
 * deployment, the recorder's writes, malformed options, `finch monitor`
 * itself, and a real server that stores a turn's latency and writes its
 * /v1/intent answers when it stops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <curl/curl.h>

#include "core/clock.h"
#include "serve/auth.h"
#include "serve/labeling.h"
#include "serve/serve.h"
#include "serve/monitor.h"
#include "serve/turns.h"
#include "tests/dbtest.h"
#include "tests/serve/api_fixture.h"
#include "tests/serve/fixture.h"

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SHA_C "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
static const char *const shas[3] = {SHA_A, SHA_B, SHA_C};

/* 2024-03-01T10:00:00Z and the hour after. */
enum { T0 = 1709287200, HOUR = 3600, NM = 3, NB = 2 };
static const char *const bucket_names[NB] = {"2024-03-01T10:00:00Z", "2024-03-01T11:00:00Z"};

/* One user turn: its hour, model, the model's answer, the rules', its
 * latency, and the label a human gives if a task comes of it (NULL: accept). */
typedef struct {
  int bucket, model;
  const char *model_intent;
  double conf;
  int oos;
  const char *rule;
  double latency;
  const char *label;
} turn_spec;

/* Hour 0 in assist (the rules answer; disagreements and unsure turns make
 * tasks), hour 1 in primary (the model answers unless unsure or out of scope
 * with a rule to fall back on). */
static const turn_spec turns[] = {
    {0, 0, "card", 0.9, 0, "card", 2.1, NULL},       {0, 0, "card", 0.9, 0, "refund", 3.3, NULL},
    {0, 0, "refund", 0.4, 0, "refund", 4.7, NULL}, {0, 1, "rate", 0.8, 0, "card", 1.2, "card"},
    {0, 1, "rate", 0.2, 0, NULL, 0.9, NULL},         {0, 1, "oos", 0.7, 1, NULL, 1.5, NULL},
    {1, 0, "card", 0.95, 0, "card", 5.5, NULL},      {1, 0, "rate", 0.3, 0, "refund", 6.1, NULL},
    {1, 1, "oos", 0.6, 1, NULL, 0.7, NULL},          {1, 1, "card", 0.99, 0, NULL, 1.1, NULL},
    {1, 2, "card", 0.9, 0, "card", 9.0, NULL},       {1, 2, "refund", 0.85, 0, NULL, 12.5, NULL},
};
enum { NT = sizeof turns / sizeof turns[0] };

/* /v1/intent answers: hour, model, out of scope, latency. */
typedef struct {
  int bucket, model, oos;
  double latency;
} intent_spec;
static const intent_spec intents[] = {
    {0, 0, 0, 2.5}, {0, 0, 1, 3.9}, {0, 1, 0, 0.8}, {1, 1, 0, 0.6}, {1, 1, 0, 0.75}, {1, 0, 0, 4.4}, {1, 2, 1, 15.0},
};
enum { NI = sizeof intents / sizeof intents[0] };

/* What the test expects, per bucket (0, 1), total (2), and per model. */
typedef struct {
  long long requests, turns, intents, oos, handoffs, em, er, labelled, correct, model_correct;
  double lat[64];
  int nlat;
} expect;
static expect eb[NB + 1], em_[NM];

static void add_lat(expect *e, double v) { e->lat[e->nlat++] = v; }

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The nearest-rank percentile of e's latencies, NaN when none. */
static double want_pct(expect *e, int pct) {
  if (!e->nlat) return NAN;
  double v[64];
  memcpy(v, e->lat, (size_t)e->nlat * sizeof *v);
  qsort(v, (size_t)e->nlat, sizeof *v, cmp_double);
  int rank = (pct * e->nlat + 99) / 100;
  return v[rank - 1];
}

static void check_ratio(json_t *v, long long num, long long den, const char *what) {
  if (!den) {
    if (!json_is_null(v)) TEST_FAIL_("%s: want null", what);
    return;
  }
  if (!json_is_number(v)) {
    TEST_FAIL_("%s: not a number", what);
    return;
  }
  CHECK_NEAR(json_number_value(v), (double)num / (double)den, 1e-12);
}

/* A reported percentile is the upper edge of the bin of the true one: at
 * least it, less than 2^(1/8) times it (float storage aside). */
static void check_pct(json_t *v, double want, const char *what) {
  if (isnan(want)) {
    if (!json_is_null(v)) TEST_FAIL_("%s: want null", what);
    return;
  }
  double got = json_number_value(v);
  if (!(got >= want * (1 - 1e-6) && got < want * exp2(1.0 / 8) * (1 + 1e-6)))
    TEST_FAIL_("%s: %g is not within the bin of %g", what, got, want);
  CHECK_NEAR(got, serve_monitor_bin_ms(serve_monitor_bin(want)), 1e-9);
}

static void check_figures(json_t *o, expect *e, const char *what) {
  char w[128];
  CHECK_INT_EQ(json_integer_value(json_object_get(o, "requests")), e->requests);
  CHECK_INT_EQ(json_integer_value(json_object_get(o, "turns")), e->turns);
  CHECK_INT_EQ(json_integer_value(json_object_get(o, "intents")), e->intents);
  CHECK_INT_EQ(json_integer_value(json_object_get(o, "out_of_scope")), e->oos);
  CHECK_INT_EQ(json_integer_value(json_object_get(o, "handoffs")), e->handoffs);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(o, "engine"), "model")), e->em);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(o, "engine"), "rules")), e->er);
  CHECK_INT_EQ(json_integer_value(json_object_get(o, "labelled")), e->labelled);
  CHECK_INT_EQ(json_integer_value(json_object_get(o, "labelled_correct")), e->correct);
  snprintf(w, sizeof w, "%s out_of_scope_rate", what);
  check_ratio(json_object_get(o, "out_of_scope_rate"), e->oos, e->requests, w);
  snprintf(w, sizeof w, "%s handoff_rate", what);
  check_ratio(json_object_get(o, "handoff_rate"), e->handoffs, e->turns, w);
  snprintf(w, sizeof w, "%s model_share", what);
  check_ratio(json_object_get(o, "model_share"), e->em, e->em + e->er, w);
  snprintf(w, sizeof w, "%s accuracy", what);
  check_ratio(json_object_get(o, "accuracy"), e->correct, e->labelled, w);
  snprintf(w, sizeof w, "%s model_accuracy", what);
  check_ratio(json_object_get(o, "model_accuracy"), e->model_correct, e->labelled, w);
  json_t *lat = json_object_get(o, "latency_ms");
  CHECK_INT_EQ(json_integer_value(json_object_get(lat, "n")), e->nlat);
  snprintf(w, sizeof w, "%s p50", what);
  check_pct(json_object_get(lat, "p50"), want_pct(e, 50), w);
  snprintf(w, sizeof w, "%s p99", what);
  check_pct(json_object_get(lat, "p99"), want_pct(e, 99), w);
}

static void set_stage(finch_db *db, const char *dep, const char *stage) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "INSERT INTO rollout_state (deployment, stage, changed_by) VALUES ('%s', '%s', 'test')", dep, stage);
  test_exec(db, sql);
}

/* Records the turns and labels, the minutes, and fills the expectations. */
static void fill(finch_db *db, const char *conninfo) {
  PGconn *c = finch_db_conn(db);
  finch_err err;
  test_exec(db, "INSERT INTO models (kind, stage, arch, dtype, path, sha256, params, bytes) VALUES"
                " ('teacher', 'general', 'tfm', 'f32', 'a.model', '" SHA_A "', 1000, 4000),"
                " ('student', 'general', 'bow', 'int8', 'b.model', '" SHA_B "', 100, 100)");
  finch_turn_policy pol = {.canary_share = 0, .min_confidence = 0.5, .handoff_below = 0.35, .oos_label = "oos"};
  set_stage(db, "mon", "assist");
  for (int i = 0; i < NT; i++) {
    const turn_spec *t = &turns[i];
    if (i > 0 && t->bucket != turns[i - 1].bucket) set_stage(db, "mon", "primary");
    char conv[32];
    snprintf(conv, sizeof conv, "c%d", i);
    /* Started 5 ms ago: the stored latency covers at least that. */
    finch_turn_in in = {.deployment = "mon", .conversation = conv, .speaker = "user", .text = "some text",
                        .model_intent = t->model_intent, .model_conf = t->conf, .model_out_of_scope = t->oos,
                        .rule_intent = t->rule, .model_sha = shas[t->model],
                        .t0_ns = finch_clock_ns() - 5000000u};
    finch_turn_out o;
    if (finch_turn_record(c, &pol, &in, &o, &err)) {
      TEST_FAIL_("turn %d: %s", i, err.msg);
      exit(1);
    }
    CHECK(test_sqlf(db, "SELECT (latency_ms >= 5)::int FROM conversation_turns WHERE id = %lld", o.turn_id) == 1);
    test_sqlf(db,
              "WITH u AS (UPDATE conversation_turns SET latency_ms = %.4f,"
              " created_at = to_timestamp(%d) WHERE id = %lld RETURNING 1) SELECT count(*) FROM u",
              t->latency, T0 + t->bucket * HOUR + 60 * i, o.turn_id);
    expect *g[3] = {&eb[t->bucket], &eb[NB], &em_[t->model]};
    for (int k = 0; k < 3; k++) {
      g[k]->requests++;
      g[k]->turns++;
      g[k]->oos += o.d.out_of_scope;
      g[k]->handoffs += o.handoff;
      g[k]->em += o.d.engine == FINCH_ENGINE_MODEL;
      g[k]->er += o.d.engine == FINCH_ENGINE_RULES;
      add_lat(g[k], t->latency);
    }
    /* Hour 1's turns of model B and C get a task by hand: the model answered them. */
    long long task = o.task_id;
    if (!task && t->bucket == 1 && t->model >= 1 && !t->oos) {
      test_sqlf(db,
                "WITH i AS (INSERT INTO labeling_tasks (deployment, conversation_id, turn_id, text, suggested_label,"
                " suggested_confidence, model_sha256, rule_label, stage, reason) VALUES ('mon', '%s', %lld, 'x',"
                " '%s', 0.9, '%s', %s, 'primary', 'unsure') RETURNING id) SELECT id FROM i",
                conv, o.turn_id, t->model_intent, shas[t->model], t->rule ? "'card'" : "NULL");
      task = test_sqlf(db, "SELECT max(id) FROM labeling_tasks");
    }
    if (!task) continue;
    /* Model C's second turn is labelled wrong for the model; the rest as the spec says. */
    const char *label = t->model == 2 && t->conf < 0.9 ? "card" : t->label;
    json_t *res = NULL;
    finch_labeling_outcome oc;
    if (finch_labeling_submit(c, "mon", task, "ann", label ? "correct" : "accept", label, &oc, &res, &err)) {
      TEST_FAIL_("label %lld: %s", task, err.msg);
      exit(1);
    }
    json_decref(res);
    const char *final = label ? label : t->model_intent;
    int model_right = strcmp(t->model_intent, final) == 0;
    int served_right = o.d.engine == FINCH_ENGINE_RULES ? t->rule && strcmp(t->rule, final) == 0 : model_right;
    for (int k = 0; k < 3; k++) {
      g[k]->labelled++;
      g[k]->correct += served_right;
      g[k]->model_correct += model_right;
    }
  }
  /* An agent turn is not a request; without t0 it has no latency. */
  finch_turn_in agent = {.deployment = "mon", .conversation = "c0", .speaker = "agent", .text = "hello"};
  finch_turn_out ao;
  CHECK(finch_turn_record(c, &pol, &agent, &ao, &err) == FINCH_OK);
  CHECK(test_sqlf(db, "SELECT count(*) FROM conversation_turns WHERE id = %lld AND latency_ms IS NULL", ao.turn_id) == 1);

  serve_minutes *m = NULL, *other = NULL;
  if (serve_minutes_open(&m, conninfo, "mon", 0, &err) || serve_minutes_open(&other, conninfo, "other", 0, &err)) {
    TEST_FAIL_("recorder: %s", err.msg);
    exit(1);
  }
  for (int i = 0; i < NI; i++) {
    const intent_spec *s = &intents[i];
    serve_minutes_add(m, shas[s->model], s->oos, s->latency, T0 + s->bucket * HOUR + 30 * i);
    expect *g[3] = {&eb[s->bucket], &eb[NB], &em_[s->model]};
    for (int k = 0; k < 3; k++) {
      g[k]->requests++;
      g[k]->intents++;
      g[k]->oos += s->oos;
      g[k]->em++;
      add_lat(g[k], s->latency);
    }
  }
  serve_minutes_add(other, SHA_A, 0, 1.0, T0);
  /* Outside the period checked below: the day before. */
  serve_minutes_add(m, SHA_A, 0, 1.0, T0 - 86400);
  serve_minutes_close(m);
  serve_minutes_close(other);
  /* Same minute and model: one row (intents 0 and 1 share minute T0). */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM serve_minutes WHERE deployment = 'mon'"), 7);
  CHECK_INT_EQ(test_scalar(db, "SELECT sum(requests) FROM serve_minutes WHERE deployment = 'mon'"), NI + 1);
}

static json_t *run_monitor(finch_db *db, const char *dep, time_t since, time_t until, serve_monitor_bucket b,
                           finch_status want) {
  serve_monitor_opts o = {.deployment = dep, .since = since, .until = until, .bucket = b};
  json_t *out = NULL;
  finch_err err = {0};
  finch_status st = serve_monitor_json(db, &o, &out, &err);
  if (st != want) TEST_FAIL_("monitor %s: status %d, want %d (%s)", dep, (int)st, (int)want, err.msg);
  if (st == FINCH_ENOTFOUND) CHECK_CONTAINS(err.msg, dep);
  return out;
}

static void test_figures(finch_db *db) {
  json_t *r = run_monitor(db, "mon", T0, T0 + 2 * HOUR, SERVE_MONITOR_HOUR, FINCH_OK);
  if (!r) return;
  CHECK_STR_EQ(json_string_value(json_object_get(r, "since")), "2024-03-01T10:00:00Z");
  CHECK_STR_EQ(json_string_value(json_object_get(r, "bucket")), "hour");
  json_t *b = json_object_get(r, "buckets");
  CHECK_INT_EQ((long long)json_array_size(b), NB);
  for (int i = 0; i < NB && i < (int)json_array_size(b); i++) {
    json_t *bi = json_array_get(b, (size_t)i);
    CHECK_STR_EQ(json_string_value(json_object_get(bi, "start")), bucket_names[i]);
    check_figures(bi, &eb[i], bucket_names[i]);
  }
  check_figures(json_object_get(r, "total"), &eb[NB], "total");
  /* Both hours' kinds of answer happened: the test would be weak otherwise. */
  CHECK(eb[0].er > 0 && eb[1].em > 0 && eb[0].labelled > 0 && eb[1].labelled > 0 && eb[NB].handoffs > 0);

  json_t *models = json_object_get(r, "models");
  CHECK_INT_EQ((long long)json_array_size(models), NM);
  double acc[NM], lat[NM];
  int on[NM];
  for (int k = 0; k < NM; k++) {
    acc[k] = em_[k].labelled ? (double)em_[k].model_correct / (double)em_[k].labelled : NAN;
    lat[k] = serve_monitor_bin_ms(serve_monitor_bin(want_pct(&em_[k], 50)));
  }
  /* Non-dominated, computed here: A is the most accurate, B the fastest, C
   * neither (slower than A and no more accurate). */
  for (int i = 0; i < NM; i++) {
    on[i] = 1;
    for (int j = 0; j < NM; j++)
      if (j != i && acc[j] >= acc[i] && lat[j] <= lat[i] && (acc[j] > acc[i] || lat[j] < lat[i])) on[i] = 0;
  }
  CHECK(on[0] && on[1] && !on[2]);
  for (int k = 0; k < NM && k < (int)json_array_size(models); k++) {
    json_t *mk = json_array_get(models, (size_t)k);
    CHECK_STR_EQ(json_string_value(json_object_get(mk, "model_sha256")), shas[k]);
    CHECK_INT_EQ(json_integer_value(json_object_get(mk, "requests")), em_[k].requests);
    CHECK_INT_EQ(json_integer_value(json_object_get(mk, "labelled")), em_[k].labelled);
    CHECK_INT_EQ(json_integer_value(json_object_get(mk, "labelled_correct")), em_[k].model_correct);
    check_ratio(json_object_get(mk, "accuracy"), em_[k].model_correct, em_[k].labelled, shas[k]);
    json_t *l = json_object_get(mk, "latency_ms");
    CHECK_INT_EQ(json_integer_value(json_object_get(l, "n")), em_[k].nlat);
    check_pct(json_object_get(l, "p50"), want_pct(&em_[k], 50), "model p50");
    check_pct(json_object_get(l, "p99"), want_pct(&em_[k], 99), "model p99");
    CHECK_INT_EQ(json_is_true(json_object_get(mk, "on_front")), on[k]);
  }
  json_t *m0 = json_array_get(models, 0), *m2 = json_array_get(models, 2);
  CHECK_STR_EQ(json_string_value(json_object_get(m0, "arch")), "tfm");
  CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(models, 1), "dtype")), "int8");
  CHECK(json_is_integer(json_object_get(m0, "model_id")));
  CHECK(json_is_null(json_object_get(m2, "model_id")) && json_is_null(json_object_get(m2, "arch")));
  /* The front by latency: B (fastest) first. */
  json_t *front = json_object_get(r, "front");
  CHECK_INT_EQ((long long)json_array_size(front), 2);
  CHECK_STR_EQ(json_string_value(json_array_get(front, 0)), SHA_B);
  CHECK_STR_EQ(json_string_value(json_array_get(front, 1)), SHA_A);

  /* By day: one bucket, equal to the total; key order is fixed. */
  json_t *d = run_monitor(db, "mon", T0, T0 + 2 * HOUR, SERVE_MONITOR_DAY, FINCH_OK);
  CHECK_INT_EQ((long long)json_array_size(json_object_get(d, "buckets")), 1);
  check_figures(json_array_get(json_object_get(d, "buckets"), 0), &eb[NB], "day");
  CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(json_object_get(d, "buckets"), 0), "start")),
               "2024-03-01T00:00:00Z");
  char *s1 = json_dumps(r, JSON_COMPACT), *s2 = NULL;
  json_t *again = run_monitor(db, "mon", T0, T0 + 2 * HOUR, SERVE_MONITOR_HOUR, FINCH_OK);
  s2 = json_dumps(again, JSON_COMPACT);
  CHECK_STR_EQ(s1, s2);
  CHECK(strncmp(s1, "{\"deployment\":\"mon\",\"bucket\":\"hour\",\"since\":", 44) == 0);
  free(s1);
  free(s2);
  json_decref(again);
  json_decref(d);

  /* Only hour 1. */
  json_t *h1 = run_monitor(db, "mon", T0 + HOUR, T0 + 2 * HOUR, SERVE_MONITOR_HOUR, FINCH_OK);
  CHECK_INT_EQ((long long)json_array_size(json_object_get(h1, "buckets")), 1);
  check_figures(json_object_get(h1, "total"), &eb[1], "hour 1 total");
  json_decref(h1);
  /* No bounds: the day before's minute too. */
  json_t *all = run_monitor(db, "mon", 0, 0, SERVE_MONITOR_DAY, FINCH_OK);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(all, "total"), "requests")), eb[NB].requests + 1);
  CHECK_INT_EQ((long long)json_array_size(json_object_get(all, "buckets")), 2);
  json_decref(all);
  json_decref(r);
}

static void test_empty_and_unknown(finch_db *db) {
  set_stage(db, "quiet", "shadow");
  json_t *r = run_monitor(db, "quiet", 0, 0, SERVE_MONITOR_HOUR, FINCH_OK);
  if (r) {
    CHECK_INT_EQ((long long)json_array_size(json_object_get(r, "buckets")), 0);
    CHECK_INT_EQ((long long)json_array_size(json_object_get(r, "models")), 0);
    CHECK_INT_EQ((long long)json_array_size(json_object_get(r, "front")), 0);
    json_t *t = json_object_get(r, "total");
    CHECK_INT_EQ(json_integer_value(json_object_get(t, "requests")), 0);
    CHECK(json_is_null(json_object_get(t, "accuracy")) && json_is_null(json_object_get(t, "out_of_scope_rate")));
    CHECK(json_is_null(json_object_get(json_object_get(t, "latency_ms"), "p50")));
  }
  json_decref(r);
  /* A deployment with data, outside the period: empty too. */
  r = run_monitor(db, "mon", T0 + 10 * HOUR, 0, SERVE_MONITOR_HOUR, FINCH_OK);
  CHECK_INT_EQ((long long)json_array_size(json_object_get(r, "buckets")), 0);
  json_decref(r);
  /* Only the recorder knows "other". */
  r = run_monitor(db, "other", 0, 0, SERVE_MONITOR_HOUR, FINCH_OK);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(r, "total"), "intents")), 1);
  json_decref(r);
  CHECK(run_monitor(db, "nowhere", 0, 0, SERVE_MONITOR_HOUR, FINCH_ENOTFOUND) == NULL);
  CHECK(run_monitor(db, "mon", T0 + HOUR, T0, SERVE_MONITOR_HOUR, FINCH_EINVAL) == NULL);
  CHECK(run_monitor(db, "mon", 0, 0, (serve_monitor_bucket)7, FINCH_EINVAL) == NULL);
  CHECK(run_monitor(db, "", 0, 0, SERVE_MONITOR_HOUR, FINCH_EINVAL) == NULL);
}

static void test_front(void) {
  /* acc up, latency down: (0.9, 10) and (0.8, 2) trade off; (0.8, 5) is
   * beaten by (0.8, 2); (0.9, 10) twice: both stay; NaN never. */
  double acc[] = {0.9, 0.8, 0.8, 0.9, NAN, 0.95};
  double lat[] = {10, 2, 5, 10, 1, NAN};
  int on[6], want[6] = {1, 1, 0, 1, 0, 0};
  serve_monitor_front(acc, lat, 6, on);
  for (int i = 0; i < 6; i++) CHECK_INT_EQ(on[i], want[i]);
  /* The bins: edges at 0.01 * 2^(b/8). */
  CHECK_INT_EQ(serve_monitor_bin(0.005), 0);
  CHECK_INT_EQ(serve_monitor_bin(0.01), 0);
  CHECK_INT_EQ(serve_monitor_bin(0.0101), 1);
  CHECK_INT_EQ(serve_monitor_bin(0.02), 8);
  CHECK_INT_EQ(serve_monitor_bin(0.0201), 9);
  CHECK_INT_EQ(serve_monitor_bin(1e12), SERVE_MONITOR_BINS - 1);
  CHECK_INT_EQ(serve_monitor_bin(NAN), 0);
  CHECK_NEAR(serve_monitor_bin_ms(8), 0.02, 1e-15);
}

static void test_parse(void) {
  finch_err err = {0};
  time_t t;
  CHECK(serve_monitor_parse_time("2024-03-01", 0, &t, &err) == FINCH_OK && t == 1709251200);
  CHECK(serve_monitor_parse_time("2024-03-01T10:00", 0, &t, &err) == FINCH_OK && t == T0);
  CHECK(serve_monitor_parse_time("2024-03-01 10:30:15Z", 0, &t, &err) == FINCH_OK && t == T0 + 1815);
  CHECK(serve_monitor_parse_time("2024-02-29", 0, &t, &err) == FINCH_OK && t == 1709164800);
  CHECK(serve_monitor_parse_time("24h", 1000000, &t, &err) == FINCH_OK && t == 1000000 - 86400);
  CHECK(serve_monitor_parse_time("90m", 1000000, &t, &err) == FINCH_OK && t == 1000000 - 5400);
  CHECK(serve_monitor_parse_time("7d", 1000000, &t, &err) == FINCH_OK && t == 1000000 - 7 * 86400);
  static const char *const bad[] = {"",           "yesterday",        "2023-02-29",      "2024-13-01",
                                    "2024-04-31", "2024-03-01T24:00", "2024-03-01T10",   "2024-03-01T10:00Zx",
                                    "0d",         "7w",               "-7d",             "2024-3-1",
                                    "1969-12-31", "7 d",              "2024-03-01T10:61", "2024-03-01T10:00:60"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err.msg[0] = '\0';
    if (serve_monitor_parse_time(bad[i], 1000000, &t, &err) != FINCH_EINVAL) TEST_FAIL_("\"%s\" accepted", bad[i]);
    else if (*bad[i]) CHECK_CONTAINS(err.msg, bad[i]);
  }
  serve_monitor_bucket b;
  CHECK(serve_monitor_parse_bucket("hour", &b, &err) == FINCH_OK && b == SERVE_MONITOR_HOUR);
  CHECK(serve_monitor_parse_bucket("day", &b, &err) == FINCH_OK && b == SERVE_MONITOR_DAY);
  CHECK(serve_monitor_parse_bucket("week", &b, &err) == FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "week");
}

/* Runs `finch monitor ARGS`: its exit code, stdout and stderr (one buffer). */
static int run_cli(const char *args, char *out, size_t size) {
  const char *bin = getenv("FINCH_BIN");
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s monitor %s 2>&1", bin, args);
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t n = fread(out, 1, size - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(finch_db *db) {
  if (!getenv("FINCH_BIN")) return;
  static char out[65536];
  CHECK_INT_EQ(run_cli("--deployment mon --bucket week", out, sizeof out), 2);
  CHECK_CONTAINS(out, "--bucket");
  CHECK_INT_EQ(run_cli("--deployment mon --since 2024-02-30", out, sizeof out), 2);
  CHECK_CONTAINS(out, "--since");
  CHECK_INT_EQ(run_cli("--deployment mon --until soon", out, sizeof out), 2);
  CHECK_CONTAINS(out, "\"soon\"");
  CHECK_INT_EQ(run_cli("--deployment mon --since 2024-03-02 --until 2024-03-01", out, sizeof out), 2);
  CHECK_INT_EQ(run_cli("--deployment nowhere", out, sizeof out), 1);
  CHECK_CONTAINS(out, "no deployment \"nowhere\"");
  CHECK_INT_EQ(run_cli("--deployment mon --since 2024-03-01T10:00 --until 2024-03-01T12:00 --bucket hour --json",
                       out, sizeof out),
               0);
  json_t *lib = run_monitor(db, "mon", T0, T0 + 2 * HOUR, SERVE_MONITOR_HOUR, FINCH_OK);
  char *want = json_dumps(lib, JSON_COMPACT);
  size_t n = strlen(out);
  while (n && out[n - 1] == '\n') out[--n] = '\0';
  CHECK_STR_EQ(out, want);
  free(want);
  json_decref(lib);
  CHECK_INT_EQ(run_cli("--deployment mon --since 2024-03-01T10:00 --until 2024-03-01T12:00 --bucket hour", out,
                       sizeof out),
               0);
  CHECK_CONTAINS(out, "2024-03-01T11:00:00Z");
  CHECK_CONTAINS(out, "* bbbbbbbbbbbbbbbb");
  CHECK_CONTAINS(out, "  cccccccccccccccc");
}

/* A server in database mode: a turn gets its latency, /v1/intent answers
 * reach serve_minutes when the server stops, and monitor counts them. */
static void test_server(finch_db *db, const char *url) {
  char path[4096], sha[65], key[FINCH_API_KEY_LEN + 1];
  finch_err err;
  if (!fixture_tmp_path(path, sizeof path, "test_monitor.model") || fixture_build_model(path, sha, &err)) {
    TEST_FAIL_("model: %s", err.msg);
    return;
  }
  if (finch_auth_key_create(finch_db_conn(db), "cc", FINCH_ROLE_INTEGRATION, "test", key, NULL, &err)) {
    TEST_FAIL_("key: %s", err.msg);
    return;
  }
  finch_serve_opts o = {.model_path = path, .port = 0, .threads = 2, .conninfo = url, .no_webhook_worker = 1,
                        .rate_per_s = 1000, .rate_burst = 1000, .access_log = "off", .deployment = "live"};
  finch_server *s = NULL;
  if (finch_server_start(&s, &o, &err)) {
    TEST_FAIL_("start: %s", err.msg);
    return;
  }
  unsigned port = finch_server_port(s);
  for (int i = 0; i < 3; i++) {
    api_reply r = api_http(port, "POST", "/v1/intent", key, "{\"text\": \"my card has not arrived\"}");
    CHECK_INT_EQ(r.status, 200);
    api_reply_free(&r);
  }
  api_reply r = api_http(port, "POST", "/v1/conversations/k1/turns", key, "{\"text\": \"i want a refund\"}");
  CHECK_INT_EQ(r.status, 200);
  api_reply_free(&r);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM conversation_turns WHERE deployment = 'live'"
                               " AND latency_ms > 0 AND latency_ms < 60000"),
               1);
  finch_server_stop(s);
  CHECK_INT_EQ(test_scalar(db, "SELECT coalesce(sum(requests), 0) FROM serve_minutes WHERE deployment = 'live'"), 3);
  json_t *m = run_monitor(db, "live", 0, 0, SERVE_MONITOR_DAY, FINCH_OK);
  json_t *t = json_object_get(m, "total");
  CHECK_INT_EQ(json_integer_value(json_object_get(t, "requests")), 4);
  CHECK_INT_EQ(json_integer_value(json_object_get(t, "intents")), 3);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(t, "latency_ms"), "n")), 4);
  CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(json_object_get(m, "models"), 0), "model_sha256")),
               sha);
  json_decref(m);
  remove(path);
}

int main(void) {
  finch_db *db = test_db_open();
  finch_err err;
  char url[4096];
  if (finch_db_resolve_url(url, sizeof url, 1, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  test_parse();
  test_front();
  fill(db, url);
  test_figures(db);
  test_empty_and_unknown(db);
  test_cli(db);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  test_server(db, url);
  curl_global_cleanup();
  finch_db_close(db);
  TEST_DONE();
}
