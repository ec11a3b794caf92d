// dms::cuda::add_scaled_rows against the scalar reference.
//
// Tolerance: |gpu - reference| <= 2 * FLT_EPSILON * (|y| + |s v|) per element (fused vs.
// unfused multiply-add), as for the CPU kernels.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "dms/backend/cpu/reference.hpp"
#include "dms/backend/cuda/device.cuh"
#include "dms/backend/cuda/kernels.cuh"
#include "gpu_guard.hpp"
#include "support/random_floats.hpp"

using dms::test::random_floats;

TEST_CASE("add_scaled_rows on the GPU matches the reference", "[cuda][kernels]") {
  DMS_REQUIRE_GPU();
  cudaStream_t stream = nullptr;
  DMS_CUDA_CHECK(cudaStreamCreate(&stream));
  constexpr float pad = -999.0f;
  for (std::int64_t cols : {0, 1, 7, 15, 16, 17, 576, 1000, 20000}) {
    for (std::int64_t rows : {0, 1, 3, 70000}) {
      if (rows * cols > 4'000'000) continue;
      INFO(rows << " x " << cols);
      const std::int64_t stride = cols + 5; // padded rows
      const auto total = static_cast<std::size_t>(rows * stride);
      std::vector<float> host(total, pad);
      const auto init = random_floats(total, 3u);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c) {
          const auto at = static_cast<std::size_t>(r * stride + c);
          host[at] = init[at];
        }
      const auto v = random_floats(static_cast<std::size_t>(cols), 5u);
      const auto scales = random_floats(static_cast<std::size_t>(rows), 7u);

      dms::cuda::device_buffer<float> d_rows(total, stream), d_v(v.size(), stream),
          d_s(scales.size(), stream);
      d_rows.copy_from_host(host);
      d_v.copy_from_host(v);
      d_s.copy_from_host(scales);
      dms::cuda::add_scaled_rows(dms::matrix_view<float>{d_rows.data(), rows, cols, stride}, d_s.span(),
                                 d_v.span(), stream);
      std::vector<float> got(total);
      d_rows.copy_to_host(got);
      dms::cuda::synchronize(stream);

      std::vector<float> want = host;
      dms::cpu::reference::add_scaled_rows(dms::matrix_view<float>{want.data(), rows, cols, stride}, scales,
                                           v);
      std::size_t bad = 0;
      for (std::size_t i = 0; i < total; ++i) {
        const auto r = i / static_cast<std::size_t>(stride), c = i % static_cast<std::size_t>(stride);
        if (c >= static_cast<std::size_t>(cols)) {
          bad += got[i] != pad; // padding untouched
          continue;
        }
        const float tol = 2.0f * FLT_EPSILON * (std::fabs(host[i]) + std::fabs(scales[r] * v[c]));
        bad += !(std::fabs(got[i] - want[i]) <= tol);
      }
      CHECK(bad == 0);
    }
  }
  DMS_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("add_scaled_rows on the GPU checks shapes before touching the device", "[cuda][kernels]") {
  // Runs without a GPU: the checks are host-side and throw before any CUDA call.
  float *fake = nullptr;
  const float *cfake = nullptr;
  dms::matrix_view<float> m{fake, 3, 4, 4};
  CHECK_THROWS_WITH(dms::cuda::add_scaled_rows(m, {cfake, 2}, {cfake, 4}, nullptr),
                    Catch::Contains("one value per row (3), got 2"));
  CHECK_THROWS_WITH(dms::cuda::add_scaled_rows(m, {cfake, 3}, {cfake, 5}, nullptr),
                    Catch::Contains("vector length 5 does not match the row width 4"));
  CHECK_THROWS_WITH(dms::cuda::add_scaled_rows({fake, 3, 4, 2}, {cfake, 3}, {cfake, 4}, nullptr),
                    Catch::Contains("rows would overlap"));
}
