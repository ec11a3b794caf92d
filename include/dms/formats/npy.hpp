// dms/formats/npy.hpp: NumPy .npy arrays (read f16/f32/f64 as f32, write f32).
//
// SAE weights (Gemma Scope's params.npz), probe directions and steering vectors travel as .npy
// files. The format (numpy/lib/format.py): the magic "\x93NUMPY", a version (1.0: 2-byte header
// length; 2.0 and 3.0: 4-byte), then a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// padded with spaces and a newline so that the data starts at a multiple of 64 bytes.
//
// The reader parses that literal itself (a small grammar: quoted strings, True/False, tuples of
// integers) rather than evaluating anything, requires exactly the three keys numpy requires, and
// checks that the data holds exactly numel * itemsize bytes (overflow-checked) before allocating,
// so the allocation is bounded by the input. Floating dtypes of either byte order are converted
// to f32 (f16 exactly, f64 rounded to nearest) and Fortran-ordered arrays are reordered, so the
// result is always C order. Other dtypes are reported as unsupported.
//
// The writer produces the bytes np.save produces for a float32 C-ordered array (same header
// text, same padding, including numpy's spare spaces for growing the first axis), version 1.0
// unless the header needs 2.0, written atomically.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/core/half.hpp"
#include "dms/formats/atomic_file.hpp"
#include "dms/formats/mapped_file.hpp"

DMS_NAMESPACE_BEGIN

//! An array read from a .npy file, converted to f32 in C order.
struct npy_array {
  std::vector<std::int64_t> shape; //!< extents, slowest axis first; empty for a scalar
  std::vector<float> data;         //!< numel values, C order
  std::string descr;               //!< the stored dtype ("<f4", "<f2", ">f8")
  bool fortran_order = false;      //!< whether the file stored it in Fortran order

  std::uint64_t numel() const noexcept { return data.size(); }
  //! A view of `data` (rank <= dms::max_rank, else errc::unsupported).
  const_tensor_view view() const {
    require(shape.size() <= max_rank, errc::unsupported,
            [&] { return "rank " + std::to_string(shape.size()) + " exceeds dms::max_rank"; });
    return detail::build_view<const std::byte>(reinterpret_cast<const std::byte *>(data.data()), dtype::f32,
                                               shape, {}, memory_space::host, 0);
  }
};

//! The parsed header of a .npy file.
struct npy_header {
  int major = 1, minor = 0;
  std::string descr;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  std::uint64_t data_offset = 0; //!< offset of the first data byte, from the start of the array
};

namespace detail {

//! Recursive-descent parser of the header's dict literal; errors carry the file offset.
class npy_dict_parser {
public:
  npy_dict_parser(std::string_view text, const std::string &file, std::uint64_t base)
      : s_(text), file_(file), base_(base) {}

