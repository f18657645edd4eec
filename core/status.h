/* finch status codes and the error record every library call fills.
 *
 * Library code returns a finch_status and, on failure, writes a message into
 * the caller's finch_err naming what failed and where (file, line, field).
 * Only main() decides to exit. */
#ifndef FINCH_CORE_STATUS_H
#define FINCH_CORE_STATUS_H

typedef enum {
  FINCH_OK = 0,
  FINCH_EINVAL,    /* bad argument or configuration */
  FINCH_EIO,       /* file or network I/O failed */
  FINCH_EFORMAT,   /* malformed input: CSV, JSON, UTF-8, model file */
  FINCH_ECHECKSUM, /* stored checksum does not match content */
  FINCH_EDB,       /* PostgreSQL error */
  FINCH_ENOTFOUND, /* named thing does not exist */
  FINCH_ENOMEM,    /* allocation failed */
  FINCH_EDEVICE,   /* accelerator unavailable or failed */
  FINCH_EINTERNAL  /* invariant broken: a bug */
} finch_status;

typedef struct {
  finch_status code;
  char msg[1024];
} finch_err;

/* Records code and a printf-style message in err (which may be NULL) and
 * returns code, so callers can write `return finch_err_set(err, ...)`. */
finch_status finch_err_set(finch_err *err, finch_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (for adding context on the way up). */
void finch_err_prefix(finch_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *finch_status_str(finch_status s);

#endif
