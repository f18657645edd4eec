/* Database URLs as they may be shown: with their password masked.
 *
 * finch prints the database it uses in `finch db status`, `finch --settings`
 * and in errors; none of them shows a password. Only `finch db url` prints
 * the URL as it is, since it exists to be handed to psql. */
#ifndef FINCH_CORE_DBURL_H
#define FINCH_CORE_DBURL_H

#include <stddef.h>

/* The mask that stands for a password. */
#define FINCH_DB_PASSWORD_MASK "****"

/* Copies text into buf (n bytes, always NUL-terminated, cut short when it
 * does not fit) with every password replaced by FINCH_DB_PASSWORD_MASK:
 *   - in a URI postgresql://user:PASS@host/db (or postgres://), the part
 *     of the user information after its first ':' (percent-encoded or not,
 *     up to the authority's last '@');
 *   - a URI query parameter password=PASS (up to the next '&' or '#');
 *   - a key=value conninfo's password=PASS or password = 'PA SS' (quoted
 *     with backslash escapes, as libpq reads it).
 * Text holding no password comes out unchanged, so a message that merely
 * mentions a URL can be passed through too. */
void finch_db_url_masked(const char *text, char *buf, size_t n);

#endif
