/* The finch subcommands. Each takes argv with argv[0] = its name and returns
 * the process exit code: 0 success, 1 failure, 2 usage error. */
#ifndef FINCH_CLI_CLI_H
#define FINCH_CLI_CLI_H

#include <jansson.h>

#include "core/db.h"
#include "core/status.h"

int finch_cmd_db(int argc, char **argv);
int finch_cmd_ingest(int argc, char **argv);
int finch_cmd_augment(int argc, char **argv);
int finch_cmd_teacher(int argc, char **argv);
int finch_cmd_distill(int argc, char **argv);
int finch_cmd_compile(int argc, char **argv);
int finch_cmd_eval(int argc, char **argv);
int finch_cmd_serve(int argc, char **argv);
int finch_cmd_models(int argc, char **argv);
int finch_cmd_rules(int argc, char **argv);
int finch_cmd_demo(int argc, char **argv);
int finch_cmd_rollout(int argc, char **argv);
int finch_cmd_keys(int argc, char **argv);
int finch_cmd_webhooks(int argc, char **argv);
int finch_cmd_soft_labels(int argc, char **argv);

/* Prints "finch: error: <message>" and returns 1. */
int cli_fail(const finch_err *err);
/* Opens the database (starting the embedded cluster and migrating as
 * needed); prints the error and returns NULL on failure. */
finch_db *cli_db_open(void);
/* Prints j on one line (keys in insertion order) and releases it. */
void cli_print_json(json_t *j);
/* The whole command line, for reports that say how to reproduce them. */
const char *cli_command_line(void);

#endif
