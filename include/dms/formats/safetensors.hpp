// dms/formats/safetensors.hpp: read and write safetensors files (Hugging Face's tensor format).
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON, then the data section. The
// JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} with offsets
// relative to the data section, plus an optional "__metadata__" object of string -> string.
//
// Reading maps the file and validates the whole header up front, as strictly as the reference
// Rust crate (huggingface/safetensors, `Metadata::validate`) and a little more, so that every
// later access is a plain pointer into the mapping:
//  * the header fits in the file and in the crate's 100 MB limit, is UTF-8 and a JSON object,
//    and has no duplicate key (nlohmann would keep the last one silently; the crate's serde
//    map does too: dms refuses, since two meanings for one name is a broken file);
//  * every tensor has a known dtype, a shape of non-negative integers and two offsets with
//    begin <= end <= data size; numel * element size (products checked for overflow) equals
//    end - begin;
//  * sorted by offset, tensors tile the data section exactly: no overlap, no hole, nothing after
//    the last one (the format forbids holes, and the crate rejects them the same way).
// Errors name the file, the byte offset of the offending header entry, and what was expected.
// Tensors are exposed as dms::const_tensor_view without copying; `to_f32` converts the floating
// types. dtypes that dms does not compute on (F8_E4M3, U16, ...) are listed, validated and
// available as raw bytes, but view() and to_f32() report them as unsupported.
//
// A safetensors_file is immutable once constructed: its const members may be used from any
// number of threads.
//
// Writing produces the bytes the Rust crate produces for the same input (the peer test compares
// them with safetensors 0.8 byte for byte): compact JSON, entries in the crate's order (dtype
// alignment descending, then name, so each tensor starts at a multiple of its element size),
// "__metadata__" first, header padded with spaces to a multiple of 8. The one freedom the crate
// leaves (its metadata is a hash map, printed in any order) dms fixes by sorting metadata keys.
// `tensor_order::insertion` keeps the caller's order instead (tensors may then be misaligned;
// readers must cope, as dms does). Tensor bytes come from a span or from a producer callback
// that streams them when the file is written, so a merge writes a checkpoint without holding it
// in memory. The file appears atomically (dms::atomic_file).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/core/half.hpp"
#include "dms/formats/atomic_file.hpp"
#include "dms/formats/json.hpp"
#include "dms/formats/mapped_file.hpp"

DMS_NAMESPACE_BEGIN

//! One dtype of the safetensors format.
struct safetensors_dtype {
  std::string_view name;     //!< as written in the header ("BF16")
  std::uint32_t bits;        //!< bits per element (F4 packs two elements per byte)
  std::optional<dtype> type; //!< the dms dtype; nullopt for dtypes dms lists but does not read
  std::uint8_t order;        //!< position in the Rust crate's `Dtype` enum (increasing alignment)
};

//! Every dtype of safetensors 0.8, in the order of the Rust crate's enum (its writer sorts by
//! this order, descending).
inline constexpr safetensors_dtype safetensors_dtypes[] = {
    {"BOOL", 8, dtype::boolean, 0},  {"F4", 4, std::nullopt, 1},      {"F6_E2M3", 6, std::nullopt, 2},
    {"F6_E3M2", 6, std::nullopt, 3}, {"U8", 8, dtype::u8, 4},         {"I8", 8, dtype::i8, 5},
    {"F8_E5M2", 8, std::nullopt, 6}, {"F8_E4M3", 8, std::nullopt, 7}, {"F8_E8M0", 8, std::nullopt, 8},
    {"I16", 16, dtype::i16, 9},      {"U16", 16, std::nullopt, 10},   {"F16", 16, dtype::f16, 11},
    {"BF16", 16, dtype::bf16, 12},   {"I32", 32, dtype::i32, 13},     {"U32", 32, std::nullopt, 14},
    {"F32", 32, dtype::f32, 15},     {"C64", 64, std::nullopt, 16},   {"F64", 64, dtype::f64, 17},
    {"I64", 64, dtype::i64, 18},     {"U64", 64, std::nullopt, 19},
};

//! The table entry named `name`, or nullptr.
constexpr const safetensors_dtype *find_safetensors_dtype(std::string_view name) noexcept {
  for (const auto &d : safetensors_dtypes)
    if (d.name == name) return &d;
  return nullptr;
}
//! The table entry of a dms dtype (every dms dtype has one).
constexpr const safetensors_dtype &safetensors_dtype_of(dtype t) noexcept {
  for (const auto &d : safetensors_dtypes)
    if (d.type == t) return d;
  return safetensors_dtypes[0]; // unreachable: the table covers all_dtypes (tested)
}

