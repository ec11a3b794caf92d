// dms/formats/gguf_writer.hpp: writing GGUF version 3 files, and llama.cpp control vectors.
//
// Merges and steering-vector builders end in a GGUF file that llama.cpp must load, so the writer
// produces exactly what llama.cpp's gguf_write_to_file and gguf-py's GGUFWriter produce: header,
// metadata in insertion order, tensor infos with offsets relative to the data section, the data
// section aligned to `general.alignment` and every tensor padded to it (the last one too).
//
// Tensor data never has to be in memory all at once: a tensor is either a span the caller keeps
// alive until write(), bytes the writer owns, or a producer callback that streams the bytes when
// the writer reaches it (a merge computes one tensor at a time). Sizes are validated when a
// tensor is added (bytes == storage_bytes(type, elements)) and again after a producer ran. The
// file is written through dms::atomic_file: a failure at any point leaves no partial file.
//
// Shapes are given row-major (slowest axis first, as numpy and gguf-py's add_tensor take them)
// and stored reversed, in ggml order, as the format requires.
//
// @code
//   dms::gguf_writer w;                                   // alignment 32
//   w.set("general.architecture", "llama");
//   w.set("llama.block_count", std::uint32_t{30});
//   w.add_tensor("output_norm.weight", {576}, norm);      // std::vector<float>: F32, copied
//   w.add_tensor("blk.0.attn_q.weight", dms::ggml_type::q4_1, {576, 576},
//                [&](dms::gguf_tensor_sink &out) { out.write(quantize_rows(...)); });
//   w.write("merged.gguf");
// @endcode
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/atomic_file.hpp"
#include "dms/formats/ggml_type.hpp"
#include "dms/formats/gguf.hpp"

DMS_NAMESPACE_BEGIN

static_assert(std::endian::native == std::endian::little,
              "dms::gguf_writer writes native-endian values: GGUF files are little-endian");

//! llama.cpp stores tensor names in a 64-byte buffer (GGML_MAX_NAME) and refuses longer ones.
inline constexpr std::size_t gguf_max_tensor_name = 63;

namespace detail {
template <class T> struct ggml_type_for;
template <> struct ggml_type_for<float> { static constexpr ggml_type value = ggml_type::f32; };
template <> struct ggml_type_for<f16_bits> { static constexpr ggml_type value = ggml_type::f16; };
template <> struct ggml_type_for<bf16_bits> { static constexpr ggml_type value = ggml_type::bf16; };
template <> struct ggml_type_for<double> { static constexpr ggml_type value = ggml_type::f64; };
template <> struct ggml_type_for<std::int8_t> { static constexpr ggml_type value = ggml_type::i8; };
template <> struct ggml_type_for<std::int16_t> { static constexpr ggml_type value = ggml_type::i16; };
template <> struct ggml_type_for<std::int32_t> { static constexpr ggml_type value = ggml_type::i32; };
template <> struct ggml_type_for<std::int64_t> { static constexpr ggml_type value = ggml_type::i64; };
template <class T>
concept ggml_plain = requires { ggml_type_for<T>::value; };
} // namespace detail

class gguf_writer;

//! Where a producer writes one tensor's bytes. Refuses to write past the declared size.
class gguf_tensor_sink {
public:
  void write(std::span<const std::byte> bytes) {
    require(bytes.size() <= remaining(), errc::invalid_argument, [&] {
      return "producer wrote " + std::to_string(written_ + bytes.size()) + "+ bytes (expected " +
             std::to_string(size_) + ")";
    }, {out_.target().string(), out_.bytes_written(), name_});
    out_.write(bytes);
    written_ += bytes.size();
  }
  template <class T>
    requires std::is_trivially_copyable_v<T>
  void write(std::span<const T> values) {
    write(std::as_bytes(values));
  }
  std::uint64_t remaining() const noexcept { return size_ - written_; }
  std::uint64_t written() const noexcept { return written_; }

private:
  friend class gguf_writer;
  gguf_tensor_sink(atomic_file &out, std::uint64_t size, const std::string &name)
      : out_(out), size_(size), name_(name) {}
  atomic_file &out_;
  std::uint64_t size_;
  std::uint64_t written_ = 0;
  const std::string &name_;
};