  npy_header parse() {
    npy_header h;
    bool have_descr = false, have_order = false, have_shape = false;
    skip_space();
    expect('{', "'{' opening the header dict");
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::uint64_t key_at = here();
      const std::string key = string_literal();
      skip_space();
      expect(':', "':' after a dict key");
      skip_space();
      if (key == "descr") {
        require(!have_descr, errc::invalid_format, [] { return std::string("duplicate key 'descr'"); },
                {file_, key_at});
        if (peek() == '[')
          throw error(errc::unsupported, "structured dtypes (a list descr) are not supported",
                      {file_, here()});
        h.descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        require(!have_order, errc::invalid_format,
                [] { return std::string("duplicate key 'fortran_order'"); }, {file_, key_at});
        h.fortran_order = boolean_literal();
        have_order = true;
      } else if (key == "shape") {
        require(!have_shape, errc::invalid_format, [] { return std::string("duplicate key 'shape'"); },
                {file_, key_at});
        h.shape = shape_tuple();
        have_shape = true;
      } else {
        throw error(errc::invalid_format,
                    "unexpected header key '" + key + "' (expected 'descr', 'fortran_order', 'shape')",
                    {file_, key_at});
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      require(peek() == '}', errc::invalid_format,
              [] { return std::string("expected ',' or '}' in the header dict"); }, {file_, here()});
    }
    ++pos_; // '}'
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
    require(
        pos_ == s_.size(), errc::invalid_format,
        [] { return std::string("unexpected text after the header dict (expected spaces and a newline)"); },
        {file_, here()});
    require(have_descr && have_order && have_shape, errc::invalid_format,
            [&] {
              std::string missing;
              for (auto [ok, k] :
                   {std::pair{have_descr, "descr"}, {have_order, "fortran_order"}, {have_shape, "shape"}})
                if (!ok) missing += (missing.empty() ? "'" : ", '") + std::string(k) + "'";
              return "header dict lacks " + missing;
            },
            {file_, base_});
    return h;
  }

private:
  char peek() const noexcept { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  std::uint64_t here() const noexcept { return base_ + pos_; }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c, std::string_view what) {
    require(peek() == c, errc::invalid_format, [&] { return "expected " + std::string(what); },
            {file_, here()});
    ++pos_;
  }
  std::string string_literal() {
    const char q = peek();
    require(q == '\'' || q == '"', errc::invalid_format,
            [] { return std::string("expected a quoted string"); }, {file_, here()});
    const std::size_t start = ++pos_;
    while (pos_ < s_.size() && s_[pos_] != q) {
      require(s_[pos_] != '\\', errc::invalid_format,
              [] { return std::string("escape sequences are not expected in npy header strings"); },
              {file_, here()});
      ++pos_;
    }
    require(pos_ < s_.size(), errc::invalid_format, [] { return std::string("unterminated string"); },
            {file_, base_ + start - 1});
    return std::string(s_.substr(start, pos_++ - start));
  }
  bool boolean_literal() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    throw error(errc::invalid_format, "expected True or False", {file_, here()});
  }
  std::int64_t integer_literal() {
    const std::uint64_t at = here();
    std::uint64_t v = 0;
    std::size_t digits = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const auto d = static_cast<std::uint64_t>(s_[pos_] - '0');
      require(v <= (static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - d) / 10,
              errc::invalid_format, [] { return std::string("shape extent overflows 64 bits"); },
              {file_, at});
      v = v * 10 + d;
      ++pos_;
      ++digits;
    }
    require(digits > 0, errc::invalid_format, [] { return std::string("expected a non-negative integer"); },
            {file_, at});
    if (peek() == 'L') ++pos_; // Python 2 long literal, as old numpy wrote
    return static_cast<std::int64_t>(v);
  }
  std::vector<std::int64_t> shape_tuple() {
    expect('(', "'(' opening the shape tuple");
    std::vector<std::int64_t> shape;
    while (true) {
      skip_space();
      if (peek() == ')') break;
      require(shape.size() < 64, errc::invalid_format,
              [] { return std::string("more than 64 axes (numpy's limit)"); }, {file_, here()});
      shape.push_back(integer_literal());
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      require(peek() == ')', errc::invalid_format,
              [] { return std::string("expected ',' or ')' in the shape tuple"); }, {file_, here()});
    }
    ++pos_;
    return shape;
  }

  std::string_view s_;
  const std::string &file_;
  std::uint64_t base_;
  std::size_t pos_ = 0;
};

struct npy_float_type {
  std::size_t size; //!< 2, 4 or 8
  bool big_endian;
};

inline npy_float_type parse_npy_descr(const std::string &descr, const std::string &file, std::uint64_t at) {
  auto unsupported = [&] {
    return error(errc::unsupported,
                 "dtype '" + descr +
                     "': dms reads floating arrays (expected '<f2', '<f4' or '<f8', "
                     "either byte order)",
                 {file, at});
  };
  if (descr.size() != 3 || descr[1] != 'f') throw unsupported();
  const char order = descr[0];
  const char size = descr[2];
  if (order != '<' && order != '>' && order != '=') throw unsupported();
  if (size != '2' && size != '4' && size != '8') throw unsupported();
  return {static_cast<std::size_t>(size - '0'), order == '>'};
}

