// dms/formats/ggml_type.hpp: the tensor storage types of GGUF files (ggml's `ggml_type`).
//
// The numeric ids are part of the GGUF file format (they are written in every tensor info), so
// they are copied from ggml.h exactly; types dms cannot decode are still named so that `dms
// inspect` can list any file and errors can say which type is unsupported. Block-quantized types
// store `block_size` elements in `type_size` bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

enum class ggml_type : std::uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3,
  // 4 and 5 were Q4_2 and Q4_3, removed from ggml
  q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23,
  i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30,
  tq1_0 = 34, tq2_0 = 35,
};

struct ggml_type_traits {
  std::string_view name;   //!< as llama.cpp prints it ("Q4_K", "F16")
  std::uint32_t block_size; //!< elements per block (1 for plain types)
  std::uint32_t type_size;  //!< bytes per block
  bool dequantizable;       //!< dms can convert it to f32
};

//! Traits of a type id, or nullopt for an id ggml does not define (a corrupt file).
constexpr std::optional<ggml_type_traits> traits_of(std::uint32_t id) noexcept {
  // K-quants use super-blocks of 256 (QK_K) elements.
  switch (id) {
  case 0: return ggml_type_traits{"F32", 1, 4, true};
  case 1: return ggml_type_traits{"F16", 1, 2, true};
  case 2: return ggml_type_traits{"Q4_0", 32, 18, true};
  case 3: return ggml_type_traits{"Q4_1", 32, 20, true};
  case 6: return ggml_type_traits{"Q5_0", 32, 22, true};
  case 7: return ggml_type_traits{"Q5_1", 32, 24, true};
  case 8: return ggml_type_traits{"Q8_0", 32, 34, true};
  case 9: return ggml_type_traits{"Q8_1", 32, 36, false};
  case 10: return ggml_type_traits{"Q2_K", 256, 84, true};
  case 11: return ggml_type_traits{"Q3_K", 256, 110, true};
  case 12: return ggml_type_traits{"Q4_K", 256, 144, true};
  case 13: return ggml_type_traits{"Q5_K", 256, 176, true};
  case 14: return ggml_type_traits{"Q6_K", 256, 210, true};
  case 15: return ggml_type_traits{"Q8_K", 256, 292, false};
  case 16: return ggml_type_traits{"IQ2_XXS", 256, 66, false};
  case 17: return ggml_type_traits{"IQ2_XS", 256, 74, false};
  case 18: return ggml_type_traits{"IQ3_XXS", 256, 98, false};
  case 19: return ggml_type_traits{"IQ1_S", 256, 50, false};
  case 20: return ggml_type_traits{"IQ4_NL", 32, 18, false};
  case 21: return ggml_type_traits{"IQ3_S", 256, 110, false};
  case 22: return ggml_type_traits{"IQ2_S", 256, 82, false};
  case 23: return ggml_type_traits{"IQ4_XS", 256, 136, false};
  case 24: return ggml_type_traits{"I8", 1, 1, false};
  case 25: return ggml_type_traits{"I16", 1, 2, false};
  case 26: return ggml_type_traits{"I32", 1, 4, false};
  case 27: return ggml_type_traits{"I64", 1, 8, false};
  case 28: return ggml_type_traits{"F64", 1, 8, false};
  case 29: return ggml_type_traits{"IQ1_M", 256, 56, false};
  case 30: return ggml_type_traits{"BF16", 1, 2, true};
  case 34: return ggml_type_traits{"TQ1_0", 256, 54, false};
  case 35: return ggml_type_traits{"TQ2_0", 256, 66, false};
  default: return std::nullopt;
  }
}
constexpr ggml_type_traits traits_of(ggml_type t) noexcept { return *traits_of(static_cast<std::uint32_t>(t)); }

//! Bytes taken by `n` elements of type `t`, or nullopt when n is not a whole number of blocks.
constexpr std::optional<std::uint64_t> storage_bytes(ggml_type t, std::uint64_t n) noexcept {
  const auto tr = traits_of(t);
  if (n % tr.block_size != 0) return std::nullopt;
  return n / tr.block_size * tr.type_size;
}

DMS_NAMESPACE_END
