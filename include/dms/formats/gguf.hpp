// dms/formats/gguf.hpp: reading GGUF files (llama.cpp's model format), versions 2 and 3.
//
// A GGUF file is a header (magic "GGUF", version, tensor count, metadata count), typed key/value
// metadata, one info record per tensor (name, ggml dims, ggml type, offset), then an aligned
// data section. `gguf_file` maps the file (no copy: a 10 GB model costs its header in memory),
// parses everything but the tensor data, and validates it so thoroughly that later code can trust
// it: every tensor lies inside the file, is aligned, overlaps no other tensor, has a known type and
// a whole number of blocks per row. A malformed or hostile file gives a dms::error naming the file,
// the byte offset and what was expected, never a crash or an out-of-bounds read (the parser is
// fuzzed: tests/fuzz/fuzz_gguf.cpp).
//
// Conventions:
//  * Tensor dims are kept in ggml order (`ne[0]` is the fastest-varying axis, the length of a
//    row) because that is what quantized blocks follow; `shape()` gives the row-major (numpy,
//    PyTorch, dms views) order, i.e. `ne` reversed.
//  * Tensor data are exposed as raw bytes plus the ggml type (`raw_bytes()`): dequantizing block
//    types is dms/formats/quant.hpp's job. Plain types (F32, F16, BF16, F64, I8..I64) also give a
//    `const_tensor_view` straight into the mapping.
//  * Metadata values keep their GGUF type exactly (`gguf_value`); typed getters throw, naming the
//    key and the expected and actual type. Keys and tensor names must be valid UTF-8 (they end up
//    in JSON, terminals and maps: an invalid one is an error). String *values* are kept byte for
//    byte even when they are not valid UTF-8 (some converters write raw byte tokens, and a merge
//    must copy them unchanged); `gguf_file::invalid_utf8_keys()` lists the keys whose strings are
//    not, so a caller that prints them can check first.
//  * Version 1 (2023, 32-bit counts) is rejected: llama.cpp itself dropped it.
//
// @code
//   dms::gguf_file f("model.gguf");
//   auto n_layer = f.get<std::uint32_t>("llama.block_count");     // throws if absent or not u32
//   const dms::gguf_tensor &q = f.tensor("blk.0.attn_q.weight");
//   std::span<const std::byte> blocks = q.raw_bytes();              // Q4_1 blocks, in the mapping
//   dms::const_tensor_view norm = f.tensor("output_norm.weight").view();  // F32, shape {576}
// @endcode
//
// Thread safety: a parsed gguf_file is immutable; any number of threads may read it.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/ggml_type.hpp"
#include "dms/formats/mapped_file.hpp"

DMS_NAMESPACE_BEGIN

//! Alignment of the data section when `general.alignment` is absent (GGUF_DEFAULT_ALIGNMENT).
inline constexpr std::uint32_t gguf_default_alignment = 32;
//! ggml tensors have at most four axes (GGML_MAX_DIMS).
inline constexpr std::uint32_t gguf_max_dims = 4;
//! Deepest nesting of arrays inside arrays the reader accepts. Real files nest at most once (and
//! llama.cpp refuses any nesting); the bound keeps a hostile file from exhausting the stack.
inline constexpr int gguf_max_array_depth = 16;

//! Metadata value types. The numeric ids are the file format's (enum gguf_type in gguf.h).
enum class gguf_type : std::uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};

//! Lower-case name as dms prints it ("u32", "string", ...).
constexpr std::string_view name_of(gguf_type t) noexcept {
  switch (t) {
  case gguf_type::u8: return "u8";
  case gguf_type::i8: return "i8";
  case gguf_type::u16: return "u16";
  case gguf_type::i16: return "i16";
  case gguf_type::u32: return "u32";
  case gguf_type::i32: return "i32";
  case gguf_type::f32: return "f32";
  case gguf_type::boolean: return "bool";
  case gguf_type::string: return "string";
  case gguf_type::array: return "array";
  case gguf_type::u64: return "u64";
  case gguf_type::i64: return "i64";
  case gguf_type::f64: return "f64";
  }
  return "?";
}

//! The type with file id `id`, or nullopt for an id the format does not define.
constexpr std::optional<gguf_type> to_gguf_type(std::uint32_t id) noexcept {
  if (id > static_cast<std::uint32_t>(gguf_type::f64)) return std::nullopt;
  return static_cast<gguf_type>(id);
}

//! The fewest bytes a value of type `t` occupies in a file: the size of a number, the empty
//! encoding of a string (u64 length) or of an array (u32 element type + u64 count). Counts read
//! from a file are checked against it before anything is allocated.
constexpr std::size_t gguf_min_encoded_size(gguf_type t) noexcept {
  switch (t) {
  case gguf_type::u8:
  case gguf_type::i8:
  case gguf_type::boolean: return 1;
  case gguf_type::u16:
  case gguf_type::i16: return 2;
  case gguf_type::u32:
  case gguf_type::i32:
  case gguf_type::f32: return 4;
  case gguf_type::u64:
  case gguf_type::i64:
  case gguf_type::f64: return 8;
  case gguf_type::string: return 8; // u64 length, empty
  case gguf_type::array: return 12; // u32 element type + u64 count, empty
  }
  return 1;
}

class gguf_array;
class gguf_file;

