// dms/core/dtype.hpp: element types of tensors that dms reads and writes.
//
// Only element types with a fixed size per element live here; block-quantized GGUF types
// (Q4_0, Q4_K, ...) are storage formats handled by dms/formats and always dequantized to f32
// before dms computes on them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

//! IEEE binary16 storage (bits only; convert with dms/core/half.hpp).
struct f16_bits {
  std::uint16_t bits;
  friend constexpr bool operator==(f16_bits, f16_bits) = default;
};
//! bfloat16 storage: the upper half of a binary32 (bits only).
struct bf16_bits {
  std::uint16_t bits;
  friend constexpr bool operator==(bf16_bits, bf16_bits) = default;
};

enum class dtype : std::uint8_t { f32, f16, bf16, f64, i64, i32, i16, i8, u8, boolean };

inline constexpr dtype all_dtypes[] = {dtype::f32, dtype::f16, dtype::bf16, dtype::f64,
                                       dtype::i64, dtype::i32, dtype::i16,  dtype::i8,
                                       dtype::u8,  dtype::boolean};

//! Size of one element in bytes.
constexpr std::size_t size_of(dtype t) noexcept {
  switch (t) {
  case dtype::f64:
  case dtype::i64: return 8;
  case dtype::f32:
  case dtype::i32: return 4;
  case dtype::f16:
  case dtype::bf16:
  case dtype::i16: return 2;
  case dtype::i8:
  case dtype::u8:
  case dtype::boolean: return 1;
  }
  return 0;
}

//! Lower-case name as dms prints it ("f32", "bf16", ...).
constexpr std::string_view name_of(dtype t) noexcept {
  switch (t) {
  case dtype::f32: return "f32";
  case dtype::f16: return "f16";
  case dtype::bf16: return "bf16";
  case dtype::f64: return "f64";
  case dtype::i64: return "i64";
  case dtype::i32: return "i32";
  case dtype::i16: return "i16";
  case dtype::i8: return "i8";
  case dtype::u8: return "u8";
  case dtype::boolean: return "bool";
  }
  return "?";
}

//! Inverse of name_of; nullopt for an unknown name.
constexpr std::optional<dtype> parse_dtype(std::string_view name) noexcept {
  for (dtype t : all_dtypes)
    if (name_of(t) == name) return t;
  return std::nullopt;
}

constexpr bool is_floating(dtype t) noexcept {
  return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16 || t == dtype::f64;
}

//! The dtype of a C++ element type; `dtype_of<T>` fails to compile for other types. (The primary
//! template is empty rather than undefined, so that `element_type<X>` is simply false for any X.)
template <class T> struct dtype_traits {};
template <> struct dtype_traits<float> { static constexpr dtype value = dtype::f32; };
template <> struct dtype_traits<double> { static constexpr dtype value = dtype::f64; };
template <> struct dtype_traits<f16_bits> { static constexpr dtype value = dtype::f16; };
template <> struct dtype_traits<bf16_bits> { static constexpr dtype value = dtype::bf16; };
template <> struct dtype_traits<std::int64_t> { static constexpr dtype value = dtype::i64; };
template <> struct dtype_traits<std::int32_t> { static constexpr dtype value = dtype::i32; };
template <> struct dtype_traits<std::int16_t> { static constexpr dtype value = dtype::i16; };
template <> struct dtype_traits<std::int8_t> { static constexpr dtype value = dtype::i8; };
template <> struct dtype_traits<std::uint8_t> { static constexpr dtype value = dtype::u8; };
template <> struct dtype_traits<bool> { static constexpr dtype value = dtype::boolean; };
template <class T> struct dtype_traits<const T> : dtype_traits<T> {};

template <class T>
concept element_type = requires { dtype_traits<T>::value; };

template <element_type T> inline constexpr dtype dtype_of = dtype_traits<T>::value;

DMS_NAMESPACE_END
