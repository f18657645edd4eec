/* Running one pipeline step as a child process of the same binary. */
#ifndef FINCH_CLI_PIPELINE_EXEC_H
#define FINCH_CLI_PIPELINE_EXEC_H

#include <stddef.h>

#include "core/status.h"

#define CLI_PIPELINE_TAIL 8192 /* bytes of a step's output kept as its log tail */

typedef struct {
  char *out;      /* its standard output, the last 4 MiB of it, NUL-terminated; malloc'd */
  size_t out_len;
  char tail[CLI_PIPELINE_TAIL + 1]; /* the last bytes of standard output and error as they came, valid UTF-8 */
  size_t tail_len;
  int exit_code; /* the child's, or 128 + the signal that ended it */
} cli_pipeline_child;

/* Runs /proc/self/exe with argv (argv[0] is the name it sees) and waits for
 * it: standard input /dev/null, standard output and error read here, copied
 * to our standard error unless quiet. The global settings given by flag or
 * file (home, database, data directory, log level) go to the child through
 * their environment variables, so it finds the same database. The child is
 * killed when this process dies (PR_SET_PDEATHSIG), so a killed runner leaves
 * no step running. Release ch->out with free(). */
finch_status cli_pipeline_exec(char *const *argv, int quiet, cli_pipeline_child *ch, finch_err *err);

#endif