namespace detail {
class gguf_parser;
// The C++ type that holds a GGUF value of each type; its position in the variants below equals
// the file type id, so `index()` is the gguf_type.
template <class T> struct gguf_type_map;
template <> struct gguf_type_map<std::uint8_t> { static constexpr gguf_type value = gguf_type::u8; };
template <> struct gguf_type_map<std::int8_t> { static constexpr gguf_type value = gguf_type::i8; };
template <> struct gguf_type_map<std::uint16_t> { static constexpr gguf_type value = gguf_type::u16; };
template <> struct gguf_type_map<std::int16_t> { static constexpr gguf_type value = gguf_type::i16; };
template <> struct gguf_type_map<std::uint32_t> { static constexpr gguf_type value = gguf_type::u32; };
template <> struct gguf_type_map<std::int32_t> { static constexpr gguf_type value = gguf_type::i32; };
template <> struct gguf_type_map<float> { static constexpr gguf_type value = gguf_type::f32; };
template <> struct gguf_type_map<bool> { static constexpr gguf_type value = gguf_type::boolean; };
template <> struct gguf_type_map<std::string> { static constexpr gguf_type value = gguf_type::string; };
template <> struct gguf_type_map<gguf_array> { static constexpr gguf_type value = gguf_type::array; };
template <> struct gguf_type_map<std::uint64_t> { static constexpr gguf_type value = gguf_type::u64; };
template <> struct gguf_type_map<std::int64_t> { static constexpr gguf_type value = gguf_type::i64; };
template <> struct gguf_type_map<double> { static constexpr gguf_type value = gguf_type::f64; };

template <class T>
concept gguf_storable = requires { gguf_type_map<T>::value; };
//! Numbers and bools: stored in arrays as packed little-endian values.
template <class T>
concept gguf_scalar = gguf_storable<T> && std::is_arithmetic_v<T>;

inline std::string gguf_key_context(std::string_view key) {
  return key.empty() ? std::string("metadata value") : "metadata key '" + std::string(key) + "'";
}

[[noreturn]] inline void gguf_type_mismatch(std::string_view key, std::string_view expected,
                                            gguf_type actual, const error_context &where) {
  throw error(errc::invalid_format,
              gguf_key_context(key) + ": expected " + std::string(expected) + ", got " +
                  std::string(name_of(actual)),
              where);
}
} // namespace detail

//! The C++ type that holds values of GGUF type `T` (`gguf_type_of<std::uint32_t>` == u32).
template <class T>
  requires detail::gguf_storable<T>
inline constexpr gguf_type gguf_type_of = detail::gguf_type_map<T>::value;

//! A homogeneous GGUF array: numbers and bools in a typed vector, strings as bytes, and arrays of
//! arrays (which the format allows and gguf-py writes, though llama.cpp does not read them).
class gguf_array {
public:
  // Alternative i holds elements of gguf_type i.
  using storage = std::variant<std::vector<std::uint8_t>, std::vector<std::int8_t>,
                               std::vector<std::uint16_t>, std::vector<std::int16_t>,
                               std::vector<std::uint32_t>, std::vector<std::int32_t>,
                               std::vector<float>, std::vector<bool>, std::vector<std::string>,
                               std::vector<gguf_array>, std::vector<std::uint64_t>,
                               std::vector<std::int64_t>, std::vector<double>>;

  //! An empty array of u8.
  gguf_array() = default;
  template <class T>
    requires detail::gguf_storable<T>
  gguf_array(std::vector<T> items) : items_(std::move(items)) {}
  template <class T>
    requires detail::gguf_storable<T>
  gguf_array(std::initializer_list<T> items) : items_(std::vector<T>(items)) {}
  //! Strings from literals: `gguf_array({"a", "b"})` is an array of strings, not of bools.
  gguf_array(std::initializer_list<const char *> items)
      : items_(std::vector<std::string>(items.begin(), items.end())) {}
  gguf_array(std::vector<std::string_view> items)
      : items_(std::vector<std::string>(items.begin(), items.end())) {}
  //! An empty array whose elements would have type `t`.
  static gguf_array empty_of(gguf_type t) {
    gguf_array a;
    a.items_ = make_empty(t);
    return a;
  }

  gguf_type element_type() const noexcept { return static_cast<gguf_type>(items_.index()); }
  std::size_t size() const noexcept {
    return std::visit([](const auto &v) { return v.size(); }, items_);
  }
  bool empty() const noexcept { return size() == 0; }

  //! The elements as their exact type; throws naming `key` when the element type differs.
  template <class T>
    requires detail::gguf_storable<T>
  const std::vector<T> &get(std::string_view key = {}, const error_context &where = {}) const {
    if (const auto *p = std::get_if<std::vector<T>>(&items_)) return *p;
    throw error(errc::invalid_format,
                detail::gguf_key_context(key) + ": expected an array of " +
                    std::string(name_of(gguf_type_of<T>)) + ", got an array of " +
                    std::string(name_of(element_type())),
                where);
  }
  template <class T>
    requires detail::gguf_storable<T>
  std::vector<T> &get_mut() {
    return std::get<std::vector<T>>(items_);
  }
  template <class T> bool holds() const noexcept { return std::holds_alternative<std::vector<T>>(items_); }
  const storage &items() const noexcept { return items_; }
  storage &items() noexcept { return items_; }