//! One element of `t` at `p` (unaligned) as f32.
inline float load_npy_float(const std::byte *p, npy_float_type t) noexcept {
  unsigned char b[8];
  std::memcpy(b, p, t.size);
  if (t.big_endian)
    for (std::size_t i = 0; i < t.size / 2; ++i)
      std::swap(b[i], b[t.size - 1 - i]);
  if (t.size == 2) {
    f16_bits h;
    std::memcpy(&h.bits, b, 2);
    return to_f32(h);
  }
  if (t.size == 4) {
    float f;
    std::memcpy(&f, b, 4);
    return f;
  }
  double d;
  std::memcpy(&d, b, 8);
  return static_cast<float>(d);
}

} // namespace detail

//! Parses the magic, version and header dict at the start of `bytes`.
inline npy_header parse_npy_header(std::span<const std::byte> bytes, const std::string &file) {
  byte_cursor c(bytes, file);
  const std::string_view magic = c.read_chars(6, "the magic \\x93NUMPY");
  require(magic == "\x93NUMPY", errc::invalid_format,
          [] { return std::string("bad magic (expected \\x93NUMPY: not a .npy file)"); }, {file, 0});
  npy_header h;
  h.major = c.read<std::uint8_t>("major version");
  h.minor = c.read<std::uint8_t>("minor version");
  require((h.major == 1 || h.major == 2 || h.major == 3) && h.minor == 0, errc::unsupported,
          [&] {
            return "format version " + std::to_string(h.major) + "." + std::to_string(h.minor) +
                   " (expected 1.0, 2.0 or 3.0)";
          },
          {file, 6});
  const std::uint64_t header_len = h.major == 1 ? c.read<std::uint16_t>("header length (2 bytes)")
                                                : c.read<std::uint32_t>("header length (4 bytes)");
  const std::uint64_t header_at = c.offset();
  const std::string_view text = c.read_chars(static_cast<std::size_t>(header_len), "the header dict");
  // Version 3.0 headers are UTF-8; 1.0 and 2.0 are latin-1. The keys and values dms accepts are
  // ASCII, so both are parsed alike and anything else is rejected by the grammar.
  npy_header parsed = detail::npy_dict_parser(text, file, header_at).parse();
  parsed.major = h.major;
  parsed.minor = h.minor;
  parsed.data_offset = c.offset();
  return parsed;
}

//! Parses a whole .npy array from `bytes`; `file` labels errors (offsets relative to `bytes`).
inline npy_array parse_npy(std::span<const std::byte> bytes, const std::string &file) {
  const npy_header h = parse_npy_header(bytes, file);
  const detail::npy_float_type t = detail::parse_npy_descr(h.descr, file, 8);
  std::uint64_t numel = 1;
  for (auto e : h.shape) {
    const auto u = static_cast<std::uint64_t>(e);
    require(u == 0 || numel <= std::numeric_limits<std::uint64_t>::max() / t.size / u, errc::invalid_format,
            [] { return std::string("shape overflows 64 bits"); }, {file, 8});
    numel *= u;
  }
  const std::uint64_t need = numel * t.size;
  const std::uint64_t have = bytes.size() - h.data_offset;
  require(have == need, errc::invalid_format,
          [&] {
            return "data holds " + std::to_string(have) + " bytes, expected " + std::to_string(need) + " (" +
                   std::to_string(numel) + " elements of " + h.descr + ")";
          },
          {file, h.data_offset});

  npy_array a;
  a.shape = h.shape;
  a.descr = h.descr;
  a.fortran_order = h.fortran_order;
  a.data.resize(static_cast<std::size_t>(numel));
  const std::byte *src = bytes.data() + h.data_offset;
  const std::size_t n = static_cast<std::size_t>(numel);
  if (!h.fortran_order || h.shape.size() < 2) {
    if (t.size == 4 && !t.big_endian) {
      if (n) std::memcpy(a.data.data(), src, n * 4);
    } else {
      for (std::size_t i = 0; i < n; ++i)
        a.data[i] = detail::load_npy_float(src + i * t.size, t);
    }
    return a;
  }
  // Fortran order: element (i0, ..., i_{r-1}) is stored at sum_k i_k * prod_{j<k} shape[j].
  // Walk the C-order output with a multi-index and keep the Fortran offset up to date.
  const std::size_t rank = h.shape.size();
  std::vector<std::uint64_t> fstride(rank), idx(rank, 0);
  std::uint64_t s = 1;
  for (std::size_t k = 0; k < rank; ++k) {
    fstride[k] = s;
    s *= static_cast<std::uint64_t>(h.shape[k]);
  }
  std::uint64_t f = 0;
  for (std::size_t i = 0; i < n; ++i) {
    a.data[i] = detail::load_npy_float(src + f * t.size, t);
    for (std::size_t k = rank; k-- > 0;) { // increment the last axis first (C order)
      f += fstride[k];
      if (static_cast<std::int64_t>(++idx[k]) < h.shape[k]) break;
      f -= fstride[k] * idx[k];
      idx[k] = 0;
    }
  }
  return a;
}

