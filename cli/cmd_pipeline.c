/* finch pipeline run|check: a pipeline file (cli/pipeline_file.h) run step by
 * step, each step a child process of this binary (cli/pipeline_exec.h),
 * each recorded in job_runs (schemas/015_job_runs.sql).
 *
 * The runner holds the pipeline's advisory lock (CLI_PIPELINE_LOCK_CLASS,
 * hashtext(name)) on its own connection for the whole run, so one run of a
 * pipeline goes at a time: a second runner waits, or with --no-wait exits 3.
 * Holding the lock, it knows that rows still 'running' belong to a runner
 * that died, and marks them failed before it starts. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/pipeline_exec.h"
#include "cli/pipeline_file.h"
#include "core/hash.h"
#include "serve/webhook.h"

/* The advisory lock's first key; the second is hashtext(pipeline name). */
#define CLI_PIPELINE_LOCK_CLASS "7240918"

enum { EXIT_OK = 0, EXIT_STEP_FAILED = 1, EXIT_USAGE = 2, EXIT_LOCKED = 3, EXIT_NO_DB = 4 };

typedef struct {
  long long resume;
  int no_wait, quiet;
} pipeline_args;

#define F(m) FINCH_OPT_FIELD(pipeline_args, m)
static const finch_opt pipeline_opts[] = {
    {"resume", 0, FINCH_OPT_INT, F(resume), .min = 1, .max = 1e308, .arg = "RUN",
     .flags = FINCH_OPT_HIDE_DEFAULT,
     .help = "run: continue run RUN from its first step that did not succeed, with the outputs of those that did "
             "(FILE defaults to the file of that run)"},
    {"no-wait", 0, FINCH_OPT_BOOL, F(no_wait),
     .help = "run: when another run of this pipeline holds its lock, exit 3 at once instead of waiting"},
    {"quiet", 'q', FINCH_OPT_BOOL, F(quiet), .help = "run: do not copy the steps' output to standard error"},
};
#undef F

static int pipeline_run_cmd(void *opts, const char **pos, size_t npos);
const cli_cmd cli_pipeline = {
    "pipeline", "run a pipeline file of steps, recorded as jobs (cron, systemd, Kubernetes)",
    "run FILE [--no-wait] [--quiet] | run [FILE] --resume RUN | check FILE",
    "Run the steps of a YAML pipeline file in the order their needs allow, each as\n"
    "`finch <command> <options> <args> --json`, recording each in job_runs (finch jobs).\n"
    "  run    run it; a step whose inputs are unchanged since its last success is skipped\n"
    "  check  read and check the file, print its steps in order, run nothing\n\n"
    "The file:\n"
    "  pipeline: retrain-banking          # required: the name, [a-z0-9_-]+\n"
    "  variables: {dataset: banking77}    # ${dataset} in with/args; ${env.NAME} reads the environment\n"
    "  steps:\n"
    "    - name: ingest                   # required, unique, [a-z0-9_-]+\n"
    "      run: ingest                    # ingest | augment | teacher train | distill | compile | eval |\n"
    "                                     # rollout promote | webhooks deliver\n"
    "      needs: [other-step]            # optional\n"
    "      with: {format: banking77, dataset: \"${dataset}\", holdout: 0.3}   # options by flag name;\n"
    "                                     # true = bare flag, false = omitted, lists joined by commas\n"
    "      args: [\"${env.FINCH_DATA_DIR}/banking77/train.csv\"]   # positional arguments\n"
    "      skip_if_unchanged: true        # default true\n"
    "  ${steps.NAME.FIELD}: an output of a step this one needs: model_id, teacher_id, report_id,\n"
    "  dataset, run_id, path, deployment, stage.",
    "A step's inputs: its command line, the SHA-256 of each argument naming a file, the outputs of the\n"
    "steps it needs, and for augment, teacher train, distill and eval the content version of the dataset\n"
    "read (its source rows' count, largest id, and a digest of ids, splits and labels). Outputs come from\n"
    "the command's --json (compile: its 'compiled model N: PATH' line). webhooks deliver runs --once.\n"
    "One run per pipeline name at a time (advisory lock " CLI_PIPELINE_LOCK_CLASS ", hashtext(name)).\n"
    "Events job.succeeded and job.failed go to the webhook outbox at the end of each run.\n"
    "Exit status: 0 every step succeeded or was skipped; 1 a step failed (its name and exit code\n"
    "printed); 2 usage or an invalid pipeline file; 3 another run holds the lock (--no-wait);\n"
    "4 the database is unreachable.",
    pipeline_opts, CLI_N(pipeline_opts), sizeof(pipeline_args), NULL, 2, pipeline_run_cmd, 0};

