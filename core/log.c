#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static finch_log_level g_level = FINCH_LOG_INFO;

void finch_log_set_level(finch_log_level level) { g_level = level; }
finch_log_level finch_log_get_level(void) { return g_level; }

int finch_log_level_parse(const char *s) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (s && strcmp(s, names[i]) == 0) return i;
  return -1;
}

void finch_log(finch_log_level level, const char *fmt, ...) {
  if (level > g_level) return;
  static const char *tags[] = {"error: ", "warning: ", "", ""};
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  /* One fprintf per line so that concurrent threads do not interleave. */
  fprintf(stderr, "finch: %s%s\n", tags[level], line);
}
