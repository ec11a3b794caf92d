// dms/formats/quant.hpp: ggml's block-quantized storage types: block layouts, and the scalar
// reference conversions to f32 (dequantize) and from f32 (quantize).
//
// GGUF checkpoints store weights in ggml's block formats: a block of 32 elements (256 for the
// K-quants, "super-blocks") carries one or two f16 scales and small integers. dms computes in f32,
// so every quantized tensor it reads passes through `dequantize`, and every tensor a merge writes
// back in a quantized type passes through `quantize`. This header is the specification of both:
// plain loops that follow ggml-quants.c (`dequantize_row_*`, `quantize_row_*_ref`) statement for
// statement, no third-party dependency. The SIMD kernels (dms/backend/cpu/dequant.hpp) are
// tested against these functions bit for bit, and these functions are tested bit for bit against
// llama.cpp's own `gguf` Python package (tests/peers).
//
// Exactness. Dequantization computes `d * q` or `d * q - m` in f32, where `d` and `m` are f16
// values (11 significant bits) times at most an 8-bit integer, and `q` has at most 6 bits, so
// every product is exact in f32 and each element is rounded at most once (by the subtraction).
// The result therefore does not depend on whether a compiler fuses the multiply-add, nor on the
// order of the factors: every implementation that follows ggml's formulas gives the same bits.
// Quantization is not exact (`x * (1/d)` rounds), so it keeps each product rounded separately
// (`detail::rounded_mul`) to match ggml's and gguf's results under any -ffp-contract/-march.
//
// Supported types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K for
// dequantization (ggml_type_traits::dequantizable); F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
// for quantization. Other types throw errc::unsupported naming the type.
//
// @code
//   // raw: the bytes of a Q4_1 tensor with n elements (n a multiple of 32), e.g. from a mapped GGUF
//   std::vector<float> w(n);
//   dms::dequantize(dms::ggml_type::q4_1, raw, w);      // throws if raw.size() != n / 32 * 20
//   std::vector<std::byte> back(*dms::storage_bytes(dms::ggml_type::q8_0, n));
//   dms::quantize(dms::ggml_type::q8_0, w, back);
// @endcode
#pragma once

#include <bit>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/core/half.hpp"
#include "dms/formats/ggml_type.hpp"

DMS_NAMESPACE_BEGIN

//! Elements per K-quant super-block (ggml's QK_K).
inline constexpr std::size_t qk_k = 256;

// --- block layouts ---------------------------------------------------------------------------------
// Copied from ggml-common.h, field for field (the byte layout is the file format). Every block is
// trivially copyable, has no padding (its size is the GGUF type_size, checked below) and only
// 2-byte alignment; the byte-span functions copy each block out of the source, so the source
// needs no alignment at all. Element indices below are within one block.

