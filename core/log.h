/* Logging to stderr with a level threshold (FINCH_LOG / --log-level).
 * Nothing that may hold personal data is logged: callers log counts,
 * ids and positions, never raw customer text. */
#ifndef FINCH_CORE_LOG_H
#define FINCH_CORE_LOG_H

typedef enum { FINCH_LOG_ERROR = 0, FINCH_LOG_WARN, FINCH_LOG_INFO, FINCH_LOG_DEBUG } finch_log_level;

void finch_log_set_level(finch_log_level level);
finch_log_level finch_log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -1 for anything else. */
int finch_log_level_parse(const char *s);
void finch_log(finch_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define finch_error(...) finch_log(FINCH_LOG_ERROR, __VA_ARGS__)
#define finch_warn(...) finch_log(FINCH_LOG_WARN, __VA_ARGS__)
#define finch_info(...) finch_log(FINCH_LOG_INFO, __VA_ARGS__)
#define finch_debug(...) finch_log(FINCH_LOG_DEBUG, __VA_ARGS__)

#endif