/* The state of one run: each step's outputs once it is done. */
typedef struct {
  const cli_pipeline_file *p;
  json_t **outputs; /* per step, NULL until done */
  char buf[64];
} run_state;

static const char *run_output(void *ctx, const char *step, const char *field) {
  run_state *rs = ctx;
  for (size_t i = 0; i < rs->p->n_steps; i++) {
    if (strcmp(rs->p->steps[i].name, step) || !rs->outputs[i]) continue;
    json_t *v = json_object_get(rs->outputs[i], field);
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_integer(v)) {
      snprintf(rs->buf, sizeof rs->buf, "%lld", (long long)json_integer_value(v));
      return rs->buf;
    }
  }
  return NULL;
}

/* A command line for people: words with shell-special bytes single-quoted. */
static char *quote_argv(char *const *argv) {
  size_t cap = 64;
  for (size_t i = 0; argv[i]; i++) cap += 4 * strlen(argv[i]) + 3;
  char *s = malloc(cap), *o = s;
  if (!s) return NULL;
  for (size_t i = 0; argv[i]; i++) {
    const char *a = argv[i];
    int plain = *a != '\0';
    for (const char *c = a; *c && plain; c++) plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                            "0123456789-_./=:,+@%", *c) != NULL;
    if (i) *o++ = ' ';
    if (plain) {
      o += sprintf(o, "%s", a);
      continue;
    }
    *o++ = '\'';
    for (const char *c = a; *c; c++) o += *c == '\'' ? sprintf(o, "'\\''") : sprintf(o, "%c", *c);
    *o++ = '\'';
  }
  *o = '\0';
  return s;
}

typedef struct {
  char **argv;
  size_t n;
  char *dataset; /* the expanded --dataset, or NULL */
} step_argv;

static void step_argv_free(step_argv *a) {
  for (size_t i = 0; i < a->n; i++) free(a->argv[i]);
  free(a->argv);
  free(a->dataset);
}

/* finch <words> --opt value ... <args> [--json] [extra], expanded. */
static finch_status build_argv(run_state *rs, size_t i, step_argv *a, finch_err *err) {
  const cli_pipeline_step *s = &rs->p->steps[i];
  memset(a, 0, sizeof *a);
  a->argv = calloc(2 * s->n_with + s->n_args + 6, sizeof *a->argv);
  if (!a->argv) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  a->argv[a->n++] = strdup("finch");
  for (size_t w = 0; w < s->command->n_words; w++) a->argv[a->n++] = strdup(s->command->words[w]);
  char key[160];
  finch_status st = FINCH_OK;
  for (size_t k = 0; k < s->n_with && !st; k++) {
    const cli_pipeline_opt *o = &s->with[k];
    if (o->kind == CLI_PL_FALSE) continue;
    char flag[96];
    snprintf(flag, sizeof flag, "--%s", o->key);
    a->argv[a->n++] = strdup(flag);
    if (o->kind == CLI_PL_TRUE) continue;
    snprintf(key, sizeof key, "steps.%s.with.%s", s->name, o->key);
    char *v;
    if ((st = cli_pipeline_expand(rs->p, o->value, key, o->line, o->col, run_output, rs, &v, err))) break;
    a->argv[a->n++] = v;
    if (!strcmp(o->key, "dataset")) a->dataset = strdup(v);
  }
  for (size_t k = 0; k < s->n_args && !st; k++) {
    snprintf(key, sizeof key, "steps.%s.args[%zu]", s->name, k);
    char *v;
    if (!(st = cli_pipeline_expand(rs->p, s->args[k].text, key, s->args[k].line, s->args[k].col, run_output, rs, &v,
                                   err)))
      a->argv[a->n++] = v;
  }
  if (!st && s->command->json) a->argv[a->n++] = strdup("--json");
  if (!st && s->command->extra) a->argv[a->n++] = strdup(s->command->extra);
  for (size_t k = 0; k < a->n; k++)
    if (!a->argv[k]) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  return st;
}

