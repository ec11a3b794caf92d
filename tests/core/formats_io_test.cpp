#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "dms/formats/atomic_file.hpp"
#include "dms/formats/mapped_file.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;

namespace {
fs::path scratch_dir(const std::string &name) { return dms::test::scratch_dir("dms-test", name); }
using dms::test::count_entries;
} // namespace

TEST_CASE("byte_cursor reads little-endian values and refuses to overrun", "[formats][io]") {
  const unsigned char raw[] = {0x47, 0x47, 0x55, 0x46, 0x03, 0x00, 0x00, 0x00, 0xff};
  dms::byte_cursor c(std::as_bytes(std::span(raw)), "x.gguf", 100);
  CHECK(c.read_chars(4, "magic") == "GGUF");
  CHECK(c.read<std::uint32_t>("version") == 3u);
  CHECK(c.file_offset() == 108);
  CHECK_THROWS_WITH(c.read<std::uint64_t>("tensor count"),
                    Catch::Contains("x.gguf: offset 108: invalid format: truncated: expected tensor count (8 bytes), 1 left"));
  CHECK_THROWS_WITH(c.seek(10), Catch::Contains("offset 10 is past the end"));
}

TEST_CASE("is_valid_utf8", "[formats][io]") {
  CHECK(dms::is_valid_utf8("plain"));
  CHECK(dms::is_valid_utf8("caf\xc3\xa9 \xe6\xbc\xa2 \xf0\x9f\x98\x80"));
  CHECK_FALSE(dms::is_valid_utf8("\xc3"));             // truncated
  CHECK_FALSE(dms::is_valid_utf8("\xc0\xaf"));         // overlong '/'
  CHECK_FALSE(dms::is_valid_utf8("\xed\xa0\x80"));     // surrogate
  CHECK_FALSE(dms::is_valid_utf8("\xf4\x90\x80\x80")); // > U+10FFFF
  CHECK_FALSE(dms::is_valid_utf8("\xff"));
}

TEST_CASE("mapped_file maps a file and names it in errors", "[formats][io]") {
  auto d = scratch_dir("map");
  std::ofstream(d / "a.bin", std::ios::binary) << "hello";
  dms::mapped_file f((d / "a.bin").string());
  CHECK(f.size() == 5);
  CHECK(static_cast<char>(f.bytes()[4]) == 'o');
  dms::mapped_file moved = std::move(f);
  CHECK(moved.size() == 5);
  CHECK_THROWS_WITH(dms::mapped_file((d / "missing.bin").string()), Catch::Contains("missing.bin: I/O error: cannot open"));
  CHECK_THROWS_WITH(dms::mapped_file(d.string()), Catch::Contains("is a directory"));
  std::ofstream(d / "empty.bin").close();
  CHECK(dms::mapped_file((d / "empty.bin").string()).size() == 0);
  fs::remove_all(d);
}

TEST_CASE("atomic_file appears only on commit, and never half-written", "[formats][io]") {
  auto d = scratch_dir("atomic");
  {
    dms::atomic_file w(d / "out.bin");
    w.write(std::string_view("abc"));
    w.pad_to(8);
    CHECK(w.bytes_written() == 8);
    CHECK_FALSE(fs::exists(d / "out.bin"));
    w.commit();
  }
  CHECK(fs::file_size(d / "out.bin") == 8);
  try {
    dms::atomic_file w(d / "out.bin");
    w.write(std::string_view("partial"));
    throw std::runtime_error("simulated failure midway");
  } catch (const std::runtime_error &) {
  }
  CHECK(fs::file_size(d / "out.bin") == 8); // the old file is untouched
  CHECK(count_entries(d) == 1);             // and no temporary is left behind
  fs::remove_all(d);
}

TEST_CASE("atomic_directory refuses to overwrite and cleans up on failure", "[formats][io]") {
  auto d = scratch_dir("atomicdir");
  try {
    dms::atomic_directory out(d / "merged");
    std::ofstream(out.path() / "model-00001-of-00002.safetensors") << "x";
    throw std::runtime_error("killed midway");
  } catch (const std::runtime_error &) {
  }
  CHECK(count_entries(d) == 0);
  {
    dms::atomic_directory out(d / "merged");
    std::ofstream(out.path() / "config.json") << "{}";
    out.commit();
  }
  CHECK(fs::exists(d / "merged" / "config.json"));
  CHECK_THROWS_WITH(dms::atomic_directory(d / "merged"), Catch::Contains("refusing to overwrite"));
  fs::remove_all(d);
}