namespace detail {
inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}
inline std::string known_safetensors_dtypes() {
  std::string s;
  for (const auto &d : safetensors_dtypes)
    s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}
//! Bytes of `shape` elements of `bits` bits each; nullopt on overflow or a partial byte.
inline std::optional<std::uint64_t> tensor_bytes(std::span<const std::int64_t> shape, std::uint32_t bits,
                                                 bool *partial = nullptr) {
  std::uint64_t n = 1;
  for (auto e : shape) {
    const auto u = static_cast<std::uint64_t>(e);
    if (u != 0 && n > UINT64_MAX / u) return std::nullopt;
    n *= u;
  }
  if (n > UINT64_MAX / bits) return std::nullopt;
  const std::uint64_t total_bits = n * bits;
  if (total_bits % 8 != 0) {
    if (partial) *partial = true;
    return std::nullopt;
  }
  return total_bits / 8;
}
} // namespace detail

//! One tensor entry of a safetensors header, validated.
struct safetensors_tensor {
  std::string name;
  std::string dtype_name;          //!< as in the file ("BF16", "F8_E4M3")
  std::optional<dtype> type;       //!< nullopt: a dtype dms lists but does not read
  std::vector<std::int64_t> shape; //!< extents, slowest axis first; empty for a scalar
  std::uint64_t begin = 0;         //!< first byte, relative to the data section
  std::uint64_t end = 0;           //!< one past the last byte, relative to the data section
  std::uint64_t file_offset = 0;   //!< absolute file offset of the first byte
  std::uint64_t header_offset = 0; //!< file offset of this entry's key in the JSON header

  std::uint64_t size_bytes() const noexcept { return end - begin; }
  //! Number of elements (validated not to overflow when the file was opened).
  std::uint64_t numel() const noexcept {
    std::uint64_t n = 1;
    for (auto e : shape)
      n *= static_cast<std::uint64_t>(e);
    return n;
  }
};

//! A validated, read-only safetensors file: mapped from disk, or borrowed from a byte span.
class safetensors_file {
public:
  //! The Rust crate's MAX_HEADER_SIZE: a larger header is refused before parsing, so a corrupt
  //! length cannot make dms parse gigabytes of JSON. Real headers are well under 10 MB.
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  //! Maps and validates the file at `path`.
  explicit safetensors_file(std::string path) : file_(std::move(path)) {
    bytes_ = file_.bytes();
    name_ = file_.path();
    parse();
  }
  //! Validates `bytes` (not copied: they must outlive this object); `name` labels errors.
  safetensors_file(std::span<const std::byte> bytes, std::string name)
      : name_(std::move(name)), bytes_(bytes) {
    parse();
  }

  //! The path (or name) given at construction.
  const std::string &path() const noexcept { return name_; }
  //! The whole file.
  std::span<const std::byte> bytes() const noexcept { return bytes_; }
  //! File offset of the data section (8 + header length).
  std::uint64_t data_offset() const noexcept { return data_offset_; }
  //! The "__metadata__" entries, sorted by key (empty when the header has none).
  const std::map<std::string, std::string, std::less<>> &metadata() const noexcept { return metadata_; }
  std::optional<std::string> metadata(std::string_view key) const {
    auto it = metadata_.find(key);
    if (it == metadata_.end()) return std::nullopt;
    return it->second;
  }
  //! Every tensor, in file order (by data offset).
  std::span<const safetensors_tensor> tensors() const noexcept { return tensors_; }
  std::size_t size() const noexcept { return tensors_.size(); }
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
  //! The entry named `name`, or nullptr.
  const safetensors_tensor *find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  //! The entry named `name`; errc::invalid_argument when absent.
  const safetensors_tensor &at(std::string_view name) const {
    const safetensors_tensor *t = find(name);
    require(t != nullptr, errc::invalid_argument,
            [&] { return "no tensor named '" + std::string(name) + "'"; }, {name_});
    return *t;
  }

  //! The bytes of a tensor (any dtype, including those dms does not compute on).
  std::span<const std::byte> raw(const safetensors_tensor &t) const noexcept {
    return bytes_.subspan(static_cast<std::size_t>(t.file_offset), static_cast<std::size_t>(t.size_bytes()));
  }
  std::span<const std::byte> raw(std::string_view name) const { return raw(at(name)); }

