/* Command-line options for the finch subcommands: each command declares a
 * table of options, and its --help is printed from the same table. */
#ifndef FINCH_CLI_ARGS_H
#define FINCH_CLI_ARGS_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
  const char *name;  /* long name: --name VALUE or --name=VALUE */
  char shortc;       /* -x VALUE, or 0 */
  const char *arg;   /* metavariable; NULL for a flag without value */
  const char *help;
  const char *value; /* parsed value ("1" for a flag); NULL when absent */
} cli_opt;

typedef struct {
  const char *name;
  const char *usage;   /* after "finch NAME " */
  const char *summary; /* one line */
  const char *details; /* paragraph after the options, may be NULL */
  cli_opt *opts;
  size_t nopts;
} cli_cmd;

/* Parses argv (argv[0] is the command name). Positionals go to pos. Returns
 * 0 on success, 1 when --help was printed, 2 on a usage error (printed). */
int cli_parse(cli_cmd *cmd, int argc, char **argv, const char **pos, size_t maxpos, size_t *npos);
void cli_usage(const cli_cmd *cmd, FILE *out);
const char *cli_get(const cli_cmd *cmd, const char *name);
/* Parses an option as a number; prints an error naming the option and
 * returns -1 when it is malformed. *out is unchanged when absent. */
int cli_get_double(const cli_cmd *cmd, const char *name, double *out);
int cli_get_long(const cli_cmd *cmd, const char *name, long long *out);

#endif
