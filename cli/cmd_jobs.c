/* finch jobs list|show|logs: the pipeline runs and their steps recorded by
 * finch pipeline run (pipeline_runs, job_runs: schemas/015_job_runs.sql). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"

typedef struct {
  const char *pipeline, *step;
  long long limit;
  int json;
} jobs_args;

#define F(m) FINCH_OPT_FIELD(jobs_args, m)
static const finch_opt jobs_opts[] = {
    {"pipeline", 'p', FINCH_OPT_STRING, F(pipeline), .arg = "NAME", .help = "list: only this pipeline's runs"},
    {"limit", 0, FINCH_OPT_INT, F(limit), .def = "50", .min = 1, .max = 1e308, .arg = "N",
     .help = "list: at most N runs, newest first"},
    {"step", 's', FINCH_OPT_STRING, F(step), .arg = "STEP", .help = "logs: only this step's log tail"},
    {"json", 0, FINCH_OPT_BOOL, F(json), .help = "list, show: print JSON"},
};
#undef F

static int jobs_run(void *opts, const char **pos, size_t npos);
const cli_cmd cli_jobs = {
    "jobs", "pipeline runs and their steps: list, show, logs",
    "list [--pipeline P] [--json] | show RUN [--json] | logs RUN [--step S]",
    "The runs of finch pipeline run and their steps, from job_runs.\n"
    "  list  the runs, newest first: status, start, end, steps run/skipped/failed\n"
    "  show  one run's steps: status, exit code, times, inputs' SHA-256, outputs, command\n"
    "  logs  the last 8 KiB of each step's output (--step: one step's)",
    "A run still 'running' whose runner was killed is marked failed by the next run of the same\n"
    "pipeline; finch pipeline run --resume RUN continues it.",
    jobs_opts, CLI_N(jobs_opts), sizeof(jobs_args), NULL, 2, jobs_run, 0};

static const char *str(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_string(v) ? json_string_value(v) : "-";
}

#define RUN_JSON                                                                                                  \
  "json_build_object('id', r.id, 'pipeline', r.pipeline, 'file', r.file, 'file_sha256', r.file_sha256, 'status', " \
  "r.status, 'resumes', r.resumes, 'started_at', to_char(r.started_at, 'YYYY-MM-DD HH24:MI:SS'), 'finished_at', " \
  "to_char(r.finished_at, 'YYYY-MM-DD HH24:MI:SS'), 'succeeded', (SELECT count(*) FROM job_runs j WHERE "          \
  "j.run_id = r.id AND j.status = 'succeeded'), 'skipped', (SELECT count(*) FROM job_runs j WHERE j.run_id = "    \
  "r.id AND j.status = 'skipped'), 'failed', (SELECT count(*) FROM job_runs j WHERE j.run_id = r.id AND "         \
  "j.status = 'failed'))"

static int jobs_list(finch_db *db, const jobs_args *a) {
  char lim[32];
  snprintf(lim, sizeof lim, "%lld", a->limit);
  const char *p[] = {a->pipeline, lim};
  json_t *j = cli_query_json(db,
                         "SELECT coalesce(json_agg(x ORDER BY (x->>'id')::bigint DESC), '[]')::text FROM (SELECT " RUN_JSON
                         " AS x FROM pipeline_runs r WHERE $1::text IS NULL OR r.pipeline = $1 ORDER BY r.id DESC "
                         "LIMIT $2::bigint) s",
                         2, p);
  if (!j) return 1;
  if (a->json) {
    cli_print_json(j);
    return 0;
  }
  printf("run\tpipeline\tstatus\tstarted_at\tfinished_at\tsucceeded\tskipped\tfailed\n");
  size_t i;
  json_t *r;
  json_array_foreach(j, i, r) printf("%lld\t%s\t%s\t%s\t%s\t%lld\t%lld\t%lld\n",
                                     (long long)json_integer_value(json_object_get(r, "id")), str(r, "pipeline"),
                                     str(r, "status"), str(r, "started_at"), str(r, "finished_at"),
                                     (long long)json_integer_value(json_object_get(r, "succeeded")),
                                     (long long)json_integer_value(json_object_get(r, "skipped")),
                                     (long long)json_integer_value(json_object_get(r, "failed")));
  json_decref(j);
  return 0;
}

static int jobs_show(finch_db *db, const char *run, int as_json) {
  const char *p[] = {run};
  json_t *j = cli_query_json(
      db,
      "SELECT coalesce((SELECT (" RUN_JSON "::jsonb || jsonb_build_object('steps', (SELECT coalesce(json_agg("
      "json_build_object('id', j.id, 'step', j.step, 'status', j.status, 'exit_code', j.exit_code, "
      "'command', j.command, 'inputs_sha256', j.inputs_sha256, 'outputs', j.outputs, 'skipped_from', "
      "j.skipped_from, 'started_at', to_char(j.started_at, 'YYYY-MM-DD HH24:MI:SS'), 'finished_at', "
      "to_char(j.finished_at, 'YYYY-MM-DD HH24:MI:SS'), 'seconds', round(extract(epoch FROM j.finished_at - "
      "j.started_at)::numeric, 1)) ORDER BY j.id), '[]') FROM job_runs j WHERE j.run_id = r.id)))::text "
      "FROM pipeline_runs r WHERE r.id = $1::bigint), 'null')",
      1, p);
  if (!j) return 1;
  if (json_is_null(j)) {
    fprintf(stderr, "finch jobs: run %s does not exist (finch jobs list)\n", run);
    return 1;
  }
  if (as_json) {
    cli_print_json(j);
    return 0;
  }
  printf("run %s: pipeline %s, %s, started %s, finished %s%s\nfile %s (sha256 %s)\n", run, str(j, "pipeline"),
         str(j, "status"), str(j, "started_at"), str(j, "finished_at"),
         json_integer_value(json_object_get(j, "resumes")) ? ", resumed" : "", str(j, "file"), str(j, "file_sha256"));
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(j, "steps"), i, s) {
    char *outs = json_dumps(json_object_get(s, "outputs"), JSON_COMPACT | JSON_SORT_KEYS);
    json_t *code = json_object_get(s, "exit_code");
    printf("  %s: %s", str(s, "step"), str(s, "status"));
    if (json_is_integer(code)) printf(", exit code %lld", (long long)json_integer_value(code));
    if (json_is_integer(json_object_get(s, "skipped_from")))
      printf(" (outputs of job %lld)", (long long)json_integer_value(json_object_get(s, "skipped_from")));
    printf(", %s to %s\n    inputs sha256 %s\n    outputs %s\n    %s\n", str(s, "started_at"),
           str(s, "finished_at"), str(s, "inputs_sha256"), outs ? outs : "{}", str(s, "command"));
    free(outs);
  }
  json_decref(j);
  return 0;
}

static int jobs_logs(finch_db *db, const char *run, const char *step) {
  finch_err err;
  const char *p[] = {run, step};
  PGresult *r = finch_db_query(db,
                               "SELECT step, status, log_tail, (SELECT count(*) FROM pipeline_runs WHERE id = "
                               "$1::bigint) FROM job_runs WHERE run_id = $1::bigint AND ($2::text IS NULL OR "
                               "step = $2) AND status <> 'skipped' ORDER BY id",
                               2, p, &err);
  if (!r) return cli_fail(&err);
  int n = PQntuples(r);
  if (n == 0) {
    PQclear(r);
    fprintf(stderr, "finch jobs: run %s has no %s%s%s\n", run, step ? "step " : "steps that ran", step ? step : "",
            step ? " that ran" : "");
    return 1;
  }
  for (int i = 0; i < n; i++) {
    printf("== step %s (%s) ==\n%s", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    size_t len = strlen(PQgetvalue(r, i, 2));
    if (len && PQgetvalue(r, i, 2)[len - 1] != '\n') printf("\n");
  }
  PQclear(r);
  return 0;
}

static int jobs_run(void *opts, const char **pos, size_t npos) {
  jobs_args a = *(jobs_args *)opts;
  const char *action = npos ? pos[0] : "";
  int list = !strcmp(action, "list"), show = !strcmp(action, "show"), logs = !strcmp(action, "logs");
  if (!(list && npos == 1) && !((show || logs) && npos == 2)) return cli_usage_error(&cli_jobs, &a);
  if (!list) {
    char *end;
    long long id = strtoll(pos[1], &end, 10);
    if (end == pos[1] || *end || id <= 0) {
      fprintf(stderr, "finch jobs %s: run '%s': expected a positive integer\n", action, pos[1]);
      return 2;
    }
  }
  finch_db *db = cli_db_open();
  if (!db) return 1;
  int rc = list ? jobs_list(db, &a) : show ? jobs_show(db, pos[1], a.json) : jobs_logs(db, pos[1], a.step);
  finch_db_close(db);
  return rc;
}
