// Every CPU kernel at every dispatch level this machine can run, against the scalar reference.
//
// Tolerances (float, u = FLT_EPSILON / 2 = 2^-24):
//   dot, dot_rows: |simd - reference| <= 2 * n * FLT_EPSILON * sum_i |a_i * b_i|. Both results
//     are within gamma_n * sum|a_i b_i| (gamma_n ~ n u) of the exact value whatever the summation
//     order (Higham, Accuracy and Stability, 3.1), so they are within 2 gamma_n of each other;
//     2 n FLT_EPSILON = 4 n u leaves room for the products' own rounding.
//   axpy, add_scaled_rows: |simd - reference| <= 2 * FLT_EPSILON * (|y| + |a x|) per element:
//     a fused and an unfused multiply-add differ by at most the rounding of the product and of
//     the sum.
// Levels the CPU lacks are reported with WARN and not run (this repository's CI machine has AVX2
// but no AVX-512).
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <random>
#include <string>
#include <vector>

#include "dms/backend/cpu/kernels.hpp"
#include "support/isa_levels.hpp"
#include "support/random_floats.hpp"

namespace {

using dms::cpu::isa_level;

// Sizes around every vector width (4, 8, 16) and unroll factor (x2, x4), plus a long one.
const std::vector<std::size_t> sizes = {0, 1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000};

using dms::test::for_each_level;
using dms::test::random_floats;

float dot_tolerance(const float *a, const float *b, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i)
    s += std::fabs(double(a[i]) * double(b[i]));
  return static_cast<float>(2.0 * double(n) * FLT_EPSILON * s) + FLT_MIN;
}

bool axpy_close(float got, float want, float a, float x, float y0) {
  return std::fabs(got - want) <= 2.0f * FLT_EPSILON * (std::fabs(y0) + std::fabs(a * x));
}

} // namespace

TEST_CASE("dot matches the reference at every level, size and misalignment", "[cpu][kernels]") {
  for_each_level([&](isa_level level) {
    for (std::size_t n : sizes) {
      for (std::size_t offset : {0u, 1u, 3u}) { // floats; 1 and 3 misalign for every width
        const auto a = random_floats(n + offset, 1u + static_cast<std::uint32_t>(n));
        const auto b = random_floats(n + offset, 7u + static_cast<std::uint32_t>(n));
        const float *pa = a.data() + offset, *pb = b.data() + offset;
        INFO("level " << dms::cpu::name_of(level) << ", n " << n << ", offset " << offset);
        const float want = dms::cpu::reference::dot(pa, pb, n);
        const float got = dms::cpu::dot(pa, pb, n);
        CHECK(std::fabs(got - want) <= dot_tolerance(pa, pb, n));
      }
    }
  });
}

TEST_CASE("dot of exactly representable data is exact at every level", "[cpu][kernels]") {
  // Small integers: every partial sum is exact in float, so any summation order gives the same.
  for_each_level([&](isa_level level) {
    for (std::size_t n : sizes) {
      std::vector<float> a(n), b(n);
      for (std::size_t i = 0; i < n; ++i) {
        a[i] = static_cast<float>(int(i % 7) - 3);
        b[i] = static_cast<float>(int(i % 5) - 2);
      }
      INFO("level " << dms::cpu::name_of(level) << ", n " << n);
      CHECK(dms::cpu::dot(a.data(), b.data(), n) == dms::cpu::reference::dot(a.data(), b.data(), n));
    }
  });
}

TEST_CASE("axpy matches the reference and writes nothing outside y", "[cpu][kernels]") {
  constexpr float canary = 12345.0f;
  for_each_level([&](isa_level level) {
    for (std::size_t n : sizes) {
      for (std::size_t offset : {0u, 1u}) {
        const auto x = random_floats(n + offset, 11u + static_cast<std::uint32_t>(n));
        const auto y0 = random_floats(n, 13u + static_cast<std::uint32_t>(n));
        // y lives at `offset + 1` inside a buffer with canaries on both sides.
        std::vector<float> buf(n + offset + 2, canary);
        float *y = buf.data() + offset + 1;
        std::copy(y0.begin(), y0.end(), y);
        std::vector<float> want = y0;
        const float a = -0.75f;
        dms::cpu::reference::axpy(a, x.data() + offset, want.data(), n);
        dms::cpu::axpy(a, x.data() + offset, y, n);
        INFO("level " << dms::cpu::name_of(level) << ", n " << n << ", offset " << offset);
        for (std::size_t i = 0; i < n; ++i)
          if (!axpy_close(y[i], want[i], a, x[offset + i], y0[i])) FAIL_CHECK("mismatch at " << i);
        for (std::size_t i = 0; i < offset + 1; ++i)
          CHECK(buf[i] == canary);
        CHECK(buf[n + offset + 1] == canary);
      }
    }
  });
}

