/* PII redaction with PCRE2 (JIT-compiled), applied to every utterance before
 * it is stored or logged.
 *
 * Rules come from a rules file (the built-in core/pii_rules.conf, plus any
 * files a deployment adds). Each rule names a type, a validator and a
 * pattern; a match whose validator fails is left as it is (a reference
 * number that fails the Luhn check carries intent). Each redacted span
 * becomes the placeholder "<TYPE>" in upper case: <CARD>, <IBAN>, <EMAIL>,
 * <PHONE>, <SSN>, <ACCOUNT>, or a deployment's own type.
 * The file format is documented at the top of core/pii_rules.conf. */
#ifndef FINCH_CORE_REDACT_H
#define FINCH_CORE_REDACT_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct finch_redactor finch_redactor;

/* Loads the built-in rules (core/pii_rules.conf of the source tree, or the
 * file named by the environment variable FINCH_PII_RULES), then each of
 * extra[0..n_extra) in order. Errors name the file, the line and PCRE2's
 * message and offset: FINCH_EFORMAT for a bad rule, FINCH_EIO for a file
 * that cannot be read. */
finch_status finch_redactor_open(finch_redactor **out, const char *const *extra, size_t n_extra, finch_err *err);
void finch_redactor_free(finch_redactor *r);

/* Number of distinct types and their names ("card", "iban", ...), in a
 * fixed order: the six built-in types first. */
size_t finch_redactor_n_types(const finch_redactor *r);
const char *finch_redactor_type(const finch_redactor *r, size_t i);

/* Redacts text[0..len) (valid UTF-8) into *out (malloc'd, caller frees) and
 * adds the number of redactions of each type to counts[n_types] (counts may
 * be NULL). A redactor is not thread-safe: use one per thread.
 * Fails closed: invalid UTF-8 (FINCH_EFORMAT, naming the byte) or a rule that
 * exceeds PCRE2's match limits (FINCH_EINTERNAL, naming file:line) leaves
 * *out NULL, so unredacted text is never handed on. */
finch_status finch_redact(finch_redactor *r, const char *text, size_t len, char **out, uint64_t *counts,
                          finch_err *err);

/* Validators, exposed for tests: digits may be separated by spaces or dashes. */
int finch_luhn_valid(const char *s, size_t len);
int finch_iban_valid(const char *s, size_t len);

#endif
