// Host-side behaviour of the CUDA backend that needs no GPU: error translation, GPU probing,
// empty buffers. Compiled by the C++ compiler (not nvcc) with the project's warning flags.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "dms/backend/cuda/device.cuh"
#include "dms/backend/cuda/error.cuh"

TEST_CASE("DMS_CUDA_CHECK throws dms::error with expression, CUDA error and location", "[cuda][error]") {
  const auto fails = [] { return cudaErrorInvalidValue; };
  try {
    DMS_CUDA_CHECK(fails());
    FAIL("no exception");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::device);
    const std::string what = e.what();
    CHECK_THAT(what, Catch::StartsWith("device error: fails() failed: cudaErrorInvalidValue ("));
    CHECK_THAT(what, Catch::Contains("error_test.cpp:"));
  }
  CHECK_NOTHROW([] { DMS_CUDA_CHECK(cudaSuccess); }());
}

TEST_CASE("DMS_CUBLAS_CHECK throws dms::error with the cuBLAS status", "[cuda][error]") {
  int evaluated = 0;
  const auto fails = [&] {
    ++evaluated;
    return CUBLAS_STATUS_NOT_INITIALIZED;
  };
  try {
    DMS_CUBLAS_CHECK(fails());
    FAIL("no exception");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::device);
    CHECK_THAT(e.what(), Catch::Contains("fails() failed: CUBLAS_STATUS_NOT_INITIALIZED"));
  }
  CHECK(evaluated == 1); // the expression is evaluated exactly once
}

TEST_CASE("gpu_available and probe_gpu never throw and agree", "[cuda][device]") {
  bool available = true;
  CHECK_NOTHROW(available = dms::cuda::gpu_available());
  const dms::cuda::gpu_info info = dms::cuda::probe_gpu();
  CHECK(info.available() == available);
  if (!available)
    CHECK_THAT(info.reason, Catch::StartsWith("cudaGetDeviceCount"));
  else
    CHECK(info.reason.empty());
  // With a device, probing leaves no error behind. (Without a driver every runtime call keeps
  // reporting the initialization failure, cudaGetLastError included, so there is nothing to
  // check.)
  if (available) CHECK(cudaGetLastError() == cudaSuccess);
}

TEST_CASE("an empty device_buffer needs no device", "[cuda][device]") {
  dms::cuda::device_buffer<float> b(0, nullptr);
  CHECK(b.empty());
  CHECK(b.data() == nullptr);
  CHECK(b.span().empty());
  b.copy_from_host({}); // no-op
  CHECK_THROWS_WITH(b.copy_from_host(std::vector<float>(1)),
                    Catch::Contains("1 elements at offset 0 exceed the buffer's 0"));
  dms::cuda::device_buffer<float> moved(std::move(b));
  CHECK(moved.empty());
}
