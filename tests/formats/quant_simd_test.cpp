// dms::cpu::dequantize (dms/backend/cpu/dequant.hpp) against the scalar reference dms::dequantize,
// for every type, at every dispatch level this CPU supports, over many block counts and with
// misaligned source and destination pointers. Expected: identical bits (every product in ggml's
// formulas is exact, so vector kernels, FMAs included, round exactly like the reference).
// Levels the CPU lacks are reported with WARN and not run.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "dms/backend/cpu/dequant.hpp"
#include "dms/formats/quant.hpp"
#include "support/isa_levels.hpp"
#include "support/quant_blocks.hpp"

namespace {

using dms::ggml_type;
using dms::cpu::isa_level;

using dms::test::for_each_level;
using dms::test::random_blocks;
constexpr const auto &all_types = dms::test::all_quant_types;

// Index of the first element whose bits differ, or n. With nan_equal, any two NaNs match (NaN
// payloads through a NaN scale depend on operand order, which a compiler may swap).
std::size_t first_difference(const float *a, const float *b, std::size_t n, bool nan_equal) {
  for (std::size_t i = 0; i < n; ++i) {
    if (std::memcmp(a + i, b + i, sizeof(float)) == 0) continue;
    if (nan_equal && std::isnan(a[i]) && std::isnan(b[i])) continue;
    return i;
  }
  return n;
}

} // namespace

TEST_CASE("SIMD dequantization equals the reference bit for bit at every level", "[formats][quant][cpu]") {
  const std::size_t block_counts[] = {0, 1, 2, 3, 5, 8, 17, 64, 257};
  for_each_level([&](isa_level level) {
    for (ggml_type t : all_types) {
      const auto tr = dms::traits_of(t);
      for (std::size_t n_blocks : block_counts) {
        // Plain types: more "blocks" so that every vector width and remainder is covered.
        const std::size_t n_units = tr.block_size == 1 ? n_blocks * 33 + 7 * (n_blocks % 3) : n_blocks;
        const std::size_t n = n_units * tr.block_size;
        const auto raw = random_blocks(t, n_units, 1000u * std::uint32_t(t) + std::uint32_t(n_blocks), true);
        std::vector<float> want(n);
        dms::dequantize(t, std::as_bytes(std::span(raw)), want);
        for (std::size_t src_off : {0u, 1u, 2u, 3u, 5u}) {
          for (std::size_t dst_off : {0u, 1u, 3u}) {
            std::vector<std::uint8_t> src(raw.size() + src_off);
            if (!raw.empty()) std::memcpy(src.data() + src_off, raw.data(), raw.size());
            std::vector<float> got(n + dst_off + 1, -7.0f);
            dms::cpu::dequantize(t, std::as_bytes(std::span(src)).subspan(src_off),
                                 std::span(got).subspan(dst_off, n));
            INFO("level " << dms::cpu::name_of(level) << ", " << tr.name << ", " << n_units << " blocks, src +"
                          << src_off << ", dst +" << dst_off);
            const std::size_t i = first_difference(got.data() + dst_off, want.data(), n, false);
            INFO("first difference at element " << i);
            CHECK(i == n);
            CHECK(got[n + dst_off] == -7.0f); // nothing written past the end
            if (dst_off > 0) CHECK(got[dst_off - 1] == -7.0f);
          }
        }
      }
    }
  });
}

TEST_CASE("SIMD dequantization of arbitrary bit patterns matches the reference", "[formats][quant][cpu]") {
  // NaN and infinite scales, every byte value: the vector kernels must not differ in anything but
  // which NaN they produce.
  for_each_level([&](isa_level level) {
    for (ggml_type t : all_types) {
      const auto tr = dms::traits_of(t);
      const std::size_t n_units = tr.block_size == 1 ? 20000 : 300;
      const auto raw = random_blocks(t, n_units, 77u + std::uint32_t(t), false);
      std::vector<float> want(n_units * tr.block_size), got(want.size());
      dms::dequantize(t, std::as_bytes(std::span(raw)), want);
      dms::cpu::dequantize(t, std::as_bytes(std::span(raw)), got);
      INFO("level " << dms::cpu::name_of(level) << ", " << tr.name);
      CHECK(first_difference(got.data(), want.data(), got.size(), true) == got.size());
      if (t == ggml_type::f16 || t == ggml_type::bf16 || t == ggml_type::f32) // exact NaN bits too
        CHECK(first_difference(got.data(), want.data(), got.size(), false) == got.size());
    }
  });
}

TEST_CASE("SIMD dequantization checks like the reference", "[formats][quant][cpu]") {
  std::vector<std::byte> raw(40);
  std::vector<float> y(64);
  CHECK_THROWS_AS(dms::cpu::dequantize(ggml_type::q8_1, raw, y), dms::error);
  try {
    dms::cpu::dequantize(ggml_type::q4_1, std::span(raw).first(39), y, {"x.gguf", 12, "t"});
    FAIL("no exception");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::shape_mismatch);
    CHECK_THAT(e.what(), Catch::Contains("x.gguf: offset 12: tensor 't'"));
  }
  CHECK(dms::cpu::has_simd_dequantize(ggml_type::q4_1, isa_level::avx2));
  CHECK(dms::cpu::has_simd_dequantize(ggml_type::q8_0, isa_level::avx512));
  CHECK_FALSE(dms::cpu::has_simd_dequantize(ggml_type::q8_0, isa_level::baseline));
  CHECK(dms::cpu::has_simd_dequantize(ggml_type::q2_k, isa_level::avx512));
  CHECK_FALSE(dms::cpu::has_simd_dequantize(ggml_type::f32, isa_level::avx512)); // a memcpy
  CHECK_FALSE(dms::cpu::has_simd_dequantize(ggml_type::q8_1, isa_level::avx2));
}
