// dms/backend/cuda/steering.cuh against the scalar references.
//
// Tolerances (float arithmetic in a different order than the reference):
//  * add_gathered_rows: |gpu - ref| <= 2 eps (|y| + |s v|) per element (fused vs. unfused
//    multiply-add), as for add_scaled_rows.
//  * probe: the logit z differs by at most dz = 2 * cols * eps * sum_c |w_c x_c| + eps |z| (two
//    summation orders, each within (cols - 1) eps sum |w x| of the exact sum); sigmoid' <= 1/4, so
//    |p_gpu - p_ref| <= dz / 4 + 8 eps (float expf and division against the double sigmoid).
//  * probe_and_steer's update: |gpu - ref| <= |alpha v| dp + 2 eps (|y| + |alpha p v|).
//  * captures are copies: bit-identical.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dms/backend/cpu/reference.hpp"
#include "dms/backend/cuda/device.cuh"
#include "dms/backend/cuda/steering.cuh"
#include "gpu_guard.hpp"
#include "support/random_floats.hpp"

using dms::test::random_floats;

namespace {

struct stream_guard {
  cudaStream_t s = nullptr;
  stream_guard() { DMS_CUDA_CHECK(cudaStreamCreate(&s)); }
  ~stream_guard() { (void)cudaStreamDestroy(s); }
};

double sigmoid_ref(double z) { return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z)); }

} // namespace

