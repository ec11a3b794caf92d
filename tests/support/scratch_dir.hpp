// Test support: scratch directories under the system temporary directory.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include <unistd.h>

namespace dms::test {

//! An empty directory `<tmp>/<prefix>-<name>-<pid>` (removed first if it exists, then created).
inline std::filesystem::path scratch_dir(std::string_view prefix, std::string_view name) {
  auto d = std::filesystem::temp_directory_path() /
           (std::string(prefix) + "-" + std::string(name) + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

//! Number of entries directly in directory `d`.
inline std::size_t count_entries(const std::filesystem::path &d) {
  std::size_t n = 0;
  for ([[maybe_unused]] auto &e : std::filesystem::directory_iterator(d))
    ++n;
  return n;
}

} // namespace dms::test
