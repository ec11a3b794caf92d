// dms/backend/cuda/error.cuh: CUDA runtime and cuBLAS failures as dms::error.
//
// A failed CUDA call must not be a silent zero or an abort: it becomes a dms::error with code
// errc::device whose message names the failing expression, the CUDA error (name and text) and
// the source location, e.g.
//   "device error: cudaMallocAsync(&p, bytes, stream) failed: cudaErrorMemoryAllocation (out of
//    memory) at dms/backend/cuda/device.cuh:57".
// Host code only; the header compiles with a plain C++ compiler too (it uses the runtime API and
// cuBLAS headers, no kernels).
//
// @code
//   DMS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
//   my_kernel<<<grid, block, 0, stream>>>(...);
//   DMS_CUDA_CHECK(cudaGetLastError());                    // launch-configuration errors
//   DMS_CUBLAS_CHECK(cublasSgemv(handle, ...));
// @endcode
#pragma once

#include <string>
#include <string_view>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN
namespace cuda::detail {

inline std::string source_location(const char *file, int line) {
  return std::string(file) + ":" + std::to_string(line);
}

[[noreturn]] inline void throw_cuda_error(cudaError_t status, std::string_view expression, const char *file,
                                          int line) {
  // Reset the runtime's "last error" so a caller that catches and carries on does not see this
  // failure again from its next cudaGetLastError() (sticky errors stay, as CUDA defines them).
  (void)cudaGetLastError();
  throw error(errc::device, std::string(expression) + " failed: " + cudaGetErrorName(status) + " (" +
                                cudaGetErrorString(status) + ") at " + source_location(file, line));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, std::string_view expression,
                                            const char *file, int line) {
  throw error(errc::device, std::string(expression) + " failed: " + cublasGetStatusName(status) + " (" +
                                cublasGetStatusString(status) + ") at " + source_location(file, line));
}

} // namespace cuda::detail
DMS_NAMESPACE_END

//! Evaluates `expr` (a cudaError_t) once; throws dms::error(errc::device) unless cudaSuccess.
#define DMS_CUDA_CHECK(expr)                                                                                 \
  do {                                                                                                       \
    const cudaError_t dms_cuda_status_ = (expr);                                                             \
    if (DMS_UNLIKELY(dms_cuda_status_ != cudaSuccess))                                                       \
      ::dms::cuda::detail::throw_cuda_error(dms_cuda_status_, #expr, __FILE__, __LINE__);                    \
  } while (false)

//! Evaluates `expr` (a cublasStatus_t) once; throws dms::error(errc::device) unless
//! CUBLAS_STATUS_SUCCESS.
#define DMS_CUBLAS_CHECK(expr)                                                                               \
  do {                                                                                                       \
    const cublasStatus_t dms_cublas_status_ = (expr);                                                        \
    if (DMS_UNLIKELY(dms_cublas_status_ != CUBLAS_STATUS_SUCCESS))                                           \
      ::dms::cuda::detail::throw_cublas_error(dms_cublas_status_, #expr, __FILE__, __LINE__);                \
  } while (false)
