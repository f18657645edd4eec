/* The intent server: HTTP over libmicrohttpd.
 *
 * Endpoints
 *   POST /v1/intent  body {"text": "..."} ->
 *        200 {"intent": "...", "confidence": 0.93, "source": "model", "model": "<sha256>"}
 *        400 {"error": "..."} for invalid JSON, a missing or non-string "text",
 *            or text that is not valid UTF-8
 *        413 {"error": "..."} for a body over max_body bytes
 *        405 for other methods, 404 for other paths
 *   GET  /healthz    200 {"status": "ok", "model": "<sha256>"}
 * A bad request never stops the server. */
#ifndef FINCH_SERVE_SERVE_H
#define FINCH_SERVE_SERVE_H

#include <stddef.h>

#include "core/status.h"

typedef struct {
  const char *model_path; /* model file (nn/modelfile.h) */
  const char *host;       /* address to bind, default "127.0.0.1" */
  unsigned port;          /* 0 = any free port; finch_server_port() tells which */
  size_t max_body;        /* request body limit in bytes, default 64 KiB */
  unsigned threads;       /* worker threads, default 2 */
} finch_serve_opts;

typedef struct finch_server finch_server;

/* Loads and verifies the model, binds and starts serving in background
 * threads. The caller owns *out and releases it with finch_server_stop(). */
finch_status finch_server_start(finch_server **out, const finch_serve_opts *opts, finch_err *err);
unsigned finch_server_port(const finch_server *s);
const char *finch_server_model_sha256(const finch_server *s);
/* Stops accepting, waits for in-flight requests, frees everything. */
void finch_server_stop(finch_server *s);

#endif