  //! A zero-copy view into the file. The pointer is aligned only as well as the file lays the
  //! tensor out (files written by the Rust crate or by dms's canonical order are aligned to the
  //! element size when the mapping is). errc::unsupported for a dtype dms does not read or a rank
  //! above dms::max_rank.
  const_tensor_view view(const safetensors_tensor &t) const {
    require_readable(t);
    require(t.shape.size() <= max_rank, errc::unsupported,
            [&] {
              return "rank " + std::to_string(t.shape.size()) + " exceeds dms::max_rank (" +
                     std::to_string(max_rank) + ")";
            },
            {name_, t.header_offset, t.name});
    // (detail::build_view rather than the untyped make_view: overload resolution of make_view
    // with a `const std::byte *` instantiates dtype_traits<const std::byte>, a hard error.)
    return detail::build_view<const std::byte>(raw(t).data(), *t.type, t.shape, {}, memory_space::host, 0);
  }
  const_tensor_view view(std::string_view name) const { return view(at(name)); }

  //! Converts an F32, F16, BF16 or F64 tensor into `out` (numel floats). f16/bf16 are exact; f64
  //! rounds to nearest. Other dtypes: errc::unsupported (integers are not silently made floats).
  void to_f32(const safetensors_tensor &t, std::span<float> out) const {
    require_readable(t);
    require(
        is_floating(*t.type), errc::unsupported,
        [&] { return "to_f32 converts floating tensors (F32, F16, BF16, F64); this one is " + t.dtype_name; },
        {name_, t.header_offset, t.name});
    const std::uint64_t n = t.numel();
    require(out.size() == n, errc::invalid_argument,
            [&] {
              return "output holds " + std::to_string(out.size()) + " floats, tensor has " +
                     std::to_string(n) + " elements";
            },
            {name_, t.header_offset, t.name});
    convert_to_f32(raw(t), *t.type, out);
  }
  std::vector<float> to_f32(const safetensors_tensor &t) const {
    std::vector<float> out(static_cast<std::size_t>(t.numel()));
    to_f32(t, out);
    return out;
  }
  std::vector<float> to_f32(std::string_view name) const { return to_f32(at(name)); }

  //! Converts raw little-endian floating elements of `type` into f32 (`src` may be unaligned).
  static void convert_to_f32(std::span<const std::byte> src, dtype type, std::span<float> out) {
    const std::size_t n = out.size();
    if (n == 0) return; // memcpy from an empty tensor's (possibly null) pointer is undefined
    switch (type) {
    case dtype::f32: std::memcpy(out.data(), src.data(), n * sizeof(float)); return;
    case dtype::f64:
      for (std::size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src.data() + i * sizeof(double), sizeof d);
        out[i] = static_cast<float>(d);
      }
      return;
    case dtype::f16: convert_halves<f16_bits>(src, out); return;
    case dtype::bf16: convert_halves<bf16_bits>(src, out); return;
    default:
      throw error(errc::unsupported,
                  "cannot convert " + std::string(name_of(type)) + " to f32 (floating types only)");
    }
  }

