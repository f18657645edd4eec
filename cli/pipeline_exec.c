/* cli/pipeline_exec.h: fork, exec, and two pipes read with poll(). */
#include "cli/pipeline_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "core/text.h"

#define EXEC_OUT_MAX (4u << 20)

/* The global settings a child must share, with their environment variables. */
static const char *const exec_settings[][2] = {
    {"home", "FINCH_HOME"},         {"database_url", "FINCH_DATABASE_URL"},
    {"db_name", "FINCH_DB_NAME"},   {"data_dir", "FINCH_DATA_DIR"},
    {"pretrained_dir", "FINCH_PRETRAINED_DIR"}, {"log_level", "FINCH_LOG"},
    {"device", "FINCH_DEVICE"},
};

static void tail_add(cli_pipeline_child *ch, const char *s, size_t n) {
  if (n >= CLI_PIPELINE_TAIL) {
    memcpy(ch->tail, s + n - CLI_PIPELINE_TAIL, CLI_PIPELINE_TAIL);
    ch->tail_len = CLI_PIPELINE_TAIL;
    return;
  }
  if (ch->tail_len + n > CLI_PIPELINE_TAIL) {
    size_t drop = ch->tail_len + n - CLI_PIPELINE_TAIL;
    memmove(ch->tail, ch->tail + drop, ch->tail_len - drop);
    ch->tail_len -= drop;
  }
  memcpy(ch->tail + ch->tail_len, s, n);
  ch->tail_len += n;
}

/* n is one read, far under EXEC_OUT_MAX. */
static void out_add(cli_pipeline_child *ch, const char *s, size_t n) {
  if (ch->out_len + n > EXEC_OUT_MAX) { /* keep the end: the JSON summary is the last line */
    size_t drop = ch->out_len + n - EXEC_OUT_MAX;
    memmove(ch->out, ch->out + drop, ch->out_len - drop);
    ch->out_len -= drop;
  }
  memcpy(ch->out + ch->out_len, s, n);
  ch->out_len += n;
  ch->out[ch->out_len] = '\0';
}

/* The tail is cut at any byte: drop a partial character at its start, and
 * make the rest storable as text (no NUL, valid UTF-8). */
static void tail_clean(cli_pipeline_child *ch) {
  size_t skip = 0;
  while (skip < ch->tail_len && ((unsigned char)ch->tail[skip] & 0xC0) == 0x80) skip++;
  memmove(ch->tail, ch->tail + skip, ch->tail_len - skip);
  ch->tail_len -= skip;
  ch->tail[ch->tail_len] = '\0';
  for (size_t i = 0; i < ch->tail_len; i++)
    if (!ch->tail[i]) ch->tail[i] = ' ';
  size_t bad;
  while (!finch_utf8_valid(ch->tail, ch->tail_len, &bad) && bad < ch->tail_len) ch->tail[bad] = '?';
}

static void child(char *const *argv, int out_fd, int err_fd, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(127);
  int devnull = open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, 0);
  dup2(out_fd, 1);
  dup2(err_fd, 2);
  for (size_t i = 0; i < sizeof exec_settings / sizeof exec_settings[0]; i++) {
    finch_cfg_src src = finch_config_src(exec_settings[i][0]);
    if (src == FINCH_CFG_SRC_FLAG || src == FINCH_CFG_SRC_FILE)
      setenv(exec_settings[i][1], finch_config_get(exec_settings[i][0]), 1);
  }
  execv("/proc/self/exe", argv);
  fprintf(stderr, "finch pipeline: cannot run /proc/self/exe: %s\n", strerror(errno));
  _exit(127);
}

finch_status cli_pipeline_exec(char *const *argv, int quiet, cli_pipeline_child *ch, finch_err *err) {
  memset(ch, 0, sizeof *ch);
  ch->out = malloc(EXEC_OUT_MAX + 1);
  if (!ch->out) return finch_err_set(err, FINCH_ENOMEM, "finch pipeline: out of memory");
  ch->out[0] = '\0';
  int po[2], pe[2];
  if (pipe(po)) return finch_err_set(err, FINCH_EIO, "finch pipeline: pipe: %s", strerror(errno));
  if (pipe(pe)) {
    close(po[0]);
    close(po[1]);
    return finch_err_set(err, FINCH_EIO, "finch pipeline: pipe: %s", strerror(errno));
  }
  fflush(NULL);
  pid_t parent = getpid(), pid = fork();
  if (pid < 0) {
    close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
    return finch_err_set(err, FINCH_EIO, "finch pipeline: fork: %s", strerror(errno));
  }
  if (pid == 0) {
    close(po[0]);
    close(pe[0]);
    child(argv, po[1], pe[1], parent);
  }
  close(po[1]);
  close(pe[1]);
  struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
  int open_fds = 2;
  char buf[16384];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int f = 0; f < 2; f++) {
      if (fds[f].fd < 0 || !(fds[f].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[f].fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        close(fds[f].fd);
        fds[f].fd = -1;
        open_fds--;
        continue;
      }
      if (f == 0) out_add(ch, buf, (size_t)n);
      tail_add(ch, buf, (size_t)n);
      if (!quiet) fwrite(buf, 1, (size_t)n, stderr);
    }
  }
  for (int f = 0; f < 2; f++)
    if (fds[f].fd >= 0) close(fds[f].fd);
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return finch_err_set(err, FINCH_EIO, "finch pipeline: waitpid: %s", strerror(errno));
  ch->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  tail_clean(ch);
  return FINCH_OK;
}