TEST_CASE("add_gathered_rows on the GPU matches the reference", "[cuda][steering]") {
  DMS_REQUIRE_GPU();
  stream_guard g;
  constexpr std::int64_t n_vectors = 3;
  for (std::int64_t cols : {1, 17, 576, 4096, 20000}) {
    for (std::int64_t rows : {1, 5, 70000}) {
      if (rows * cols > 4'000'000) continue;
      INFO(rows << " x " << cols);
      const std::int64_t stride = cols + 3, vstride = cols + 1;
      const auto total = static_cast<std::size_t>(rows * stride);
      const auto host = random_floats(total, 11u);
      const auto vectors = random_floats(static_cast<std::size_t>(n_vectors * vstride), 13u);
      const auto scales = random_floats(static_cast<std::size_t>(rows), 17u);
      std::vector<std::int32_t> index(static_cast<std::size_t>(rows));
      for (std::size_t r = 0; r < index.size(); ++r) // every vector, -1, and an out-of-range index
        index[r] = static_cast<std::int32_t>(r % (n_vectors + 2)) - 1 + (r % 7 == 6 ? 10 : 0);

      dms::cuda::device_buffer<float> d_rows(total, g.s), d_vec(vectors.size(), g.s), d_s(scales.size(), g.s);
      dms::cuda::device_buffer<std::int32_t> d_idx(index.size(), g.s);
      d_rows.copy_from_host(host);
      d_vec.copy_from_host(vectors);
      d_s.copy_from_host(scales);
      d_idx.copy_from_host(index);
      dms::cuda::add_gathered_rows({d_rows.data(), rows, cols, stride}, d_s.span(), d_idx.span(),
                                   {d_vec.data(), n_vectors, cols, vstride}, g.s);
      std::vector<float> got(total);
      d_rows.copy_to_host(got);
      dms::cuda::synchronize(g.s);

      std::size_t bad = 0;
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int32_t k = index[static_cast<std::size_t>(r)];
        const float s = scales[static_cast<std::size_t>(r)];
        for (std::int64_t c = 0; c < stride; ++c) {
          const auto at = static_cast<std::size_t>(r * stride + c);
          if (c >= cols || k < 0 || k >= n_vectors) {
            bad += std::memcmp(&got[at], &host[at], sizeof(float)) != 0; // untouched
            continue;
          }
          const float v = vectors[static_cast<std::size_t>(k * vstride + c)];
          const float want = host[at] + s * v;
          bad += !(std::fabs(got[at] - want) <= 2.0f * FLT_EPSILON * (std::fabs(host[at]) + std::fabs(s * v)));
        }
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("probe_rows and probe_and_steer on the GPU match the reference", "[cuda][steering]") {
  DMS_REQUIRE_GPU();
  stream_guard g;
  for (std::int64_t cols : {1, 31, 33, 576, 4096, 9000}) {
    for (std::int64_t rows : {1, 4, 300, 70000}) {
      if (rows * cols > 4'000'000) continue;
      INFO(rows << " x " << cols);
      const std::int64_t stride = cols + 2;
      const auto total = static_cast<std::size_t>(rows * stride);
      const auto host = random_floats(total, 21u);
      auto w = random_floats(static_cast<std::size_t>(cols), 23u);
      for (float &x : w) x *= 4.0f / static_cast<float>(std::sqrt(static_cast<double>(cols))); // logits ~ O(1..10)
      const auto v = random_floats(static_cast<std::size_t>(cols), 29u);
      const float bias = 0.25f, alpha = -1.5f;

      dms::cuda::device_buffer<float> d_rows(total, g.s), d_w(w.size(), g.s), d_v(v.size(), g.s),
          d_p(static_cast<std::size_t>(rows), g.s), d_p2(static_cast<std::size_t>(rows), g.s);
      d_rows.copy_from_host(host);
      d_w.copy_from_host(w);
      d_v.copy_from_host(v);
      const dms::matrix_view<float> m{d_rows.data(), rows, cols, stride};
      dms::cuda::probe_rows(m, d_w.span(), bias, d_p2.span(), g.s);
      dms::cuda::probe_and_steer(m, d_w.span(), bias, alpha, d_v.span(), d_p.span(), g.s);
      std::vector<float> got(total), p(static_cast<std::size_t>(rows)), p2(p.size());
      d_rows.copy_to_host(got);
      d_p.copy_to_host(p);
      d_p2.copy_to_host(p2);
      dms::cuda::synchronize(g.s);

      std::size_t bad_p = 0, bad_rows = 0;
      for (std::int64_t r = 0; r < rows; ++r) {
        const float *x = host.data() + r * stride;
        const float z = dms::cpu::reference::dot(x, w.data(), static_cast<std::size_t>(cols)) + bias;
        double mag = 0.0;
        for (std::int64_t c = 0; c < cols; ++c) mag += std::fabs(static_cast<double>(w[static_cast<std::size_t>(c)]) * x[c]);
        const double dz = 2.0 * static_cast<double>(cols) * FLT_EPSILON * mag + FLT_EPSILON * std::fabs(z);
        const double dp = dz / 4.0 + 8.0 * FLT_EPSILON;
        const auto pr = static_cast<float>(sigmoid_ref(z));
        const std::size_t ri = static_cast<std::size_t>(r);
        bad_p += !(std::fabs(static_cast<double>(p[ri]) - pr) <= dp);
        bad_p += std::memcmp(&p[ri], &p2[ri], sizeof(float)) != 0; // same kernel body, same bits
        for (std::int64_t c = 0; c < stride; ++c) {
          const auto at = static_cast<std::size_t>(r * stride + c);
          if (c >= cols) {
            bad_rows += std::memcmp(&got[at], &host[at], sizeof(float)) != 0;
            continue;
          }
          const float vc = v[static_cast<std::size_t>(c)];
          const float want = host[at] + (alpha * pr) * vc;
          const double tol = std::fabs(static_cast<double>(alpha) * vc) * dp +
                             2.0 * FLT_EPSILON * (std::fabs(host[at]) + std::fabs(alpha * pr * vc));
          bad_rows += !(std::fabs(static_cast<double>(got[at]) - want) <= tol);
        }
      }
      CHECK(bad_p == 0);
      CHECK(bad_rows == 0);
    }
  }
}

TEST_CASE("capture_rows and capture_row_range copy rows exactly", "[cuda][steering]") {
  DMS_REQUIRE_GPU();
  stream_guard g;
  const std::int64_t rows = 37, cols = 1000, stride = 1003, out_rows = 9, out_stride = 1001;
  const auto host = random_floats(static_cast<std::size_t>(rows * stride), 31u);
  const std::vector<std::int32_t> index = {0, 36, 5, 5, -1, 37, 12, 1, 20};
  constexpr float sentinel = 7.0f;
  dms::cuda::device_buffer<float> d_rows(host.size(), g.s), d_out(static_cast<std::size_t>(out_rows * out_stride), g.s),
      d_range(static_cast<std::size_t>(out_rows * out_stride), g.s);
  dms::cuda::device_buffer<std::int32_t> d_idx(index.size(), g.s);
  d_rows.copy_from_host(host);
  d_idx.copy_from_host(index);
  const std::vector<float> fill(d_out.size(), sentinel);
  d_out.copy_from_host(fill);
  d_range.copy_from_host(fill);
  const dms::matrix_view<const float> m{d_rows.data(), rows, cols, stride};
  dms::cuda::capture_rows(m, d_idx.span(), {d_out.data(), out_rows, cols, out_stride}, g.s);
  dms::cuda::capture_row_range(m, 28, {d_range.data(), out_rows, cols, out_stride}, g.s);
  std::vector<float> got(d_out.size()), got_range(d_range.size());
  d_out.copy_to_host(got);
  d_range.copy_to_host(got_range);
  dms::cuda::synchronize(g.s);
  std::size_t bad = 0;
  for (std::int64_t i = 0; i < out_rows; ++i) {
    const std::int32_t r = index[static_cast<std::size_t>(i)];
    for (std::int64_t c = 0; c < out_stride; ++c) {
      const auto at = static_cast<std::size_t>(i * out_stride + c);
      const bool copied = c < cols && r >= 0 && r < rows;
      const float want = copied ? host[static_cast<std::size_t>(r * stride + c)] : sentinel;
      bad += std::memcmp(&got[at], &want, sizeof(float)) != 0;
      const float want_range = c < cols ? host[static_cast<std::size_t>((28 + i) * stride + c)] : sentinel;
      bad += std::memcmp(&got_range[at], &want_range, sizeof(float)) != 0;
    }
  }
  CHECK(bad == 0);
}

TEST_CASE("steering kernels check shapes on the host", "[cuda][steering]") {
  // Runs without a GPU: every check throws before any CUDA call.
  float *fake = nullptr;
  const float *cfake = nullptr;
  const std::int32_t *ifake = nullptr;
  const dms::matrix_view<float> m{fake, 3, 4, 4};
  const dms::matrix_view<const float> vecs{cfake, 2, 4, 4};
  using Catch::Contains;
  CHECK_THROWS_WITH(dms::cuda::add_gathered_rows(m, {cfake, 2}, {ifake, 3}, vecs, nullptr),
                    Contains("one value per row (3), got 2"));
  CHECK_THROWS_WITH(dms::cuda::add_gathered_rows(m, {cfake, 3}, {ifake, 2}, vecs, nullptr),
                    Contains("one vector index per row (3), got 2"));
  CHECK_THROWS_WITH(dms::cuda::add_gathered_rows(m, {cfake, 3}, {ifake, 3}, {cfake, 2, 5, 5}, nullptr),
                    Contains("vector length 5 does not match the row width 4"));
  CHECK_THROWS_WITH(dms::cuda::add_gathered_rows(m, {cfake, 3}, {ifake, 3}, {cfake, 2, 4, 3}, nullptr),
                    Contains("vectors row_stride 3 is smaller than cols 4"));
  CHECK_THROWS_WITH(dms::cuda::add_gathered_rows({fake, 3, 4, 2}, {cfake, 3}, {ifake, 3}, vecs, nullptr),
                    Contains("rows would overlap"));

  CHECK_THROWS_WITH(dms::cuda::probe_rows(m, {cfake, 5}, 0.0f, {fake, 3}, nullptr),
                    Contains("probe_rows: vector length 5 does not match the row width 4"));
  CHECK_THROWS_WITH(dms::cuda::probe_rows(m, {cfake, 4}, 0.0f, {fake, 1}, nullptr),
                    Contains("probe_rows: expected one value per row (3), got 1"));
  CHECK_THROWS_WITH(dms::cuda::probe_and_steer(m, {cfake, 4}, 0.0f, 1.0f, {cfake, 3}, {fake, 3}, nullptr),
                    Contains("steering vector length 3 does not match the row width 4"));
  CHECK_THROWS_WITH(dms::cuda::probe_and_steer(m, {cfake, 4}, 0.0f, 1.0f, {cfake, 4}, {fake, 2}, nullptr),
                    Contains("one value per row (3), got 2"));

  CHECK_THROWS_WITH(dms::cuda::capture_rows(vecs, {ifake, 2}, {fake, 2, 5, 5}, nullptr),
                    Contains("out rows have width 5, the activations 4"));
  CHECK_THROWS_WITH(dms::cuda::capture_rows(vecs, {ifake, 1}, {fake, 2, 4, 4}, nullptr),
                    Contains("one row index per output row (2), got 1"));
  CHECK_THROWS_WITH(dms::cuda::capture_row_range(vecs, 1, {fake, 2, 4, 4}, nullptr),
                    Contains("rows [1, 3) are outside the 2 rows"));
  CHECK_THROWS_WITH(dms::cuda::capture_row_range(vecs, -1, {fake, 1, 4, 4}, nullptr),
                    Contains("outside the 2 rows"));
  // Empty work is valid and queues nothing (no GPU needed).
  CHECK_NOTHROW(dms::cuda::add_gathered_rows({fake, 0, 4, 4}, {cfake, 0}, {ifake, 0}, vecs, nullptr));
  CHECK_NOTHROW(dms::cuda::probe_and_steer({fake, 0, 4, 4}, {cfake, 4}, 0.0f, 1.0f, {cfake, 4}, {fake, 0}, nullptr));
  CHECK_NOTHROW(dms::cuda::capture_row_range(vecs, 2, {fake, 0, 4, 4}, nullptr));
}
