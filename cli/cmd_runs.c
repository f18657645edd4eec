/* finch runs (training runs and their figures, from training_runs and
 * training_metrics) and finch models (the registry: list, tag, untag).
 *
 * `runs show` gives each series of a run (one member or stage: a
 * training_metrics.run and phase) per epoch: the epoch's last step, its
 * rows' mean loss, the last learning rate, and the dev accuracy and loss
 * where the trainer measured them. Encoders log a row per step; those are
 * summarised per epoch and listed only with --steps. The JSON is the data
 * a learning-curve plot needs, in epoch order. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/models.h"
#include "evaluate/svg.h"

typedef struct {
  const char *dataset, *svg;
  int json, steps;
} runs_args;

#define F(m) FINCH_OPT_FIELD(runs_args, m)
static const finch_opt runs_opts[] = {
    {"dataset", 'd', FINCH_OPT_STRING, F(dataset), .arg = "NAME", .help = "list: only this dataset's runs"},
    {"steps", 0, FINCH_OPT_BOOL, F(steps), .help = "show: every per-step row too, not only the per-epoch summary"},
    {"json", 0, FINCH_OPT_BOOL, F(json), .help = "print JSON"},
    {"svg", 0, FINCH_OPT_STRING, F(svg), .arg = "DIR",
     .help = "show: also write the learning curves as SVG into DIR: run-<id>-loss.svg (mean training loss per "
             "epoch) and run-<id>-dev.svg (dev accuracy per epoch, where measured)"},
};
#undef F

static int runs_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_runs = {
    "runs", "training runs and their per-epoch figures", "list [--dataset D] [--json] | show RUN [--steps] [--json] [--svg DIR]",
    "List the training runs (finch teacher train, distill), or show one run's series: per epoch the step, mean "
    "loss,\nlearning rate and dev accuracy (the holdout's selection half) of each member or stage.",
    NULL, runs_opts, CLI_N(runs_opts), sizeof(runs_args), NULL, 2, runs_run, 0};

static const char *num(json_t *v, char *buf, size_t n, const char *fmt) {
  if (!v || json_is_null(v)) return "-";
  snprintf(buf, n, fmt, json_number_value(v));
  return buf;
}

static int runs_list(finch_db *db, const runs_args *a) {
  const char *p[] = {a->dataset};
  json_t *j = cli_query_json(db,
      "SELECT coalesce(json_agg(x ORDER BY x.id), '[]'::json) FROM ("
      " SELECT r.id, r.kind, r.dataset, r.model_id, r.started_at, count(t.id) AS rows,"
      "  (SELECT t2.loss::numeric FROM training_metrics t2 WHERE t2.run_id = r.id ORDER BY t2.id DESC LIMIT 1) AS last_loss,"
      "  max(t.dev_accuracy)::numeric AS best_dev_accuracy"
      " FROM training_runs r LEFT JOIN training_metrics t ON t.run_id = r.id"
      " WHERE $1::text IS NULL OR r.dataset = $1 GROUP BY r.id) x", 1, p);
  if (!j) return 1;
  if (a->json) {
    cli_print_json(j);
    return 0;
  }
  printf("%-6s %-8s %-16s %-6s %-19s %8s %10s %9s\n", "run", "kind", "dataset", "model", "started", "rows",
         "last_loss", "best_dev");
  size_t i;
  json_t *x;
  json_array_foreach(j, i, x) {
    char b1[32], b2[32], model[32] = "-";
    json_t *mid = json_object_get(x, "model_id");
    if (json_is_integer(mid)) snprintf(model, sizeof model, "%lld", (long long)json_integer_value(mid));
    printf("%-6lld %-8s %-16s %-6s %-19.19s %8lld %10s %9s\n", (long long)json_integer_value(json_object_get(x, "id")),
           json_string_value(json_object_get(x, "kind")), json_string_value(json_object_get(x, "dataset")), model,
           json_string_value(json_object_get(x, "started_at")),
           (long long)json_integer_value(json_object_get(x, "rows")),
           num(json_object_get(x, "last_loss"), b1, sizeof b1, "%.4f"),
           num(json_object_get(x, "best_dev_accuracy"), b2, sizeof b2, "%.4f"));
  }
  json_decref(j);
  return 0;
}

/* 1 when s is a run id: 1 to 18 digits. */
static int is_id(const char *s) {
  size_t n = strlen(s);
  if (!n || n > 18) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

/* One chart of field per epoch, a line per series that has it; 0 = written
 * (or nothing to draw), 1 = failed (printed). */
static int curve_svg(const json_t *series, const char *field, const char *title, const char *y_title,
                     const char *path) {
  size_t ns = json_array_size(series), k = 0;
  finch_svg_series *ss = calloc(ns + 1, sizeof *ss);
  double *buf = NULL;
  size_t total = 0, i, j;
  json_t *s, *e;
  json_array_foreach(series, i, s) total += json_array_size(json_object_get(s, "epochs"));
  buf = calloc(2 * total + 1, sizeof *buf);
  char (*names)[96] = calloc(ns + 1, sizeof *names);
  int rc = 1;
  if (!ss || !buf || !names) {
    fprintf(stderr, "finch: error: out of memory drawing %s\n", path);
    goto out;
  }
  double *x = buf, *y = buf + total;
  size_t at = 0;
  json_array_foreach(series, i, s) {
    size_t n = 0, has = 0;
    json_array_foreach(json_object_get(s, "epochs"), j, e) {
      const json_t *v = json_object_get(e, field);
      x[at + n] = (double)json_integer_value(json_object_get(e, "epoch"));
      y[at + n] = json_is_number(v) ? json_number_value(v) : NAN;
      has += json_is_number(v);
      n++;
    }
    if (has) {
      snprintf(names[k], sizeof names[k], "%s %s", json_string_value(json_object_get(s, "name")),
               json_string_value(json_object_get(s, "phase")));
      ss[k] = (finch_svg_series){names[k], x + at, y + at, n};
      k++;
    }
    at += n;
  }
  rc = 0;
  if (!k) goto out;
  char *svg = finch_svg_lines(title, "epoch", y_title, ss, k);
  FILE *fp = svg ? fopen(path, "w") : NULL;
  if (!fp || fputs(svg, fp) < 0 || fclose(fp) != 0) {
    fprintf(stderr, "finch: error: cannot write %s\n", path);
    rc = 1;
  } else {
    fprintf(stderr, "finch: wrote %s\n", path);
  }
  free(svg);
out:
  free(ss);
  free(buf);
  free(names);
  return rc;
}

static int runs_show(finch_db *db, const runs_args *a, const char *run) {
  if (!is_id(run)) {
    fprintf(stderr, "finch runs: run '%s' is not a run id (a number from finch runs list)\n", run);
    return 2;
  }
  const char *p[] = {run, a->steps ? "1" : "0"};
  json_t *j = cli_query_json(db,
      "SELECT CASE WHEN r.id IS NULL THEN 'null'::json ELSE json_build_object("
      " 'id', r.id, 'kind', r.kind, 'dataset', r.dataset, 'model_id', r.model_id, 'started_at', r.started_at,"
      " 'series', (SELECT coalesce(json_agg(s ORDER BY s.first), '[]'::json) FROM ("
      "   SELECT t.run AS name, t.phase, min(t.id) AS first, count(*) AS rows,"
      "    (SELECT json_agg(e ORDER BY e.epoch) FROM ("
      "      SELECT u.epoch, max(u.step) AS step, avg(u.loss)::real::numeric AS loss,"
      "       (array_agg(u.lr::numeric ORDER BY u.id DESC))[1] AS lr,"
      "       (array_agg(u.dev_accuracy::numeric ORDER BY u.id DESC) FILTER (WHERE u.dev_accuracy IS NOT NULL))[1]"
      "         AS dev_accuracy,"
      "       (array_agg(u.dev_loss::numeric ORDER BY u.id DESC) FILTER (WHERE u.dev_loss IS NOT NULL))[1] AS dev_loss,"
      "       count(*) AS rows"
      "      FROM training_metrics u WHERE u.run_id = r.id AND u.run = t.run AND u.phase = t.phase"
      "      GROUP BY u.epoch) e) AS epochs,"
      "    CASE WHEN $2 = '1' THEN (SELECT json_agg(json_build_object('step', v.step, 'epoch', v.epoch, 'loss', v.loss::numeric,"
      "      'lr', v.lr::numeric, 'grad_norm', v.grad_norm::numeric, 'ex_per_s', v.ex_per_s::numeric,"
      " 'dev_accuracy', v.dev_accuracy::numeric)"
      "      ORDER BY v.id) FROM training_metrics v WHERE v.run_id = r.id AND v.run = t.run AND v.phase = t.phase)"
      "    END AS steps"
      "   FROM training_metrics t WHERE t.run_id = r.id GROUP BY t.run, t.phase) s)) END"
      " FROM (SELECT $1::bigint AS want) w LEFT JOIN training_runs r ON r.id = w.want", 2, p);
  if (!j) return 1;
  if (json_is_null(j)) {
    json_decref(j);
    fprintf(stderr, "finch: error: run %s does not exist (see finch runs list)\n", run);
    return 1;
  }
  json_t *series = json_object_get(j, "series");
  size_t i, k;
  json_t *s, *e;
  json_array_foreach(series, i, s) json_object_del(s, "first");
  if (a->svg) {
    char lp[4200], dp[4200], title[128];
    snprintf(lp, sizeof lp, "%s/run-%s-loss.svg", a->svg, run);
    snprintf(dp, sizeof dp, "%s/run-%s-dev.svg", a->svg, run);
    snprintf(title, sizeof title, "Run %s: training loss", run);
    int bad = curve_svg(series, "loss", title, "mean training loss", lp);
    snprintf(title, sizeof title, "Run %s: dev accuracy", run);
    bad |= curve_svg(series, "dev_accuracy", title, "accuracy (selection half)", dp);
    if (bad) {
      json_decref(j);
      return 1;
    }
  }
  if (a->json) {
    cli_print_json(j);
    return 0;
  }
  json_t *mid = json_object_get(j, "model_id");
  char model[32] = "-";
  if (json_is_integer(mid)) snprintf(model, sizeof model, "%lld", (long long)json_integer_value(mid));
  printf("run %s: %s of dataset %s, started %.19s, model %s\n", run, json_string_value(json_object_get(j, "kind")),
         json_string_value(json_object_get(j, "dataset")), json_string_value(json_object_get(j, "started_at")), model);
  if (!json_array_size(series)) printf("(no figures logged)\n");
  json_array_foreach(series, i, s) {
    printf("\n%s %s (%lld rows)\n", json_string_value(json_object_get(s, "name")),
           json_string_value(json_object_get(s, "phase")), (long long)json_integer_value(json_object_get(s, "rows")));
    printf("  %6s %8s %10s %10s %9s %9s\n", "epoch", "step", "loss", "lr", "dev_acc", "dev_loss");
    json_array_foreach(json_object_get(s, "epochs"), k, e) {
      char b1[32], b2[32], b3[32], b4[32];
      printf("  %6lld %8lld %10s %10s %9s %9s\n", (long long)json_integer_value(json_object_get(e, "epoch")),
             (long long)json_integer_value(json_object_get(e, "step")),
             num(json_object_get(e, "loss"), b1, sizeof b1, "%.4f"), num(json_object_get(e, "lr"), b2, sizeof b2, "%.3g"),
             num(json_object_get(e, "dev_accuracy"), b3, sizeof b3, "%.4f"),
             num(json_object_get(e, "dev_loss"), b4, sizeof b4, "%.4f"));
    }
    if (a->steps) {
      printf("  %8s %6s %10s %10s\n", "step", "epoch", "loss", "lr");
      json_array_foreach(json_object_get(s, "steps"), k, e) {
        char b1[32], b2[32];
        printf("  %8lld %6lld %10s %10s\n", (long long)json_integer_value(json_object_get(e, "step")),
               (long long)json_integer_value(json_object_get(e, "epoch")),
               num(json_object_get(e, "loss"), b1, sizeof b1, "%.4f"), num(json_object_get(e, "lr"), b2, sizeof b2, "%.3g"));
      }
    }
  }
  json_decref(j);
  return 0;
}

static int runs_run(void *opts, const char **pos, size_t npos) {
  runs_args a = *(runs_args *)opts;
  int list = npos == 1 && !strcmp(pos[0], "list"), show = npos == 2 && !strcmp(pos[0], "show");
  if (!list && !show) return cli_usage_error(&cli_runs, &a);
  if (show && !is_id(pos[1])) return runs_show(NULL, &a, pos[1]);
  finch_db *db = cli_db_open();
  if (!db) return 1;
  int rc = list ? runs_list(db, &a) : runs_show(db, &a, pos[1]);
  finch_db_close(db);
  return rc;
}

/* ---- finch models ----------------------------------------------------------- */

typedef struct {
  const char *dataset;
  int json;
} models_args;

static const finch_opt models_opts[] = {
    {"dataset", 'd', FINCH_OPT_STRING, FINCH_OPT_FIELD(models_args, dataset), .arg = "NAME",
     .help = "untag: the dataset the alias is bound in; tag: where a reference (alias, best, latest) is looked up"},
    {"json", 0, FINCH_OPT_BOOL, FINCH_OPT_FIELD(models_args, json), .help = "list: print a JSON array"},
};

static int models_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_models = {
    "models", "list registered models; tag and untag aliases", "list [--json] | tag MODEL NAME | untag NAME --dataset D",
    "List every registered model with its status (failed: it did not pass its quality gate) and aliases; bind an\n"
    "alias (e.g. production, staging) to a model within its dataset, moving it from the model it named; remove one.\n"
    "Every move is kept in model_alias_history. A model reference anywhere takes an id, a file, an alias, or best\n"
    "or latest (never a failed model).",
    NULL, models_opts, CLI_N(models_opts), sizeof(models_args), NULL, 3, models_run, 0};

static int models_list(finch_db *db, const models_args *a) {
  finch_err err;
  if (a->json) {
    char *json;
    if (finch_models_list_json(db, &json, &err)) return cli_fail(&err);
    printf("%s\n", json);
    free(json);
    return 0;
  }
  PGresult *r = finch_db_query(db,
      "SELECT m.id, m.kind, m.stage, m.arch, m.dtype, m.params, m.bytes, coalesce(m.metrics->>'dev_accuracy', ''),"
      " m.path, coalesce((SELECT string_agg(format('%s %s (holdout %s, T %s)', x->>'name',"
      "   CASE WHEN (x->>'chosen')::boolean THEN 'in' ELSE 'out' END, round((x->>'dev_accuracy')::numeric, 4),"
      "   round((x->>'temperature')::numeric, 2)), '; ')"
      "   FROM jsonb_array_elements(CASE WHEN jsonb_typeof(m.config->'members') = 'array'"
      "                                  THEN m.config->'members' ELSE '[]'::jsonb END) x), ''),"
      " m.status, coalesce((SELECT string_agg(a.alias, ',' ORDER BY a.alias) FROM model_aliases a"
      "   WHERE a.model_id = m.id), ''), coalesce(m.metrics->>'gate', '')"
      " FROM models m ORDER BY m.id", 0, NULL, &err);
  if (!r) return cli_fail(&err);
  printf("%-5s %-8s %-9s %-8s %-5s %10s %10s %8s %-6s %-12s  %s\n", "id", "kind", "stage", "arch", "dtype", "params",
         "bytes", "dev_acc", "status", "aliases", "path");
  for (int i = 0; i < PQntuples(r); i++) {
    printf("%-5s %-8s %-9s %-8s %-5s %10s %10s %8.8s %-6s %-12s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
           PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6),
           PQgetvalue(r, i, 7), PQgetvalue(r, i, 10), *PQgetvalue(r, i, 11) ? PQgetvalue(r, i, 11) : "-",
           PQgetvalue(r, i, 8));
    if (*PQgetvalue(r, i, 9)) printf("      members: %s\n", PQgetvalue(r, i, 9));
    if (*PQgetvalue(r, i, 12)) printf("      gate: %s\n", PQgetvalue(r, i, 12));
  }
  PQclear(r);
  return 0;
}

