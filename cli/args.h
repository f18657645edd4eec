/* The finch commands' options: each command declares one table of options
 * (core/config.h's finch_opt) filling the fields of its options struct; its
 * flags, --help, range errors, [section] in the config file and part of
 * `finch --settings` all come from that table. */
#ifndef FINCH_CLI_ARGS_H
#define FINCH_CLI_ARGS_H

#include <stddef.h>
#include <stdio.h>

#include "core/config.h"
#include "core/models.h"

#define CLI_N(a) (sizeof(a) / sizeof((a)[0]))

/* The negatives' options (a finch_negatives_query field "negatives"), shared
 * by finch teacher train and finch distill, whose tables define F(m) for
 * their own option struct before expanding it. */
#define CLI_NEGATIVES_OPTIONS                                                                                     \
  {"negatives", 0, FINCH_OPT_LIST, F(negatives.names), .arg = "LIST",                                          \
   .help = "out-of-scope training rows from these datasets (e.g. clinc150,sgd_general), one more label 'oos'"}, \
  {"negatives-exclude", 0, FINCH_OPT_LIST, F(negatives.negatives_exclude), .arg = "LIST",                      \
   .help = "negatives: leave out rows of these domains or intents (e.g. banking,credit_cards,exchange_rate: "   \
           "CLINC150's finance intents)"},                                                                    \
  {"negatives-max", 0, FINCH_OPT_INT, F(negatives.max), .def = "3000", .min = 0, .max = 1e308, .arg = "N",     \
   .help = "negatives: at most N rows, a sample seeded by --seed (0 = all)"}
/* The quality gate's options (core/models.h), for the commands that register
 * a teacher (min_margin, allow_failed) or a student (min_teacher_ratio too);
 * F(m) as above. */
#define CLI_GATE_TEACHER_OPTIONS                                                                                  \
  {"min-margin", 0, FINCH_OPT_FLOAT, F(min_margin), .def = FINCH_GATE_MIN_MARGIN, .min = 0, .max = 1,           \
   .arg = "M",                                                                                                  \
   .help = "quality gate: a teacher's holdout accuracy must be above the holdout's majority-class rate by more "  \
           "than M (absolute), else it is registered as failed and the command exits 1"},                      \
  {"allow-failed", 0, FINCH_OPT_BOOL, F(allow_failed),                                                          \
   .help = "a model that fails the quality gate is still registered as failed, but the command goes on and exits 0"}
#define CLI_GATE_STUDENT_OPTION                                                                                   \
  {"min-teacher-ratio", 0, FINCH_OPT_FLOAT, F(min_teacher_ratio), .def = FINCH_GATE_MIN_TEACHER_RATIO, .min = 0, \
   .max = 1, .arg = "R",                                                                                        \
   .help = "quality gate: the student's holdout accuracy must be at least R times its teacher's, else it is "    \
           "registered as failed and the command exits 1 (0 = no gate)"}
#define CLI_MAX_POS 4

typedef struct {
  const char *name;
  const char *brief;   /* one line in finch --help */
  const char *usage;   /* after "finch NAME " */
  const char *summary; /* the paragraph under the usage line */
  const char *details; /* paragraph after the options, may be NULL */
  const finch_opt *opts;
  size_t nopts;
  size_t size;                  /* sizeof the struct the options fill */
  void (*init)(void *opts);     /* library defaults, before the table's; may be NULL */
  size_t maxpos;                /* positional arguments accepted, at most CLI_MAX_POS */
  /* The command itself, on the parsed options (cmd->size bytes, released
   * after it returns) and positionals; returns the exit code. */
  int (*run)(void *opts, const char **pos, size_t npos);
  int leading; /* options before a command: parsing stops at the first positional, whose index
                               * cli_parse returns in *npos */
} cli_cmd;

/* Fills opts (cmd->size bytes, zeroed here): cmd->init, then each option's
 * default, the config file's [cmd->name] lines and environment, then argv
 * (argv[0] is the command name) in order; positionals go to pos. Returns -1
 * to go on, else the exit code: 0 when --help was printed, 2 on a usage
 * error (printed, naming the flag). */
int cli_parse(const cli_cmd *cmd, void *opts, int argc, char **argv, const char **pos, size_t *npos);
/* Parses argv (argv[0] is the command name) with cli_parse and runs the
 * command; returns the process exit code. */
int cli_run(const cli_cmd *cmd, int argc, char **argv);
/* Prints the usage with each option's help and its default in opts. */
void cli_usage(const cli_cmd *cmd, const void *opts, FILE *out);
/* Prints the usage with defaults to stderr and returns 2. */
int cli_usage_error(const cli_cmd *cmd, const void *opts);
/* Prints every option of cmd as a [section] of `finch --settings`: value and
 * where it came from. Returns nonzero (printed) when one does not resolve. */
int cli_print_settings(const cli_cmd *cmd, FILE *out);
/* Lists the options as `  --name ARG   help (default X)` lines. */
void cli_print_options(const finch_opt *opts, size_t n, const void *values, FILE *out);

#endif
