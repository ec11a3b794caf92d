// Quantization from f32 (dms/formats/quant.hpp): round-trip error bounds, hand-checked blocks,
// special blocks and errors. Bit-identity with gguf's Python quantizers (and so with ggml's
// quantize_row_*_ref) is checked in tests/peers.
//
// Round-trip bounds, per element, with d the f32 scale the quantizer computed (before f16
// rounding), u16 = 2^-11 the unit roundoff of f16 and q_max the largest quant:
//   Q8_0          |x - x'| <= d/2 + 127 |d| u16          (round to nearest; the stored scale is
//                                                          off by up to |d| u16, times |q| <= 127)
//   Q4_0, Q5_0    |x - x'| <= |d| + q_max |d| u16        (truncation of x/d + 8.5 rounds to nearest,
//                                                          except the element opposite the maximum,
//                                                          clamped from 2^(b-1) to 2^(b-1) - 1: |d|)
//   Q4_1, Q5_1    |x - x'| <= d/2 + q_max d u16 + |min| u16   (the minimum is stored as f16 too)
// plus a few f32 ulps of slack for the products. A bound that fails means a wrong layout or a wrong
// formula, not an unlucky draw: the bounds are worst cases.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "dms/formats/quant.hpp"

namespace {

using dms::ggml_type;

const ggml_type block_types[] = {ggml_type::q8_0, ggml_type::q4_0, ggml_type::q4_1, ggml_type::q5_0,
                                 ggml_type::q5_1};

std::vector<float> sample_data(std::size_t n, std::uint32_t seed, int kind) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-3.0f, 5.0f);
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    switch (kind) {
    case 0: v[i] = normal(gen) * 0.02f; break;                           // weights
    case 1: v[i] = uniform(gen); break;                                  // offset range (Q4_1's min)
    case 2: v[i] = std::ldexp(normal(gen), int(gen() % 30) - 24); break; // wide dynamic range
    default: v[i] = float(int(gen() % 7) - 3); break;                    // few distinct values, ties
    }
  }
  return v;
}

struct bound_params {
  float q_max;
  bool has_min;
  bool truncating; // Q4_0/Q5_0: error up to |d| at the clamped element
};

bound_params params_of(ggml_type t) {
  switch (t) {
  case ggml_type::q8_0: return {127, false, false};
  case ggml_type::q4_0: return {8, false, true};
  case ggml_type::q5_0: return {16, false, true};
  case ggml_type::q4_1: return {15, true, false};
  default: return {31, true, false};
  }
}

// The f32 scale the quantizer computes for one block (recomputed from the formulas above).
float block_scale(ggml_type t, const float *x, float &min) {
  float amax = 0, smax = 0, lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      smax = x[j];
    }
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  min = lo;
  switch (t) {
  case ggml_type::q8_0: return amax / 127;
  case ggml_type::q4_0: return smax / -8;
  case ggml_type::q5_0: return smax / -16;
  case ggml_type::q4_1: return (hi - lo) / 15;
  default: return (hi - lo) / 31;
  }
}

} // namespace

TEST_CASE("quantize round-trips within the worst-case bound", "[formats][quant]") {
  const float u16 = std::ldexp(1.0f, -11);
  for (ggml_type t : block_types) {
    const auto tr = dms::traits_of(t);
    const auto p = params_of(t);
    for (int kind = 0; kind < 4; ++kind) {
      INFO(tr.name << ", data kind " << kind);
      const std::size_t n = 32 * 300;
      const auto x = sample_data(n, 5u + std::uint32_t(kind), kind);
      std::vector<std::byte> q(*dms::storage_bytes(t, n));
      dms::quantize(t, x, q);
      std::vector<float> back(n);
      dms::dequantize(t, q, back);
      double worst_ratio = 0; // error / bound, reported for the curious
      std::size_t failures = 0;
      for (std::size_t b = 0; b < n / 32; ++b) {
        float min;
        const float d = std::fabs(block_scale(t, &x[b * 32], min));
        const float bound = (p.truncating ? d : d / 2) + p.q_max * d * u16 +
                            (p.has_min ? std::fabs(min) * u16 : 0.0f) + 4 * FLT_EPSILON * (d * p.q_max + std::fabs(min));
        for (std::size_t j = 0; j < 32; ++j) {
          const float err = std::fabs(x[b * 32 + j] - back[b * 32 + j]);
          if (bound > 0) worst_ratio = std::max(worst_ratio, double(err) / bound);
          if (!(err <= bound) && failures++ < 5)
            UNSCOPED_INFO("block " << b << " element " << j << ": x " << x[b * 32 + j] << " -> " << back[b * 32 + j]
                                   << ", error " << err << " > bound " << bound);
        }
      }
      CHECK(failures == 0);
      CHECK(worst_ratio > 0.1); // the bound is not vacuous
    }
  }
}