//! Builds a GGUF v3 file: metadata and tensors, then write().
class gguf_writer {
public:
  //! Writes the tensor's bytes into the sink; called once, during write(), in tensor order.
  using producer = std::function<void(gguf_tensor_sink &)>;

  //! `alignment` of the data section and of every tensor: a power of two. When it is not the
  //! default (32), `general.alignment` is written (readers need it to find the data).
  explicit gguf_writer(std::uint32_t alignment = gguf_default_alignment) { set_alignment(alignment); }

  // --- metadata -------------------------------------------------------------------------------
  //! Sets `key` to `value`: a new key is appended, an existing one keeps its position.
  //! `general.alignment` must be a u32 power of two and also sets the alignment.
  gguf_writer &set(std::string key, gguf_value value) {
    require(!key.empty() && is_valid_utf8(key), errc::invalid_argument,
            [&] { return std::string("metadata key must be non-empty UTF-8"); });
    check_depth(key, value, 0);
    if (key == "general.alignment") {
      require(value.type() == gguf_type::u32, errc::invalid_argument, [&] {
        return "general.alignment must be a u32, got " + std::string(name_of(value.type()));
      });
      check_alignment(value.get<std::uint32_t>());
      alignment_ = value.get<std::uint32_t>();
    }
    if (auto it = index_.find(key); it != index_.end()) {
      kvs_[it->second].second = std::move(value);
    } else {
      index_.emplace(key, kvs_.size());
      kvs_.emplace_back(std::move(key), std::move(value));
    }
    return *this;
  }
  //! Removes `key`; returns whether it was present. (Removing general.alignment resets the
  //! alignment to the default.)
  bool erase(std::string_view key) {
    auto it = index_.find(std::string(key));
    if (it == index_.end()) return false;
    kvs_.erase(kvs_.begin() + static_cast<std::ptrdiff_t>(it->second));
    index_.clear();
    for (std::size_t i = 0; i < kvs_.size(); ++i) index_.emplace(kvs_[i].first, i);
    if (key == "general.alignment") alignment_ = gguf_default_alignment;
    return true;
  }
  const gguf_value *find(std::string_view key) const {
    auto it = index_.find(std::string(key));
    return it == index_.end() ? nullptr : &kvs_[it->second].second;
  }
  //! Copies every key of `f` except the layout keys the writer owns (general.alignment).
  gguf_writer &copy_metadata(const gguf_file &f) {
    for (const gguf_kv &kv : f.metadata())
      if (kv.key != "general.alignment") set(kv.key, kv.value);
    return *this;
  }
  void set_alignment(std::uint32_t alignment) {
    check_alignment(alignment);
    alignment_ = alignment;
    if (find("general.alignment")) set("general.alignment", alignment);
  }
  std::uint32_t alignment() const noexcept { return alignment_; }
  const std::vector<std::pair<std::string, gguf_value>> &metadata() const noexcept { return kvs_; }

  // --- tensors --------------------------------------------------------------------------------
  //! A tensor whose bytes the caller keeps alive until write() returns (no copy).
  gguf_writer &add_tensor(std::string name, ggml_type type, std::vector<std::int64_t> shape,
                          std::span<const std::byte> bytes) {
    entry e = make_entry(std::move(name), type, shape);
    check_size(e, bytes.size());
    e.source = bytes;
    return commit(std::move(e));
  }
  //! A tensor whose bytes the writer takes over.
  gguf_writer &add_tensor(std::string name, ggml_type type, std::vector<std::int64_t> shape,
                          std::vector<std::byte> &&bytes) {
    entry e = make_entry(std::move(name), type, shape);
    check_size(e, bytes.size());
    e.source = std::move(bytes);
    return commit(std::move(e));
  }
  //! A tensor whose bytes `produce` writes during write(); it must write exactly the size.
  gguf_writer &add_tensor(std::string name, ggml_type type, std::vector<std::int64_t> shape,
                          producer produce) {
    require(static_cast<bool>(produce), errc::invalid_argument,
            [] { return std::string("empty producer"); }, {{}, std::nullopt, name});
    entry e = make_entry(std::move(name), type, shape);
    e.source = std::move(produce);
    return commit(std::move(e));
  }
  //! A tensor of plain elements (float -> F32, f16_bits -> F16, ...), copied.
  template <std::ranges::contiguous_range R>
    requires detail::ggml_plain<std::ranges::range_value_t<R>>
  gguf_writer &add_tensor(std::string name, std::vector<std::int64_t> shape, const R &values) {
    using T = std::ranges::range_value_t<R>;
    const auto bytes = std::as_bytes(std::span<const T>(std::ranges::data(values), std::ranges::size(values)));
    return add_tensor(std::move(name), detail::ggml_type_for<T>::value, std::move(shape),
                      std::vector<std::byte>(bytes.begin(), bytes.end()));
  }
  std::size_t tensor_count() const noexcept { return tensors_.size(); }

