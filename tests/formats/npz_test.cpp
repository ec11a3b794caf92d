#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "dms/formats/npz.hpp"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {
std::vector<float> values(std::size_t n, float scale) {
  std::vector<float> v(n);
  std::uint32_t x = 12345;
  for (std::size_t i = 0; i < n; ++i) { // incompressible enough that deflate ratios stay small
    x = x * 1664525u + 1013904223u;
    v[i] = static_cast<float>(x >> 8) * scale;
  }
  return v;
}
template <class T> void poke(std::vector<std::byte> &b, std::uint64_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof v);
}
template <class T> T peek(const std::vector<std::byte> &b, std::uint64_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}
std::string fails(const std::vector<std::byte> &b, bool read_all = true, dms::npz_options o = {}) {
  try {
    dms::npz_file z(b, "x.npz", o);
    if (read_all)
      for (const auto &n : z.names())
        z.read(n);
  } catch (const dms::error &e) {
    CHECK(e.where().file.rfind("x.npz", 0) == 0);
    return e.what();
  }
  FAIL("no error");
  return {};
}
struct archive {
  std::vector<float> a = values(12, 1e-3f), b = values(300, 1e-6f);
  std::vector<std::byte> bytes(dms::npz_write_options o = {}) const {
    dms::npz_writer w;
    w.add("W_enc", a, {3, 4});
    w.add("b_enc", b, {300});
    return w.serialize(o);
  }
};
// Field offsets inside a central-directory record, a local header and the EOCD record.
constexpr std::uint64_t cd_flags = 8, cd_method = 10, cd_csize = 20, cd_usize = 24, cd_name = 46,
                        cd_local = 42;
} // namespace

