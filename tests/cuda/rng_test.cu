// dms::cuda::fill_uniform against the host dms::fill_uniform: bit-identical.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

#include "dms/backend/cuda/device.cuh"
#include "dms/backend/cuda/rng.cuh"
#include "dms/core/rng.hpp"
#include "gpu_guard.hpp"

TEST_CASE("fill_uniform on the GPU gives the host's bits", "[cuda][rng]") {
  DMS_REQUIRE_GPU();
  cudaStream_t stream = nullptr;
  DMS_CUDA_CHECK(cudaStreamCreate(&stream));
  const dms::philox_stream s(dms::key_for(1234, "blk.0.ffn_up.weight", 1), 7);
  // first_index: every phase within a Philox block, a 32-bit carry, and the 2^64 wrap.
  const std::uint64_t firsts[] = {0, 1, 2, 3, 5, (std::uint64_t{1} << 32) - 3, ~std::uint64_t{0} - 5};
  const std::size_t sizes[] = {0, 1, 3, 4, 5, 7, 1000, (std::size_t{1} << 20) + 3};
  for (std::uint64_t first : firsts) {
    for (std::size_t n : sizes) {
      INFO("first_index " << first << ", n " << n);
      std::vector<float> want(n), got(n, -1.0f);
      dms::fill_uniform(s, first, want);
      dms::cuda::device_buffer<float> d(n, stream);
      dms::cuda::fill_uniform(s, first, d.data(), d.size(), stream);
      d.copy_to_host(got);
      dms::cuda::synchronize(stream);
      CHECK(std::memcmp(got.data(), want.data(), n * sizeof(float)) == 0);
    }
  }
  DMS_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("the GPU kernel's work split reproduces the host stream (run on the host)", "[cuda][rng]") {
  // Runs everywhere: executes every work item of the kernel's plan on the CPU through the same
  // DMS_HOST_DEVICE function the kernel calls, so the index arithmetic (block phase, wrap at
  // 2^64) is tested even without a GPU.
  const dms::philox_stream s(dms::key_for(99, "x", 0), 3);
  const std::uint64_t firsts[] = {0, 1, 2, 3, 6, (std::uint64_t{1} << 32) - 1, ~std::uint64_t{0} - 2};
  for (std::uint64_t first : firsts) {
    for (std::size_t n :
         {std::size_t{1}, std::size_t{2}, std::size_t{4}, std::size_t{9}, std::size_t{1001}}) {
      INFO("first_index " << first << ", n " << n);
      std::vector<float> want(n), got(n + 8, -1.0f);
      dms::fill_uniform(s, first, want);
      const auto plan = dms::cuda::detail::plan_fill_uniform(first, n);
      CHECK(plan.n_blocks * 4 >= n + plan.lead);
      CHECK(plan.n_blocks * 4 < n + plan.lead + 4);
      for (std::uint64_t q = 0; q < plan.n_blocks; ++q)
        dms::cuda::detail::fill_uniform_item(s, plan, got.data(), q);
      CHECK(std::memcmp(got.data(), want.data(), n * sizeof(float)) == 0);
      for (std::size_t i = n; i < got.size(); ++i)
        CHECK(got[i] == -1.0f); // nothing past n
    }
  }
}

TEST_CASE("fill_uniform writes exactly n elements", "[cuda][rng]") {
  DMS_REQUIRE_GPU();
  cudaStream_t stream = nullptr; // the legacy default stream
  const dms::philox_stream s(dms::philox_key{{1u, 2u}}, 0);
  dms::cuda::device_buffer<float> d(16, stream);
  std::vector<float> sentinel(16, 42.0f);
  d.copy_from_host(sentinel);
  dms::cuda::fill_uniform(s, 3, d.data() + 4, 5, stream);
  std::vector<float> got(16);
  d.copy_to_host(got);
  dms::cuda::synchronize(stream);
  for (std::size_t i = 0; i < 16; ++i) {
    INFO("element " << i);
    if (i >= 4 && i < 9)
      CHECK(got[i] == s.uniform(3 + (i - 4)));
    else
      CHECK(got[i] == 42.0f);
  }
}