  // --- output ---------------------------------------------------------------------------------
  //! Everything before the data section (header, metadata, tensor infos), unpadded.
  std::vector<std::byte> header_bytes() const {
    std::vector<std::byte> out;
    put(out, std::uint32_t{0x46554747}); // "GGUF" read as a little-endian u32
    put(out, std::uint32_t{3});
    const bool add_alignment = alignment_ != gguf_default_alignment && !find("general.alignment");
    put(out, static_cast<std::uint64_t>(tensors_.size()));
    put(out, static_cast<std::uint64_t>(kvs_.size() + (add_alignment ? 1 : 0)));
    for (const auto &[key, value] : kvs_) {
      put_string(out, key);
      put(out, static_cast<std::uint32_t>(value.type()));
      put_payload(out, value);
    }
    if (add_alignment) {
      put_string(out, "general.alignment");
      put(out, static_cast<std::uint32_t>(gguf_type::u32));
      put(out, alignment_);
    }
    std::uint64_t offset = 0;
    for (const entry &e : tensors_) {
      put_string(out, e.name);
      put(out, static_cast<std::uint32_t>(e.ne.size()));
      for (std::uint64_t d : e.ne) put(out, d);
      put(out, static_cast<std::uint32_t>(e.type));
      put(out, offset);
      offset += padded(e.n_bytes);
    }
    return out;
  }

  //! Writes the file atomically: `path` is replaced only once everything was written.
  void write(const std::filesystem::path &path) const {
    atomic_file out(path);
    out.write(std::span<const std::byte>(header_bytes()));
    out.pad_to(alignment_);
    for (const entry &e : tensors_) {
      const std::uint64_t start = out.bytes_written();
      if (const auto *borrowed = std::get_if<std::span<const std::byte>>(&e.source)) {
        out.write(*borrowed);
      } else if (const auto *owned = std::get_if<std::vector<std::byte>>(&e.source)) {
        out.write(std::span<const std::byte>(*owned));
      } else {
        gguf_tensor_sink sink(out, e.n_bytes, e.name);
        std::get<producer>(e.source)(sink);
        require(sink.written() == e.n_bytes, errc::invalid_argument, [&] {
          return "producer wrote " + std::to_string(sink.written()) + " bytes (expected " +
                 std::to_string(e.n_bytes) + ")";
        }, {path.string(), start, e.name});
      }
      out.pad_to(alignment_);
    }
    out.commit();
  }

private:
  struct entry {
    std::string name;
    ggml_type type;
    std::vector<std::uint64_t> ne; // ggml order
    std::uint64_t n_bytes = 0;
    std::variant<std::span<const std::byte>, std::vector<std::byte>, producer> source;
  };