TEST_CASE("npz round trips: stored, deflated, zip64", "[formats][npz]") {
  const archive arc;
  for (const dms::npz_write_options o : {dms::npz_write_options{}, dms::npz_write_options{.compress = true},
                                         dms::npz_write_options{.force_zip64 = true},
                                         dms::npz_write_options{.compress = true, .force_zip64 = true}}) {
    const auto bytes = arc.bytes(o);
    const dms::npz_file z(bytes, "mem.npz");
    CHECK(z.names() == std::vector<std::string>{"W_enc", "b_enc"});
    CHECK(z.entries()[0].name == "W_enc.npy");
    CHECK(z.entries()[0].method == (o.compress ? 8 : 0));
    const auto w = z.read("W_enc");
    CHECK(w.shape == std::vector<std::int64_t>{3, 4});
    CHECK(w.data == arc.a);
    CHECK(z.read("b_enc.npy").data == arc.b);
    CHECK(z.contains("b_enc"));
    CHECK_FALSE(z.contains("W_dec"));
    CHECK_THROWS_WITH(z.read("W_dec"), Contains("mem.npz: invalid argument: no array named 'W_dec'"));
    if (o.compress) CHECK(z.entries()[1].compressed_size < z.entries()[1].uncompressed_size);
  }
  // On disk, atomically; an empty archive; an entry that is not an array.
  const auto dir = fs::temp_directory_path() / ("dms-npz-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  dms::npz_writer w;
  w.add("x", arc.a, {12});
  const std::string text = "not an array";
  w.add_entry("readme.txt",
              std::vector<std::byte>(reinterpret_cast<const std::byte *>(text.data()),
                                     reinterpret_cast<const std::byte *>(text.data()) + text.size()));
  w.write(dir / "a.npz", {.compress = true});
  const dms::npz_file z((dir / "a.npz").string());
  CHECK(z.names() == std::vector<std::string>{"x", "readme.txt"});
  CHECK(z.read("x").data == arc.a);
  const auto raw = z.read_entry(z.entry("readme.txt"));
  CHECK(std::string(reinterpret_cast<const char *>(raw.data()), raw.size()) == text);
  CHECK_THROWS_WITH(z.read("readme.txt"), Contains("a.npz[readme.txt]: offset 0: invalid format: bad magic"));
  CHECK_THROWS_WITH(w.add("x", arc.a, {12}), Contains("entry 'x.npy' added twice"));
  const auto empty = dms::npz_writer().serialize();
  CHECK(empty.size() == 22);
  CHECK(dms::npz_file(empty, "e.npz").entries().empty());
  fs::remove_all(dir);
}

TEST_CASE("npz tolerates an archive comment, even one that contains a signature", "[formats][npz]") {
  auto b = archive().bytes();
  const std::string comment = "PK\x05\x06 looks like an end record";
  poke<std::uint16_t>(b, b.size() - 2, static_cast<std::uint16_t>(comment.size()));
  for (char c : comment)
    b.push_back(static_cast<std::byte>(c));
  CHECK(dms::npz_file(b, "c.npz").names().size() == 2);
}

TEST_CASE("npz rejects malformed archives with file, offset and expectation", "[formats][npz]") {
  const archive arc;
  const auto good = arc.bytes();
  const dms::npz_file z(good, "x.npz");
  const auto e0 = z.entries()[0], e1 = z.entries()[1];
  const std::uint64_t eocd = good.size() - 22;

  SECTION("not a zip") {
    CHECK_THAT(fails({}),
               Contains("x.npz: offset 0: invalid format: file of 0 bytes is too small for a zip archive"));
    CHECK_THAT(fails(std::vector<std::byte>(100)),
               Contains("offset 100") && Contains("no end-of-central-directory record"));
    auto trailing = good;
    trailing.push_back(std::byte{0}); // the comment length no longer reaches the end
    CHECK_THAT(fails(trailing), Contains("no end-of-central-directory record"));
  }
  SECTION("end record fields") {
    auto b = good;
    poke<std::uint16_t>(b, eocd + 4, 1);
    CHECK_THAT(fails(b), Contains("offset " + std::to_string(eocd)) &&
                             Contains("multi-disk zip archives are not supported"));
    b = good;
    poke<std::uint32_t>(b, eocd + 16, static_cast<std::uint32_t>(eocd)); // directory offset at the end record
    CHECK_THAT(fails(b), Contains("runs past its end record"));
    b = good;
    poke<std::uint16_t>(b, eocd + 8, 50);
    poke<std::uint16_t>(b, eocd + 10, 50);
    CHECK_THAT(fails(b), Contains("50 entries cannot fit in a central directory of"));
  }
  SECTION("central directory records") {
    auto b = good;
    poke<std::uint32_t>(b, e1.central_offset, 0);
    CHECK_THAT(fails(b), Contains("offset " + std::to_string(e1.central_offset) +
                                  ": invalid format: bad central directory signature"));
    b = good;
    poke<std::uint16_t>(b, e0.central_offset + cd_flags, 1);
    CHECK_THAT(fails(b), Contains("tensor 'W_enc.npy': unsupported: encrypted entries are not supported"));
    b = good;
    poke<std::uint16_t>(b, e0.central_offset + cd_method, 12);
    CHECK_THAT(fails(b), Contains("compression method 12 (expected 0, stored, or 8, deflate)"));
    b = good;
    poke<std::uint32_t>(b, e0.central_offset + cd_usize,
                        static_cast<std::uint32_t>(e0.uncompressed_size + 1));
    CHECK_THAT(fails(b), Contains("stored entry with compressed size"));
    b = good;
    b[e1.central_offset + cd_name] = std::byte{'W'};
    b[e1.central_offset + cd_name + 1] = std::byte{'_'};
    b[e1.central_offset + cd_name + 2] = std::byte{'e'};
    b[e1.central_offset + cd_name + 3] = std::byte{'n'};
    b[e1.central_offset + cd_name + 4] = std::byte{'c'};
    CHECK_THAT(fails(b), Contains("offset " + std::to_string(e1.central_offset) +
                                  ": tensor 'W_enc.npy': invalid format: duplicate entry name"));
    b = good;
    b[e0.central_offset + cd_name] = std::byte{0xff};
    CHECK_THAT(fails(b), Contains("entry name is empty or not valid UTF-8"));
    CHECK_THAT(fails(good, true, {.max_entry_bytes = 100}),
               Contains("declared uncompressed size 176 exceeds the limit of 100 bytes"));
  }
  SECTION("local headers") {
    auto b = good;
    poke<std::uint32_t>(b, e1.central_offset + cd_local,
                        static_cast<std::uint32_t>(e1.local_header_offset + 1));
    CHECK_THAT(fails(b), Contains("offset " + std::to_string(e1.local_header_offset + 1)) &&
                             Contains("bad local header signature (expected PK\\3\\4)"));
    b = good;
    b[e1.local_header_offset + 30] = std::byte{'B'};
    CHECK_THAT(
        fails(b),
        Contains("local header says 'B_enc.npy' (method 0), the central directory 'b_enc.npy' (method 0)"));
    b = good;
    poke<std::uint32_t>(b, e1.central_offset + cd_local,
                        static_cast<std::uint32_t>(z.entries()[0].central_offset));
    CHECK_THAT(fails(b), Contains("is not before the central directory"));
    b = good; // the last entry's data would run into the directory
    poke<std::uint32_t>(b, e1.central_offset + cd_csize, static_cast<std::uint32_t>(e1.compressed_size + 1));
    poke<std::uint32_t>(b, e1.central_offset + cd_usize, static_cast<std::uint32_t>(e1.compressed_size + 1));
    CHECK_THAT(fails(b), Contains("runs into the central directory"));
    b = good; // the first entry's data would run into the second entry
    poke<std::uint32_t>(b, e0.central_offset + cd_csize, static_cast<std::uint32_t>(e0.compressed_size + 1));
    poke<std::uint32_t>(b, e0.central_offset + cd_usize, static_cast<std::uint32_t>(e0.compressed_size + 1));
    CHECK_THAT(fails(b), Contains("tensor 'b_enc.npy': invalid format: entry overlaps 'W_enc.npy'"));
  }
  SECTION("overlapping entries (a zip bomb's trick)") {
    // "outer.npy" stores, as its data, a complete local header + data of "inner.npy"; a second
    // central record points into it.
    dms::npz_writer inner_w;
    inner_w.add("inner", arc.a, {12});
    const auto inner = inner_w.serialize();
    const dms::npz_file inner_z(inner, "inner.npz");
    const std::vector<std::byte> inner_local(
        inner.begin(), inner.begin() + static_cast<std::ptrdiff_t>(inner_z.entries()[0].central_offset));
    dms::npz_writer w;
    w.add_entry("outer.npy", inner_local);
    w.add_entry("inner.npy", std::vector<std::byte>(inner_local.begin() + 30 + 9, inner_local.end()));
    auto b = w.serialize();
    const dms::npz_file ok(b, "x.npz");
    const auto outer = ok.entries()[0];
    poke<std::uint32_t>(b, ok.entries()[1].central_offset + cd_local,
                        static_cast<std::uint32_t>(outer.data_offset));
    CHECK_THAT(fails(b, false), Contains("tensor 'inner.npy': invalid format: entry overlaps 'outer.npy'"));
  }
  SECTION("data: CRC, sizes, deflate streams") {
    auto b = good;
    b[e1.data_offset + 200] ^= std::byte{1};
    CHECK_THAT(fails(b), Contains("offset " + std::to_string(e1.data_offset) +
                                  ": tensor 'b_enc.npy': invalid format: CRC-32 of the "
                                  "uncompressed data is 0x"));
    const auto packed = arc.bytes({.compress = true});
    const dms::npz_file pz(packed, "x.npz");
    const auto p1 = pz.entries()[1];
    b = packed;
    poke<std::uint32_t>(b, p1.central_offset + cd_usize,
                        static_cast<std::uint32_t>(p1.uncompressed_size + 1));
    CHECK_THAT(fails(b), Contains("deflate stream inflates to 1328 bytes, the directory declares 1329"));
    b = packed;
    poke<std::uint32_t>(b, p1.central_offset + cd_usize,
                        static_cast<std::uint32_t>(p1.uncompressed_size - 1));
    CHECK_THAT(fails(b), Contains("deflate stream inflates to more than the declared 1327 bytes"));
    b = packed;
    poke<std::uint32_t>(b, p1.central_offset + cd_usize,
                        static_cast<std::uint32_t>(p1.compressed_size * 1032 + 1032));
    CHECK_THAT(fails(b),
               Contains("is more than 1032 times the compressed size") && Contains("impossible for deflate"));
    b = packed; // the stream is cut short
    poke<std::uint32_t>(b, p1.central_offset + cd_csize, static_cast<std::uint32_t>(p1.compressed_size - 5));
    CHECK_THAT(fails(b), Contains("deflate stream is truncated"));
    b = packed;
    for (std::uint64_t i = 0; i < 16; ++i)
      b[p1.data_offset + i] = std::byte{0xff};
    CHECK_THAT(fails(b), Contains("corrupt deflate stream: invalid block type"));
    b = packed; // a bit flip inside the stream: caught by zlib or by the CRC
    b[p1.data_offset + p1.compressed_size / 2] ^= std::byte{0x10};
    CHECK_THAT(fails(b), Contains("tensor 'b_enc.npy'"));
  }
  SECTION("zip64 records") {
    auto b = arc.bytes({.force_zip64 = true});
    const dms::npz_file z64(b, "x.npz");
    // The zip64 end record sits right before its 20-byte locator and the 22-byte end record.
    const std::uint64_t loc = b.size() - 22 - 20;
    poke<std::uint64_t>(b, loc + 8, b.size());
    CHECK_THAT(fails(b), Contains("zip64 end-of-central-directory offset") && Contains("is out of range"));
    b = arc.bytes({.force_zip64 = true});
    const auto z64_at = peek<std::uint64_t>(b, loc + 8);
    poke<std::uint32_t>(b, z64_at, 0);
    CHECK_THAT(fails(b), Contains("offset " + std::to_string(z64_at) +
                                  ": invalid format: bad zip64 end-of-central-directory signature"));
    b = arc.bytes({.force_zip64 = true});
    poke<std::uint64_t>(b, z64_at + 32, 3); // total entry count only
    CHECK_THAT(fails(b), Contains("multi-disk zip archives are not supported"));
    poke<std::uint64_t>(b, z64_at + 24, 3); // and on this disk
    CHECK_THAT(fails(b), Contains("truncated: expected central directory signature (4 bytes), 0 left"));
    b = arc.bytes({.force_zip64 = true});
    // The zip64 extra of a central record is cut: its size field claims 8 bytes too few.
    const auto e = z64.entries()[0];
    poke<std::uint16_t>(b, e.central_offset + 46 + 9 + 2, 16);
    CHECK_THAT(fails(b), Contains("truncated: expected zip64 local header offset (8 bytes), 0 left"));
  }
}
