#include "nn/backend.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"

#ifdef FINCH_HAVE_CUDA
#include "nn/backend_cuda.h"
#endif

int nn_device_parse(const char *s) {
  if (!s) return -1;
  if (strcmp(s, "cpu") == 0) return NN_DEVICE_CPU;
  if (strcmp(s, "cuda") == 0) return NN_DEVICE_CUDA;
  if (strcmp(s, "auto") == 0) return NN_DEVICE_AUTO;
  return -1;
}

static finch_status open_cuda(nn_backend **out, finch_err *err) {
#ifdef FINCH_HAVE_CUDA
  return nn__backend_cuda_open(out, err);
#else
  *out = NULL;
  return finch_err_set(err, FINCH_EDEVICE, "this build has no CUDA backend (no CUDA toolkit at configure time)");
#endif
}

finch_status nn_backend_open(nn_backend **out, nn_device dev, finch_err *err) {
  *out = NULL;
  switch (dev) {
  case NN_DEVICE_CPU:
    *out = nn_backend_cpu();
    return FINCH_OK;
  case NN_DEVICE_CUDA:
    return open_cuda(out, err);
  case NN_DEVICE_AUTO: {
    finch_err why = {0};
    if (open_cuda(out, &why) == FINCH_OK) return FINCH_OK;
    /* Nobody asked for a GPU: the CPU is the expected outcome, said only at
     * debug level (an explicit NN_DEVICE_CUDA fails with the reason instead). */
    finch_debug("no CUDA device found (%s); using the CPU", why.msg);
    *out = nn_backend_cpu();
    return FINCH_OK;
  }
  }
  return finch_err_set(err, FINCH_EINVAL, "unknown device %d", (int)dev);
}

void nn_backend_free(nn_backend *be) {
  if (be && be->free) be->free(be);
}

finch_status nn_backend_check(nn_backend *be, finch_err *err) {
  return be && be->check ? be->check(be, err) : FINCH_OK;
}
