// dms/formats/atomic_file.hpp: write a file or a directory so that it appears whole or not at all.
//
// A merge that fails at 90% must not leave a 90%-written model that a later run mistakes for a
// good one, and must never touch its inputs. Writers therefore write into a temporary sibling
// (same directory, so the final rename stays on one filesystem and is atomic) and rename it over
// the target only after everything was written and flushed. Until commit() the destructor
// removes the temporary, so an exception anywhere leaves nothing behind.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

namespace detail {
inline std::filesystem::path temporary_sibling(const std::filesystem::path &target) {
  // pid + a per-process counter: concurrent writers of the same target never collide.
  static std::atomic<unsigned> counter{0};
  auto name = "." + target.filename().string() + ".dms-tmp-" + std::to_string(::getpid()) + "-" +
              std::to_string(counter.fetch_add(1));
  return target.parent_path() / name;
}
} // namespace detail

//! A file written through a temporary and renamed into place by commit().
class atomic_file {
public:
  explicit atomic_file(std::filesystem::path target)
      : target_(std::move(target)), temp_(detail::temporary_sibling(target_)) {
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    require(fd_ >= 0, errc::io, [&] {
      return "cannot create temporary file " + temp_.string() + ": " + std::strerror(errno);
    }, {target_.string()});
  }
  atomic_file(const atomic_file &) = delete;
  atomic_file &operator=(const atomic_file &) = delete;
  ~atomic_file() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) {
      std::error_code ec;
      std::filesystem::remove(temp_, ec);
    }
  }

  void write(std::span<const std::byte> bytes) {
    const std::byte *p = bytes.data();
    std::size_t left = bytes.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      require(n > 0, errc::io, [&] { return "write failed: " + std::string(std::strerror(errno)); },
              {target_.string(), written_});
      p += n;
      left -= static_cast<std::size_t>(n);
      written_ += static_cast<std::uint64_t>(n);
    }
    start_writeback();
  }
  void write(std::string_view s) { write(std::as_bytes(std::span(s.data(), s.size()))); }
  //! Writes zero bytes until the file size is a multiple of `alignment` (GGUF data sections).
  void pad_to(std::uint64_t alignment) {
    static constexpr std::byte zeros[64] = {};
    while (written_ % alignment != 0) {
      const auto n = std::min<std::uint64_t>(alignment - written_ % alignment, sizeof zeros);
      write(std::span(zeros, static_cast<std::size_t>(n)));
    }
  }
  std::uint64_t bytes_written() const noexcept { return written_; }
  const std::filesystem::path &target() const noexcept { return target_; }

  //! Flushes to disk and renames over the target. After this the file is complete at `target`.
  void commit() {
    require(::fsync(fd_) == 0, errc::io, [&] { return "fsync failed: " + std::string(std::strerror(errno)); },
            {target_.string()});
    ::close(fd_);
    fd_ = -1;
    std::error_code ec;
    std::filesystem::rename(temp_, target_, ec);
    require(!ec, errc::io, [&] { return "cannot rename " + temp_.string() + " into place: " + ec.message(); },
            {target_.string()});
    committed_ = true;
  }

private:
  //! Every 64 MiB, asks the kernel to start writing the new bytes to disk (without waiting), so
  //! that commit()'s fsync waits for the last few MiB instead of the whole file: a 2.7 GB merge
  //! spent 1.4 s in fsync before. Linux only; elsewhere fsync does all of it.
  void start_writeback() noexcept {
#if defined(__linux__)
    constexpr std::uint64_t step = std::uint64_t{64} << 20;
    if (written_ - flushed_ < step) return;
    ::sync_file_range(fd_, static_cast<off_t>(flushed_), static_cast<off_t>(written_ - flushed_), SYNC_FILE_RANGE_WRITE);
    flushed_ = written_;
#endif
  }

  std::filesystem::path target_, temp_;
  int fd_ = -1;
  std::uint64_t written_ = 0, flushed_ = 0;
  bool committed_ = false;
};

//! A directory built in a temporary sibling and renamed into place by commit(); a failure
//! before that removes it with everything in it. The target must not exist yet (a merge never
//! overwrites: pass a new directory, or remove the old one yourself).
class atomic_directory {
public:
  explicit atomic_directory(std::filesystem::path target)
      : target_(std::move(target)), temp_(detail::temporary_sibling(target_)) {
    require(!std::filesystem::exists(target_), errc::io, [] { return std::string("already exists; refusing to overwrite"); },
            {target_.string()});
    std::error_code ec;
    std::filesystem::create_directories(temp_, ec);
    require(!ec, errc::io, [&] { return "cannot create " + temp_.string() + ": " + ec.message(); }, {target_.string()});
  }
  atomic_directory(const atomic_directory &) = delete;
  atomic_directory &operator=(const atomic_directory &) = delete;
  ~atomic_directory() {
    if (!committed_) {
      std::error_code ec;
      std::filesystem::remove_all(temp_, ec);
    }
  }
  //! Where to write the files (inside the temporary directory).
  const std::filesystem::path &path() const noexcept { return temp_; }
  const std::filesystem::path &target() const noexcept { return target_; }
  void commit() {
    std::error_code ec;
    std::filesystem::rename(temp_, target_, ec);
    require(!ec, errc::io, [&] { return "cannot rename " + temp_.string() + " into place: " + ec.message(); },
            {target_.string()});
    committed_ = true;
  }

private:
  std::filesystem::path target_, temp_;
  bool committed_ = false;
};

DMS_NAMESPACE_END