static int models_run(void *opts, const char **pos, size_t npos) {
  models_args a = *(models_args *)opts;
  const char *verb = npos ? pos[0] : "";
  int list = npos == 1 && !strcmp(verb, "list"), tag = npos == 3 && !strcmp(verb, "tag"),
      untag = npos == 2 && !strcmp(verb, "untag");
  if (!list && !tag && !untag) return cli_usage_error(&cli_models, &a);
  finch_err err;
  const char *alias = tag ? pos[2] : untag ? pos[1] : NULL;
  if (alias && !finch_models_alias_valid(alias, &err)) {
    fprintf(stderr, "finch models: %s\n", err.msg);
    return 2;
  }
  if (untag && !a.dataset) {
    fprintf(stderr, "finch models: untag %s needs --dataset (an alias is bound within a dataset)\n", alias);
    return 2;
  }
  finch_db *db = cli_db_open();
  if (!db) return 1;
  int rc = 0;
  if (list) {
    rc = models_list(db, &a);
  } else if (tag) {
    long long id;
    finch_status st = finch_models_lookup(db, pos[1], NULL, a.dataset, &id, &err);
    if (!st) st = finch_models_tag(db, id, alias, &err);
    if (st) rc = cli_fail(&err);
    else printf("model %lld is now '%s'\n", id, alias);
  } else {
    if (finch_models_untag(db, alias, a.dataset, &err)) rc = cli_fail(&err);
    else printf("alias '%s' removed from dataset %s\n", alias, a.dataset);
  }
  finch_db_close(db);
  return rc;
}