  friend bool operator==(const gguf_array &, const gguf_array &) = default;

private:
  static storage make_empty(gguf_type t) {
    storage s;
    switch (t) {
    case gguf_type::u8: s.emplace<0>(); break;
    case gguf_type::i8: s.emplace<1>(); break;
    case gguf_type::u16: s.emplace<2>(); break;
    case gguf_type::i16: s.emplace<3>(); break;
    case gguf_type::u32: s.emplace<4>(); break;
    case gguf_type::i32: s.emplace<5>(); break;
    case gguf_type::f32: s.emplace<6>(); break;
    case gguf_type::boolean: s.emplace<7>(); break;
    case gguf_type::string: s.emplace<8>(); break;
    case gguf_type::array: s.emplace<9>(); break;
    case gguf_type::u64: s.emplace<10>(); break;
    case gguf_type::i64: s.emplace<11>(); break;
    case gguf_type::f64: s.emplace<12>(); break;
    }
    return s;
  }
  storage items_;
};

//! One metadata value of any GGUF type. Built implicitly from the exact C++ type
//! (`std::uint32_t{30}` is a u32, `30` an i32, `"llama"` a string, `std::vector<float>` an
//! array of f32).
class gguf_value {
public:
  // Alternative i holds gguf_type i.
  using storage = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t,
                               std::uint32_t, std::int32_t, float, bool, std::string, gguf_array,
                               std::uint64_t, std::int64_t, double>;

  gguf_value() = default;
  template <class T>
    requires detail::gguf_storable<T>
  gguf_value(T v) : v_(std::move(v)) {}
  gguf_value(const char *s) : v_(std::string(s)) {}
  gguf_value(std::string_view s) : v_(std::string(s)) {}
  template <class T>
    requires detail::gguf_storable<T>
  gguf_value(std::vector<T> items) : v_(gguf_array(std::move(items))) {}

  gguf_type type() const noexcept { return static_cast<gguf_type>(v_.index()); }

  //! The value as its exact type; throws naming `key` and both types when it is another type.
  template <class T>
    requires detail::gguf_storable<T>
  const T &get(std::string_view key = {}, const error_context &where = {}) const {
    if (const auto *p = std::get_if<T>(&v_)) return *p;
    detail::gguf_type_mismatch(key, name_of(gguf_type_of<T>), type(), where);
  }
  template <class T> bool holds() const noexcept { return std::holds_alternative<T>(v_); }

  const gguf_array &array(std::string_view key = {}, const error_context &where = {}) const {
    return get<gguf_array>(key, where);
  }
  //! The bytes of a string value (not necessarily valid UTF-8; see the header comment).
  std::string_view string(std::string_view key = {}, const error_context &where = {}) const {
    return get<std::string>(key, where);
  }

  //! Any integer type, converted to `Int` when the value fits. Converters disagree on the width
  //! of counts (`layer_count` is i32 in llama.cpp, u32 in repeng), so readers of such keys use this.
  template <class Int>
    requires std::is_integral_v<Int> && (!std::is_same_v<Int, bool>)
  Int to_integer(std::string_view key = {}, const error_context &where = {}) const {
    auto convert = [&](auto x) -> Int {
      using X = decltype(x);
      if constexpr (std::is_integral_v<X> && !std::is_same_v<X, bool>) {
        require(std::in_range<Int>(x), errc::invalid_format, [&] {
          return detail::gguf_key_context(key) + ": value " + std::to_string(x) +
                 " out of range (expected a value that fits the requested integer type)";
        }, where);
        return static_cast<Int>(x);
      } else {
        detail::gguf_type_mismatch(key, "an integer", type(), where);
      }
    };
    return std::visit(convert, v_);
  }
  //! Any number, as a double.
  double to_double(std::string_view key = {}, const error_context &where = {}) const {
    return std::visit([&](auto x) -> double {
      using X = decltype(x);
      if constexpr (std::is_arithmetic_v<X> && !std::is_same_v<X, bool>) return static_cast<double>(x);
      else detail::gguf_type_mismatch(key, "a number", type(), where);
    }, v_);
  }

  const storage &raw() const noexcept { return v_; }
  friend bool operator==(const gguf_value &, const gguf_value &) = default;

private:
  storage v_;
};

//! A key/value pair as it appears in the file.
struct gguf_kv {
  std::string key;
  gguf_value value;
  std::uint64_t offset = 0; //!< file offset of the record (its key length)
};

//! One tensor's info record and a view of its data in the mapping.
struct gguf_tensor {
  std::string name;
  ggml_type type = ggml_type::f32;
  std::uint32_t n_dims = 0;                   //!< axes stored in the file (0 means a scalar)
  std::array<std::uint64_t, gguf_max_dims> ne{1, 1, 1, 1}; //!< ggml order: ne[0] = row length; unused = 1
  std::uint64_t offset = 0;      //!< relative to the data section, as stored
  std::uint64_t file_offset = 0; //!< absolute offset of the first data byte
  std::uint64_t info_offset = 0; //!< file offset of the info record (used in error messages)
  std::uint64_t n_elements = 0;
  std::uint64_t n_bytes = 0;     //!< storage_bytes(type, n_elements)
  std::span<const std::byte> data; //!< the n_bytes bytes, inside the mapping (no copy)

