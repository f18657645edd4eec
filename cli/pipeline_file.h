/* A pipeline file: the YAML that `finch pipeline run FILE` executes.
 *
 *   pipeline: retrain-banking        required: the name, [a-z0-9_-]+; the key of the
 *                                    run lock and of job_runs
 *   variables:                       optional: name -> string. ${name} may appear in
 *     dataset: banking77             any with value or argument; ${env.NAME} reads the
 *                                    environment (also inside a variable's value)
 *   steps:                           required, non-empty; run in an order consistent
 *     - name: ingest                 with needs (file order where needs allow)
 *       run: ingest                  required: ingest | augment | teacher train | distill |
 *                                    compile | eval | rollout promote | webhooks deliver
 *       needs: [other-step]          optional: steps that must succeed first
 *       with: {format: banking77}    the command's options by flag name: true = a bare
 *                                    flag, false = omitted, a list = items joined by commas
 *       args: ["${env.FINCH_DATA_DIR}/banking77/train.csv"]   positional arguments
 *       skip_if_unchanged: true      optional, default true
 *
 * ${steps.NAME.FIELD} names an output of an earlier step that this step needs
 * (directly or through other steps): FIELD is one of model_id, teacher_id,
 * report_id, dataset, run_id, path, deployment, stage. A `$` not followed by
 * `{` is literal.
 *
 * Every error names FILE:LINE:COLUMN (1-based) and the key, e.g.
 * `p.yaml:7:10: steps[1].run: unknown command 'trian' (expected ...)`. */
#ifndef FINCH_CLI_PIPELINE_FILE_H
#define FINCH_CLI_PIPELINE_FILE_H

#include <stddef.h>

#include "cli/args.h"
#include "core/hash.h"
#include "core/status.h"

/* One runnable command: its words after `finch`, whether it prints --json,
 * and what the runner adds (webhooks deliver: --once, so the step ends). */
typedef struct {
  const char *run; /* as written in the file */
  const char *words[2];
  size_t n_words;
  const cli_cmd *cmd; /* its options, to check the with keys against */
  int json;
  const char *extra;
  int reads_dataset; /* its --dataset is read: the dataset's content version is an input */
} cli_pipeline_command;

extern const cli_pipeline_command cli_pipeline_commands[];
extern const size_t cli_pipeline_n_commands;

typedef enum { CLI_PL_STRING, CLI_PL_TRUE, CLI_PL_FALSE } cli_pipeline_kind;

typedef struct {
  char *key, *value; /* value: the string, or a list's items joined by commas; NULL for true/false */
  cli_pipeline_kind kind;
  int line, col;
} cli_pipeline_opt;

typedef struct {
  char *text;
  int line, col;
} cli_pipeline_scalar;

typedef struct {
  char *name;
  const cli_pipeline_command *command;
  size_t *needs; /* indexes into steps */
  size_t n_needs;
  cli_pipeline_opt *with;
  size_t n_with;
  cli_pipeline_scalar *args;
  size_t n_args;
  int skip_if_unchanged;
  int line, col;
} cli_pipeline_step;

typedef struct {
  char *path, *name;
  char sha256[FINCH_SHA256_HEX_LEN]; /* of the file's bytes */
  cli_pipeline_scalar *var_names, *var_values;
  size_t n_vars;
  cli_pipeline_step *steps;
  size_t n_steps;
  size_t *order; /* the steps' indexes in the order they run */
} cli_pipeline_file;

/* Reads and checks path: syntax, keys, names, commands, option names, needs
 * (unknown steps, cycles) and every ${...} reference. On success *out is
 * filled (release with cli_pipeline_free); on failure err names
 * FILE:LINE:COLUMN and the key, and *out is left empty. */
finch_status cli_pipeline_load(const char *path, cli_pipeline_file *out, finch_err *err);
void cli_pipeline_free(cli_pipeline_file *p);

/* Answers ${steps.STEP.FIELD}: the value (owned by the resolver, valid until
 * the next call) or NULL when that step has no such output. */
typedef const char *(*cli_pipeline_output_fn)(void *ctx, const char *step, const char *field);

/* Expands every ${...} in text (from the file at line:col, key naming it in
 * errors) into a malloc'd *out. A variable of the environment that is not
 * set, or a step output that is missing, is an error naming the place. */
finch_status cli_pipeline_expand(const cli_pipeline_file *p, const char *text, const char *key, int line, int col,
                                 cli_pipeline_output_fn outputs, void *ctx, char **out, finch_err *err);

/* Checks that every ${env.NAME} the file uses (directly or through a
 * variable) is set, so a run that cannot start is refused before it is
 * recorded. */
finch_status cli_pipeline_check_env(const cli_pipeline_file *p, finch_err *err);

/* 1 when step a needs step b, directly or through other steps. */
int cli_pipeline_depends(const cli_pipeline_file *p, size_t a, size_t b);

#endif