/* The step's inputs_sha256 (schemas/015_job_runs.sql). */
static finch_status inputs_hash(finch_db *db, run_state *rs, size_t i, const step_argv *a,
                                char out[FINCH_SHA256_HEX_LEN], finch_err *err) {
  const cli_pipeline_step *s = &rs->p->steps[i];
  finch_sha256 *h = finch_sha256_new();
  if (!h) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  finch_sha256_update(h, "finch-pipeline-inputs-v1\n", 25);
  for (size_t k = 0; k < a->n; k++) finch_sha256_update(h, a->argv[k], strlen(a->argv[k]) + 1);
  finch_status st = FINCH_OK;
  for (size_t k = 1; k < a->n && !st; k++) {
    struct stat sb;
    char sha[FINCH_SHA256_HEX_LEN];
    /* A file the step writes (compile's -o/--output) is its output, not an
     * input: hashing it would make every run after a success differ. */
    if (!strcmp(a->argv[k - 1], "-o") || !strcmp(a->argv[k - 1], "--output")) continue;
    if (stat(a->argv[k], &sb) || !S_ISREG(sb.st_mode)) continue;
    if ((st = finch_sha256_file(a->argv[k], sha, err))) break;
    finch_sha256_update(h, "file\n", 5);
    finch_sha256_update(h, sha, 64);
  }
  for (size_t k = 0; k < s->n_needs && !st; k++) {
    char *j = json_dumps(rs->outputs[s->needs[k]], JSON_COMPACT | JSON_SORT_KEYS);
    finch_sha256_update(h, "need\n", 5);
    if (j) finch_sha256_update(h, j, strlen(j) + 1);
    free(j);
  }
  if (!st && s->command->reads_dataset && a->dataset) {
    const char *p[] = {a->dataset};
    PGresult *r = finch_db_query(
        db,
        "SELECT count(*)::text || ':' || coalesce(max(u.id), 0)::text || ':' || md5(coalesce(string_agg("
        "u.id::text || ',' || u.split || ',' || coalesce(u.label, ''), ';' ORDER BY u.id), '')) "
        "FROM utterances u JOIN datasets d ON d.id = u.dataset_id WHERE d.name = $1 AND u.origin = 'source'",
        1, p, err);
    if (!r) {
      st = FINCH_EDB;
    } else {
      finch_sha256_update(h, "dataset\n", 8);
      finch_sha256_update(h, PQgetvalue(r, 0, 0), strlen(PQgetvalue(r, 0, 0)) + 1);
      PQclear(r);
    }
  }
  finch_sha256_final(h, out);
  return st;
}

/* What a step produced: from its --json,
 * or compile's text; plus the dataset it was given. */
static json_t *step_outputs(const cli_pipeline_step *s, const step_argv *a, const char *out) {
  json_t *o = json_object(), *j = NULL;
  if (a->dataset) json_object_set_new(o, "dataset", json_string(a->dataset));
  const char *run = s->command->run;
  if (!strcmp(run, "compile")) {
    const char *line = strstr(out, "compiled model ");
    long long id;
    int n = 0;
    if (line && sscanf(line, "compiled model %lld: %n", &id, &n) == 1 && n > 0) {
      json_object_set_new(o, "model_id", json_integer(id));
      const char *end = strstr(line + n, " (");
      if (end) json_object_set_new(o, "path", json_stringn(line + n, (size_t)(end - line - n)));
    }
    return o;
  }
  if (!s->command->json) return o;
  /* The summary is the last object that starts a line and runs to the end
   * (one line, or pretty-printed over several). */
  const char *end = out + strlen(out);
  for (const char *e = end; e > out && !j;) {
    const char *b = e;
    while (b > out && b[-1] != '\n') b--;
    if (*b == '{') j = json_loadb(b, (size_t)(end - b), 0, NULL);
    e = b > out ? b - 1 : out;
  }
  if (!j) return o;
  json_t *v;
  if (!strcmp(run, "distill")) {
    if ((v = json_object_get(json_object_get(j, "student"), "id"))) json_object_set(o, "model_id", v);
    if ((v = json_object_get(json_object_get(j, "student"), "path"))) json_object_set(o, "path", v);
    if ((v = json_object_get(json_object_get(j, "teacher"), "id"))) json_object_set(o, "teacher_id", v);
  } else if (!strcmp(run, "teacher train")) {
    if ((v = json_object_get(j, "id"))) json_object_set(o, "model_id", v);
    if ((v = json_object_get(j, "path"))) json_object_set(o, "path", v);
  } else if (!strcmp(run, "rollout promote")) {
    if ((v = json_object_get(j, "deployment"))) json_object_set(o, "deployment", v);
    if ((v = json_object_get(j, "to"))) json_object_set(o, "stage", v);
  } else {
    static const char *const keys[] = {"run_id", "teacher_id", "report_id", "model_id"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
      if ((v = json_object_get(j, keys[k])) && !json_is_null(v)) json_object_set(o, keys[k], v);
  }
  json_decref(j);
  return o;
}

static char *jdump(json_t *j) { return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS); }

