/* The finch subcommands, each described by a cli_cmd (cli/args.h) whose run
 * takes argv with argv[0] = its name and returns the process exit code:
 * 0 success, 1 failure, 2 usage error. */
#ifndef FINCH_CLI_CLI_H
#define FINCH_CLI_CLI_H

#include <jansson.h>

#include "cli/args.h"
#include "core/db.h"
#include "core/hash.h"
#include "core/status.h"
#include "evaluate/evaluate.h"
#include "serve/rules.h"

/* The legacy rule pack: what finch serve falls back to and finch eval
 * measures as the baseline. */
#define CLI_DEFAULT_RULES FINCH_SOURCE_DIR "/serve/rules/banking77.rules"

/* The rule pack at path as an evaluation's baseline: loaded into *rules
 * (release with finch_rules_free after the evaluation), its SHA-256 into
 * sha, and b filled to answer from it (b points into sha and path). */
finch_status cli_eval_baseline(const char *path, finch_rules **rules, char sha[FINCH_SHA256_HEX_LEN],
                               finch_eval_baseline *b, finch_err *err);

extern const cli_cmd cli_db, cli_ingest, cli_augment, cli_teacher, cli_distill, cli_compile, cli_eval, cli_serve,
    cli_models, cli_runs, cli_rules, cli_demo, cli_rollout, cli_keys, cli_webhooks, cli_soft_labels, cli_monitor,
    cli_report, cli_pipeline, cli_jobs;

/* Prints "finch: error: <message>" and returns 1. */
int cli_fail(const finch_err *err);
/* Opens the database (starting the embedded cluster and migrating as
 * needed); prints the error and returns NULL on failure. */
finch_db *cli_db_open(void);
/* Prints j on one line (keys in insertion order) and releases it. */
void cli_print_json(json_t *j);
/* The one cell of a query that returns JSON, parsed (any JSON value); NULL
 * when the query failed or its text did not parse, the cause printed. */
json_t *cli_query_json(finch_db *db, const char *sql, int n, const char *const *p);
/* The whole command line, for reports that say how to reproduce them. */
const char *cli_command_line(void);

#endif
