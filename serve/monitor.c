/* Monitoring from the serving side (serve/monitor.h): the queries and their
 * aggregation into buckets, a total and models.
 *
 * Three grouped queries, each by (bucket, model): the requests (user turns
 * and served minutes together), the latency histogram (turns binned in SQL
 * with serve_monitor_bin's formula, minutes' stored bins), and the labelled
 * tasks. Each row is added to its bucket, its model and the total, so the
 * three always agree. Rows come ordered by bucket, and a bucket is looked up
 * from the last one, so that a long period costs one comparison per row. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/monitor.h"

/* --- options -------------------------------------------------------------- */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard
 * Hinnant's days_from_civil), so that no time zone is involved. */
static long long monitor_days(long long y, unsigned m, unsigned d) {
  y -= m <= 2;
  long long era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (long long)doe - 719468;
}

#define MONITOR_TIME_FORMS                                                                                           \
  "YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][Z] (UTC) or a span back from now such as 90m, 24h, 7d"

finch_status serve_monitor_parse_time(const char *text, time_t now, time_t *out, finch_err *err) {
  *out = 0;
  if (!text || !*text) return finch_err_set(err, FINCH_EINVAL, "empty time; use " MONITOR_TIME_FORMS);
  size_t len = strlen(text);
  char unit = text[len - 1];
  if (isdigit((unsigned char)text[0]) && (unit == 'm' || unit == 'h' || unit == 'd')) {
    long long n = 0;
    size_t i = 0;
    for (; i + 1 < len && isdigit((unsigned char)text[i]) && n < 100000000; i++) n = n * 10 + (text[i] - '0');
    if (i + 1 == len && n > 0 && n <= 36500LL * 24 * 60) {
      *out = now - (time_t)(n * (unit == 'm' ? 60 : unit == 'h' ? 3600 : 86400));
      return FINCH_OK;
    }
    return finch_err_set(err, FINCH_EINVAL, "time \"%s\" is not valid; use " MONITOR_TIME_FORMS, text);
  }
  int y, mo, d, h = 0, mi = 0, s = 0, used = 0, n;
  char sep = 0;
  n = sscanf(text, "%4d-%2d-%2d%n", &y, &mo, &d, &used);
  int ok = n == 3 && used == 10;
  if (ok && text[used]) {
    int u2 = 0;
    ok = sscanf(text + used, "%c%2d:%2d%n", &sep, &h, &mi, &u2) == 3 && (sep == 'T' || sep == ' ') && u2 == 6;
    used += u2;
    if (ok && text[used] == ':') {
      int u3 = 0;
      ok = sscanf(text + used, ":%2d%n", &s, &u3) == 1 && u3 == 3;
      used += u3;
    }
    if (ok && text[used] == 'Z') used++;
    ok = ok && text[used] == '\0';
  }
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = ok && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
  ok = ok && y >= 1970 && y <= 9999 && mo >= 1 && mo <= 12 && d >= 1 && d <= mdays[mo - 1] &&
       (mo != 2 || d <= 28 + leap) && h >= 0 && h <= 23 && mi >= 0 && mi <= 59 && s >= 0 && s <= 59;
  for (size_t i = 0; ok && i < len; i++) ok = !isspace((unsigned char)text[i]) || i == 10;
  if (!ok) return finch_err_set(err, FINCH_EINVAL, "time \"%s\" is not valid; use " MONITOR_TIME_FORMS, text);
  *out = (time_t)(monitor_days(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + s);
  return FINCH_OK;
}

finch_status serve_monitor_parse_bucket(const char *text, serve_monitor_bucket *out, finch_err *err) {
  if (text && strcmp(text, "hour") == 0) *out = SERVE_MONITOR_HOUR;
  else if (text && strcmp(text, "day") == 0) *out = SERVE_MONITOR_DAY;
  else return finch_err_set(err, FINCH_EINVAL, "bucket \"%s\" is not valid; use hour or day", text ? text : "");
  return FINCH_OK;
}

/* --- the front -------------------------------------------------------------- */

void serve_monitor_front(const double *acc, const double *lat, size_t n, int *on) {
  for (size_t i = 0; i < n; i++) {
    on[i] = !isnan(acc[i]) && !isnan(lat[i]);
    for (size_t j = 0; on[i] && j < n; j++)
      if (j != i && !isnan(acc[j]) && !isnan(lat[j]) && acc[j] >= acc[i] && lat[j] <= lat[i] &&
          (acc[j] > acc[i] || lat[j] < lat[i]))
        on[i] = 0;
  }
}

/* --- aggregation ------------------------------------------------------------ */

typedef struct {
  char key[80]; /* the bucket's start, or the model's SHA-256 */
  long long requests, turns, intents, oos, handoffs, eng_model, eng_rules;
  long long labelled, correct, model_correct; /* labelled tasks; the served answer right; the model's right */
  long long hist[SERVE_MONITOR_BINS];
} monitor_agg;

typedef struct {
  monitor_agg *v;
  size_t n, cap;
} monitor_aggs;

/* The aggregate of key, appended when new (searched from the last, where
 * ordered rows find theirs at once); NULL when out of memory. */
static monitor_agg *monitor_get(monitor_aggs *a, const char *key) {
  for (size_t i = a->n; i-- > 0;)
    if (strcmp(a->v[i].key, key) == 0) return &a->v[i];
  if (a->n == a->cap) {
    size_t cap = a->cap ? 2 * a->cap : 16;
    monitor_agg *v = realloc(a->v, cap * sizeof *v);
    if (!v) return NULL;
    a->v = v;
    a->cap = cap;
  }
  monitor_agg *g = &a->v[a->n++];
  memset(g, 0, sizeof *g);
  snprintf(g->key, sizeof g->key, "%s", key);
  return g;
}

static int monitor_cmp_key(const void *a, const void *b) {
  return strcmp(((const monitor_agg *)a)->key, ((const monitor_agg *)b)->key);
}

/* The nearest-rank pct-th percentile of g's histogram, NaN when empty. */
static double monitor_pct(const monitor_agg *g, long long pct, long long *count) {
  long long n = 0;
  for (int b = 0; b < SERVE_MONITOR_BINS; b++) n += g->hist[b];
  if (count) *count = n;
  if (n == 0) return NAN;
  long long rank = (pct * n + 99) / 100, seen = 0;
  for (int b = 0; b < SERVE_MONITOR_BINS; b++)
    if ((seen += g->hist[b]) >= rank) return serve_monitor_bin_ms(b);
  return NAN;
}

static json_t *monitor_ratio(long long num, long long den) {
  return den ? json_real((double)num / (double)den) : json_null();
}

static json_t *monitor_num(double v) { return isnan(v) ? json_null() : json_real(v); }

static json_t *monitor_latency(const monitor_agg *g) {
  long long n;
  double p50 = monitor_pct(g, 50, &n), p99 = monitor_pct(g, 99, NULL);
  return json_pack("{s:I, s:o, s:o}", "n", (json_int_t)n, "p50", monitor_num(p50), "p99", monitor_num(p99));
}

/* A bucket's or the total's figures; start NULL for the total. */
static json_t *monitor_bucket_json(const monitor_agg *g, const char *start) {
  json_t *o = json_object();
  if (!o) return NULL;
  if (start) json_object_set_new(o, "start", json_string(start));
  json_object_set_new(o, "requests", json_integer(g->requests));
  json_object_set_new(o, "turns", json_integer(g->turns));
  json_object_set_new(o, "intents", json_integer(g->intents));
  json_object_set_new(o, "out_of_scope", json_integer(g->oos));
  json_object_set_new(o, "out_of_scope_rate", monitor_ratio(g->oos, g->requests));
  json_object_set_new(o, "handoffs", json_integer(g->handoffs));
  json_object_set_new(o, "handoff_rate", monitor_ratio(g->handoffs, g->turns));
  json_object_set_new(o, "engine", json_pack("{s:I, s:I}", "model", (json_int_t)g->eng_model, "rules",
                                             (json_int_t)g->eng_rules));
  json_object_set_new(o, "model_share", monitor_ratio(g->eng_model, g->eng_model + g->eng_rules));
  json_object_set_new(o, "labelled", json_integer(g->labelled));
  json_object_set_new(o, "labelled_correct", json_integer(g->correct));
  json_object_set_new(o, "accuracy", monitor_ratio(g->correct, g->labelled));
  json_object_set_new(o, "model_accuracy", monitor_ratio(g->model_correct, g->labelled));
  json_object_set_new(o, "latency_ms", monitor_latency(g));
  return o;
}

/* --- the queries ------------------------------------------------------------- */

/* The bucket of a timestamp column, as ISO-8601 UTC text ($2: 'hour' or 'day'). */
#define MONITOR_B(col) "to_char(date_trunc($2, " col " AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
/* The period on a timestamp column ($3, $4: epoch seconds or NULL). */
#define MONITOR_P(col)                                                                                               \
  " AND ($3::bigint IS NULL OR " col " >= to_timestamp($3::bigint))"                                                 \
  " AND ($4::bigint IS NULL OR " col " < to_timestamp($4::bigint))"

/* (bucket, model, requests, turns, intents, out_of_scope, handoffs, engine model, engine rules) */
static const char monitor_sql_requests[] =
    "SELECT b, sha, sum(req)::bigint, sum(turns)::bigint, sum(intents)::bigint, sum(oos)::bigint, sum(hand)::bigint,"
    " sum(em)::bigint, sum(er)::bigint FROM ("
    " SELECT " MONITOR_B("created_at") " AS b, coalesce(model_sha256, '') AS sha, count(*) AS req, count(*) AS turns,"
    "  0 AS intents, count(*) FILTER (WHERE out_of_scope) AS oos, count(*) FILTER (WHERE handoff) AS hand,"
    "  count(*) FILTER (WHERE engine = 'model') AS em, count(*) FILTER (WHERE engine = 'rules') AS er"
    "  FROM conversation_turns WHERE deployment = $1 AND speaker = 'user'" MONITOR_P("created_at") " GROUP BY 1, 2"
    " UNION ALL"
    " SELECT " MONITOR_B("minute") ", model_sha256, sum(requests), 0, sum(requests), sum(out_of_scope), 0,"
    "  sum(requests), 0 FROM serve_minutes WHERE deployment = $1" MONITOR_P("minute") " GROUP BY 1, 2"
    ") x GROUP BY 1, 2 ORDER BY 1, 2";

/* (bucket, model, bin, count); the turns' bin is serve_monitor_bin's. */
static const char monitor_sql_latency[] =
    "SELECT b, sha, bin, sum(n)::bigint FROM ("
    " SELECT " MONITOR_B("created_at") " AS b, coalesce(model_sha256, '') AS sha,"
    "  CASE WHEN latency_ms <= 0.01 THEN 0"
    "   ELSE least(199, greatest(1, ceil(8 * ln(latency_ms::float8 / 0.01) / ln(2::float8))))::int END AS bin,"
    "  count(*) AS n FROM conversation_turns WHERE deployment = $1 AND speaker = 'user' AND latency_ms IS NOT NULL"
    MONITOR_P("created_at") " GROUP BY 1, 2, 3"
    " UNION ALL"
    " SELECT " MONITOR_B("minute") ", model_sha256, u.bin, sum(u.n) FROM serve_minutes,"
    "  unnest(latency_bins, latency_counts) AS u(bin, n) WHERE deployment = $1" MONITOR_P("minute") " GROUP BY 1, 2, 3"
    ") x GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";

/* (bucket, model, labelled, served answer right, model's answer right), by the turn's time. */
static const char monitor_sql_labels[] =
    "SELECT " MONITOR_B("t.created_at") ", coalesce(t.model_sha256, ''), count(*),"
    " count(*) FILTER (WHERE CASE WHEN t.engine = 'rules' THEN lt.rule_label = lt.final_label"
    "                             ELSE lt.suggested_label = lt.final_label END),"
    " count(*) FILTER (WHERE lt.suggested_label = lt.final_label)"
    " FROM labeling_tasks lt JOIN conversation_turns t ON t.id = lt.turn_id"
    " WHERE lt.deployment = $1 AND t.deployment = $1 AND lt.status IN ('accepted', 'corrected')"
    " AND lt.final_label IS NOT NULL" MONITOR_P("t.created_at") " GROUP BY 1, 2 ORDER BY 1, 2";

typedef struct {
  monitor_aggs buckets, models;
  monitor_agg total;
} monitor_state;

/* Runs one of the queries and adds its rows; kind 0 requests, 1 latency, 2 labels. */
static finch_status monitor_add(finch_db *db, monitor_state *s, int kind, const char *const *p, finch_err *err) {
  static const char *const sql[3] = {monitor_sql_requests, monitor_sql_latency, monitor_sql_labels};
  PGresult *r = finch_db_query(db, sql[kind], 4, p, err);
  if (!r) return FINCH_EDB;
  for (int i = 0; i < PQntuples(r); i++) {
    monitor_agg *bk = monitor_get(&s->buckets, PQgetvalue(r, i, 0)), *md = monitor_get(&s->models, PQgetvalue(r, i, 1));
    if (!bk || !md) {
      PQclear(r);
      return finch_err_set(err, FINCH_ENOMEM, "monitor: out of memory");
    }
    monitor_agg *g[3] = {bk, md, &s->total};
    long long v[7];
    for (int k = 0; k < 7 && k + 2 < PQnfields(r); k++) v[k] = atoll(PQgetvalue(r, i, k + 2));
    for (int t = 0; t < 3; t++) {
      if (kind == 0) {
        g[t]->requests += v[0];
        g[t]->turns += v[1];
        g[t]->intents += v[2];
        g[t]->oos += v[3];
        g[t]->handoffs += v[4];
        g[t]->eng_model += v[5];
        g[t]->eng_rules += v[6];
      } else if (kind == 1) {
        int bin = (int)v[0];
        if (bin >= 0 && bin < SERVE_MONITOR_BINS) g[t]->hist[bin] += v[1];
      } else {
        g[t]->labelled += v[0];
        g[t]->correct += v[1];
        g[t]->model_correct += v[2];
      }
    }
  }
  PQclear(r);
  return FINCH_OK;
}

static json_t *monitor_time(time_t t) {
  if (!t) return json_null();
  struct tm tm;
  char buf[32];
  gmtime_r(&t, &tm);
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return json_string(buf);
}

/* One model's entry, named through the models table (the first row with its hash). */
static json_t *monitor_model_json(finch_db *db, const monitor_agg *g, int on_front, finch_err *err) {
  const char *p[1] = {g->key};
  PGresult *r = finch_db_query(db, "SELECT id, kind, arch, dtype FROM models WHERE sha256 = $1 ORDER BY id LIMIT 1",
                               1, p, err);
  if (!r) return NULL;
  int known = PQntuples(r) == 1;
  json_t *o = json_object();
  if (o) {
    json_object_set_new(o, "model_sha256", *g->key ? json_string(g->key) : json_null());
    json_object_set_new(o, "model_id", known ? json_integer(atoll(PQgetvalue(r, 0, 0))) : json_null());
    json_object_set_new(o, "kind", known ? json_string(PQgetvalue(r, 0, 1)) : json_null());
    json_object_set_new(o, "arch", known ? json_string(PQgetvalue(r, 0, 2)) : json_null());
    json_object_set_new(o, "dtype", known ? json_string(PQgetvalue(r, 0, 3)) : json_null());
    json_object_set_new(o, "requests", json_integer(g->requests));
    json_object_set_new(o, "labelled", json_integer(g->labelled));
    json_object_set_new(o, "labelled_correct", json_integer(g->model_correct));
    json_object_set_new(o, "accuracy", monitor_ratio(g->model_correct, g->labelled));
    json_object_set_new(o, "latency_ms", monitor_latency(g));
    json_object_set_new(o, "on_front", json_boolean(on_front));
  }
  PQclear(r);
  if (!o) finch_err_set(err, FINCH_ENOMEM, "monitor: out of memory");
  return o;
}

/* The front's hashes by latency, then accuracy descending, then hash. */
typedef struct {
  const char *sha;
  double acc, lat;
} monitor_point;

static int monitor_cmp_point(const void *a, const void *b) {
  const monitor_point *x = a, *y = b;
  if (x->lat != y->lat) return x->lat < y->lat ? -1 : 1;
  if (x->acc != y->acc) return x->acc > y->acc ? -1 : 1;
  return strcmp(x->sha, y->sha);
}

static finch_status monitor_known(finch_db *db, const char *deployment, finch_err *err) {
  const char *p[1] = {deployment};
  PGresult *r = finch_db_query(db,
                               "SELECT EXISTS (SELECT 1 FROM conversation_turns WHERE deployment = $1)"
                               " OR EXISTS (SELECT 1 FROM labeling_tasks WHERE deployment = $1)"
                               " OR EXISTS (SELECT 1 FROM rollout_state WHERE deployment = $1)"
                               " OR EXISTS (SELECT 1 FROM serve_minutes WHERE deployment = $1)",
                               1, p, err);
  if (!r) return FINCH_EDB;
  int known = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  return known ? FINCH_OK
               : finch_err_set(err, FINCH_ENOTFOUND,
                               "monitor: no deployment \"%s\" (no turns, labelling tasks, rollout state or served "
                               "minutes carry that name)",
                               deployment);
}

finch_status serve_monitor_json(finch_db *db, const serve_monitor_opts *o, json_t **out, finch_err *err) {
  *out = NULL;
  if (!o || !o->deployment || !*o->deployment) return finch_err_set(err, FINCH_EINVAL, "monitor: no deployment given");
  if (o->bucket != SERVE_MONITOR_HOUR && o->bucket != SERVE_MONITOR_DAY)
    return finch_err_set(err, FINCH_EINVAL, "monitor: bucket must be hour or day");
  if (o->since && o->until && o->since >= o->until)
    return finch_err_set(err, FINCH_EINVAL, "monitor: --since must be before --until");
  finch_status st = monitor_known(db, o->deployment, err);
  if (st) return st;
  const char *bucket = o->bucket == SERVE_MONITOR_DAY ? "day" : "hour";
  char since[32], until[32];
  snprintf(since, sizeof since, "%lld", (long long)o->since);
  snprintf(until, sizeof until, "%lld", (long long)o->until);
  const char *p[4] = {o->deployment, bucket, o->since ? since : NULL, o->until ? until : NULL};
  monitor_state s = {0};
  json_t *res = NULL;
  monitor_point *pts = NULL;
  double *acc = NULL, *lat = NULL;
  int *on = NULL;
  for (int k = 0; k < 3 && !st; k++) st = monitor_add(db, &s, k, p, err);
  if (st) goto out;
  if (s.buckets.n) qsort(s.buckets.v, s.buckets.n, sizeof *s.buckets.v, monitor_cmp_key);
  if (s.models.n) qsort(s.models.v, s.models.n, sizeof *s.models.v, monitor_cmp_key);

  size_t nm = s.models.n;
  acc = calloc(nm + 1, sizeof *acc);
  lat = calloc(nm + 1, sizeof *lat);
  on = malloc((nm + 1) * sizeof *on);
  pts = malloc((nm + 1) * sizeof *pts);
  json_t *buckets = json_array(), *models = json_array(), *front = json_array();
  res = json_object();
  if (!acc || !lat || !on || !pts || !buckets || !models || !front || !res) {
    json_decref(buckets);
    json_decref(models);
    json_decref(front);
    st = finch_err_set(err, FINCH_ENOMEM, "monitor: out of memory");
    goto out;
  }
  json_object_set_new(res, "deployment", json_string(o->deployment));
  json_object_set_new(res, "bucket", json_string(bucket));
  json_object_set_new(res, "since", monitor_time(o->since));
  json_object_set_new(res, "until", monitor_time(o->until));
  json_object_set_new(res, "latency_note",
                      json_string("nearest-rank percentiles, each the upper edge of its histogram bin "
                                  "(8 bins per doubling): at most 9.1% above the true value"));
  json_object_set_new(res, "buckets", buckets);
  for (size_t i = 0; i < s.buckets.n; i++)
    if (s.buckets.v[i].requests) json_array_append_new(buckets, monitor_bucket_json(&s.buckets.v[i], s.buckets.v[i].key));
  json_object_set_new(res, "total", monitor_bucket_json(&s.total, NULL));
  size_t nf = 0;
  for (size_t i = 0; i < nm; i++) {
    const monitor_agg *g = &s.models.v[i];
    acc[i] = g->labelled ? (double)g->model_correct / (double)g->labelled : NAN;
    lat[i] = monitor_pct(g, 50, NULL);
  }
  serve_monitor_front(acc, lat, nm, on);
  json_object_set_new(res, "models", models);
  for (size_t i = 0; i < nm; i++) {
    json_t *m = monitor_model_json(db, &s.models.v[i], on[i], err);
    if (!m) {
      st = err && err->code ? err->code : FINCH_EDB;
      goto out;
    }
    json_array_append_new(models, m);
    if (on[i]) pts[nf++] = (monitor_point){s.models.v[i].key, acc[i], lat[i]};
  }
  qsort(pts, nf, sizeof *pts, monitor_cmp_point);
  json_object_set_new(res, "front", front);
  for (size_t i = 0; i < nf; i++) json_array_append_new(front, json_string(pts[i].sha));
out:
  if (st) {
    json_decref(res);
    res = NULL;
  }
  *out = res;
  free(s.buckets.v);
  free(s.models.v);
  free(acc);
  free(lat);
  free(on);
  free(pts);
  return st;
}