/* Runs (or skips) step i of run `run`; returns 0 on success or skip, else the
 * step's exit code (at least 1). */
static int run_step(finch_db *db, run_state *rs, long long run, size_t i, int quiet, finch_err *err) {
  const cli_pipeline_step *s = &rs->p->steps[i];
  step_argv a;
  char sha[FINCH_SHA256_HEX_LEN], runs[32], ids[32];
  snprintf(runs, sizeof runs, "%lld", run);
  if (build_argv(rs, i, &a, err) || inputs_hash(db, rs, i, &a, sha, err)) {
    step_argv_free(&a);
    fprintf(stderr, "finch pipeline: step %s: %s\n", s->name, err->msg);
    return 1;
  }
  char *cmd = quote_argv(a.argv);
  const char *p[6] = {runs, rs->p->name, s->name, cmd, sha, NULL};
  PGresult *r = NULL;
  if (s->skip_if_unchanged) {
    const char *q[] = {rs->p->name, s->name};
    r = finch_db_query(db,
                       "SELECT id, run_id, inputs_sha256, outputs::text FROM job_runs WHERE pipeline = $1 AND "
                       "step = $2 AND status = 'succeeded' ORDER BY id DESC LIMIT 1",
                       2, q, err);
    if (r && PQntuples(r) == 1 && !strcmp(PQgetvalue(r, 0, 2), sha)) {
      p[5] = PQgetvalue(r, 0, 0);
      const char *prow[] = {runs, rs->p->name, s->name, cmd, sha, p[5], PQgetvalue(r, 0, 3)};
      if (finch_db_run(db,
                       "INSERT INTO job_runs (run_id, pipeline, step, command, inputs_sha256, skipped_from, outputs,"
                       " status, exit_code, finished_at) VALUES ($1::bigint, $2, $3, $4, $5, $6::bigint, $7::jsonb,"
                       " 'skipped', 0, now())",
                       7, prow, err)) {
        PQclear(r);
        goto db_fail;
      }
      rs->outputs[i] = json_loads(PQgetvalue(r, 0, 3), 0, NULL);
      printf("step %s: skipped (inputs unchanged since run %s)\n", s->name, PQgetvalue(r, 0, 1));
      PQclear(r);
      free(cmd);
      step_argv_free(&a);
      return 0;
    }
    if (!r) goto db_fail;
    PQclear(r);
  }
  r = finch_db_query(db,
                     "INSERT INTO job_runs (run_id, pipeline, step, command, inputs_sha256, status) VALUES "
                     "($1::bigint, $2, $3, $4, $5, 'running') RETURNING id",
                     5, p, err);
  if (!r) goto db_fail;
  snprintf(ids, sizeof ids, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  printf("step %s: running %s\n", s->name, cmd);
  fflush(stdout);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  cli_pipeline_child ch;
  finch_status st = cli_pipeline_exec(a.argv, quiet, &ch, err);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (st) {
    snprintf(ch.tail, sizeof ch.tail, "%s", err->msg);
    ch.exit_code = 127;
  }
  json_t *outs = ch.exit_code == 0 ? step_outputs(s, &a, ch.out) : json_object();
  char *oj = jdump(outs), code[16];
  snprintf(code, sizeof code, "%d", ch.exit_code);
  const char *up[] = {ids, ch.exit_code ? "failed" : "succeeded", code, oj ? oj : "{}", ch.tail};
  st = finch_db_run(db,
                    "UPDATE job_runs SET status = $2, exit_code = $3::int, outputs = $4::jsonb, log_tail = $5, "
                    "finished_at = now() WHERE id = $1::bigint",
                    5, up, err);
  free(oj);
  free(ch.out);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  if (st) {
    json_decref(outs);
    goto db_fail;
  }
  if (ch.exit_code) {
    json_decref(outs);
    printf("step %s: failed with exit code %d after %.1f s (finch jobs logs %lld --step %s)\n", s->name,
           ch.exit_code, secs, run, s->name);
  } else {
    rs->outputs[i] = outs;
    char *shown = jdump(outs);
    printf("step %s: succeeded in %.1f s %s\n", s->name, secs, shown ? shown : "");
    free(shown);
  }
  free(cmd);
  step_argv_free(&a);
  return ch.exit_code;
db_fail:
  fprintf(stderr, "finch pipeline: step %s: %s\n", s->name, err->msg);
  free(cmd);
  step_argv_free(&a);
  return 1;
}

/* Marks the run finished and queues job.succeeded or job.failed, in one transaction. */
static finch_status finish_run(finch_db *db, run_state *rs, long long run, const char *failed_step, int code,
                               finch_err *err) {
  PGconn *c = finch_db_conn(db);
  char runs[32];
  snprintf(runs, sizeof runs, "%lld", run);
  json_t *steps = json_array();
  for (size_t k = 0; k < rs->p->n_steps; k++) {
    size_t i = rs->p->order[k];
    json_array_append_new(steps, json_pack("{s:s, s:O}", "step", rs->p->steps[i].name, "outputs",
                                           rs->outputs[i] ? rs->outputs[i] : json_null()));
  }
  json_t *payload = json_pack("{s:s, s:I, s:s, s:o, s:o}", "pipeline", rs->p->name, "run_id", (json_int_t)run,
                              "status", failed_step ? "failed" : "succeeded", "failed_step",
                              failed_step ? json_string(failed_step) : json_null(), "steps", steps);
  if (failed_step) json_object_set_new(payload, "exit_code", json_integer(code));
  char *pj = jdump(payload);
  json_decref(payload);
  const char *p[] = {runs, failed_step ? "failed" : "succeeded"};
  finch_status st = finch_db_begin_on(c, err);
  if (!st) st = finch_db_run_on(c, "UPDATE pipeline_runs SET status = $2, finished_at = now() WHERE id = $1::bigint",
                                2, p, err);
  if (!st) st = finch_webhook_emit(c, failed_step ? "job.failed" : "job.succeeded", pj ? pj : "{}", NULL, err);
  if (!st) st = finch_db_commit_on(c, err);
  if (st) finch_db_rollback_on(c);
  free(pj);
  return st;
}

/* Takes the pipeline's lock: EXIT_OK, EXIT_LOCKED (no_wait) or EXIT_NO_DB. */
static int take_lock(finch_db *db, const char *name, int no_wait) {
  finch_err err;
  const char *p[] = {name};
  PGresult *r = finch_db_query(db, "SELECT pg_try_advisory_lock(" CLI_PIPELINE_LOCK_CLASS ", hashtext($1))", 1, p,
                               &err);
  if (!r) return (void)cli_fail(&err), EXIT_NO_DB;
  int got = !strcmp(PQgetvalue(r, 0, 0), "t");
  PQclear(r);
  if (got) return EXIT_OK;
  if (no_wait) {
    fprintf(stderr, "finch pipeline: another run of pipeline %s holds its lock; not waiting (--no-wait)\n", name);
    return EXIT_LOCKED;
  }
  fprintf(stderr, "finch pipeline: another run of pipeline %s holds its lock; waiting for it to end\n", name);
  if (finch_db_run(db, "SELECT pg_advisory_lock(" CLI_PIPELINE_LOCK_CLASS ", hashtext($1))", 1, p, &err)) {
    cli_fail(&err);
    return EXIT_NO_DB;
  }
  return EXIT_OK;
}

/* Rows left 'running' by a runner that died (we hold the lock: none is alive). */
static finch_status close_stale(finch_db *db, const char *name, finch_err *err) {
  const char *p[] = {name};
  finch_status st = finch_db_run(db,
                                 "UPDATE job_runs SET status = 'failed', finished_at = now(), log_tail = log_tail || "
                                 "E'\\n(the runner stopped before the step ended)' WHERE pipeline = $1 AND "
                                 "status = 'running'",
                                 1, p, err);
  if (!st)
    st = finch_db_run(db,
                      "UPDATE pipeline_runs SET status = 'failed', finished_at = now() WHERE pipeline = $1 AND "
                      "status = 'running'",
                      1, p, err);
  return st;
}

/* Starts run *run (new, or the resumed one) and loads the outputs of the
 * resumed run's done steps into rs. Returns an exit code, -1 to go on. */
static int start_run(finch_db *db, run_state *rs, long long *run, const char *abs_path) {
  finch_err err;
  char runs[32];
  snprintf(runs, sizeof runs, "%lld", *run);
  if (!*run) {
    const char *p[] = {rs->p->name, abs_path, rs->p->sha256};
    PGresult *r = finch_db_query(
        db, "INSERT INTO pipeline_runs (pipeline, file, file_sha256) VALUES ($1, $2, $3) RETURNING id", 3, p, &err);
    if (!r) return cli_fail(&err);
    *run = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    printf("pipeline %s: run %lld of %s\n", rs->p->name, *run, abs_path);
    return -1;
  }
  const char *p[] = {runs, rs->p->sha256};
  if (finch_db_run(db,
                   "UPDATE pipeline_runs SET status = 'running', finished_at = NULL, resumes = resumes + 1, "
                   "file_sha256 = $2 WHERE id = $1::bigint",
                   2, p, &err))
    return cli_fail(&err);
  PGresult *r = finch_db_query(db,
                               "SELECT DISTINCT ON (step) step, status, outputs::text FROM job_runs WHERE "
                               "run_id = $1::bigint ORDER BY step, id DESC",
                               1, p, &err);
  if (!r) return cli_fail(&err);
  for (int k = 0; k < PQntuples(r); k++) {
    const char *status = PQgetvalue(r, k, 1);
    if (strcmp(status, "succeeded") && strcmp(status, "skipped")) continue;
    for (size_t i = 0; i < rs->p->n_steps; i++)
      if (!strcmp(rs->p->steps[i].name, PQgetvalue(r, k, 0)) && !rs->outputs[i])
        rs->outputs[i] = json_loads(PQgetvalue(r, k, 2), 0, NULL);
  }
  PQclear(r);
  printf("pipeline %s: resuming run %lld\n", rs->p->name, *run);
  return -1;
}

/* The run's pipeline and file, for --resume. Returns an exit code, -1 to go on. */
static int resumed_run(finch_db *db, long long run, char *name, size_t name_n, char *file, size_t file_n) {
  finch_err err;
  char runs[32];
  snprintf(runs, sizeof runs, "%lld", run);
  const char *p[] = {runs};
  PGresult *r = finch_db_query(db, "SELECT pipeline, file, status FROM pipeline_runs WHERE id = $1::bigint", 1, p,
                               &err);
  if (!r) return (void)cli_fail(&err), EXIT_NO_DB;
  if (PQntuples(r) != 1) {
    PQclear(r);
    fprintf(stderr, "finch pipeline: run %lld does not exist (finch jobs list)\n", run);
    return EXIT_USAGE;
  }
  snprintf(name, name_n, "%s", PQgetvalue(r, 0, 0));
  snprintf(file, file_n, "%s", PQgetvalue(r, 0, 1));
  PQclear(r);
  return -1;
}

static int check_cmd(const char *path) {
  cli_pipeline_file p;
  finch_err err;
  if (cli_pipeline_load(path, &p, &err)) {
    fprintf(stderr, "finch pipeline: %s\n", err.msg);
    return EXIT_USAGE;
  }
  printf("pipeline %s: %zu steps, in this order:\n", p.name, p.n_steps);
  for (size_t k = 0; k < p.n_steps; k++) {
    const cli_pipeline_step *s = &p.steps[p.order[k]];
    printf("  %s: finch %s", s->name, s->command->run);
    for (size_t n = 0; n < s->n_needs; n++) printf("%s%s", n ? ", " : " (needs ", p.steps[s->needs[n]].name);
    printf("%s\n", s->n_needs ? ")" : "");
  }
  cli_pipeline_free(&p);
  return EXIT_OK;
}

static int pipeline_run_cmd(void *opts, const char **pos, size_t npos) {
  pipeline_args a = *(pipeline_args *)opts;
  const char *action = npos ? pos[0] : "";
  if (!strcmp(action, "check") && npos == 2) return check_cmd(pos[1]);
  if (strcmp(action, "run") || npos > 2 || (npos < 2 && !a.resume)) return cli_usage_error(&cli_pipeline, &a);
  finch_db *db = cli_db_open();
  if (!db) return EXIT_NO_DB;
  char name[256] = "", file[PATH_MAX] = "";
  int rc = -1;
  if (a.resume) rc = resumed_run(db, a.resume, name, sizeof name, file, sizeof file);
  if (rc >= 0) {
    finch_db_close(db);
    return rc;
  }
  const char *path = npos == 2 ? pos[1] : file;
  cli_pipeline_file p;
  finch_err err;
  if (cli_pipeline_load(path, &p, &err) || cli_pipeline_check_env(&p, &err)) {
    if (p.name) cli_pipeline_free(&p);
    fprintf(stderr, "finch pipeline: %s\n", err.msg);
    finch_db_close(db);
    return EXIT_USAGE;
  }
  if (a.resume && strcmp(name, p.name)) {
    fprintf(stderr, "finch pipeline: run %lld is of pipeline %s, not %s (%s)\n", a.resume, name, p.name, path);
    cli_pipeline_free(&p);
    finch_db_close(db);
    return EXIT_USAGE;
  }
  char abs_path[PATH_MAX];
  if (!realpath(path, abs_path)) snprintf(abs_path, sizeof abs_path, "%s", path);
  run_state rs = {.p = &p, .outputs = calloc(p.n_steps, sizeof(json_t *))};
  long long run = a.resume;
  rc = take_lock(db, p.name, a.no_wait);
  if (rc == EXIT_OK) {
    rc = -1;
    if (close_stale(db, p.name, &err)) rc = cli_fail(&err);
  }
  if (rc < 0 && a.resume) {
    char runs[32];
    snprintf(runs, sizeof runs, "%lld", run);
    const char *q[] = {runs};
    PGresult *r = finch_db_query(db, "SELECT status FROM pipeline_runs WHERE id = $1::bigint", 1, q, &err);
    if (!r) rc = cli_fail(&err);
    else if (!strcmp(PQgetvalue(r, 0, 0), "succeeded")) {
      printf("pipeline %s: run %lld succeeded already; nothing to resume\n", p.name, run);
      rc = EXIT_OK;
    }
    PQclear(r);
  }
  if (rc < 0) rc = start_run(db, &rs, &run, abs_path);
  const char *failed = NULL;
  int code = 0;
  for (size_t k = 0; rc < 0 && k < p.n_steps && !failed; k++) {
    size_t i = p.order[k];
    if (rs.outputs[i]) {
      printf("step %s: done in run %lld before it was resumed\n", p.steps[i].name, run);
      continue;
    }
    if ((code = run_step(db, &rs, run, i, a.quiet, &err))) failed = p.steps[i].name;
  }
  if (rc < 0) {
    if (finish_run(db, &rs, run, failed, code, &err)) fprintf(stderr, "finch pipeline: %s\n", err.msg);
    if (failed)
      printf("pipeline %s: run %lld failed at step %s (exit code %d); finch pipeline run --resume %lld continues it\n",
             p.name, run, failed, code, run);
    else
      printf("pipeline %s: run %lld succeeded\n", p.name, run);
    rc = failed ? EXIT_STEP_FAILED : EXIT_OK;
  }
  for (size_t i = 0; i < p.n_steps; i++) json_decref(rs.outputs[i]);
  free(rs.outputs);
  cli_pipeline_free(&p);
  finch_db_close(db);
  return rc;
}
