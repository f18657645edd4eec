#include "core/paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"

#ifndef FINCH_SOURCE_DIR
#define FINCH_SOURCE_DIR "."
#endif

finch_status finch_mkdirs(const char *path, unsigned mode, finch_err *err) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
    return finch_err_set(err, FINCH_EINVAL, "path too long: %s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
      return finch_err_set(err, FINCH_EIO, "mkdir %s: %s", tmp, strerror(errno));
    *p = '/';
  }
  if (mkdir(tmp, mode) != 0 && errno != EEXIST)
    return finch_err_set(err, FINCH_EIO, "mkdir %s: %s", tmp, strerror(errno));
  return FINCH_OK;
}

/* Walks up from the current directory for a directory named .finch. */
static int nearest_finch_dir(char *buf, size_t n) {
  char dir[PATH_MAX];
  if (!getcwd(dir, sizeof dir)) return 0;
  for (;;) {
    struct stat st;
    char cand[PATH_MAX + 8];
    snprintf(cand, sizeof cand, "%s/.finch", strcmp(dir, "/") == 0 ? "" : dir);
    if (stat(cand, &st) == 0 && S_ISDIR(st.st_mode)) {
      snprintf(buf, n, "%s", cand);
      return 1;
    }
    char *slash = strrchr(dir, '/');
    if (!slash || strcmp(dir, "/") == 0) return 0;
    if (slash == dir) slash[1] = '\0';
    else *slash = '\0';
  }
}

finch_status finch_home_find(char *buf, size_t n, const char **origin, finch_err *err) {
  const char *why, *set = finch_config_get("home");
  char path[PATH_MAX + 32];
  finch_cfg_src src = finch_config_src("home");
  if (*set) {
    why = src == FINCH_CFG_SRC_FLAG ? "--home" : src == FINCH_CFG_SRC_ENV ? "FINCH_HOME" : "the config file";
    snprintf(path, sizeof path, "%s", set);
  } else if (nearest_finch_dir(path, sizeof path)) {
    why = "the nearest .finch at or above the current directory";
  } else {
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0] == '/') { /* the XDG base directory specification ignores relative paths */
      why = "$XDG_DATA_HOME/finch";
      snprintf(path, sizeof path, "%s/finch", xdg);
    } else if (home && home[0] == '/') {
      why = "~/.local/share/finch";
      snprintf(path, sizeof path, "%s/.local/share/finch", home);
    } else {
      return finch_err_set(err, FINCH_EINVAL,
                           "no finch home: set FINCH_HOME or --home (no .finch above the current directory, "
                           "and neither XDG_DATA_HOME nor HOME is an absolute path)");
    }
  }
  if (snprintf(buf, n, "%s", path) >= (int)n) return finch_err_set(err, FINCH_EINVAL, "path too long: %s", path);
  if (origin) *origin = why;
  return FINCH_OK;
}

finch_status finch_home_dir(char *buf, size_t n, finch_err *err) {
  char home[PATH_MAX];
  finch_status st = finch_home_find(home, sizeof home, NULL, err);
  if (st) return st;
  st = finch_mkdirs(home, 0755, err);
  if (st) return st;
  char abs[PATH_MAX];
  if (!realpath(home, abs)) return finch_err_set(err, FINCH_EIO, "%s: %s", home, strerror(errno));
  if (snprintf(buf, n, "%s", abs) >= (int)n)
    return finch_err_set(err, FINCH_EINVAL, "path too long: %s", abs);
  return FINCH_OK;
}

void finch_unique_tag(char *buf, size_t n) {
  static atomic_uint seq;
  snprintf(buf, n, "%lld-%d-%u", (long long)time(NULL), (int)getpid(), atomic_fetch_add(&seq, 1u));
}

finch_status finch_home_subdir(const char *sub, char *buf, size_t n, finch_err *err) {
  char home[PATH_MAX];
  finch_status st = finch_home_dir(home, sizeof home, err);
  if (st) return st;
  if (snprintf(buf, n, "%s/%s", home, sub) >= (int)n)
    return finch_err_set(err, FINCH_EINVAL, "path too long: %s/%s", home, sub);
  return finch_mkdirs(buf, 0755, err);
}

void finch_data_dir(char *buf, size_t n) {
  const char *d = finch_config_get("data_dir");
  if (d && *d)
    snprintf(buf, n, "%s", d);
  else
    snprintf(buf, n, "%s/../shared/data", FINCH_SOURCE_DIR);
}

finch_status finch_pretrained_dir(const char *name, char *buf, size_t n, finch_err *err) {
  const char *d = finch_config_get("pretrained_dir");
  char base[PATH_MAX];
  if (d && *d) {
    snprintf(base, sizeof base, "%s", d);
  } else {
    char home[PATH_MAX];
    finch_status st = finch_home_dir(home, sizeof home, err);
    if (st) return st;
    snprintf(base, sizeof base, "%s/pretrained", home);
  }
  char weights[PATH_MAX + 64];
  if (snprintf(buf, n, "%s/%s", base, name) >= (int)n)
    return finch_err_set(err, FINCH_EINVAL, "path too long: %s/%s", base, name);
  snprintf(weights, sizeof weights, "%s/model.safetensors", buf);
  if (!finch_file_exists(weights))
    return finch_err_set(err, FINCH_ENOTFOUND,
                         "the pretrained encoder %s is not installed in %s: run scripts/fetch-pretrained.sh", name, base);
  return FINCH_OK;
}

int finch_file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