  static void check_alignment(std::uint32_t a) {
    require(a != 0 && (a & (a - 1)) == 0, errc::invalid_argument, [&] {
      return "alignment " + std::to_string(a) + " (expected a non-zero power of two)";
    });
  }
  static void check_depth(const std::string &key, const gguf_value &v, int depth) {
    if (const auto *a = std::get_if<gguf_array>(&v.raw())) check_depth(key, *a, depth);
  }
  static void check_depth(const std::string &key, const gguf_array &a, int depth) {
    require(depth < gguf_max_array_depth, errc::invalid_argument, [&] {
      return "metadata key '" + key + "': arrays nested deeper than " +
             std::to_string(gguf_max_array_depth) + " levels (readers refuse them)";
    });
    if (const auto *inner = std::get_if<std::vector<gguf_array>>(&a.items()))
      for (const gguf_array &x : *inner) check_depth(key, x, depth + 1);
  }

  //! Validates a tensor; nothing is added until commit() (a rejected tensor leaves no trace).
  entry make_entry(std::string name, ggml_type type, const std::vector<std::int64_t> &shape) const {
    const error_context where{{}, std::nullopt, name};
    require(!name.empty() && is_valid_utf8(name), errc::invalid_argument,
            [] { return std::string("tensor name must be non-empty UTF-8"); }, where);
    require(name.size() <= gguf_max_tensor_name, errc::invalid_argument, [&] {
      return "name is " + std::to_string(name.size()) + " bytes (llama.cpp accepts at most " +
             std::to_string(gguf_max_tensor_name) + ")";
    }, where);
    require(!tensor_names_.contains(name), errc::invalid_argument,
            [] { return std::string("duplicate tensor name"); }, where);
    const auto tr = traits_of(static_cast<std::uint32_t>(type));
    require(tr.has_value(), errc::invalid_argument, [&] {
      return "unknown ggml type id " + std::to_string(static_cast<std::uint32_t>(type));
    }, where);
    require(!shape.empty() && shape.size() <= gguf_max_dims, errc::invalid_argument, [&] {
      return "shape has " + std::to_string(shape.size()) + " axes (expected 1 to 4)";
    }, where);
    entry e;
    e.type = type;
    constexpr auto max_i64 = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    // Zero-length axes count as 1 in the overflow check, as in the reader (which refuses what
    // this would let through).
    std::uint64_t n = 1, n_nonzero = 1;
    for (auto it = shape.rbegin(); it != shape.rend(); ++it) {
      require(*it >= 0, errc::invalid_argument,
              [&] { return "negative extent " + std::to_string(*it); }, where);
      const auto d = static_cast<std::uint64_t>(*it);
      require(d == 0 || n_nonzero <= max_i64 / d, errc::invalid_argument,
              [] { return std::string("element count overflows int64"); }, where);
      n_nonzero *= d != 0 ? d : 1;
      n *= d;
      e.ne.push_back(d);
    }
    require(e.ne[0] % tr->block_size == 0, errc::invalid_argument, [&] {
      return "row length " + std::to_string(e.ne[0]) + " is not a multiple of the " +
             std::string(tr->name) + " block size " + std::to_string(tr->block_size);
    }, where);
    const std::uint64_t blocks = n_nonzero / tr->block_size + (n_nonzero % tr->block_size != 0);
    require(blocks <= max_i64 / tr->type_size, errc::invalid_argument,
            [] { return std::string("byte size overflows int64"); }, where);
    e.n_bytes = *storage_bytes(type, n);
    e.name = std::move(name);
    return e;
  }
  gguf_writer &commit(entry &&e) {
    tensor_names_.insert(e.name);
    tensors_.push_back(std::move(e));
    return *this;
  }
  static void check_size(const entry &e, std::size_t given) {
    require(given == e.n_bytes, errc::invalid_argument, [&] {
      return std::to_string(given) + " bytes given (expected " + std::to_string(e.n_bytes) +
             " for " + std::string(traits_of(e.type).name) + ")";
    }, {{}, std::nullopt, e.name});
  }
  std::uint64_t padded(std::uint64_t n) const noexcept {
    return (n + alignment_ - 1) / alignment_ * alignment_;
  }