TEST_CASE("quantize of hand-checked blocks", "[formats][quant]") {
  SECTION("Q8_0 of -127..127 step ~8: d = 1, exact") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = float(j * 8 - 127 + (j == 31 ? 6 : 0)); // last = 127
    dms::block_q8_0 b;
    dms::quantize_block(x, b);
    CHECK(b.d.bits == dms::to_f16(1.0f).bits);
    for (int j = 0; j < 32; ++j) CHECK(b.qs[j] == std::int8_t(x[j]));
  }
  SECTION("Q8_0 rounds half away from zero") {
    float x[32] = {};
    x[0] = 127.0f; // d = 1
    x[1] = 2.5f;
    x[2] = -2.5f;
    x[3] = 0.49f;
    dms::block_q8_0 b;
    dms::quantize_block(x, b);
    CHECK(b.qs[1] == 3);
    CHECK(b.qs[2] == -3);
    CHECK(b.qs[3] == 0);
  }
  SECTION("Q4_0: the signed maximum maps to q = 0, its opposite is clamped to 15") {
    float x[32] = {};
    x[0] = -8.0f; // largest magnitude: d = -8 / -8 = 1
    x[1] = 8.0f;  // x/d + 8.5 = 16.5 -> 16 -> clamped to 15 (value 7)
    x[2] = 3.0f;
    dms::block_q4_0 b;
    dms::quantize_block(x, b);
    CHECK(dms::to_f32(b.d) == 1.0f);
    CHECK((b.qs[0] & 15) == 0);
    CHECK((b.qs[1] & 15) == 15);
    CHECK((b.qs[2] & 15) == 11);
    CHECK((b.qs[3] & 15) == 8); // zero
    float y[32];
    dms::dequantize_block(b, y);
    CHECK(y[0] == -8.0f);
    CHECK(y[1] == 7.0f);
    CHECK(y[2] == 3.0f);
  }
  SECTION("Q4_0: the first element of largest magnitude wins a tie of signs") {
    float x[32] = {};
    x[4] = 2.0f;
    x[9] = -2.0f;
    dms::block_q4_0 b;
    dms::quantize_block(x, b);
    CHECK(dms::to_f32(b.d) == -0.25f); // max = +2 -> d = 2 / -8
  }
  SECTION("Q4_1 of 0..15 * 0.5 + 1 is exact") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = float(j % 16) * 0.5f + 1.0f;
    dms::block_q4_1 b;
    dms::quantize_block(x, b);
    CHECK(dms::to_f32(b.d) == 0.5f);
    CHECK(dms::to_f32(b.m) == 1.0f);
    float y[32];
    dms::dequantize_block(b, y);
    for (int j = 0; j < 32; ++j) CHECK(y[j] == x[j]);
  }
  SECTION("Q5_1 of 0..31 is exact and sets the 5th bits") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = float(j);
    dms::block_q5_1 b;
    dms::quantize_block(x, b);
    CHECK(dms::to_f32(b.d) == 1.0f);
    CHECK(b.qh[0] == 0x00); // elements 0..15 are below 16
    CHECK(b.qh[1] == 0x00);
    CHECK(b.qh[2] == 0xFF); // 16..31 have the 5th bit
    CHECK(b.qh[3] == 0xFF);
    float y[32];
    dms::dequantize_block(b, y);
    for (int j = 0; j < 32; ++j) CHECK(y[j] == x[j]);
  }
  SECTION("constant and zero blocks") {
    // 127: every type's scale is exact in f16 (127 / 127, 127 / -8, 127 / -16; 0 for the _1 types)
    float zeros[32] = {}, ones[32];
    std::fill(std::begin(ones), std::end(ones), 127.0f);
    for (ggml_type t : block_types) {
      INFO(dms::traits_of(t).name);
      std::vector<std::byte> q(dms::traits_of(t).type_size);
      float y[32];
      dms::quantize(t, zeros, q);
      dms::dequantize(t, q, y);
      for (float v : y) CHECK(v == 0.0f);
      dms::quantize(t, ones, q);
      dms::dequantize(t, q, y);
      for (float v : y) CHECK(v == 127.0f);
    }
  }
}