//! Reads a .npy file.
inline npy_array read_npy(const std::filesystem::path &path) {
  mapped_file f(path.string());
  return parse_npy(f.bytes(), f.path());
}

//! The bytes np.save writes for a float32 C-order array of `shape` holding `data`.
inline std::vector<std::byte> encode_npy(std::span<const float> data, std::span<const std::int64_t> shape) {
  std::uint64_t numel = 1;
  for (auto e : shape) {
    require(e >= 0, errc::invalid_argument, [] { return std::string("negative extent"); });
    require(e == 0 || numel <= std::numeric_limits<std::uint64_t>::max() / 4 / static_cast<std::uint64_t>(e),
            errc::invalid_argument, [] { return std::string("shape overflows 64 bits"); });
    numel *= static_cast<std::uint64_t>(e);
  }
  require(numel == data.size(), errc::invalid_argument, [&] {
    return "shape holds " + std::to_string(numel) + " elements, data has " + std::to_string(data.size());
  });
  // numpy: "{" + "'%s': %s, " per sorted key + "}", repr of the shape tuple, then spare spaces so
  // the first axis can grow to 21 digits in place (GROWTH_AXIS_MAX_DIGITS).
  std::string tuple = "(";
  for (std::size_t i = 0; i < shape.size(); ++i)
    tuple += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) tuple += ",";
  tuple += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + tuple + ", }";
  if (!shape.empty()) header.append(21 - std::to_string(shape[0]).size(), ' ');
  // _wrap_header: pad with spaces and a newline so that magic + length + header is a multiple of
  // 64 (ARRAY_ALIGN); numpy always adds at least one space.
  // Version 1.0 unless the padded header outgrows its 2-byte length (numpy's
  // _wrap_header_guess_version).
  const std::size_t hlen = header.size() + 1;
  const bool v1 = hlen + (64 - (10 + hlen) % 64) <= 65535;
  const std::size_t prefix = v1 ? 10 : 12;
  const std::size_t pad = 64 - (prefix + hlen) % 64;
  header.append(pad, ' ');
  header += '\n';
  std::vector<std::byte> out;
  out.reserve(prefix + header.size() + data.size_bytes());
  auto put = [&](const void *p, std::size_t n) {
    const auto *b = static_cast<const std::byte *>(p);
    out.insert(out.end(), b, b + n);
  };
  put("\x93NUMPY", 6);
  const unsigned char format_version[2] = {static_cast<unsigned char>(v1 ? 1 : 2), 0};
  put(format_version, 2);
  if (v1) {
    const auto n = static_cast<std::uint16_t>(header.size());
    const unsigned char le[2] = {static_cast<unsigned char>(n & 0xff), static_cast<unsigned char>(n >> 8)};
    put(le, 2);
  } else {
    const auto n = static_cast<std::uint32_t>(header.size());
    unsigned char le[4];
    for (int i = 0; i < 4; ++i)
      le[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    put(le, 4);
  }
  put(header.data(), header.size());
  if (!data.empty()) put(data.data(), data.size_bytes()); // little-endian hosts only (as all of dms)
  return out;
}

//! Writes a float32 .npy file atomically.
inline void write_npy(const std::filesystem::path &path, std::span<const float> data,
                      std::span<const std::int64_t> shape) {
  const std::vector<std::byte> bytes = encode_npy(data, shape);
  atomic_file f(path);
  f.write(bytes);
  f.commit();
}

DMS_NAMESPACE_END