  //! The stored bytes (blocks for quantized types); valid while the gguf_file lives.
  std::span<const std::byte> raw_bytes() const noexcept { return data; }
  ggml_type_traits traits() const noexcept { return traits_of(type); }
  //! Dims in ggml order (ne[0] first), as many as stored.
  std::span<const std::uint64_t> dims() const noexcept { return {ne.data(), n_dims}; }
  //! Dims in row-major order (slowest axis first): what numpy, PyTorch and dms views use.
  std::vector<std::int64_t> shape() const {
    std::vector<std::int64_t> s(n_dims);
    for (std::uint32_t i = 0; i < n_dims; ++i) s[i] = static_cast<std::int64_t>(ne[n_dims - 1 - i]);
    return s;
  }
  //! The dms dtype of a plain (non-block) type, nullopt for quantized types.
  std::optional<dtype> element_dtype() const noexcept {
    switch (type) {
    case ggml_type::f32: return dtype::f32;
    case ggml_type::f16: return dtype::f16;
    case ggml_type::bf16: return dtype::bf16;
    case ggml_type::f64: return dtype::f64;
    case ggml_type::i8: return dtype::i8;
    case ggml_type::i16: return dtype::i16;
    case ggml_type::i32: return dtype::i32;
    case ggml_type::i64: return dtype::i64;
    default: return std::nullopt;
    }
  }
  //! A row-major view of a plain-typed tensor, straight into the mapping. Quantized tensors
  //! have no element view: dequantize raw_bytes() with dms/formats/quant.hpp.
  const_tensor_view view() const {
    const auto t = element_dtype();
    require(t.has_value(), errc::unsupported, [&] {
      return "tensor of type " + std::string(traits().name) +
             " has no element view (expected F32, F16, BF16, F64 or an integer type; "
             "dequantize block types with dms/formats/quant.hpp)";
    }, {{}, std::nullopt, name});
    const auto s = shape();
    // Straight to build_view: make_view's typed overloads are considered first for a
    // const std::byte pointer, and dtype_traits<const std::byte> is a hard error there.
    return detail::build_view<const std::byte>(data.data(), *t, std::span<const std::int64_t>(s), {},
                                               memory_space::host, 0);
  }
};

//! Where a GGUF file's structures start, for tools that print a layout (`dms inspect`).
struct gguf_layout {
  std::uint32_t version = 3;
  std::uint64_t tensor_count = 0;
  std::uint64_t kv_count = 0;
  std::uint64_t header_end = 0;  //!< first byte after the last tensor info
  std::uint64_t alignment = gguf_default_alignment;
  std::uint64_t data_offset = 0; //!< header_end rounded up to `alignment`
};

//! A parsed GGUF file. Move-only; tensors' data spans stay valid while it lives.
class gguf_file {
public:
  //! Maps and parses `path`.
  explicit gguf_file(std::string path) : map_(std::move(path)) {
    parse_into(*this, map_.bytes(), map_.path());
  }
  //! Parses bytes that the caller keeps alive (fuzzing, files embedded in memory). `name` is used
  //! in error messages in place of a path.
  static gguf_file parse(std::span<const std::byte> bytes, std::string name) {
    gguf_file f;
    parse_into(f, bytes, std::move(name));
    return f;
  }

  gguf_file(gguf_file &&) noexcept = default;
  gguf_file &operator=(gguf_file &&) noexcept = default;
  gguf_file(const gguf_file &) = delete;
  gguf_file &operator=(const gguf_file &) = delete;

  const std::string &path() const noexcept { return name_; }
  std::span<const std::byte> bytes() const noexcept { return bytes_; }
  std::uint64_t file_size() const noexcept { return bytes_.size(); }
  const gguf_layout &layout() const noexcept { return layout_; }
  std::uint32_t version() const noexcept { return layout_.version; }
  std::uint64_t alignment() const noexcept { return layout_.alignment; }
  std::uint64_t data_offset() const noexcept { return layout_.data_offset; }

  // --- metadata -------------------------------------------------------------------------------
  //! All key/value pairs, in file order.
  const std::vector<gguf_kv> &metadata() const noexcept { return kvs_; }
  const gguf_kv *find_kv(std::string_view key) const noexcept {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kvs_[it->second];
  }
  const gguf_value *find(std::string_view key) const noexcept {
    const auto *kv = find_kv(key);
    return kv ? &kv->value : nullptr;
  }
  bool contains(std::string_view key) const noexcept { return find_kv(key) != nullptr; }
  //! The value of `key`; throws if the file has no such key.
  const gguf_value &at(std::string_view key) const {
    const auto *kv = find_kv(key);
    require(kv != nullptr, errc::invalid_format,
            [&] { return "missing metadata key '" + std::string(key) + "'"; }, {name_});
    return kv->value;
  }
  //! The value of `key` as its exact type T; throws naming key, expected and actual type.
  template <class T>
    requires detail::gguf_storable<T>
  const T &get(std::string_view key) const {
    const gguf_value &v = at(key);
    return v.get<T>(key, where(key));
  }
  //! Like get, with a default when the key is absent (a present key of another type still throws).
  template <class T>
    requires detail::gguf_storable<T>
  T get_or(std::string_view key, T fallback) const {
    const auto *kv = find_kv(key);
    return kv ? kv->value.get<T>(key, where(key)) : fallback;
  }
  std::string_view get_string(std::string_view key) const { return get<std::string>(key); }
  //! An integer of any GGUF integer type, range-checked into Int.
  template <class Int = std::uint64_t> Int get_integer(std::string_view key) const {
    return at(key).to_integer<Int>(key, where(key));
  }
  //! The elements of array `key`, whose element type must be T.
  template <class T>
    requires detail::gguf_storable<T>
  const std::vector<T> &get_array(std::string_view key) const {
    return get<gguf_array>(key).get<T>(key, where(key));
  }
  //! `general.architecture` ("llama", "qwen2", "controlvector"...).
  std::string_view architecture() const { return get_string("general.architecture"); }
  //! Keys whose string value (or any string inside their array) is not valid UTF-8, file order.
  const std::vector<std::string> &invalid_utf8_keys() const noexcept { return invalid_utf8_keys_; }

