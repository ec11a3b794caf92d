// Skipping CUDA tests on machines without a GPU, visibly.
//
// Catch2 2.13 cannot mark a test skipped. A test that needs a GPU starts with
// DMS_REQUIRE_GPU(); without one it prints "SKIPPED: no CUDA device (<reason>)" and returns, and
// the SKIP_REGULAR_EXPRESSION set in CMakeLists.txt makes ctest report it as skipped.
#pragma once

#include <iostream>

#include "dms/backend/cuda/device.cuh"

namespace dms_test {
inline const dms::cuda::gpu_info &gpu() {
  static const dms::cuda::gpu_info info = dms::cuda::probe_gpu();
  return info;
}
inline bool skip_without_gpu() {
  if (gpu().available()) return false;
  std::cout << "SKIPPED: no CUDA device (" << gpu().reason << ")" << std::endl;
  return true;
}
} // namespace dms_test

#define DMS_REQUIRE_GPU()                                                                                    \
  do {                                                                                                       \
    if (::dms_test::skip_without_gpu()) return;                                                              \
  } while (false)
