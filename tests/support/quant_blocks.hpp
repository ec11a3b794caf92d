// Test and benchmark support: ggml block layouts (dms/formats/quant.hpp) and random valid blocks.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "dms/formats/quant.hpp"

namespace dms::test {

//! Every type dms::dequantize handles.
inline constexpr dms::ggml_type all_quant_types[] = {
    dms::ggml_type::f32,  dms::ggml_type::f16,  dms::ggml_type::bf16, dms::ggml_type::q4_0, dms::ggml_type::q4_1,
    dms::ggml_type::q5_0, dms::ggml_type::q5_1, dms::ggml_type::q8_0, dms::ggml_type::q2_k, dms::ggml_type::q3_k,
    dms::ggml_type::q4_k, dms::ggml_type::q5_k, dms::ggml_type::q6_k};

inline std::uint16_t f16_of(float x) { return dms::to_f16(x).bits; }
//! The little-endian f16 at p, as float.
inline float f16_at(const std::uint8_t *p) {
  return dms::to_f32(dms::f16_bits{std::uint16_t(p[0] | p[1] << 8)});
}
//! Stores x as a little-endian f16 at p.
inline void put_f16(std::uint8_t *p, float x) {
  const std::uint16_t h = f16_of(x);
  p[0] = std::uint8_t(h & 0xFF);
  p[1] = std::uint8_t(h >> 8);
}

//! Offsets of the f16 scale fields of each block type (ggml-common.h); none for the plain types.
inline std::vector<std::size_t> scale_offsets(dms::ggml_type t) {
  using dms::ggml_type;
  switch (t) {
  case ggml_type::q4_0:
  case ggml_type::q5_0:
  case ggml_type::q8_0: return {0};
  case ggml_type::q4_1:
  case ggml_type::q5_1:
  case ggml_type::q4_k:
  case ggml_type::q5_k: return {0, 2};
  case ggml_type::q2_k: return {80, 82};
  case ggml_type::q3_k: return {108};
  case ggml_type::q6_k: return {208};
  default: return {};
  }
}

//! Random bytes for n_blocks blocks of `t`. With `finite`, scale fields (and, for the plain types,
//! elements) are finite (normal, subnormal or zero f16); otherwise every bit pattern may occur, NaN
//! and infinity included.
inline std::vector<std::uint8_t> random_blocks(dms::ggml_type t, std::size_t n_blocks, std::uint32_t seed,
                                               bool finite = true) {
  using dms::ggml_type;
  const auto tr = dms::traits_of(t);
  std::mt19937 gen(seed);
  std::vector<std::uint8_t> v(n_blocks * tr.type_size);
  for (auto &b : v) b = std::uint8_t(gen() & 0xFF);
  if (!finite) return v;
  std::uniform_real_distribution<float> mag(-12.0f, 2.0f);
  auto scale = [&] {
    const auto r = static_cast<std::uint32_t>(gen() % 20);
    if (r == 0) return 0.0f;
    if (r == 1) return std::ldexp(float(gen() % 1024), -24) * (gen() % 2 ? 1.0f : -1.0f); // f16 subnormal
    return std::exp2(mag(gen)) * (gen() % 2 ? 1.0f : -1.0f);
  };
  if (t == ggml_type::f32) {
    for (std::size_t i = 0; i < n_blocks; ++i) {
      const float x = scale() * 1000.0f;
      std::memcpy(&v[i * 4], &x, 4);
    }
  } else if (t == ggml_type::f16) {
    for (std::size_t i = 0; i < n_blocks; ++i) put_f16(&v[i * 2], scale() * 100.0f);
  } else if (t == ggml_type::bf16) {
    for (std::size_t i = 0; i < n_blocks; ++i)
      if ((v[i * 2 + 1] & 0x7F) == 0x7F && (v[i * 2] & 0x80)) v[i * 2 + 1] &= 0xFE; // no inf/NaN
  } else {
    for (std::size_t i = 0; i < n_blocks; ++i)
      for (std::size_t off : scale_offsets(t)) put_f16(&v[i * tr.type_size + off], scale());
  }
  return v;
}

} // namespace dms::test