  // --- tensors --------------------------------------------------------------------------------
  //! All tensors, in file order.
  std::span<const gguf_tensor> tensors() const noexcept { return tensors_; }
  const gguf_tensor *find_tensor(std::string_view name) const noexcept {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }
  //! The tensor called `name`; throws if there is none.
  const gguf_tensor &tensor(std::string_view name) const {
    const auto *t = find_tensor(name);
    require(t != nullptr, errc::invalid_argument,
            [&] { return "no tensor named '" + std::string(name) + "'"; }, {name_});
    return *t;
  }

  //! Hint that a tensor's pages will be read soon / not again (streaming merges).
  void will_need(const gguf_tensor &t) const noexcept { map_.will_need(t.file_offset, t.n_bytes); }
  void dont_need(const gguf_tensor &t) const noexcept { map_.dont_need(t.file_offset, t.n_bytes); }

private:
  gguf_file() = default;
  error_context where(std::string_view key) const {
    const auto *kv = find_kv(key);
    return {name_, kv ? std::optional<std::uint64_t>(kv->offset) : std::nullopt};
  }
  static void parse_into(gguf_file &f, std::span<const std::byte> bytes, std::string name);
  friend class detail::gguf_parser;

  mapped_file map_; // empty when parsed from caller-owned bytes
  std::string name_;
  std::span<const std::byte> bytes_;
  gguf_layout layout_;
  std::vector<gguf_kv> kvs_;
  std::vector<gguf_tensor> tensors_;
  // Keys are views of the strings in kvs_ / tensors_: their heap buffers (and the vectors'
  // element storage) survive a move of the gguf_file, so the views stay valid.
  std::unordered_map<std::string_view, std::size_t> kv_index_;
  std::unordered_map<std::string_view, std::size_t> tensor_index_;
  std::vector<std::string> invalid_utf8_keys_;
};

namespace detail {
//! The parser behind gguf_file. Every read goes through byte_cursor (bounds-checked); every
//! count is checked against the bytes left before anything is allocated for it.
class gguf_parser {
public:
  gguf_parser(gguf_file &f, std::span<const std::byte> bytes, std::string name)
      : f_(f), c_(bytes, name), name_(std::move(name)), all_(bytes) {}

  void run() {
    f_.name_ = name_;
    f_.bytes_ = all_;
    read_header();
    read_metadata();
    read_tensor_infos();
    place_tensors();
  }

private:
  // Smallest encodings, used to reject counts the remaining bytes cannot hold before any
  // allocation: a kv is a key length (8) + a type (4) + a 1-byte value; a tensor info is a name
  // length (8) + n_dims (4) + a type (4) + an offset (8).
  static constexpr std::uint64_t min_kv_bytes = 8 + 4 + 1;
  static constexpr std::uint64_t min_tensor_info_bytes = 8 + 4 + 4 + 8;

  error fail(std::uint64_t offset, std::string message, std::string tensor = {}) const {
    return error(errc::invalid_format, message, {name_, offset, std::move(tensor)});
  }

  void read_header() {
    c_.need(4, "magic \"GGUF\"");
    const std::string_view magic = c_.read_chars(4, "magic \"GGUF\"");
    if (magic != "GGUF") {
      std::string got;
      for (char ch : magic) {
        const auto u = static_cast<unsigned char>(ch);
        if (u >= 0x20 && u < 0x7f) got += ch;
        else {
          static constexpr char hex[] = "0123456789abcdef";
          got += "\\x";
          got += hex[u >> 4];
          got += hex[u & 15];
        }
      }
      throw fail(0, "not a GGUF file: expected magic \"GGUF\", got \"" + got + "\"");
    }
    const std::uint64_t version_offset = c_.file_offset();
    const auto file_version = c_.read<std::uint32_t>("version (u32)");
    if (file_version == 1)
      throw error(errc::unsupported,
                  "GGUF version 1 is not supported (expected version 2 or 3; v1 files predate "
                  "August 2023: convert the model again with a current llama.cpp)",
                  {name_, version_offset});
    if ((file_version & 0xFFFFu) == 0 && file_version != 0)
      throw error(errc::unsupported,
                  "version " + std::to_string(file_version) +
                      " looks byte-swapped: big-endian GGUF files are not supported (expected "
                      "version 2 or 3, little-endian)",
                  {name_, version_offset});
    if (file_version != 2 && file_version != 3)
      throw error(errc::unsupported,
                  "unsupported GGUF version " + std::to_string(file_version) + " (expected 2 or 3)",
                  {name_, version_offset});
    f_.layout_.version = file_version;

    const std::uint64_t counts_offset = c_.file_offset();
    const auto tensor_count = c_.read<std::uint64_t>("tensor count (u64)");
    const auto kv_count = c_.read<std::uint64_t>("metadata count (u64)");
    const std::uint64_t left = c_.remaining();
    if (kv_count > left / min_kv_bytes)
      throw fail(counts_offset + 8, "metadata count " + std::to_string(kv_count) +
                                        " cannot fit in the " + std::to_string(left) +
                                        " bytes left (expected at most " +
                                        std::to_string(left / min_kv_bytes) + ")");
    if (tensor_count > (left - kv_count * min_kv_bytes) / min_tensor_info_bytes)
      throw fail(counts_offset, "tensor count " + std::to_string(tensor_count) +
                                    " cannot fit in the " + std::to_string(left) +
                                    " bytes left (expected at most " +
                                    std::to_string((left - kv_count * min_kv_bytes) /
                                                   min_tensor_info_bytes) +
                                    ")");
    f_.layout_.tensor_count = tensor_count;
    f_.layout_.kv_count = kv_count;
  }

