#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

finch_status finch_err_set(finch_err *err, finch_status code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

void finch_err_prefix(finch_err *err, const char *fmt, ...) {
  if (!err) return;
  char prefix[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  char old[sizeof err->msg];
  memcpy(old, err->msg, sizeof old);
  snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
}

const char *finch_status_str(finch_status s) {
  switch (s) {
  case FINCH_OK: return "ok";
  case FINCH_EINVAL: return "invalid argument";
  case FINCH_EIO: return "I/O error";
  case FINCH_EFORMAT: return "malformed input";
  case FINCH_ECHECKSUM: return "checksum mismatch";
  case FINCH_EDB: return "database error";
  case FINCH_ENOTFOUND: return "not found";
  case FINCH_ENOMEM: return "out of memory";
  case FINCH_EDEVICE: return "device error";
  case FINCH_EINTERNAL: return "internal error";
  }
  return "unknown status";
}