//! Q4_0: x = (q - 8) * d, q a 4-bit unsigned integer.
struct block_q4_0 {
  f16_bits d;           //!< scale
  std::uint8_t qs[16];  //!< elements 0..15 in the low nibbles, 16..31 in the high nibbles
};
//! Q4_1: x = q * d + m, q a 4-bit unsigned integer.
struct block_q4_1 {
  f16_bits d;           //!< scale
  f16_bits m;           //!< minimum (offset)
  std::uint8_t qs[16];  //!< elements 0..15 in the low nibbles, 16..31 in the high nibbles
};
//! Q5_0: x = (q - 16) * d, q a 5-bit unsigned integer.
struct block_q5_0 {
  f16_bits d;           //!< scale
  std::uint8_t qh[4];   //!< 5th bits: bit j of the little-endian u32 belongs to element j
  std::uint8_t qs[16];  //!< low 4 bits, as in Q4_0
};
//! Q5_1: x = q * d + m, q a 5-bit unsigned integer.
struct block_q5_1 {
  f16_bits d;           //!< scale
  f16_bits m;           //!< minimum (offset)
  std::uint8_t qh[4];   //!< 5th bits: bit j of the little-endian u32 belongs to element j
  std::uint8_t qs[16];  //!< low 4 bits, as in Q4_1
};
//! Q8_0: x = q * d, q a signed byte.
struct block_q8_0 {
  f16_bits d;           //!< scale
  std::int8_t qs[32];   //!< one element per byte
};
//! Q2_K: 16 sub-blocks of 16; x = d * (sc & 15) * q - dmin * (sc >> 4), q 2 bits.
struct block_q2_k {
  std::uint8_t scales[16]; //!< per sub-block: scale in the low nibble, min in the high nibble
  std::uint8_t qs[64];     //!< 2-bit quants; see dequantize_block
  f16_bits d;              //!< super-block scale of the scales
  f16_bits dmin;           //!< super-block scale of the mins
};
//! Q3_K: 16 sub-blocks of 16; x = d * (s - 32) * (q - (hbit ? 0 : 4)), q 2 low bits, s 6 bits.
struct block_q3_k {
  std::uint8_t hmask[32];  //!< high (3rd) bits: bit k of hmask[l] belongs to element 32 k + l
  std::uint8_t qs[64];     //!< low 2 bits; see dequantize_block
  std::uint8_t scales[12]; //!< 16 6-bit scales, packed (see detail::unpack_q3_k_scales)
  f16_bits d;              //!< super-block scale
};
//! Q4_K: 8 sub-blocks of 32; x = d * sc * q - dmin * m, q 4 bits, sc and m 6 bits.
struct block_q4_k {
  f16_bits d;              //!< super-block scale of the scales
  f16_bits dmin;           //!< super-block scale of the mins
  std::uint8_t scales[12]; //!< 8 scales and 8 mins, 6 bits each (see detail::scale_min_k4)
  std::uint8_t qs[128];    //!< per 64 elements, 32 bytes: low nibbles first, then high nibbles
};
//! Q5_K: as Q4_K with a 5th bit per element.
struct block_q5_k {
  f16_bits d;              //!< super-block scale of the scales
  f16_bits dmin;           //!< super-block scale of the mins
  std::uint8_t scales[12]; //!< as in Q4_K
  std::uint8_t qh[32];     //!< 5th bits: bit k of qh[l] belongs to element 32 k + l
  std::uint8_t qs[128];    //!< low 4 bits, as in Q4_K
};
//! Q6_K: 16 sub-blocks of 16; x = d * sc * (q - 32), q 6 bits, sc a signed byte.
struct block_q6_k {
  std::uint8_t ql[128];    //!< low 4 bits; see dequantize_block
  std::uint8_t qh[64];     //!< high 2 bits; see dequantize_block
  std::int8_t scales[16];  //!< one per sub-block of 16
  f16_bits d;              //!< super-block scale
};

// --- traits ------------------------------------------------------------------------------------------