  template <class T> static void put(std::vector<std::byte> &out, T v) {
    const auto *p = reinterpret_cast<const std::byte *>(&v);
    out.insert(out.end(), p, p + sizeof(T));
  }
  static void put_string(std::vector<std::byte> &out, std::string_view s) {
    put(out, static_cast<std::uint64_t>(s.size()));
    const auto *p = reinterpret_cast<const std::byte *>(s.data());
    out.insert(out.end(), p, p + s.size());
  }
  static void put_payload(std::vector<std::byte> &out, const gguf_value &v) {
    std::visit([&](const auto &x) {
      using X = std::remove_cvref_t<decltype(x)>;
      if constexpr (std::is_same_v<X, std::string>) put_string(out, x);
      else if constexpr (std::is_same_v<X, gguf_array>) put_array(out, x);
      else if constexpr (std::is_same_v<X, bool>) put(out, static_cast<std::uint8_t>(x ? 1 : 0));
      else put(out, x);
    }, v.raw());
  }
  static void put_array(std::vector<std::byte> &out, const gguf_array &a) {
    put(out, static_cast<std::uint32_t>(a.element_type()));
    put(out, static_cast<std::uint64_t>(a.size()));
    std::visit([&](const auto &items) {
      using X = typename std::remove_cvref_t<decltype(items)>::value_type;
      if constexpr (std::is_same_v<X, std::string>) {
        for (const auto &s : items) put_string(out, s);
      } else if constexpr (std::is_same_v<X, gguf_array>) {
        for (const auto &inner : items) put_array(out, inner);
      } else if constexpr (std::is_same_v<X, bool>) {
        for (bool b : items) put(out, static_cast<std::uint8_t>(b ? 1 : 0));
      } else {
        const auto *p = reinterpret_cast<const std::byte *>(items.data());
        out.insert(out.end(), p, p + items.size() * sizeof(X));
      }
    }, a.items());
  }

  std::uint32_t alignment_ = gguf_default_alignment;
  std::vector<std::pair<std::string, gguf_value>> kvs_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<entry> tensors_;
  std::unordered_set<std::string> tensor_names_;
};

//! Writes `directions` (layer -> vector) as a llama.cpp control vector, the format that
//! `llama-cli --control-vector` and llama.cpp's cvector-generator use: general.architecture =
//! "controlvector", controlvector.model_hint, controlvector.layer_count (i32, as
//! cvector-generator writes it; repeng writes u32 and readers accept both), and one F32 1-D tensor
//! `direction.N` per layer, in ascending N. llama.cpp adds direction N to the output of block N,
//! so N starts at 1; every direction must have the same length (n_embd) and finite values.
inline void write_control_vector(const std::filesystem::path &path, std::string_view model_hint,
                                 const std::map<std::int32_t, std::vector<float>> &directions) {
  const error_context where{path.string()};
  require(!directions.empty(), errc::invalid_argument,
          [] { return std::string("a control vector needs at least one direction"); }, where);
  const std::size_t n_embd = directions.begin()->second.size();
  require(n_embd > 0, errc::invalid_argument,
          [] { return std::string("directions must not be empty"); }, where);
  gguf_writer w;
  w.set("general.architecture", "controlvector");
  w.set("controlvector.model_hint", model_hint);
  w.set("controlvector.layer_count", static_cast<std::int32_t>(directions.size()));
  for (const auto &entry : directions) {
    const std::int32_t layer = entry.first;
    const std::vector<float> &v = entry.second;
    const std::string name = "direction." + std::to_string(layer);
    require(layer >= 1, errc::invalid_argument, [&] {
      return "layer " + std::to_string(layer) + " (expected >= 1: llama.cpp applies direction N after block N)";
    }, {path.string(), std::nullopt, name});
    require(v.size() == n_embd, errc::shape_mismatch, [&] {
      return "length " + std::to_string(v.size()) + " (expected " + std::to_string(n_embd) + ")";
    }, {path.string(), std::nullopt, name});
    for (std::size_t i = 0; i < v.size(); ++i)
      require(std::isfinite(v[i]), errc::numeric, [&] {
        return "element " + std::to_string(i) + " is not finite";
      }, {path.string(), std::nullopt, name});
    w.add_tensor(name, ggml_type::f32, {static_cast<std::int64_t>(n_embd)},
                 std::as_bytes(std::span<const float>(v)));
  }
  w.write(path);
}

DMS_NAMESPACE_END
