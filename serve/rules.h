/* The legacy rule engine: an ordered file of PCRE2 rules (JIT-compiled)
 * mapping text to an intent, served beside the model during a rollout.
 *
 * Rule file: one rule a line; '#' starts a comment line; blank lines are
 * ignored.
 *
 *   intent  priority  /pattern/flags  [!/negative/flags]
 *
 *   intent    the intent the rule answers
 *   priority  integer 0..100; of the rules that match, the highest wins,
 *             ties going to the earlier line
 *   pattern   PCRE2 between slashes (a literal slash is written \/);
 *             flags: i (caseless), x (extended); always UTF-8 mode
 *   negative  optional: when it matches, the rule does not fire
 *
 * Errors name the file, the line and PCRE2's message and offset. */
#ifndef FINCH_SERVE_RULES_H
#define FINCH_SERVE_RULES_H

#include <stddef.h>
#include <stdio.h>

#include "core/status.h"

typedef struct finch_rules finch_rules;

finch_status finch_rules_load(finch_rules **out, const char *path, finch_err *err);
void finch_rules_free(finch_rules *r);
size_t finch_rules_count(const finch_rules *r);

/* The intent of the winning rule, or NULL when no rule fires; *rule (may be
 * NULL) gets its index (file order), *line its line. Safe from several
 * threads. */
const char *finch_rules_match(const finch_rules *r, const char *text, size_t len, size_t *rule, long *line);

/* Static checks, written to report as "file:line: ..." lines: a rule whose
 * negative pattern matches everything its pattern does (the same pattern),
 * and a rule that can never win because an earlier rule with the same
 * pattern and flags has at least its priority. Returns the number of
 * problems. */
size_t finch_rules_lint(const finch_rules *r, FILE *report);

#endif
