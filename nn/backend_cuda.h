/* Internal: the CUDA backend's entry points, implemented in
 * nn/backend_cuda.cu. nn/backend.c opens it under FINCH_HAVE_CUDA; the check
 * is the backend's nn_backend.check. */
#ifndef FINCH_NN_BACKEND_CUDA_H
#define FINCH_NN_BACKEND_CUDA_H

/* core/status.h has no C++ guard of its own. */
#ifdef __cplusplus
extern "C" {
#endif

#include "core/status.h"
#include "nn/backend.h"

/* Opens device 0 with a cuBLAS handle. FINCH_EDEVICE with the CUDA error
 * text when there is no usable device. */
finch_status nn__backend_cuda_open(nn_backend **out, finch_err *err);
/* nn_backend.check: returns and clears the first failure recorded by an op
 * (see nn_backend_check). */
finch_status nn__backend_cuda_check(nn_backend *be, finch_err *err);

#ifdef __cplusplus
}
#endif

#endif
