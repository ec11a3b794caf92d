// The scalar reference dequantization (dms/formats/quant.hpp) against hand-computed blocks and
// against a second, independent specification written here element by element (the way gguf's
// numpy code indexes the blocks, rather than ggml's loops); and its error reporting.
// Bit-exactness against gguf's own Python package is checked in tests/peers.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dms/formats/quant.hpp"
#include "support/quant_blocks.hpp"

namespace {

using dms::ggml_type;

using dms::test::f16_at;
using dms::test::random_blocks;
constexpr const auto &all_types = dms::test::all_quant_types;

// --- the independent specification: element e of one block ----------------------------------------
// Indexing as in gguf/quants.py (reshapes of the byte arrays), arithmetic as in ggml.
float element(ggml_type t, const std::uint8_t *b, int e) {
  auto nib = [&](const std::uint8_t *qs, int i) { return i < 16 ? (qs[i] & 15) : (qs[i - 16] >> 4); };
  auto bit = [&](const std::uint8_t *p, int i) { return (p[i / 8] >> (i % 8)) & 1; };
  switch (t) {
  case ggml_type::f32: {
    float x;
    std::memcpy(&x, b, 4);
    return x;
  }
  case ggml_type::f16: return f16_at(b);
  case ggml_type::bf16: return std::bit_cast<float>(std::uint32_t(b[0] | b[1] << 8) << 16);
  case ggml_type::q4_0: return float(nib(b + 2, e) - 8) * f16_at(b);
  case ggml_type::q4_1: return float(nib(b + 4, e)) * f16_at(b) + f16_at(b + 2);
  case ggml_type::q5_0: return float((nib(b + 6, e) | bit(b + 2, e) << 4) - 16) * f16_at(b);
  case ggml_type::q5_1: return float(nib(b + 8, e) | bit(b + 4, e) << 4) * f16_at(b) + f16_at(b + 2);
  case ggml_type::q8_0: return float(std::int8_t(b[2 + e])) * f16_at(b);
  case ggml_type::q2_k: {
    const std::uint8_t *scales = b, *qs = b + 16;
    const int q = (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const int sc = scales[e / 16];
    return f16_at(b + 80) * float(sc & 15) * float(q) - f16_at(b + 82) * float(sc >> 4);
  }
  case ggml_type::q3_k: {
    const std::uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
    const int k = e / 16;
    const int low = k < 8 ? (sc[k] & 15) : (sc[k - 8] >> 4);
    const int s = (low | ((sc[8 + k % 4] >> (2 * (k / 4))) & 3) << 4) - 32;
    const int ql = (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const int qh = (hmask[e % 32] >> (e / 32)) & 1;
    return f16_at(b + 108) * float(s) * float(ql - (qh ? 0 : 4));
  }
  case ggml_type::q4_k:
  case ggml_type::q5_k: {
    const std::uint8_t *s = b + 4; // d: bytes 0..3, m: 4..7, m_d: 8..11 (gguf's get_scale_min)
    const int sub = e / 32, j = sub % 4;
    const int sc = sub < 4 ? (s[j] & 0x3F) : ((s[8 + j] & 0x0F) | ((s[j] >> 2) & 0x30));
    const int mn = sub < 4 ? (s[4 + j] & 0x3F) : ((s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30));
    const std::uint8_t *qs = t == ggml_type::q4_k ? b + 16 : b + 48;
    int q = (qs[(sub / 2) * 32 + e % 32] >> (4 * (sub % 2))) & 15;
    if (t == ggml_type::q5_k) q |= ((b[16 + e % 32] >> sub) & 1) << 4;
    return f16_at(b) * float(sc) * float(q) - f16_at(b + 2) * float(mn);
  }
  case ggml_type::q6_k: {
    const std::uint8_t *ql = b, *qh = b + 128;
    const std::int8_t sc = std::int8_t(b[192 + e / 16]);
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const int low = (ql[h * 64 + e % 64] >> (4 * ((e % 128) / 64))) & 15;
    const int high = (qh[h * 32 + l] >> (2 * k)) & 3;
    return f16_at(b + 208) * float(sc) * float((low | high << 4) - 32);
  }
  default: FAIL("no spec for type"); return 0;
  }
}

std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }

} // namespace

TEST_CASE("reference dequantization of hand-made blocks", "[formats][quant]") {
  SECTION("Q4_0: low nibbles are elements 0..15, high nibbles 16..31, x = (q - 8) d") {
    dms::block_q4_0 b{};
    b.d = dms::to_f16(0.5f);
    for (int j = 0; j < 16; ++j) b.qs[j] = std::uint8_t(j | (15 - j) << 4);
    float y[32];
    dms::dequantize_block(b, y);
    for (int j = 0; j < 16; ++j) {
      CHECK(y[j] == float(j - 8) * 0.5f);
      CHECK(y[16 + j] == float(15 - j - 8) * 0.5f);
    }
  }
  SECTION("Q4_1: x = q d + m") {
    dms::block_q4_1 b{};
    b.d = dms::to_f16(0.25f);
    b.m = dms::to_f16(-1.0f);
    b.qs[0] = 0xF0; // element 0: q = 0, element 16: q = 15
    float y[32];
    dms::dequantize_block(b, y);
    CHECK(y[0] == -1.0f);
    CHECK(y[16] == 15 * 0.25f - 1.0f);
    CHECK(y[1] == -1.0f);
  }
  SECTION("Q5_0: bit j of qh is the 5th bit of element j") {
    dms::block_q5_0 b{};
    b.d = dms::to_f16(1.0f);
    b.qh[0] = 0x01; // element 0
    b.qh[2] = 0x02; // element 17
    b.qs[0] = 0x0F; // element 0 low bits 15, element 16 low bits 0
    b.qs[1] = 0x30; // element 17 low bits 3
    float y[32];
    dms::dequantize_block(b, y);
    CHECK(y[0] == 31 - 16);
    CHECK(y[16] == 0 - 16);
    CHECK(y[17] == (3 | 16) - 16);
    CHECK(y[1] == -16);
  }
  SECTION("Q8_0: signed bytes times d") {
    dms::block_q8_0 b{};
    b.d = dms::to_f16(2.0f);
    b.qs[0] = -128;
    b.qs[31] = 127;
    float y[32];
    dms::dequantize_block(b, y);
    CHECK(y[0] == -256.0f);
    CHECK(y[31] == 254.0f);
    CHECK(y[5] == 0.0f);
  }
  SECTION("Q6_K: scales are signed, q is biased by 32") {
    dms::block_q6_k b{};
    b.d = dms::to_f16(0.5f);
    b.scales[0] = -2;
    b.ql[0] = 0x0F;           // element 0 low bits 15 (element 64: high nibble 0)
    b.qh[0] = 0x03;           // element 0 high bits 3 -> q = 63
    float y[256];
    dms::dequantize_block(b, y);
    CHECK(y[0] == 0.5f * -2.0f * float(63 - 32));
    CHECK(y[1] == 0.5f * -2.0f * -32.0f);
  }
  SECTION("Q3_K: a set hmask bit means no -4 offset") {
    dms::block_q3_k b{};
    b.d = dms::to_f16(1.0f);
    // scale 0 = 33 (low nibble 1 in byte 0, high bits 2 in byte 8 bits 0..1) -> s = 1
    b.scales[0] = 0x01;
    b.scales[8] = 0x02;
    b.qs[0] = 0x03;     // element 0: low 2 bits 3
    b.hmask[0] = 0x01;  // element 0: high bit set
    float y[256];
    dms::dequantize_block(b, y);
    CHECK(y[0] == 3.0f);
    CHECK(y[1] == -4.0f); // q = 0, high bit clear: 0 - 4
  }
}

TEST_CASE("reference dequantization equals the element-wise specification for every type",
          "[formats][quant]") {
  for (ggml_type t : all_types) {
    const auto tr = dms::traits_of(t);
    INFO("type " << tr.name);
    const std::size_t n_blocks = tr.block_size == 1 ? 4096 : 200;
    const auto raw = random_blocks(t, n_blocks, 42u + std::uint32_t(t));
    std::vector<float> y(n_blocks * tr.block_size);
    dms::dequantize(t, std::as_bytes(std::span(raw)), y);
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < n_blocks; ++i)
      for (std::size_t e = 0; e < tr.block_size; ++e) {
        const float want = element(t, raw.data() + i * tr.type_size, int(e));
        if (bits(want) != bits(y[i * tr.block_size + e])) {
          if (mismatches++ < 5)
            UNSCOPED_INFO("block " << i << " element " << e << ": got " << y[i * tr.block_size + e]
                                    << ", want " << want);
        }
      }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("typed-block and byte-span dequantization agree, at any source alignment", "[formats][quant]") {
  const auto raw = random_blocks(ggml_type::q4_1, 9, 7);
  std::vector<dms::block_q4_1> blocks(9);
  std::memcpy(blocks.data(), raw.data(), raw.size());
  std::vector<float> a(9 * 32), b(9 * 32);
  dms::dequantize(std::span<const dms::block_q4_1>(blocks), std::span<float>(a));
  std::vector<std::uint8_t> shifted(raw.size() + 1);
  std::memcpy(shifted.data() + 1, raw.data(), raw.size()); // odd address
  dms::dequantize(ggml_type::q4_1, std::as_bytes(std::span(shifted)).subspan(1), b);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  std::vector<float> wrong(8 * 32);
  CHECK_THROWS_AS(dms::dequantize(std::span<const dms::block_q4_1>(blocks), std::span<float>(wrong)), dms::error);
}

TEST_CASE("visit_ggml_block maps every dequantizable type to its layout", "[formats][quant]") {
  for (ggml_type t : all_types) {
    CHECK(dms::can_dequantize(t));
    const auto size = dms::visit_ggml_block(t, []<class B>(std::type_identity<B>) { return sizeof(B); });
    CHECK(size == dms::traits_of(t).type_size);
    const ggml_type back =
        dms::visit_ggml_block(t, []<class B>(std::type_identity<B>) { return dms::ggml_block_traits<B>::type; });
    CHECK(back == t);
  }
  CHECK_FALSE(dms::can_dequantize(ggml_type::q8_1));
  CHECK_FALSE(dms::can_dequantize(static_cast<ggml_type>(1000)));
}

TEST_CASE("dequantize reports unsupported types and size mismatches with context", "[formats][quant]") {
  std::vector<std::byte> raw(36);
  std::vector<float> y(64);
  const dms::error_context where("model.gguf", 4096, "blk.0.ffn_up.weight");

  SECTION("unsupported types are named") {
    for (ggml_type t : {ggml_type::q8_1, ggml_type::iq2_xxs, ggml_type::q8_k, ggml_type::i32}) {
      try {
        dms::dequantize(t, raw, y, where);
        FAIL("no exception");
      } catch (const dms::error &e) {
        CHECK(e.code() == dms::errc::unsupported);
        CHECK_THAT(e.what(), Catch::Contains(std::string(dms::traits_of(t).name)));
        CHECK_THAT(e.what(), Catch::Contains("blk.0.ffn_up.weight"));
        CHECK_THAT(e.what(), Catch::Contains("model.gguf"));
      }
    }
    try {
      dms::dequantize(static_cast<ggml_type>(1000), raw, y);
      FAIL("no exception");
    } catch (const dms::error &e) {
      CHECK(e.code() == dms::errc::unsupported);
      CHECK_THAT(e.what(), Catch::Contains("type id 1000"));
    }
  }
  SECTION("the source must be exactly the bytes of the destination's elements") {
    try {
      dms::dequantize(ggml_type::q4_0, std::span(raw).first(35), y, where);
      FAIL("no exception");
    } catch (const dms::error &e) {
      CHECK(e.code() == dms::errc::shape_mismatch);
      CHECK_THAT(e.what(), Catch::Contains("takes 36 bytes, got 35"));
      CHECK(e.where().offset == 4096u);
    }
    CHECK_THROWS_AS(dms::dequantize(ggml_type::q4_0, std::span(raw).first(18), y), dms::error);
  }
  SECTION("the destination must be whole blocks") {
    try {
      dms::dequantize(ggml_type::q4_0, raw, std::span(y).first(33));
      FAIL("no exception");
    } catch (const dms::error &e) {
      CHECK(e.code() == dms::errc::shape_mismatch);
      CHECK_THAT(e.what(), Catch::Contains("33 elements are not a whole number of Q4_0 blocks"));
    }
  }
  SECTION("empty buffers are fine") {
    dms::dequantize(ggml_type::q6_k, {}, {});
    dms::dequantize(ggml_type::f16, {}, {});
  }
}