private:
  template <class Half> static void convert_halves(std::span<const std::byte> src, std::span<float> out) {
    const std::size_t n = out.size();
    if (reinterpret_cast<std::uintptr_t>(src.data()) % alignof(Half) == 0) {
      convert(std::span<const Half>(reinterpret_cast<const Half *>(src.data()), n), out);
      return;
    }
    // Misaligned in the file: copy through an aligned block (4096 elements: 8 KiB on the stack).
    Half block[4096];
    for (std::size_t i = 0; i < n; i += std::size(block)) {
      const std::size_t m = std::min(std::size(block), n - i);
      std::memcpy(block, src.data() + i * sizeof(Half), m * sizeof(Half));
      convert(std::span<const Half>(block, m), out.subspan(i, m));
    }
  }

  void require_readable(const safetensors_tensor &t) const {
    require(t.type.has_value(), errc::unsupported,
            [&] { return "dtype " + t.dtype_name + " is listed by safetensors but dms does not read it"; },
            {name_, t.header_offset, t.name});
  }

  void parse() {
    byte_cursor c(bytes_, name_);
    const auto n = c.read<std::uint64_t>("the 8-byte little-endian header length");
    require(n <= max_header_bytes, errc::invalid_format,
            [&] {
              return "header length " + std::to_string(n) + " exceeds the limit of " +
                     std::to_string(max_header_bytes) + " bytes";
            },
            {name_, 0});
    require(n <= c.remaining(), errc::invalid_format,
            [&] {
              return "header length " + std::to_string(n) +
                     " runs past the end of the file (expected <= " + std::to_string(c.remaining()) + ")";
            },
            {name_, 0});
    const std::string_view header = c.read_chars(static_cast<std::size_t>(n), "header");
    data_offset_ = 8 + n;
    const std::uint64_t data_size = bytes_.size() - data_offset_;
    const json_document doc = parse_json(header, name_, 8);
    // (Leading whitespace is valid JSON and the Rust crate accepts it, so dms does too.)
    require(doc.value.is_object(), errc::invalid_format,
            [&] { return "header must be a JSON object, got " + std::string(doc.value.type_name()); },
            {name_, 8});
    std::size_t i = 0;
    tensors_.reserve(doc.value.size());
    for (auto it = doc.value.begin(); it != doc.value.end(); ++it, ++i) {
      const std::uint64_t at_key = i < doc.key_offsets.size() ? doc.key_offsets[i] : 8;
      if (it.key() == "__metadata__") {
        parse_metadata(it.value(), at_key);
        continue;
      }
      tensors_.push_back(parse_tensor(it.key(), it.value(), at_key, data_size));
    }
    check_coverage(data_size);
    for (std::size_t k = 0; k < tensors_.size(); ++k)
      index_.emplace(tensors_[k].name, k);
  }

  void parse_metadata(const ordered_json &m, std::uint64_t at) {
    const error_context where{name_, at, "__metadata__"};
    json_require_object(m, "__metadata__", where);
    for (auto it = m.begin(); it != m.end(); ++it)
      metadata_.emplace(it.key(), json_as_string(it.value(), "__metadata__['" + it.key() + "']", where));
  }

  safetensors_tensor parse_tensor(const std::string &name, const ordered_json &v, std::uint64_t at,
                                  std::uint64_t data_size) const {
    const error_context where{name_, at, name};
    json_require_object(v, "tensor entry", where);
    safetensors_tensor t;
    t.name = name;
    t.header_offset = at;
    t.dtype_name = json_as_string(json_at(v, "dtype", where), "key 'dtype'", where);
    const safetensors_dtype *dt = find_safetensors_dtype(t.dtype_name);
    require(
        dt != nullptr, errc::invalid_format,
        [&] {
          return "unknown dtype '" + t.dtype_name + "' (expected one of " +
                 detail::known_safetensors_dtypes() + ")";
        },
        where);
    t.type = dt->type;

    const ordered_json &shape = json_at(v, "shape", where);
    if (!shape.is_array()) json_type_error("key 'shape'", "an array of integers", shape, where);
    for (std::size_t k = 0; k < shape.size(); ++k)
      t.shape.push_back(json_as_int(shape[k], "shape[" + std::to_string(k) + "]", where, 0));

    const ordered_json &offsets = json_at(v, "data_offsets", where);
    if (!offsets.is_array() || offsets.size() != 2)
      json_type_error("key 'data_offsets'", "an array [begin, end] of two integers", offsets, where);
    t.begin = json_as_uint(offsets[0], "data_offsets[0]", where);
    t.end = json_as_uint(offsets[1], "data_offsets[1]", where);
    require(
        t.begin <= t.end, errc::invalid_format,
        [&] {
          return "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                 "]: expected begin <= end";
        },
        where);
    require(
        t.end <= data_size, errc::invalid_format,
        [&] {
          return "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                 "] run past the end of the file (the data section holds " + std::to_string(data_size) +
                 " bytes)";
        },
        where);
    t.file_offset = data_offset_ + t.begin;

    bool partial = false;
    const auto nbytes = detail::tensor_bytes(t.shape, dt->bits, &partial);
    require(
        nbytes.has_value(), errc::invalid_format,
        [&] {
          return partial ? "shape " + detail::shape_string(t.shape) + " of " + t.dtype_name +
                               " is not a whole number of bytes"
                         : "shape " + detail::shape_string(t.shape) + " of " + t.dtype_name +
                               " overflows 64 bits";
        },
        where);
    require(
        *nbytes == t.size_bytes(), errc::invalid_format,
        [&] {
          return "shape " + detail::shape_string(t.shape) + " of " + t.dtype_name + " needs " +
                 std::to_string(*nbytes) + " bytes, data_offsets [" + std::to_string(t.begin) + ", " +
                 std::to_string(t.end) + "] give " + std::to_string(t.size_bytes());
        },
        where);
    return t;
  }

  //! Sorted by offset, the tensors must tile [0, data_size) exactly.
  void check_coverage(std::uint64_t data_size) {
    std::stable_sort(tensors_.begin(), tensors_.end(), [](const auto &a, const auto &b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t expected = 0;
    const safetensors_tensor *prev = nullptr;
    for (const auto &t : tensors_) {
      require(t.begin >= expected, errc::invalid_format,
              [&] {
                return "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                       "] overlap tensor '" + prev->name + "' [" + std::to_string(prev->begin) + ", " +
                       std::to_string(prev->end) + "] (expected begin >= " + std::to_string(expected) + ")";
              },
              {name_, t.header_offset, t.name});
      require(t.begin == expected, errc::invalid_format,
              [&] {
                return "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                       "] leave a hole of " + std::to_string(t.begin - expected) +
                       " bytes before the tensor (expected begin == " + std::to_string(expected) +
                       ": tensors must cover the data section without gaps)";
              },
              {name_, t.header_offset, t.name});
      expected = t.end;
      prev = &t;
    }
    require(expected == data_size, errc::invalid_format,
            [&] {
              return std::to_string(data_size - expected) +
                     " bytes after the last tensor belong to no tensor (expected the data section to end "
                     "at data offset " +
                     std::to_string(expected) + ")";
            },
            {name_, data_offset_ + expected});
  }

  mapped_file file_; // empty when borrowing a span
  std::string name_;
  std::span<const std::byte> bytes_;
  std::uint64_t data_offset_ = 0;
  std::map<std::string, std::string, std::less<>> metadata_;
  std::vector<safetensors_tensor> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

// --- writing ---------------------------------------------------------------------------------------

//! Where a tensor producer writes its bytes. It refuses to write more than the tensor holds, and
//! the writer checks afterwards that exactly that many were written.
class tensor_sink {
public:
  tensor_sink(std::function<void(std::span<const std::byte>)> out, std::uint64_t expected, std::string tensor,
              std::string file)
      : out_(std::move(out)), left_(expected), tensor_(std::move(tensor)), file_(std::move(file)) {}

  void write(std::span<const std::byte> bytes) {
    require(bytes.size() <= left_, errc::invalid_argument,
            [&] {
              return "producer wrote " + std::to_string(bytes.size()) + " bytes with only " +
                     std::to_string(left_) + " left in the tensor";
            },
            {file_, std::nullopt, tensor_});
    out_(bytes);
    left_ -= bytes.size();
  }
  // (std::byte is excluded first: element_type<const std::byte> is a hard error in dtype.hpp
  // rather than false, and overload resolution would otherwise evaluate it.)
  template <class T>
  requires(!std::is_same_v<std::remove_const_t<T>, std::byte> &&
           element_type<T>) void write(std::span<const T> values) {
    write(std::as_bytes(values));
  }
  template <class T>
  requires(!std::is_same_v<std::remove_const_t<T>, std::byte> &&
           element_type<T>) void write(std::span<T> values) {
    write(std::as_bytes(std::span<const T>(values)));
  }
  //! Bytes the producer still has to write.
  std::uint64_t remaining() const noexcept { return left_; }
  const std::string &tensor_name() const noexcept { return tensor_; }

private:
  std::function<void(std::span<const std::byte>)> out_;
  std::uint64_t left_;
  std::string tensor_, file_;
};

//! Writes a tensor's bytes into a sink when the file is written (after the header).
using tensor_producer = std::function<void(tensor_sink &)>;

//! How the writer orders tensors in the file.
enum class tensor_order : std::uint8_t {
  canonical, //!< the Rust crate's: dtype alignment descending, then name (byte-identical output)
  insertion, //!< the order of add() calls (for producers that must run in model order)
};

//! Collects tensors and metadata, then writes one safetensors file. Spans passed to add() are
//! not copied: they must stay valid until write() or serialize() returns.
//! @code
//!   dms::safetensors_writer w;
//!   w.set_metadata("format", "pt");
//!   w.add("embed.weight", dms::dtype::f32, {2, 3}, std::as_bytes(std::span(values)));
//!   w.add("lm_head.weight", dms::dtype::bf16, {2, 3}, [&](dms::tensor_sink &s) { s.write(rows); });
//!   w.write("out/model.safetensors");
//! @endcode
class safetensors_writer {
public:
  //! Adds (or replaces) a "__metadata__" entry. Keys and values must be UTF-8.
  void set_metadata(std::string key, std::string value) {
    require(is_valid_utf8(key) && is_valid_utf8(value), errc::invalid_argument,
            [&] { return "metadata key '" + key + "' or its value is not valid UTF-8"; });
    metadata_[std::move(key)] = std::move(value);
  }
  const std::map<std::string, std::string, std::less<>> &metadata() const noexcept { return metadata_; }

  //! Adds a tensor whose bytes (little-endian, row-major) are `bytes`.
  void add(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<const std::byte> bytes) {
    add_entry(std::move(name), safetensors_dtype_of(type), std::move(shape), bytes, {}, true);
  }
  //! Adds a contiguous host view.
  void add(std::string name, const const_tensor_view &v) {
    require(v.space == memory_space::host && v.is_contiguous(), errc::invalid_argument,
            [&] { return "tensor '" + name + "': the writer takes contiguous host views"; });
    add(std::move(name), v.type, std::vector<std::int64_t>(v.extents.begin(), v.extents.begin() + v.rank),
        std::span<const std::byte>(v.data, v.size_bytes()));
  }
  //! Adds a tensor whose bytes `produce` writes into a tensor_sink when the file is written.
  void add(std::string name, dtype type, std::vector<std::int64_t> shape, tensor_producer produce) {
    require(static_cast<bool>(produce), errc::invalid_argument,
            [&] { return "tensor '" + name + "': empty producer"; });
    add_entry(std::move(name), safetensors_dtype_of(type), std::move(shape), {}, std::move(produce), false);
  }
  //! Adds bytes of any safetensors dtype by name, e.g. an F8_E4M3 tensor copied unchanged.
  void add_raw(std::string name, std::string_view dtype_name, std::vector<std::int64_t> shape,
               std::span<const std::byte> bytes) {
    const safetensors_dtype *dt = find_safetensors_dtype(dtype_name);
    require(dt != nullptr, errc::invalid_argument, [&] {
      return "unknown safetensors dtype '" + std::string(dtype_name) + "' (expected one of " +
             detail::known_safetensors_dtypes() + ")";
    });
    add_entry(std::move(name), *dt, std::move(shape), bytes, {}, true);
  }

  std::size_t size() const noexcept { return entries_.size(); }
  bool contains(std::string_view name) const { return names_.find(name) != names_.end(); }
  //! Sum of the tensors' byte sizes (the data section).
  std::uint64_t data_bytes() const noexcept { return data_bytes_; }
  //! The header JSON, padded with spaces to a multiple of 8 bytes.
  std::string header(tensor_order order = tensor_order::canonical) const {
    return build_header(ordered(order));
  }
  //! Size of the file write() produces.
  std::uint64_t file_bytes(tensor_order order = tensor_order::canonical) const {
    return 8 + header(order).size() + data_bytes_;
  }

  //! Writes the file atomically (a temporary sibling renamed into place); returns its size.
  std::uint64_t write(const std::filesystem::path &target,
                      tensor_order order = tensor_order::canonical) const {
    atomic_file f(target);
    emit(ordered(order), target.string(), [&](std::span<const std::byte> b) { f.write(b); });
    f.commit();
    return f.bytes_written();
  }
  //! The file's bytes in memory (tests, fuzz seeds, small files).
  std::vector<std::byte> serialize(tensor_order order = tensor_order::canonical) const {
    std::vector<std::byte> out;
    emit(ordered(order), "<memory>",
         [&](std::span<const std::byte> b) { out.insert(out.end(), b.begin(), b.end()); });
    return out;
  }

private:
  struct entry {
    std::string name;
    const safetensors_dtype *dt;
    std::vector<std::int64_t> shape;
    std::uint64_t nbytes;
    std::span<const std::byte> bytes;
    tensor_producer produce;
  };

  void add_entry(std::string name, const safetensors_dtype &dt, std::vector<std::int64_t> shape,
                 std::span<const std::byte> bytes, tensor_producer produce, bool has_bytes) {
    const error_context where{{}, std::nullopt, name};
    require(
        is_valid_utf8(name), errc::invalid_argument,
        [] { return std::string("tensor name is not valid UTF-8"); }, where);
    require(
        name != "__metadata__", errc::invalid_argument,
        [] { return std::string("'__metadata__' is reserved for the metadata entry"); }, where);
    require(
        !contains(name), errc::invalid_argument,
        [] { return std::string("added twice (expected unique tensor names)"); }, where);
    for (auto e : shape)
      require(
          e >= 0, errc::invalid_argument,
          [&] { return "negative extent in shape " + detail::shape_string(shape); }, where);
    bool partial = false;
    const auto nbytes = detail::tensor_bytes(shape, dt.bits, &partial);
    require(
        nbytes.has_value(), errc::invalid_argument,
        [&] {
          return "shape " + detail::shape_string(shape) + " of " + std::string(dt.name) +
                 (partial ? " is not a whole number of bytes" : " overflows 64 bits");
        },
        where);
    require(
        !has_bytes || bytes.size() == *nbytes, errc::invalid_argument,
        [&] {
          return "shape " + detail::shape_string(shape) + " of " + std::string(dt.name) + " needs " +
                 std::to_string(*nbytes) + " bytes, got " + std::to_string(bytes.size());
        },
        where);
    names_.emplace(name, entries_.size());
    data_bytes_ += *nbytes;
    entries_.push_back({std::move(name), &dt, std::move(shape), *nbytes, bytes, std::move(produce)});
  }

  std::vector<const entry *> ordered(tensor_order order) const {
    std::vector<const entry *> v;
    v.reserve(entries_.size());
    for (const auto &e : entries_)
      v.push_back(&e);
    if (order == tensor_order::canonical)
      std::sort(v.begin(), v.end(), [](const entry *a, const entry *b) {
        if (a->dt->order != b->dt->order) return a->dt->order > b->dt->order;
        return a->name < b->name; // bytewise, as Rust's String ordering
      });
    return v;
  }

  std::string build_header(const std::vector<const entry *> &order) const {
    // Compact JSON exactly as serde_json prints the crate's structs (field order dtype, shape,
    // data_offsets); nlohmann escapes strings the same way (control characters as \uXXXX or the
    // short forms, nothing else).
    std::string h = "{";
    if (!metadata_.empty()) {
      h += "\"__metadata__\":{";
      bool first = true;
      for (const auto &[k, v] : metadata_) {
        if (!first) h += ',';
        first = false;
        h += json_quote(k) + ":" + json_quote(v);
      }
      h += '}';
    }
    std::uint64_t offset = 0;
    for (const entry *e : order) {
      if (h.size() > 1) h += ',';
      h += json_quote(e->name) + ":{\"dtype\":\"" + std::string(e->dt->name) + "\",\"shape\":[";
      for (std::size_t i = 0; i < e->shape.size(); ++i)
        h += (i ? "," : "") + std::to_string(e->shape[i]);
      h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + e->nbytes) + "]}";
      offset += e->nbytes;
    }
    h += '}';
    // Pad with spaces to a multiple of 8 so that the data section starts 8-aligned (the crate's
    // N_ALIGNMENT), which keeps every canonically ordered tensor aligned to its element size.
    h.append((8 - h.size() % 8) % 8, ' ');
    return h;
  }

  template <class Out>
  void emit(const std::vector<const entry *> &order, const std::string &file, Out &&out) const {
    const std::string h = build_header(order);
    const std::uint64_t n = h.size();
    std::byte len[8];
    for (int i = 0; i < 8; ++i)
      len[i] = static_cast<std::byte>((n >> (8 * i)) & 0xffu);
    out(std::span<const std::byte>(len, 8));
    out(std::as_bytes(std::span<const char>(h.data(), h.size())));
    for (const entry *e : order) {
      if (!e->produce) {
        out(e->bytes);
        continue;
      }
      tensor_sink sink(out, e->nbytes, e->name, file);
      e->produce(sink);
      require(sink.remaining() == 0, errc::invalid_argument,
              [&] {
                return "producer wrote " + std::to_string(e->nbytes - sink.remaining()) + " of the " +
                       std::to_string(e->nbytes) + " bytes of the tensor";
              },
              {file, std::nullopt, e->name});
    }
  }

  std::vector<entry> entries_;
  std::map<std::string, std::size_t, std::less<>> names_;
  std::map<std::string, std::string, std::less<>> metadata_;
  std::uint64_t data_bytes_ = 0;
};

DMS_NAMESPACE_END