  //! A u64 length and that many bytes.
  std::string read_string(std::string_view what) {
    const std::uint64_t at = c_.file_offset();
    const auto n = c_.read<std::uint64_t>(std::string(what) + " length (u64)");
    if (n > c_.remaining())
      throw fail(at, std::string(what) + " length " + std::to_string(n) +
                         " runs past the end of the file (expected at most " +
                         std::to_string(c_.remaining()) + " bytes)");
    return std::string(c_.read_chars(static_cast<std::size_t>(n), what));
  }

  gguf_type read_type(std::string_view what) {
    const std::uint64_t at = c_.file_offset();
    const auto id = c_.read<std::uint32_t>(what);
    const auto t = to_gguf_type(id);
    if (!t)
      throw fail(at, "unknown metadata value type " + std::to_string(id) + " for " +
                         std::string(what) + " (expected 0..12)");
    return *t;
  }

  bool read_bool() {
    const std::uint64_t at = c_.file_offset();
    const auto b = c_.read<std::uint8_t>("bool");
    if (b > 1)
      throw fail(at, "bool value " + std::to_string(b) + " (expected 0 or 1)");
    return b != 0;
  }

  template <class T> std::vector<T> read_packed(std::uint64_t n) {
    // n was checked against the remaining bytes by the caller, so n * sizeof(T) cannot overflow.
    auto raw = c_.read_bytes(static_cast<std::size_t>(n) * sizeof(T), "array elements");
    std::vector<T> v(static_cast<std::size_t>(n));
    if (n) std::memcpy(v.data(), raw.data(), raw.size());
    return v;
  }

  gguf_array read_array(int depth) {
    const std::uint64_t at = c_.file_offset();
    if (depth >= gguf_max_array_depth)
      throw fail(at, "arrays nested deeper than " + std::to_string(gguf_max_array_depth) +
                         " levels (expected at most " + std::to_string(gguf_max_array_depth) + ")");
    const gguf_type et = read_type("array element type (u32)");
    const std::uint64_t count_at = c_.file_offset();
    const auto n = c_.read<std::uint64_t>("array length (u64)");
    const std::uint64_t min = gguf_min_encoded_size(et);
    if (n > c_.remaining() / min)
      throw fail(count_at, "array length " + std::to_string(n) + " of " +
                               std::string(name_of(et)) + " cannot fit in the " +
                               std::to_string(c_.remaining()) + " bytes left (expected at most " +
                               std::to_string(c_.remaining() / min) + ")");
    switch (et) {
    case gguf_type::u8: return read_packed<std::uint8_t>(n);
    case gguf_type::i8: return read_packed<std::int8_t>(n);
    case gguf_type::u16: return read_packed<std::uint16_t>(n);
    case gguf_type::i16: return read_packed<std::int16_t>(n);
    case gguf_type::u32: return read_packed<std::uint32_t>(n);
    case gguf_type::i32: return read_packed<std::int32_t>(n);
    case gguf_type::f32: return read_packed<float>(n);
    case gguf_type::u64: return read_packed<std::uint64_t>(n);
    case gguf_type::i64: return read_packed<std::int64_t>(n);
    case gguf_type::f64: return read_packed<double>(n);
    case gguf_type::boolean: {
      std::vector<bool> v(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = read_bool();
      return v;
    }
    case gguf_type::string: {
      std::vector<std::string> v;
      v.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t i = 0; i < n; ++i) {
        v.push_back(read_string("string"));
        if (!is_valid_utf8(v.back())) invalid_utf8_ = true;
      }
      return v;
    }
    case gguf_type::array: {
      std::vector<gguf_array> v;
      v.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t i = 0; i < n; ++i) v.push_back(read_array(depth + 1));
      return v;
    }
    }
    return {};
  }

  gguf_value read_value(gguf_type t) {
    switch (t) {
    case gguf_type::u8: return c_.read<std::uint8_t>("u8 value");
    case gguf_type::i8: return c_.read<std::int8_t>("i8 value");
    case gguf_type::u16: return c_.read<std::uint16_t>("u16 value");
    case gguf_type::i16: return c_.read<std::int16_t>("i16 value");
    case gguf_type::u32: return c_.read<std::uint32_t>("u32 value");
    case gguf_type::i32: return c_.read<std::int32_t>("i32 value");
    case gguf_type::f32: return c_.read<float>("f32 value");
    case gguf_type::boolean: return read_bool();
    case gguf_type::string: {
      std::string s = read_string("string value");
      if (!is_valid_utf8(s)) invalid_utf8_ = true;
      return s;
    }
    case gguf_type::array: return read_array(0);
    case gguf_type::u64: return c_.read<std::uint64_t>("u64 value");
    case gguf_type::i64: return c_.read<std::int64_t>("i64 value");
    case gguf_type::f64: return c_.read<double>("f64 value");
    }
    return {};
  }