//! The ggml_type and elements per block of a storage type: the block structs above, and `float`,
//! `f16_bits`, `bf16_bits` for the plain types (one element per "block").
template <class Block> struct ggml_block_traits;
#define DMS_DETAIL_BLOCK_TRAITS(Block, Type, BlockSize)                                            \
  template <> struct ggml_block_traits<Block> {                                                    \
    static constexpr ggml_type type = ggml_type::Type;                                             \
    static constexpr std::size_t block_size = BlockSize;                                           \
  };                                                                                               \
  static_assert(sizeof(Block) == traits_of(ggml_type::Type).type_size &&                           \
                    BlockSize == traits_of(ggml_type::Type).block_size,                            \
                #Block " does not have the GGUF size of " #Type)
DMS_DETAIL_BLOCK_TRAITS(float, f32, 1);
DMS_DETAIL_BLOCK_TRAITS(f16_bits, f16, 1);
DMS_DETAIL_BLOCK_TRAITS(bf16_bits, bf16, 1);
DMS_DETAIL_BLOCK_TRAITS(block_q4_0, q4_0, 32);
DMS_DETAIL_BLOCK_TRAITS(block_q4_1, q4_1, 32);
DMS_DETAIL_BLOCK_TRAITS(block_q5_0, q5_0, 32);
DMS_DETAIL_BLOCK_TRAITS(block_q5_1, q5_1, 32);
DMS_DETAIL_BLOCK_TRAITS(block_q8_0, q8_0, 32);
DMS_DETAIL_BLOCK_TRAITS(block_q2_k, q2_k, qk_k);
DMS_DETAIL_BLOCK_TRAITS(block_q3_k, q3_k, qk_k);
DMS_DETAIL_BLOCK_TRAITS(block_q4_k, q4_k, qk_k);
DMS_DETAIL_BLOCK_TRAITS(block_q5_k, q5_k, qk_k);
DMS_DETAIL_BLOCK_TRAITS(block_q6_k, q6_k, qk_k);
#undef DMS_DETAIL_BLOCK_TRAITS

//! A storage type dms can dequantize: one with ggml_block_traits.
template <class Block>
concept ggml_block = requires {
  { ggml_block_traits<Block>::type } -> std::convertible_to<ggml_type>;
  { ggml_block_traits<Block>::block_size } -> std::convertible_to<std::size_t>;
} && std::is_trivially_copyable_v<Block>;

//! Whether dms can convert `t` to f32 (ggml_type_traits::dequantizable).
constexpr bool can_dequantize(ggml_type t) noexcept {
  const auto tr = traits_of(static_cast<std::uint32_t>(t));
  return tr && tr->dequantizable;
}
//! Whether dms can convert f32 to `t` (the types gguf's Python package can quantize, too).
constexpr bool can_quantize(ggml_type t) noexcept {
  switch (t) {
  case ggml_type::f32:
  case ggml_type::f16:
  case ggml_type::bf16:
  case ggml_type::q4_0:
  case ggml_type::q4_1:
  case ggml_type::q5_0:
  case ggml_type::q5_1:
  case ggml_type::q8_0: return true;
  default: return false;
  }
}

//! Calls `f(std::type_identity<Block>{})` with the storage type of `t` and returns its result;
//! `t` must satisfy can_dequantize (else errc::unsupported). Lets code written once for all block
//! types (the SIMD dispatcher, tests) pick the type at run time.
template <class F> decltype(auto) visit_ggml_block(ggml_type t, F &&f);

// --- scalar dequantization of one block ---------------------------------------------------------------

namespace detail {

DMS_HOST_DEVICE constexpr float f16_value(f16_bits h) noexcept { return to_f32(h); }

//! Scale j and min j (j < 8) of a Q4_K/Q5_K super-block (ggml's get_scale_min_k4): bytes 0..3
//! hold 6-bit scales 0..3, bytes 4..7 6-bit mins 0..3; scales and mins 4..7 take their low 4 bits
//! from the nibbles of bytes 8..11 and their high 2 bits from the top bits of bytes 0..7.
constexpr void scale_min_k4(int j, const std::uint8_t *q, std::uint8_t &sc, std::uint8_t &m) noexcept {
  if (j < 4) {
    sc = static_cast<std::uint8_t>(q[j] & 63);
    m = static_cast<std::uint8_t>(q[j + 4] & 63);
  } else {
    sc = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

//! The 16 signed scales of a Q3_K super-block, bias 32 still included (values 0..63). Byte-wise
//! version of ggml's kmask1 = 0x03030303 / kmask2 = 0x0f0f0f0f shuffle of three u32 words: scale k
//! takes its low 4 bits from byte k (k < 8, low nibble) or byte k - 8 (high nibble), and its high
//! 2 bits from byte 8 + k % 4, bits 2 (k / 4) and 2 (k / 4) + 1. Independent of endianness.
constexpr void unpack_q3_k_scales(const std::uint8_t *packed, std::int8_t *scales) noexcept {
  for (int k = 0; k < 16; ++k) {
    const int low = k < 8 ? (packed[k] & 0xF) : (packed[k - 8] >> 4);
    const int high = (packed[8 + k % 4] >> (2 * (k / 4))) & 3;
    scales[k] = static_cast<std::int8_t>(low | (high << 4));
  }
}

inline std::uint32_t load_u32_le(const std::uint8_t *p) noexcept {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
         std::uint32_t(p[3]) << 24;
}

} // namespace detail

// Each writes ggml_block_traits<Block>::block_size floats to y.

inline void dequantize_block(const float &x, float *y) noexcept { *y = x; }
inline void dequantize_block(const f16_bits &x, float *y) noexcept { *y = to_f32(x); }
inline void dequantize_block(const bf16_bits &x, float *y) noexcept { *y = to_f32(x); }

inline void dequantize_block(const block_q4_0 &b, float *y) noexcept {
  const float d = detail::f16_value(b.d);
  for (int j = 0; j < 16; ++j) {
    const int x0 = (b.qs[j] & 0x0F) - 8;
    const int x1 = (b.qs[j] >> 4) - 8;
    y[j] = static_cast<float>(x0) * d;
    y[j + 16] = static_cast<float>(x1) * d;
  }
}

inline void dequantize_block(const block_q4_1 &b, float *y) noexcept {
  const float d = detail::f16_value(b.d);
  const float m = detail::f16_value(b.m);
  for (int j = 0; j < 16; ++j) {
    const int x0 = b.qs[j] & 0x0F;
    const int x1 = b.qs[j] >> 4;
    y[j] = static_cast<float>(x0) * d + m;
    y[j + 16] = static_cast<float>(x1) * d + m;
  }
}

inline void dequantize_block(const block_q5_0 &b, float *y) noexcept {
  const float d = detail::f16_value(b.d);
  const std::uint32_t qh = detail::load_u32_le(b.qh);
  for (int j = 0; j < 16; ++j) {
    const auto xh_0 = static_cast<int>(((qh >> (j + 0)) << 4) & 0x10);
    const auto xh_1 = static_cast<int>((qh >> (j + 12)) & 0x10);
    const int x0 = ((b.qs[j] & 0x0F) | xh_0) - 16;
    const int x1 = ((b.qs[j] >> 4) | xh_1) - 16;
    y[j] = static_cast<float>(x0) * d;
    y[j + 16] = static_cast<float>(x1) * d;
  }
}

inline void dequantize_block(const block_q5_1 &b, float *y) noexcept {
  const float d = detail::f16_value(b.d);
  const float m = detail::f16_value(b.m);
  const std::uint32_t qh = detail::load_u32_le(b.qh);
  for (int j = 0; j < 16; ++j) {
    const auto xh_0 = static_cast<int>(((qh >> (j + 0)) << 4) & 0x10);
    const auto xh_1 = static_cast<int>((qh >> (j + 12)) & 0x10);
    const int x0 = (b.qs[j] & 0x0F) | xh_0;
    const int x1 = (b.qs[j] >> 4) | xh_1;
    y[j] = static_cast<float>(x0) * d + m;
    y[j + 16] = static_cast<float>(x1) * d + m;
  }
}

inline void dequantize_block(const block_q8_0 &b, float *y) noexcept {
  const float d = detail::f16_value(b.d);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}

inline void dequantize_block(const block_q2_k &b, float *y) noexcept {
  const float d = detail::f16_value(b.d);
  const float min = detail::f16_value(b.dmin);
  const std::uint8_t *q = b.qs;
  int is = 0;
  // Each half of 128 elements uses 32 bytes of qs: element 32 j + l of the half is bits 2 j, 2 j + 1
  // of q[l]; every 16 elements have their own scale/min byte.
  for (std::size_t n = 0; n < qk_k; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const std::uint8_t sc = b.scales[is++];
        const float dl = d * static_cast<float>(sc & 0xF);
        const float ml = min * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l)
          *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
      }
      shift += 2;
    }
    q += 32;
  }
}

