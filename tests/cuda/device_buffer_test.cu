// dms::cuda::device_buffer on a real device: round trips, offsets, zeroing, moves.
#include <catch2/catch.hpp>

#include <numeric>
#include <vector>

#include "dms/backend/cuda/device.cuh"
#include "gpu_guard.hpp"

TEST_CASE("device_buffer round-trips data on the caller's stream", "[cuda][device]") {
  DMS_REQUIRE_GPU();
  cudaStream_t stream = nullptr;
  DMS_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    std::vector<float> src(1000);
    std::iota(src.begin(), src.end(), 0.5f);
    dms::cuda::device_buffer<float> b(src.size(), stream);
    CHECK(b.size() == 1000);
    CHECK(b.size_bytes() == 4000);
    CHECK(b.stream() == stream);
    b.copy_from_host(src);
    std::vector<float> back(src.size());
    b.copy_to_host(back);
    dms::cuda::synchronize(stream);
    CHECK(back == src);

    // Partial copies at an offset.
    b.zero();
    b.copy_from_host(std::span<const float>(src).first(10), 990);
    std::vector<float> tail(10), head(10, -1.0f);
    b.copy_to_host(tail, 990);
    b.copy_to_host(head, 0);
    dms::cuda::synchronize(stream);
    CHECK(tail == std::vector<float>(src.begin(), src.begin() + 10));
    CHECK(head == std::vector<float>(10, 0.0f));
    CHECK_THROWS_AS(b.copy_to_host(tail, 995), dms::error);

    // Moves transfer ownership; the moved-from buffer is empty and frees nothing.
    dms::cuda::device_buffer<float> c(std::move(b));
    CHECK(b.empty());
    CHECK(c.size() == 1000);
    dms::cuda::device_buffer<float> d(5, stream);
    d = std::move(c);
    CHECK(d.size() == 1000);
  } // frees queued on `stream`
  dms::cuda::synchronize(stream);
  DMS_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("device errors surface as dms::error", "[cuda][device]") {
  DMS_REQUIRE_GPU();
  // An allocation no GPU can satisfy: 2^60 bytes.
  try {
    dms::cuda::device_buffer<char> huge(std::size_t{1} << 60, nullptr);
    FAIL("allocated 2^60 bytes");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::device);
    CHECK_THAT(e.what(), Catch::Contains("cudaMallocAsync of 1152921504606846976 bytes failed: "
                                         "cudaError")); // e.g. cudaErrorMemoryAllocation
    CHECK_THAT(e.what(), Catch::Contains("device.cuh:"));
  }
  CHECK(cudaGetLastError() == cudaSuccess);
}