TEST_CASE("add_scaled_rows matches the reference on padded, misaligned rows", "[cpu][kernels]") {
  constexpr float pad = -999.0f;
  for_each_level([&](isa_level level) {
    for (std::size_t cols : sizes) {
      for (std::int64_t rows : {0, 1, 3, 5}) {
        const std::int64_t stride = static_cast<std::int64_t>(cols) + 3; // padded rows
        const std::size_t total = static_cast<std::size_t>(rows * stride) + 1;
        std::vector<float> got(total, pad), want(total, pad);
        const auto init = random_floats(total, 17u + static_cast<std::uint32_t>(cols));
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::size_t c = 0; c < cols; ++c) {
            const std::size_t at = 1 + static_cast<std::size_t>(r * stride) + c; // +1: misaligned
            got[at] = want[at] = init[at];
          }
        const auto v = random_floats(cols, 19u);
        const auto scales = random_floats(static_cast<std::size_t>(rows), 23u);
        dms::matrix_view<float> mg{got.data() + 1, rows, static_cast<std::int64_t>(cols), stride};
        dms::matrix_view<float> mw{want.data() + 1, rows, static_cast<std::int64_t>(cols), stride};
        dms::cpu::add_scaled_rows(mg, scales, v);
        dms::cpu::reference::add_scaled_rows(mw, scales, v);
        INFO("level " << dms::cpu::name_of(level) << ", " << rows << " x " << cols);
        for (std::size_t i = 0; i < total; ++i) {
          if (want[i] == pad) {
            if (got[i] != pad) FAIL_CHECK("padding overwritten at " << i);
            continue;
          }
          const std::size_t r = (i - 1) / static_cast<std::size_t>(stride);
          const std::size_t c = (i - 1) % static_cast<std::size_t>(stride);
          if (!axpy_close(got[i], want[i], scales[r], v[c], init[i]))
            FAIL_CHECK("mismatch at row " << r << ", col " << c);
        }
      }
    }
  });
}

TEST_CASE("dot_rows matches the reference", "[cpu][kernels]") {
  for_each_level([&](isa_level level) {
    for (std::size_t cols : sizes) {
      for (std::int64_t rows : {0, 1, 4}) {
        const std::int64_t stride = static_cast<std::int64_t>(cols) + 1;
        const auto data = random_floats(static_cast<std::size_t>(rows * stride) + 1, 29u);
        const auto w = random_floats(cols, 31u);
        dms::matrix_view<const float> m{data.data() + 1, rows, static_cast<std::int64_t>(cols), stride};
        std::vector<float> got(static_cast<std::size_t>(rows)), want(got.size());
        dms::cpu::dot_rows(m, w, got);
        dms::cpu::reference::dot_rows(m, w, want);
        INFO("level " << dms::cpu::name_of(level) << ", " << rows << " x " << cols);
        for (std::size_t r = 0; r < got.size(); ++r)
          CHECK(std::fabs(got[r] - want[r]) <= dot_tolerance(m.row(std::int64_t(r)), w.data(), cols));
      }
    }
  });
}

TEST_CASE("kernels reject mismatched shapes", "[cpu][kernels]") {
  std::vector<float> buf(12), v(4), s(3), out(3);
  dms::matrix_view<float> m{buf.data(), 3, 4, 4};
  CHECK_THROWS_WITH(dms::cpu::add_scaled_rows(m, std::span<const float>(s).first(2), v),
                    Catch::Contains("one value per row (3), got 2"));
  CHECK_THROWS_WITH(dms::cpu::add_scaled_rows(m, s, std::span<const float>(v).first(3)),
                    Catch::Contains("vector length 3 does not match the row width 4"));
  CHECK_THROWS_WITH(dms::cpu::dot_rows(m, v, std::span<float>(out).first(1)), Catch::Contains("dot_rows"));
  dms::matrix_view<float> overlapping{buf.data(), 3, 4, 2};
  CHECK_THROWS_WITH(dms::cpu::add_scaled_rows(overlapping, s, v), Catch::Contains("rows would overlap"));
  CHECK_THROWS_AS(dms::cpu::dot(std::span<const float>(v), std::span<const float>(s)), dms::error);
  try {
    dms::cpu::axpy(1.0f, std::span<const float>(v), std::span<float>(s));
    FAIL("no exception");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::shape_mismatch);
  }
}

TEST_CASE("kernels accept views built from tensor views", "[cpu][kernels]") {
  std::vector<float> acts(2 * 5, 1.0f);
  const std::vector<float> v = {1, 2, 3, 4, 5};
  const std::vector<float> scales = {2.0f, -1.0f};
  auto m = dms::as_matrix<float>(dms::make_view(acts.data(), {2, 5}));
  dms::cpu::add_scaled_rows(m, scales, v);
  CHECK(acts == std::vector<float>{3, 5, 7, 9, 11, 0, -1, -2, -3, -4});
  std::vector<float> logits(2);
  dms::cpu::dot_rows(m, v, logits);
  CHECK(logits[0] == 3 + 10 + 21 + 36 + 55);
  CHECK(logits[1] == 0 - 2 - 6 - 12 - 20);
}