  void read_metadata() {
    const std::uint64_t n = f_.layout_.kv_count;
    f_.kvs_.reserve(static_cast<std::size_t>(n));
    for (std::uint64_t i = 0; i < n; ++i) {
      gguf_kv kv;
      kv.offset = c_.file_offset();
      kv.key = read_string("metadata key");
      if (!is_valid_utf8(kv.key))
        throw fail(kv.offset, "metadata key #" + std::to_string(i) +
                                  " is not valid UTF-8 (expected a UTF-8 key such as "
                                  "\"general.architecture\")");
      if (const auto *first = f_.find_kv(kv.key))
        throw fail(kv.offset, "duplicate metadata key '" + kv.key + "' (first at offset " +
                                  std::to_string(first->offset) + "; expected unique keys)");
      const gguf_type t = read_type("metadata value type (u32)");
      invalid_utf8_ = false;
      kv.value = read_value(t);
      if (invalid_utf8_) f_.invalid_utf8_keys_.push_back(kv.key);
      f_.kvs_.push_back(std::move(kv));
      // The view points into the vector's element; reserve() above keeps elements in place.
      f_.kv_index_.emplace(f_.kvs_.back().key, f_.kvs_.size() - 1);
    }
  }

  void read_tensor_infos() {
    const std::uint64_t n = f_.layout_.tensor_count;
    f_.tensors_.reserve(static_cast<std::size_t>(n));
    constexpr auto max_i64 = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    for (std::uint64_t i = 0; i < n; ++i) {
      gguf_tensor t;
      t.info_offset = c_.file_offset();
      t.name = read_string("tensor name");
      if (!is_valid_utf8(t.name))
        throw fail(t.info_offset, "tensor name #" + std::to_string(i) +
                                      " is not valid UTF-8 (expected a UTF-8 name)");
      if (const auto *first = f_.find_tensor(t.name))
        throw fail(t.info_offset, "duplicate tensor name (first at offset " +
                                      std::to_string(first->info_offset) +
                                      "; expected unique names)",
                   t.name);
      const std::uint64_t dims_at = c_.file_offset();
      t.n_dims = c_.read<std::uint32_t>("tensor n_dims (u32)");
      if (t.n_dims > gguf_max_dims)
        throw fail(dims_at, "tensor has " + std::to_string(t.n_dims) + " dims (expected at most " +
                                std::to_string(gguf_max_dims) + ")",
                   t.name);
      // ggml keeps dims and element counts in int64_t. The product is checked with zero axes
      // counted as 1: an empty tensor of dims {0, 2^40, 2^40} would pass a plain product check,
      // yet its strides (what a view computes) overflow.
      std::uint64_t n_elements = 1, n_nonzero = 1;
      for (std::uint32_t d = 0; d < t.n_dims; ++d) {
        const std::uint64_t at = c_.file_offset();
        const auto ne = c_.read<std::uint64_t>("tensor dim (u64)");
        if (ne > max_i64)
          throw fail(at, "dim " + std::to_string(d) + " = " + std::to_string(ne) +
                             " (expected at most 2^63-1)",
                     t.name);
        if (ne != 0 && n_nonzero > max_i64 / ne)
          throw fail(at, "element count overflows: the product of the dims exceeds 2^63-1 "
                         "(expected a product that fits in int64, zero-length axes counted as 1)",
                     t.name);
        n_nonzero *= ne != 0 ? ne : 1;
        n_elements *= ne;
        t.ne[d] = ne;
      }
      const std::uint64_t type_at = c_.file_offset();
      const auto type_id = c_.read<std::uint32_t>("tensor type (u32)");
      const auto tr = traits_of(type_id);
      if (!tr)
        throw fail(type_at, "unknown ggml type id " + std::to_string(type_id) +
                                " (expected one of the ids in ggml.h, e.g. 0 = F32, 1 = F16, 8 = Q8_0)",
                   t.name);
      t.type = static_cast<ggml_type>(type_id);
      // Blocks never straddle rows in ggml: a row (ne[0] elements) holds whole blocks.
      if (t.ne[0] % tr->block_size != 0)
        throw fail(type_at, "row length ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                                std::string(tr->name) + " block size (expected a multiple of " +
                                std::to_string(tr->block_size) + ")",
                   t.name);
      // Byte strides and offsets (of a view, of ggml's nb[]) must fit in int64 too, empty axes
      // aside: the byte size of the nonzero dims is bounded the same way.
      const std::uint64_t blocks = n_nonzero / tr->block_size + (n_nonzero % tr->block_size != 0);
      if (blocks > max_i64 / tr->type_size)
        throw fail(type_at, "the dims span " + std::to_string(n_nonzero) + " " + std::string(tr->name) +
                                " elements (zero-length axes counted as 1), more than 2^63-1 bytes "
                                "(expected a byte size that fits in int64)",
                   t.name);
      t.n_elements = n_elements;
      // n_elements <= n_nonzero, whose byte size was just bounded: no overflow.
      t.n_bytes = n_elements / tr->block_size * tr->type_size;
      t.offset = c_.read<std::uint64_t>("tensor data offset (u64)");
      f_.tensors_.push_back(std::move(t));
      f_.tensor_index_.emplace(f_.tensors_.back().name, f_.tensors_.size() - 1);
    }
    f_.layout_.header_end = c_.file_offset();
  }

  void place_tensors() {
    // general.alignment: llama.cpp and gguf-py both require a u32, non-zero power of two.
    if (const gguf_kv *kv = f_.find_kv("general.alignment")) {
      if (kv->value.type() != gguf_type::u32)
        throw fail(kv->offset, "general.alignment has type " + std::string(name_of(kv->value.type())) +
                                   " (expected u32)");
      const std::uint32_t a = kv->value.get<std::uint32_t>();
      if (a == 0 || (a & (a - 1)) != 0)
        throw fail(kv->offset, "general.alignment = " + std::to_string(a) +
                                   " (expected a non-zero power of two)");
      f_.layout_.alignment = a;
    }
    const std::uint64_t align = f_.layout_.alignment;
    const std::uint64_t size = f_.bytes_.size();
    const std::uint64_t header_end = f_.layout_.header_end; // <= size
    f_.layout_.data_offset = (header_end + align - 1) / align * align;
    const std::uint64_t data_start = f_.layout_.data_offset;
    // The data section may be absent when no tensor has bytes (a metadata-only file).
    const std::uint64_t data_size = data_start <= size ? size - data_start : 0;

    for (gguf_tensor &t : f_.tensors_) {
      if (t.offset % align != 0)
        throw fail(t.info_offset, "data offset " + std::to_string(t.offset) +
                                      " is misaligned (expected a multiple of the alignment " +
                                      std::to_string(align) + ")",
                   t.name);
      if (t.offset > data_size || t.n_bytes > data_size - t.offset)
        throw fail(t.info_offset, "data [" + std::to_string(t.offset) + ", +" + std::to_string(t.n_bytes) +
                                      ") runs past the end of the file (expected it within the " +
                                      std::to_string(data_size) + "-byte data section at offset " +
                                      std::to_string(data_start) + ")",
                   t.name);
      t.file_offset = data_start + t.offset;
      t.data = t.n_bytes ? f_.bytes_.subspan(static_cast<std::size_t>(t.file_offset),
                                             static_cast<std::size_t>(t.n_bytes))
                         : std::span<const std::byte>{};
    }

    // Overlap: sort by offset and compare each tensor with the furthest end seen so far. Stable,
    // so that of two tensors at one offset the later in the file is the one reported.
    std::vector<std::size_t> order(f_.tensors_.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return f_.tensors_[a].offset < f_.tensors_[b].offset;
    });
    std::uint64_t end = 0;
    const gguf_tensor *owner = nullptr;
    for (std::size_t i : order) {
      const gguf_tensor &t = f_.tensors_[i];
      if (t.n_bytes == 0) continue;
      if (owner && t.offset < end)
        throw fail(t.info_offset, "data [" + std::to_string(t.offset) + ", " +
                                      std::to_string(t.offset + t.n_bytes) + ") overlaps tensor '" +
                                      owner->name + "' [" + std::to_string(owner->offset) + ", " +
                                      std::to_string(end) +
                                      ") (expected disjoint tensor data)",
                   t.name);
      if (t.offset + t.n_bytes > end) {
        end = t.offset + t.n_bytes;
        owner = &t;
      }
    }
  }

