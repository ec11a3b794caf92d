// dms/formats/mapped_file.hpp: read-only memory-mapped files and a bounds-checked cursor.
//
// Checkpoints are large (GBs) and mostly read once, tensor by tensor: mapping them costs no copy
// and lets the OS page in only what is touched, so a merge or an inspect stays at a few tensors
// of resident memory. Every parser reads through `byte_cursor`, which refuses to step outside
// the mapping and reports the file and offset of the failure: a corrupt or malicious file gives a
// dms::error, never a read out of bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

//! A read-only mapping of a whole file. Movable, not copyable; unmaps on destruction.
class mapped_file {
public:
  mapped_file() = default;
  explicit mapped_file(std::string path) : path_(std::move(path)) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    require(fd >= 0, errc::io, [&] { return "cannot open: " + std::string(std::strerror(errno)); }, {path_});
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      const std::string why = S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file";
      ::close(fd);
      throw error(errc::io, why, {path_});
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void *p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int saved = errno;
      ::close(fd);
      require(p != MAP_FAILED, errc::io, [&] { return "cannot map: " + std::string(std::strerror(saved)); },
              {path_});
      data_ = static_cast<const std::byte *>(p);
    } else {
      ::close(fd);
    }
  }
  mapped_file(const mapped_file &) = delete;
  mapped_file &operator=(const mapped_file &) = delete;
  mapped_file(mapped_file &&o) noexcept
      : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  mapped_file &operator=(mapped_file &&o) noexcept {
    if (this != &o) {
      unmap();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~mapped_file() { unmap(); }

  const std::string &path() const noexcept { return path_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }

  //! Hints that [offset, offset + n) will be read soon / not again (streaming merges).
  void will_need(std::size_t offset, std::size_t n) const noexcept { advise(offset, n, MADV_WILLNEED); }
  void dont_need(std::size_t offset, std::size_t n) const noexcept { advise(offset, n, MADV_DONTNEED); }

private:
  void advise(std::size_t offset, std::size_t n, int how) const noexcept {
    if (!data_ || offset >= size_) return;
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t begin = offset / page * page;
    const std::size_t end = std::min(size_, offset + n);
    ::madvise(const_cast<std::byte *>(data_) + begin, end - begin, how);
  }
  void unmap() noexcept {
    if (data_) ::munmap(const_cast<std::byte *>(data_), size_);
    data_ = nullptr;
  }
  std::string path_;
  const std::byte *data_ = nullptr;
  std::size_t size_ = 0;
};

//! A little-endian reader over a byte span that checks every read against the end and names
//! the file and offset of any failure.
class byte_cursor {
public:
  byte_cursor(std::span<const std::byte> bytes, std::string file, std::size_t base_offset = 0)
      : bytes_(bytes), file_(std::move(file)), base_(base_offset) {}

  std::size_t offset() const noexcept { return pos_; }
  //! Offset in the file (the span may start inside it).
  std::uint64_t file_offset() const noexcept { return base_ + pos_; }
  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  const std::string &file() const noexcept { return file_; }

  //! Fails with "expected <what>" unless `n` more bytes exist.
  void need(std::size_t n, std::string_view what) const {
    require(n <= remaining(), errc::invalid_format, [&] {
      return "truncated: expected " + std::string(what) + " (" + std::to_string(n) + " bytes), " +
             std::to_string(remaining()) + " left";
    }, {file_, file_offset()});
  }

  template <class T>
    requires std::is_trivially_copyable_v<T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T)); // unaligned-safe; x86/ARM are little-endian
    pos_ += sizeof(T);
    return v;
  }
  std::span<const std::byte> read_bytes(std::size_t n, std::string_view what) {
    need(n, what);
    auto s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  std::string_view read_chars(std::size_t n, std::string_view what) {
    auto s = read_bytes(n, what);
    return {reinterpret_cast<const char *>(s.data()), s.size()};
  }
  void skip(std::size_t n, std::string_view what) { read_bytes(n, what); }
  void seek(std::size_t pos) {
    require(pos <= bytes_.size(), errc::invalid_format, [&] {
      return "offset " + std::to_string(pos) + " is past the end (" + std::to_string(bytes_.size()) + " bytes)";
    }, {file_, base_ + pos_});
    pos_ = pos;
  }
  //! A dms::error located at the cursor.
  error fail(errc code, std::string message, std::string tensor = {}) const {
    return error(code, message, {file_, file_offset(), std::move(tensor)});
  }

private:
  std::span<const std::byte> bytes_;
  std::string file_;
  std::size_t base_ = 0;
  std::size_t pos_ = 0;
};

//! True when `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). Keys and names
//! from files are checked with it before they reach a JSON writer or a terminal.
constexpr bool is_valid_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    std::uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1Fu; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0Fu; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07u; }
    else return false;
    if (s.size() - i <= n) return false; // the n continuation bytes must exist
    for (std::size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3Fu);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)) return false; // overlong
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

DMS_NAMESPACE_END