inline void dequantize_block(const block_q3_k &b, float *y) noexcept {
  const float d_all = detail::f16_value(b.d);
  std::int8_t scales[16];
  detail::unpack_q3_k_scales(b.scales, scales);
  const std::uint8_t *q = b.qs;
  const std::uint8_t *hm = b.hmask;
  unsigned m = 1; // the hmask bit of the current 32 elements: bit k for elements 32 k .. 32 k + 31
  int is = 0;
  for (std::size_t n = 0; n < qk_k; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * static_cast<float>(scales[is++] - 32);
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
          const int low = (q[l] >> shift) & 3;
          *y++ = dl * static_cast<float>(low - ((hm[l] & m) ? 0 : 4));
        }
      }
      shift += 2;
      m <<= 1;
    }
    q += 32;
  }
}

inline void dequantize_block(const block_q4_k &b, float *y) noexcept {
  const float d = detail::f16_value(b.d);
  const float min = detail::f16_value(b.dmin);
  const std::uint8_t *q = b.qs;
  int is = 0;
  for (std::size_t j = 0; j < qk_k; j += 64) {
    std::uint8_t sc, m;
    detail::scale_min_k4(is + 0, b.scales, sc, m);
    const float d1 = d * sc, m1 = min * m;
    detail::scale_min_k4(is + 1, b.scales, sc, m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

inline void dequantize_block(const block_q5_k &b, float *y) noexcept {
  const float d = detail::f16_value(b.d);
  const float min = detail::f16_value(b.dmin);
  const std::uint8_t *ql = b.qs;
  const std::uint8_t *qh = b.qh;
  int is = 0;
  unsigned u1 = 1, u2 = 2;
  for (std::size_t j = 0; j < qk_k; j += 64) {
    std::uint8_t sc, m;
    detail::scale_min_k4(is + 0, b.scales, sc, m);
    const float d1 = d * sc, m1 = min * m;
    detail::scale_min_k4(is + 1, b.scales, sc, m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l)
      *y++ = d1 * static_cast<float>((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l)
      *y++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 <<= 2;
    u2 <<= 2;
  }
}

inline void dequantize_block(const block_q6_k &b, float *y) noexcept {
  const float d = detail::f16_value(b.d);
  const std::uint8_t *ql = b.ql;
  const std::uint8_t *qh = b.qh;
  const std::int8_t *sc = b.scales;
  // Each half of 128 elements: 64 bytes of ql, 32 of qh, 8 scales. Element l + 32 k (l < 32) takes
  // its low 4 bits from ql[l] (k = 0, 2: low/high nibble) or ql[l + 32] (k = 1, 3) and its high
  // 2 bits from bits 2 k, 2 k + 1 of qh[l]; its scale is sc[l / 16 + 2 k].
  for (std::size_t n = 0; n < qk_k; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// --- dequantization of buffers ------------------------------------------------------------------------

namespace detail {

inline std::string type_name(ggml_type t) {
  const auto tr = traits_of(static_cast<std::uint32_t>(t));
  return tr ? std::string(tr->name) : "type id " + std::to_string(static_cast<std::uint32_t>(t));
}

//! Checks that `n_elements` is a whole number of blocks of `t`, whose bytes are `n_bytes`;
//! returns the number of blocks.
inline std::size_t check_quant_sizes(const char *what, ggml_type t, std::size_t n_bytes,
                                     std::size_t n_elements, const error_context &where) {
  const auto tr = traits_of(t);
  require(n_elements % tr.block_size == 0, errc::shape_mismatch, [&] {
    return std::string(what) + ": " + std::to_string(n_elements) + " elements are not a whole number of " +
           std::string(tr.name) + " blocks (" + std::to_string(tr.block_size) + " elements each)";
  }, where);
  const std::size_t n_blocks = n_elements / tr.block_size;
  require(n_bytes / tr.type_size == n_blocks && n_bytes % tr.type_size == 0, errc::shape_mismatch, [&] {
    return std::string(what) + ": " + std::string(tr.name) + " data of " + std::to_string(n_elements) +
           " elements takes " + std::to_string(n_blocks * tr.type_size) + " bytes, got " +
           std::to_string(n_bytes);
  }, where);
  return n_blocks;
}

inline void check_dequantize(ggml_type t, std::size_t n_bytes, std::size_t n_elements,
                             const error_context &where) {
  require(can_dequantize(t), errc::unsupported, [&] {
    return "dequantize: " + type_name(t) +
           " is not supported (dms decodes F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, "
           "Q5_K, Q6_K)";
  }, where);
  check_quant_sizes("dequantize", t, n_bytes, n_elements, where);
}

//! Dequantizes `n_blocks` blocks stored (unaligned) at `src`.
template <ggml_block Block>
void dequantize_bytes(const std::byte *src, float *dst, std::size_t n_blocks) noexcept {
  constexpr std::size_t bs = ggml_block_traits<Block>::block_size;
  for (std::size_t i = 0; i < n_blocks; ++i) {
    Block b;
    std::memcpy(&b, src + i * sizeof(Block), sizeof(Block));
    dequantize_block(b, dst + i * bs);
  }
}

} // namespace detail

template <class F> decltype(auto) visit_ggml_block(ggml_type t, F &&f) {
  switch (t) {
  case ggml_type::f32: return std::forward<F>(f)(std::type_identity<float>{});
  case ggml_type::f16: return std::forward<F>(f)(std::type_identity<f16_bits>{});
  case ggml_type::bf16: return std::forward<F>(f)(std::type_identity<bf16_bits>{});
  case ggml_type::q4_0: return std::forward<F>(f)(std::type_identity<block_q4_0>{});
  case ggml_type::q4_1: return std::forward<F>(f)(std::type_identity<block_q4_1>{});
  case ggml_type::q5_0: return std::forward<F>(f)(std::type_identity<block_q5_0>{});
  case ggml_type::q5_1: return std::forward<F>(f)(std::type_identity<block_q5_1>{});
  case ggml_type::q8_0: return std::forward<F>(f)(std::type_identity<block_q8_0>{});
  case ggml_type::q2_k: return std::forward<F>(f)(std::type_identity<block_q2_k>{});
  case ggml_type::q3_k: return std::forward<F>(f)(std::type_identity<block_q3_k>{});
  case ggml_type::q4_k: return std::forward<F>(f)(std::type_identity<block_q4_k>{});
  case ggml_type::q5_k: return std::forward<F>(f)(std::type_identity<block_q5_k>{});
  case ggml_type::q6_k: return std::forward<F>(f)(std::type_identity<block_q6_k>{});
  default: break;
  }
  throw error(errc::unsupported, "no block layout for " + detail::type_name(t));
}

//! Dequantizes typed blocks: dst.size() must be blocks.size() * block_size (else
//! errc::shape_mismatch).
template <ggml_block Block> void dequantize(std::span<const Block> blocks, std::span<float> dst) {
  constexpr std::size_t bs = ggml_block_traits<Block>::block_size;
  require(dst.size() / bs == blocks.size() && dst.size() % bs == 0, errc::shape_mismatch, [&] {
    return "dequantize: " + std::to_string(blocks.size()) + " " +
           detail::type_name(ggml_block_traits<Block>::type) + " blocks need " +
           std::to_string(blocks.size() * bs) + " outputs, got " + std::to_string(dst.size());
  });
  for (std::size_t i = 0; i < blocks.size(); ++i) dequantize_block(blocks[i], dst.data() + i * bs);
}

//! The scalar reference: dequantizes `src`, the raw bytes of dst.size() elements of `type`, into
//! `dst`. Throws errc::unsupported for a type dms cannot decode (the message names it) and
//! errc::shape_mismatch unless dst.size() is a whole number of blocks and src.size() exactly their
//! bytes; `where` (file, offset, tensor) is attached to either error. `src` needs no alignment.
//! The SIMD version with the same contract and results is dms::cpu::dequantize.
inline void dequantize(ggml_type type, std::span<const std::byte> src, std::span<float> dst,
                       const error_context &where = {}) {
  detail::check_dequantize(type, src.size(), dst.size(), where);
  visit_ggml_block(type, [&]<class Block>(std::type_identity<Block>) {
    detail::dequantize_bytes<Block>(src.data(), dst.data(), dst.size() / ggml_block_traits<Block>::block_size);
  });
}

// --- quantization ---------------------------------------------------------------------------------------

namespace detail {

//! a * b rounded to f32, never fused with a following addition. GCC contracts `a * b + c` into an
//! FMA whenever the target has one (its C++ default is -ffp-contract=fast, even across statements
//! and with -std=c++20), which would change quantized values under -march=native; the empty asm
//! makes the product opaque, so it costs nothing but the fusion.
DMS_ALWAYS_INLINE float rounded_mul(float a, float b) noexcept {
  float p = a * b;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || (defined(__i386__) && defined(__SSE__)))
  __asm__("" : "+x"(p));
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
  __asm__("" : "+w"(p));
#elif defined(__GNUC__) || defined(__clang__)
  __asm__("" : "+m"(p));
#else
  volatile float v = p; // other compilers do not contract across statements; belt and braces
  p = v;
#endif
  return p;
}

//! (int)v for v in the range ggml's casts see, clamped to [0, hi]; NaN gives 0 instead of UB.
DMS_ALWAYS_INLINE std::uint8_t trunc_clamp(float v, int hi) noexcept {
  if (!(v >= 0.0f)) return 0;
  if (v >= static_cast<float>(hi)) return static_cast<std::uint8_t>(hi);
  return static_cast<std::uint8_t>(static_cast<int>(v));
}

inline void check_finite(const float *x, std::size_t n, ggml_type t, std::size_t block_index) {
  for (std::size_t j = 0; j < n; ++j)
    require(std::isfinite(x[j]), errc::numeric, [&] {
      return "quantize: element " + std::to_string(block_index * n + j) + " is not finite; " +
             type_name(t) + " cannot represent it";
    });
}

//! Q4_0 and Q5_0: the scale is the element of largest magnitude (the first one on ties) divided
//! by -2^(bits-1), so that element maps to q = 0 exactly.
DMS_ALWAYS_INLINE float signed_max(const float *x) noexcept {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    const float v = x[j];
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  return max;
}

DMS_ALWAYS_INLINE void min_max(const float *x, float &min, float &max) noexcept {
  min = 3.402823466e+38f; // FLT_MAX, as ggml
  max = -3.402823466e+38f;
  for (int j = 0; j < 32; ++j) {
    const float v = x[j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
}

} // namespace detail

// Each reads ggml_block_traits<Block>::block_size floats from x; the block types require finite
// input (checked by the span and byte overloads below, not here).

inline void quantize_block(const float *x, float &y) noexcept { y = *x; }
//! Round to nearest even (ggml's GGML_FP32_TO_FP16, numpy's astype(float16)).
inline void quantize_block(const float *x, f16_bits &y) noexcept { y = to_f16(*x); }
//! Round to nearest even; a NaN keeps its sign and top payload bits and is made quiet (ggml's
//! ggml_compute_fp32_to_bf16, which gguf's numpy code copies). dms::to_bf16 instead writes every
//! NaN as 0x7fc0 (PyTorch's rule); the two agree on every non-NaN input.
inline void quantize_block(const float *x, bf16_bits &y) noexcept {
  const auto u = std::bit_cast<std::uint32_t>(*x);
  if ((u & 0x7fffffffu) > 0x7f800000u) y = bf16_bits{static_cast<std::uint16_t>((u >> 16) | 64u)};
  else y = to_bf16(*x);
}

//! ggml's quantize_row_q8_0_ref: d = max|x| / 127, q = roundf(x / d) (half away from zero).
inline void quantize_block(const float *x, block_q8_0 &y) noexcept {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
  const float d = amax / 127.0f; // 127 = 2^7 - 1, the largest magnitude of a signed byte
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y.d = to_f16(d);
  for (int j = 0; j < 32; ++j)
    y.qs[j] = static_cast<std::int8_t>(std::round(detail::rounded_mul(x[j], id)));
}

//! ggml's quantize_row_q4_0_ref: d = max / -8 (max: the signed element of largest magnitude),
//! q = min(15, trunc(x / d + 8.5)).
inline void quantize_block(const float *x, block_q4_0 &y) noexcept {
  const float max = detail::signed_max(x);
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y.d = to_f16(d);
  for (int j = 0; j < 16; ++j) {
    const std::uint8_t xi0 = detail::trunc_clamp(detail::rounded_mul(x[j], id) + 8.5f, 15);
    const std::uint8_t xi1 = detail::trunc_clamp(detail::rounded_mul(x[16 + j], id) + 8.5f, 15);
    y.qs[j] = static_cast<std::uint8_t>(xi0 | (xi1 << 4));
  }
}

//! ggml's quantize_row_q4_1_ref: d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d + 0.5)).
inline void quantize_block(const float *x, block_q4_1 &y) noexcept {
  float min, max;
  detail::min_max(x, min, max);
  const float d = (max - min) / 15.0f; // 15 = 2^4 - 1 steps
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y.d = to_f16(d);
  y.m = to_f16(min);
  for (int j = 0; j < 16; ++j) {
    const std::uint8_t xi0 = detail::trunc_clamp(detail::rounded_mul(x[j] - min, id) + 0.5f, 15);
    const std::uint8_t xi1 = detail::trunc_clamp(detail::rounded_mul(x[16 + j] - min, id) + 0.5f, 15);
    y.qs[j] = static_cast<std::uint8_t>(xi0 | (xi1 << 4));
  }
}

//! ggml's quantize_row_q5_0_ref: as Q4_0 with d = max / -16 and q = min(31, trunc(x / d + 16.5)).
inline void quantize_block(const float *x, block_q5_0 &y) noexcept {
  const float max = detail::signed_max(x);
  const float d = max / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y.d = to_f16(d);
  std::uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const std::uint8_t xi0 = detail::trunc_clamp(detail::rounded_mul(x[j], id) + 16.5f, 31);
    const std::uint8_t xi1 = detail::trunc_clamp(detail::rounded_mul(x[16 + j], id) + 16.5f, 31);
    y.qs[j] = static_cast<std::uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
    qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
  }
  for (int k = 0; k < 4; ++k) y.qh[k] = static_cast<std::uint8_t>(qh >> (8 * k));
}

//! ggml's quantize_row_q5_1_ref: as Q4_1 with d = (max - min) / 31 and q up to 31.
inline void quantize_block(const float *x, block_q5_1 &y) noexcept {
  float min, max;
  detail::min_max(x, min, max);
  const float d = (max - min) / 31.0f; // 31 = 2^5 - 1 steps
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y.d = to_f16(d);
  y.m = to_f16(min);
  std::uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const std::uint8_t xi0 = detail::trunc_clamp(detail::rounded_mul(x[j] - min, id) + 0.5f, 31);
    const std::uint8_t xi1 = detail::trunc_clamp(detail::rounded_mul(x[16 + j] - min, id) + 0.5f, 31);
    y.qs[j] = static_cast<std::uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
    qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
  }
  for (int k = 0; k < 4; ++k) y.qh[k] = static_cast<std::uint8_t>(qh >> (8 * k));
}

//! A storage type dms can quantize to.
template <class Block>
concept quantizable_block = ggml_block<Block> && requires(const float *x, Block &b) { quantize_block(x, b); };

namespace detail {

template <quantizable_block Block> constexpr bool needs_finite_input() noexcept {
  return ggml_block_traits<Block>::block_size > 1;
}

template <quantizable_block Block>
void quantize_bytes(const float *src, std::byte *dst, std::size_t n_blocks) {
  constexpr std::size_t bs = ggml_block_traits<Block>::block_size;
  for (std::size_t i = 0; i < n_blocks; ++i) {
    if constexpr (needs_finite_input<Block>())
      check_finite(src + i * bs, bs, ggml_block_traits<Block>::type, i);
    Block b;
    quantize_block(src + i * bs, b);
    std::memcpy(dst + i * sizeof(Block), &b, sizeof(Block));
  }
}

} // namespace detail

//! Quantizes src into typed blocks: src.size() must be dst.size() * block_size (else
//! errc::shape_mismatch); a non-finite input to a block type throws errc::numeric.
template <quantizable_block Block> void quantize(std::span<const float> src, std::span<Block> dst) {
  constexpr std::size_t bs = ggml_block_traits<Block>::block_size;
  require(src.size() / bs == dst.size() && src.size() % bs == 0, errc::shape_mismatch, [&] {
    return "quantize: " + std::to_string(src.size()) + " inputs do not fill " +
           std::to_string(dst.size()) + " " + detail::type_name(ggml_block_traits<Block>::type) + " blocks";
  });
  detail::quantize_bytes<Block>(src.data(), reinterpret_cast<std::byte *>(dst.data()), dst.size());
}

//! Quantizes `src` into `dst`, the raw bytes of src.size() elements of `type` (the bytes ggml's
//! reference quantizer and gguf's Python quantizer write). Throws errc::unsupported for a type
//! dms cannot quantize (can_quantize), errc::shape_mismatch unless src.size() is a whole number of
//! blocks and dst.size() exactly their bytes, errc::numeric for a NaN or infinity headed for a
//! block type (a scale cannot represent it). `dst` needs no alignment.
inline void quantize(ggml_type type, std::span<const float> src, std::span<std::byte> dst,
                     const error_context &where = {}) {
  require(can_quantize(type), errc::unsupported, [&] {
    return "quantize: " + detail::type_name(type) +
           " is not supported (dms encodes F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)";
  }, where);
  detail::check_quant_sizes("quantize", type, dst.size(), src.size(), where);
  visit_ggml_block(type, [&]<class Block>(std::type_identity<Block>) {
    if constexpr (quantizable_block<Block>) {
      try {
        detail::quantize_bytes<Block>(src.data(), dst.data(), src.size() / ggml_block_traits<Block>::block_size);
      } catch (const error &e) {
        throw error(e.code(), e.message(), where);
      }
    }
  });
}

DMS_NAMESPACE_END