  gguf_file &f_;
  byte_cursor c_;
  std::string name_;
  std::span<const std::byte> all_;
  bool invalid_utf8_ = false; // set by any string read for the current kv
};
} // namespace detail

inline void gguf_file::parse_into(gguf_file &f, std::span<const std::byte> bytes, std::string name) {
  detail::gguf_parser(f, bytes, std::move(name)).run();
}

// --- llama.cpp control vectors --------------------------------------------------------------------

//! A steering vector per layer in llama.cpp's control-vector layout (see write_control_vector in
//! dms/formats/gguf_writer.hpp). Layer N's vector is added to the output of block N; N >= 1.
struct control_vector {
  std::string model_hint;  //!< `controlvector.model_hint` ("llama", ...), empty when absent
  std::int64_t n_embd = 0; //!< length of every direction
  std::map<std::int32_t, std::vector<float>> directions; //!< layer -> n_embd values
};

//! Reads a control vector with the checks llama.cpp's loader applies
//! (common_control_vector_load_one): every tensor is `direction.N` with N >= 1, F32, 1-D, and
//! all have the same length.
inline control_vector read_control_vector(const gguf_file &f) {
  control_vector cv;
  if (const gguf_value *hint = f.find("controlvector.model_hint"))
    cv.model_hint = std::string(hint->string("controlvector.model_hint"));
  for (const gguf_tensor &t : f.tensors()) {
    const error_context where{f.path(), t.info_offset, t.name};
    constexpr std::string_view prefix = "direction.";
    std::int64_t layer = -1;
    if (t.name.size() > prefix.size() && t.name.starts_with(prefix)) {
      const std::string_view digits = std::string_view(t.name).substr(prefix.size());
      if (digits.size() <= 9 && std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
        layer = 0;
        for (char ch : digits) layer = layer * 10 + (ch - '0');
      }
    }
    require(layer >= 1, errc::invalid_format, [&] {
      return std::string("not a control-vector tensor (expected a name direction.N with layer N >= 1)");
    }, where);
    require(t.type == ggml_type::f32 && t.n_dims == 1, errc::invalid_format, [&] {
      return "type " + std::string(t.traits().name) + " with " + std::to_string(t.n_dims) +
             " dims (expected F32 with 1 dim)";
    }, where);
    const auto n = static_cast<std::int64_t>(t.ne[0]);
    if (cv.n_embd == 0) cv.n_embd = n;
    require(n == cv.n_embd, errc::shape_mismatch, [&] {
      return "length " + std::to_string(n) + " (expected " + std::to_string(cv.n_embd) +
             ", the length of the first direction)";
    }, where);
    std::vector<float> v(static_cast<std::size_t>(n));
    if (n) std::memcpy(v.data(), t.data.data(), t.data.size());
    const bool fresh = cv.directions.emplace(static_cast<std::int32_t>(layer), std::move(v)).second;
    require(fresh, errc::invalid_format, [&] {
      return "second direction for layer " + std::to_string(layer) + " (expected one per layer)";
    }, where);
  }
  return cv;
}
inline control_vector read_control_vector(std::string path) {
  return read_control_vector(gguf_file(std::move(path)));
}

DMS_NAMESPACE_END
