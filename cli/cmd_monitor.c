/* finch monitor: a deployment's serving over time (serve/monitor.h) as a
 * table or one JSON object. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "serve/monitor.h"

typedef struct {
  const char *deployment, *since, *until, *bucket;
  int json;
} monitor_args;

#define F(m) FINCH_OPT_FIELD(monitor_args, m)
static const finch_opt monitor_opts[] = {
    {"deployment", 'd', FINCH_OPT_STRING, F(deployment), .def = "default", .arg = "NAME", .help = "the deployment"},
    {"since", 0, FINCH_OPT_STRING, F(since), .arg = "TIME",
     .help = "from TIME on (UTC: YYYY-MM-DD[THH:MM[:SS]], or back from now: 90m, 24h, 7d); default: the start"},
    {"until", 0, FINCH_OPT_STRING, F(until), .arg = "TIME", .help = "before TIME (as --since); default: now"},
    {"bucket", 0, FINCH_OPT_STRING, F(bucket), .def = "day", .arg = "hour|day", .help = "one row per UTC hour or day"},
    {"json", 0, FINCH_OPT_BOOL, F(json), .help = "print one JSON object"},
};

static int monitor_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_monitor = {
    "monitor", "a deployment's serving over time: accuracy, rates, latency, the models' front",
    "[--deployment D] [--since TIME] [--until TIME] [--bucket hour|day] [--json]",
    "Per hour or day: requests (user turns and /v1/intent answers), out-of-scope and handoff\n"
    "rates, the engines' shares, labelled accuracy of the served answers and latency p50/p99;\n"
    "then per model that served, its labelled accuracy and latency, and the accuracy-latency\n"
    "front of those models (marked *).",
    "Labelled accuracy rests on the labelling tasks, which are made only for doubtful turns (the\n"
    "engines disagreed or the model was unsure): it is the accuracy on hard turns. Latency\n"
    "percentiles are histogram bin edges, at most 9.1% above the true value. /v1/intent counts\n"
    "reach the database once their minute has ended, and when the server stops.\n"
    "Exit status: 0 shown, 1 no such deployment or failure, 2 usage.",
    monitor_opts, CLI_N(monitor_opts), sizeof(monitor_args), NULL, 0, monitor_run, 0};

static void monitor_cell(char *buf, size_t n, json_t *v, double scale, const char *fmt) {
  if (json_is_number(v)) snprintf(buf, n, fmt, scale * json_number_value(v));
  else snprintf(buf, n, "-");
}

static void monitor_print_row(const char *name, json_t *b) {
  char oos[16], hand[16], share[16], acc[16], p50[16], p99[16];
  json_t *lat = json_object_get(b, "latency_ms");
  monitor_cell(oos, sizeof oos, json_object_get(b, "out_of_scope_rate"), 100, "%.2f");
  monitor_cell(hand, sizeof hand, json_object_get(b, "handoff_rate"), 100, "%.2f");
  monitor_cell(share, sizeof share, json_object_get(b, "model_share"), 100, "%.2f");
  monitor_cell(acc, sizeof acc, json_object_get(b, "accuracy"), 1, "%.4f");
  monitor_cell(p50, sizeof p50, json_object_get(lat, "p50"), 1, "%.3g");
  monitor_cell(p99, sizeof p99, json_object_get(lat, "p99"), 1, "%.3g");
  printf("%-20s %9lld %8lld %8lld %6s %8s %7s %8lld %8s %8s %8s\n", name,
         (long long)json_integer_value(json_object_get(b, "requests")),
         (long long)json_integer_value(json_object_get(b, "turns")),
         (long long)json_integer_value(json_object_get(b, "intents")), oos, hand, share,
         (long long)json_integer_value(json_object_get(b, "labelled")), acc, p50, p99);
}

static void monitor_print(json_t *r) {
  json_t *since = json_object_get(r, "since"), *until = json_object_get(r, "until");
  printf("deployment %s, by %s, from %s until %s (UTC)\n", json_string_value(json_object_get(r, "deployment")),
         json_string_value(json_object_get(r, "bucket")), json_is_string(since) ? json_string_value(since) : "the start",
         json_is_string(until) ? json_string_value(until) : "now");
  printf("%-20s %9s %8s %8s %6s %8s %7s %8s %8s %8s %8s\n", "bucket", "requests", "turns", "intents", "oos%",
         "handoff%", "model%", "labelled", "accuracy", "p50 ms", "p99 ms");
  size_t i;
  json_t *b;
  json_array_foreach(json_object_get(r, "buckets"), i, b) monitor_print_row(json_string_value(json_object_get(b, "start")), b);
  monitor_print_row("total", json_object_get(r, "total"));
  json_t *models = json_object_get(r, "models");
  if (!json_array_size(models)) return;
  printf("\nmodels (* on the accuracy-latency front: no other is as accurate and as fast, and better in one)\n");
  printf("  %-16s %6s %-8s %-10s %-6s %9s %8s %8s %8s %8s\n", "model", "id", "kind", "arch", "dtype", "requests",
         "labelled", "accuracy", "p50 ms", "p99 ms");
  json_array_foreach(models, i, b) {
    json_t *sha = json_object_get(b, "model_sha256"), *id = json_object_get(b, "model_id"),
           *lat = json_object_get(b, "latency_ms");
    char ids[24], acc[16], p50[16], p99[16], shas[17];
    snprintf(shas, sizeof shas, "%s", json_is_string(sha) ? json_string_value(sha) : "(none)");
    if (json_is_integer(id)) snprintf(ids, sizeof ids, "%lld", (long long)json_integer_value(id));
    else snprintf(ids, sizeof ids, "-");
    monitor_cell(acc, sizeof acc, json_object_get(b, "accuracy"), 1, "%.4f");
    monitor_cell(p50, sizeof p50, json_object_get(lat, "p50"), 1, "%.3g");
    monitor_cell(p99, sizeof p99, json_object_get(lat, "p99"), 1, "%.3g");
    const char *kind = json_string_value(json_object_get(b, "kind")), *arch = json_string_value(json_object_get(b, "arch")),
               *dtype = json_string_value(json_object_get(b, "dtype"));
    printf("%c %-16s %6s %-8s %-10s %-6s %9lld %8lld %8s %8s %8s\n", json_is_true(json_object_get(b, "on_front")) ? '*' : ' ',
           shas, ids, kind ? kind : "-", arch ? arch : "-", dtype ? dtype : "-",
           (long long)json_integer_value(json_object_get(b, "requests")),
           (long long)json_integer_value(json_object_get(b, "labelled")), acc, p50, p99);
  }
}

static int monitor_run(void *opts, const char **pos, size_t npos) {
  (void)pos;
  (void)npos;
  monitor_args *a = opts;
  serve_monitor_opts o = {.deployment = a->deployment};
  finch_err err = {0};
  time_t now = time(NULL);
  if (!a->deployment || !*a->deployment) {
    fprintf(stderr, "finch monitor: --deployment must not be empty\n");
    return 2;
  }
  if (a->since && serve_monitor_parse_time(a->since, now, &o.since, &err)) {
    fprintf(stderr, "finch monitor: --since: %s\n", err.msg);
    return 2;
  }
  if (a->until && serve_monitor_parse_time(a->until, now, &o.until, &err)) {
    fprintf(stderr, "finch monitor: --until: %s\n", err.msg);
    return 2;
  }
  if (serve_monitor_parse_bucket(a->bucket, &o.bucket, &err)) {
    fprintf(stderr, "finch monitor: --bucket: %s\n", err.msg);
    return 2;
  }
  if (o.since && o.until && o.since >= o.until) {
    fprintf(stderr, "finch monitor: --since (%s) must be before --until (%s)\n", a->since, a->until);
    return 2;
  }
  finch_db *db = cli_db_open();
  if (!db) return 1;
  json_t *out = NULL;
  int ret = 0;
  if (serve_monitor_json(db, &o, &out, &err)) {
    ret = cli_fail(&err);
  } else if (a->json) {
    cli_print_json(out);
  } else {
    monitor_print(out);
    json_decref(out);
  }
  finch_db_close(db);
  return ret;
}
