// libFuzzer target: dms::npz_file (zip directory, stored and deflate entries) and dms::parse_npy
// over arbitrary bytes.
//
// Every entry of an accepted archive is inflated and parsed as .npy; every array that parses is
// written back with npz_writer (stored, then deflated with zip64 records) and must read back
// identically. Inputs that start with the .npy magic are also parsed as a bare .npy. Only
// dms::error is an expected outcome of parsing; anything else aborts and is reported.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dms/formats/npz.hpp"

namespace {
void check(bool ok) {
  if (!ok) std::abort();
}
bool same(const std::vector<float> &a, const std::vector<float> &b) {
  // Bitwise: NaN payloads must survive too.
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}
// Entries above this are refused before inflating: a 4 KiB input may claim up to 1032x its size.
constexpr dms::npz_options options{.max_entry_bytes = std::uint64_t{64} << 20};
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte *>(data), size);
  if (size >= 6 && std::memcmp(data, "\x93NUMPY", 6) == 0) {
    try {
      const auto a = dms::parse_npy(bytes, "fuzz.npy");
      const auto back = dms::parse_npy(dms::encode_npy(a.data, a.shape), "roundtrip.npy");
      check(back.shape == a.shape && same(back.data, a.data));
    } catch (const dms::error &) {
    }
  }

  std::optional<dms::npz_file> archive;
  try {
    archive.emplace(bytes, "fuzz.npz", options);
  } catch (const dms::error &) {
    return 0;
  }
  dms::npz_writer w;
  std::vector<dms::npy_array> arrays;
  std::vector<std::string> names;
  for (const auto &e : archive->entries()) {
    try {
      const auto raw = archive->read_entry(e);
      check(raw.size() == e.uncompressed_size);
      auto a = dms::parse_npy(raw, e.name);
      // "a" and "a.npy" both name array "a"; a name of 65532+ bytes has no room for ".npy".
      const std::string name = dms::npz_file::array_name(e.name);
      if (name.size() > 65531 || std::find(names.begin(), names.end(), name) != names.end()) continue;
      w.add(name, a.data, a.shape);
      names.push_back(name);
      arrays.push_back(std::move(a));
    } catch (const dms::error &) {
    }
  }
  for (const dms::npz_write_options o :
       {dms::npz_write_options{}, dms::npz_write_options{.compress = true, .force_zip64 = true}}) {
    const auto out = w.serialize(o);
    const dms::npz_file back(out, "roundtrip.npz");
    check(back.entries().size() == arrays.size());
    for (std::size_t i = 0; i < arrays.size(); ++i) {
      const auto a = back.read(names[i]);
      check(a.shape == arrays[i].shape && same(a.data, arrays[i].data));
    }
  }
  return 0;
}