TEST_CASE("quantize to the plain types", "[formats][quant]") {
  const float x[] = {1.0f, -0.0f, 65504.0f, 65520.0f, 1e-8f, 3.14159f, std::numeric_limits<float>::infinity()};
  std::vector<std::byte> out(sizeof(x) / 2);
  dms::quantize(ggml_type::f16, x, out);
  for (std::size_t i = 0; i < std::size(x); ++i) {
    std::uint16_t h;
    std::memcpy(&h, &out[2 * i], 2);
    CHECK(h == dms::to_f16(x[i]).bits);
  }
  SECTION("BF16 NaN keeps its sign and payload top bits and is made quiet (ggml's rule)") {
    const float nans[] = {std::bit_cast<float>(0xFFA12345u), std::bit_cast<float>(0x7F800001u), 1.5f};
    std::vector<std::byte> b(6);
    dms::quantize(ggml_type::bf16, nans, b);
    std::uint16_t h[3];
    std::memcpy(h, b.data(), 6);
    CHECK(h[0] == 0xFFE1);
    CHECK(h[1] == 0x7FC0);
    CHECK(h[2] == dms::to_bf16(1.5f).bits);
  }
  SECTION("F32 is a copy") {
    std::vector<std::byte> f(sizeof(x));
    dms::quantize(ggml_type::f32, x, f);
    CHECK(std::memcmp(f.data(), x, sizeof(x)) == 0);
  }
}

TEST_CASE("quantize reports bad input", "[formats][quant]") {
  std::vector<float> x(64, 1.0f);
  std::vector<std::byte> q(*dms::storage_bytes(ggml_type::q4_1, 64));
  SECTION("non-finite input to a block type") {
    x[40] = std::numeric_limits<float>::quiet_NaN();
    try {
      dms::quantize(ggml_type::q4_1, x, q, {"out.gguf", std::nullopt, "w"});
      FAIL("no exception");
    } catch (const dms::error &e) {
      CHECK(e.code() == dms::errc::numeric);
      CHECK_THAT(e.what(), Catch::Contains("element 40"));
      CHECK_THAT(e.what(), Catch::Contains("tensor 'w'"));
    }
    x[40] = std::numeric_limits<float>::infinity();
    std::vector<std::byte> q8(*dms::storage_bytes(ggml_type::q8_0, 64));
    CHECK_THROWS_AS(dms::quantize(ggml_type::q8_0, x, q8), dms::error);
  }
  SECTION("unsupported target types") {
    for (ggml_type t : {ggml_type::q4_k, ggml_type::q6_k, ggml_type::q8_1, ggml_type::iq4_nl}) {
      CHECK_FALSE(dms::can_quantize(t));
      try {
        dms::quantize(t, x, q);
        FAIL("no exception");
      } catch (const dms::error &e) {
        CHECK(e.code() == dms::errc::unsupported);
        CHECK_THAT(e.what(), Catch::Contains(std::string(dms::traits_of(t).name)));
      }
    }
  }
  SECTION("sizes") {
    CHECK_THROWS_AS(dms::quantize(ggml_type::q4_1, std::span(x).first(48), q), dms::error);
    CHECK_THROWS_AS(dms::quantize(ggml_type::q4_1, x, std::span(q).first(39)), dms::error);
    std::vector<dms::block_q8_0> blocks(3);
    CHECK_THROWS_AS(dms::quantize(std::span<const float>(x), std::span<dms::block_q8_0>(blocks)), dms::error);
    blocks.resize(2);
    dms::quantize(std::span<const float>(x), std::span<dms::block_q8_0>(blocks));
    CHECK(dms::to_f32(blocks[1].d) == dms::to_f32(dms::to_f16(1.0f / 127)));
  }
}
