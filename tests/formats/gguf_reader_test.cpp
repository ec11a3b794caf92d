// GGUF reader: valid files of both versions, every metadata type, tensor views; and every kind of
// malformed input, built byte by byte, each expected to fail with the file name, the offset of the
// fault and what was expected.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

#include "dms/formats/gguf.hpp"

namespace {

using Catch::Matchers::Contains;

//! Builds GGUF bytes by hand, so that tests can write anything, including what no writer would.
struct gguf_bytes {
  std::vector<std::byte> b;

  template <class T> gguf_bytes &put(T v) {
    const auto *p = reinterpret_cast<const std::byte *>(&v);
    b.insert(b.end(), p, p + sizeof v);
    return *this;
  }
  gguf_bytes &raw(std::string_view s) {
    const auto *p = reinterpret_cast<const std::byte *>(s.data());
    b.insert(b.end(), p, p + s.size());
    return *this;
  }
  gguf_bytes &str(std::string_view s) { return put<std::uint64_t>(s.size()).raw(s); }
  gguf_bytes &header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
    return raw("GGUF").put(version).put(n_tensors).put(n_kv);
  }
  gguf_bytes &kv_type(std::string_view key, dms::gguf_type t) {
    return str(key).put(static_cast<std::uint32_t>(t));
  }
  gguf_bytes &kv_u32(std::string_view key, std::uint32_t v) {
    return kv_type(key, dms::gguf_type::u32).put(v);
  }
  gguf_bytes &kv_str(std::string_view key, std::string_view v) {
    return kv_type(key, dms::gguf_type::string).str(v);
  }
  gguf_bytes &tensor(std::string_view name, std::vector<std::uint64_t> ne, std::uint32_t type,
                     std::uint64_t offset) {
    str(name).put(static_cast<std::uint32_t>(ne.size()));
    for (auto d : ne) put(d);
    return put(type).put(offset);
  }
  gguf_bytes &pad(std::size_t align) {
    while (b.size() % align) b.push_back(std::byte{0});
    return *this;
  }
  gguf_bytes &zeros(std::size_t n) {
    b.insert(b.end(), n, std::byte{0});
    return *this;
  }
  std::size_t size() const { return b.size(); }
};

dms::gguf_file parse(const gguf_bytes &g, std::string name = "bad.gguf") {
  return dms::gguf_file::parse(g.b, std::move(name));
}

//! Parsing `g` must throw a dms::error located at `offset` of "bad.gguf" whose message contains
//! `what` and states an expectation.
void expect_error(const gguf_bytes &g, std::uint64_t offset, const std::string &what) {
  INFO("expected an error at offset " << offset << " about: " << what);
  try {
    (void)parse(g);
    FAIL("parsed without error");
  } catch (const dms::error &e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    CHECK_THAT(msg, Contains("bad.gguf: offset " + std::to_string(offset) + ": "));
    CHECK_THAT(msg, Contains(what));
    CHECK_THAT(msg, Contains("expected"));
    CHECK(e.where().file == "bad.gguf");
    CHECK(e.where().offset == offset);
  }
}

//! A small valid v3 file: two kvs, an F32 [2 x 3] tensor and an F16 [4] tensor.
gguf_bytes small_file(std::uint32_t version = 3) {
  gguf_bytes g;
  g.header(2, 2, version).kv_str("general.architecture", "llama").kv_u32("llama.block_count", 2);
  g.tensor("a", {3, 2}, 0, 0).tensor("b", {4}, 1, 32);
  g.pad(32);
  const float a[6] = {1, 2, 3, 4, 5, 6};
  for (float x : a) g.put(x);
  g.zeros(32 - sizeof a);
  const std::uint16_t h[4] = {0x3c00, 0x4000, 0x4200, 0x4400}; // 1, 2, 3, 4 in binary16
  for (auto x : h) g.put(x);
  return g;
}

} // namespace

TEST_CASE("gguf: reads a small v3 and v2 file", "[formats][gguf]") {
  for (std::uint32_t version : {2u, 3u}) {
    const auto g = small_file(version);
    const auto f = parse(g, "small.gguf");
    CHECK(f.version() == version);
    CHECK(f.alignment() == 32);
    CHECK(f.layout().header_end < f.data_offset());
    CHECK(f.data_offset() % 32 == 0);
    CHECK(f.architecture() == "llama");
    CHECK(f.get<std::uint32_t>("llama.block_count") == 2);
    CHECK(f.get_integer<int>("llama.block_count") == 2);
    REQUIRE(f.tensors().size() == 2);
    CHECK(f.tensors()[0].name == "a"); // file order
    CHECK(f.tensors()[1].name == "b");

    const auto &a = f.tensor("a");
    CHECK(a.type == dms::ggml_type::f32);
    CHECK(a.n_dims == 2);
    CHECK(a.ne[0] == 3);
    CHECK(a.ne[1] == 2);
    CHECK(a.shape() == std::vector<std::int64_t>{2, 3}); // row-major: ne reversed
    CHECK(a.n_elements == 6);
    CHECK(a.n_bytes == 24);
    CHECK(a.file_offset == f.data_offset());
    // raw_bytes points into the buffer: no copy.
    CHECK(a.raw_bytes().data() == g.b.data() + f.data_offset());
    const auto v = a.view();
    CHECK(v.type == dms::dtype::f32);
    CHECK(v.rank == 2);
    CHECK(v.extents[0] == 2);
    CHECK(v.extents[1] == 3);
    CHECK(v.is_contiguous());
    float a12;
    std::memcpy(&a12, v.data + (1 * 3 + 2) * 4, 4);
    CHECK(a12 == 6.0f);

    const auto &b = f.tensor("b");
    CHECK(b.view().type == dms::dtype::f16);
    CHECK(b.shape() == std::vector<std::int64_t>{4});
    CHECK(b.offset == 32);
    CHECK(f.find_tensor("c") == nullptr);
    CHECK_THROWS_WITH(f.tensor("c"), Contains("small.gguf") && Contains("no tensor named 'c'"));
  }
}

TEST_CASE("gguf: every metadata value type, nested arrays, typed getters", "[formats][gguf]") {
  using T = dms::gguf_type;
  gguf_bytes g;
  g.header(0, 17);
  g.kv_type("u8", T::u8).put<std::uint8_t>(200);
  g.kv_type("i8", T::i8).put<std::int8_t>(-100);
  g.kv_type("u16", T::u16).put<std::uint16_t>(60000);
  g.kv_type("i16", T::i16).put<std::int16_t>(-30000);
  g.kv_type("u32", T::u32).put<std::uint32_t>(4000000000u);
  g.kv_type("i32", T::i32).put<std::int32_t>(-2000000000);
  g.kv_type("f32", T::f32).put<float>(0.5f);
  g.kv_type("bool", T::boolean).put<std::uint8_t>(1);
  g.kv_type("string", T::string).str("caf\xc3\xa9");
  g.kv_type("u64", T::u64).put<std::uint64_t>(1ull << 40);
  g.kv_type("i64", T::i64).put<std::int64_t>(-(1ll << 40));
  g.kv_type("f64", T::f64).put<double>(0.25);
  g.kv_type("arr.i32", T::array).put<std::uint32_t>(5).put<std::uint64_t>(3).put<std::int32_t>(1).put<std::int32_t>(-2).put<std::int32_t>(3);
  g.kv_type("arr.str", T::array).put<std::uint32_t>(8).put<std::uint64_t>(2).str("x").str("");
  g.kv_type("arr.bool", T::array).put<std::uint32_t>(7).put<std::uint64_t>(3).put<std::uint8_t>(1).put<std::uint8_t>(0).put<std::uint8_t>(1);
  // [[1u16, 2u16], []] : an array of arrays, the second empty
  g.kv_type("arr.nested", T::array).put<std::uint32_t>(9).put<std::uint64_t>(2);
  g.put<std::uint32_t>(2).put<std::uint64_t>(2).put<std::uint16_t>(1).put<std::uint16_t>(2);
  g.put<std::uint32_t>(2).put<std::uint64_t>(0);
  g.kv_type("arr.empty", T::array).put<std::uint32_t>(12).put<std::uint64_t>(0);
  const auto f = parse(g);

  REQUIRE(f.metadata().size() == 17);
  CHECK(f.metadata()[0].key == "u8"); // file order
  CHECK(f.metadata()[0].offset == 24);
  CHECK(f.get<std::uint8_t>("u8") == 200);
  CHECK(f.get<std::int8_t>("i8") == -100);
  CHECK(f.get<std::uint16_t>("u16") == 60000);
  CHECK(f.get<std::int16_t>("i16") == -30000);
  CHECK(f.get<std::uint32_t>("u32") == 4000000000u);
  CHECK(f.get<std::int32_t>("i32") == -2000000000);
  CHECK(f.get<float>("f32") == 0.5f);
  CHECK(f.get<bool>("bool"));
  CHECK(f.get_string("string") == "caf\xc3\xa9");
  CHECK(f.get<std::uint64_t>("u64") == (1ull << 40));
  CHECK(f.get<std::int64_t>("i64") == -(1ll << 40));
  CHECK(f.get<double>("f64") == 0.25);
  CHECK(f.get_array<std::int32_t>("arr.i32") == std::vector<std::int32_t>{1, -2, 3});
  CHECK(f.get_array<std::string>("arr.str") == std::vector<std::string>{"x", ""});
  CHECK(f.get_array<bool>("arr.bool") == std::vector<bool>{true, false, true});
  const auto &nested = f.get_array<dms::gguf_array>("arr.nested");
  REQUIRE(nested.size() == 2);
  CHECK(nested[0].get<std::uint16_t>() == std::vector<std::uint16_t>{1, 2});
  CHECK(nested[1].element_type() == T::u16);
  CHECK(nested[1].empty());
  CHECK(f.at("arr.empty").array().element_type() == T::f64);
  CHECK(f.at("arr.empty").array().empty());
  for (const auto &kv : f.metadata()) CHECK(static_cast<int>(kv.value.type()) == static_cast<int>(kv.value.raw().index()));
  CHECK(f.invalid_utf8_keys().empty());

  // Integer conversions across widths, range-checked.
  CHECK(f.get_integer<std::int64_t>("u8") == 200);
  CHECK(f.get_integer<std::int64_t>("i32") == -2000000000);
  CHECK_THROWS_WITH(f.get_integer<std::uint32_t>("i32"),
                    Contains("metadata key 'i32'") && Contains("out of range"));
  CHECK_THROWS_WITH(f.get_integer<int>("f32"), Contains("expected an integer, got f32"));
  CHECK(f.at("f32").to_double() == 0.5);

  // Type mismatches name the key, the expected and the actual type, and where the key is.
  CHECK_THROWS_WITH(f.get<std::uint32_t>("i32"),
                    Contains("bad.gguf: offset ") && Contains("metadata key 'i32': expected u32, got i32"));
  CHECK_THROWS_WITH(f.get_string("u64"), Contains("metadata key 'u64': expected string, got u64"));
  CHECK_THROWS_WITH(f.get_array<float>("arr.i32"),
                    Contains("metadata key 'arr.i32': expected an array of f32, got an array of i32"));
  CHECK_THROWS_WITH(f.get<std::uint32_t>("nope"), Contains("missing metadata key 'nope'"));
  CHECK(f.get_or<std::uint32_t>("nope", 7u) == 7u);
  CHECK_THROWS(f.get_or<std::uint32_t>("i32", 7u));
  CHECK(f.find("nope") == nullptr);
  CHECK(f.contains("u8"));
}

TEST_CASE("gguf: string values keep invalid UTF-8 bytes and are reported", "[formats][gguf]") {
  gguf_bytes g;
  g.header(0, 3).kv_str("good", "ok").kv_str("bad", "\xff\xfe");
  g.kv_type("bad.arr", dms::gguf_type::array).put<std::uint32_t>(8).put<std::uint64_t>(2).str("a").str("\xc3");
  const auto f = parse(g);
  CHECK(f.get_string("bad") == "\xff\xfe");
  CHECK(f.invalid_utf8_keys() == std::vector<std::string>{"bad", "bad.arr"});
}

TEST_CASE("gguf: alignment, zero-size and scalar tensors, plain dtype views", "[formats][gguf]") {
  SECTION("general.alignment = 64 and 1") {
    for (std::uint32_t align : {64u, 1u}) {
      gguf_bytes g;
      g.header(2, 1).kv_u32("general.alignment", align);
      g.tensor("x", {4}, 0, 0).tensor("y", {2}, 30, align == 1 ? 16 : 64); // y is BF16
      g.pad(align).zeros(16).zeros(align == 1 ? 0 : 48).zeros(4);
      const auto f = parse(g);
      CHECK(f.alignment() == align);
      CHECK(f.data_offset() % align == 0);
      CHECK(f.tensor("y").view().type == dms::dtype::bf16);
      CHECK(f.tensor("y").file_offset + 4 == g.size());
    }
  }
  SECTION("a zero extent and zero dims (a scalar) are allowed, as in ggml") {
    gguf_bytes g;
    g.header(3, 0).tensor("empty", {0, 5}, 0, 0).tensor("scalar", {}, 26, 0).tensor("i8", {3}, 24, 32);
    g.pad(32).zeros(32).zeros(3);
    const auto f = parse(g);
    CHECK(f.tensor("empty").n_bytes == 0);
    CHECK(f.tensor("empty").raw_bytes().empty());
    CHECK(f.tensor("empty").shape() == std::vector<std::int64_t>{5, 0});
    const auto &s = f.tensor("scalar");
    CHECK(s.n_elements == 1);
    CHECK(s.n_bytes == 4);
    CHECK(s.shape().empty());
    CHECK(s.view().rank == 0);
    CHECK(s.view().type == dms::dtype::i32);
    CHECK(f.tensor("i8").view().type == dms::dtype::i8);
  }
  SECTION("a metadata-only file needs no data section") {
    gguf_bytes g;
    g.header(0, 1).kv_str("general.architecture", "x");
    const auto f = parse(g);
    CHECK(f.tensors().empty());
    CHECK(f.data_offset() >= g.size());
  }
  SECTION("quantized tensors expose raw blocks, not element views") {
    gguf_bytes g;
    g.header(1, 0).tensor("q", {64, 2}, 3, 0).pad(32).zeros(4 * 20); // Q4_1: 4 blocks of 20 bytes
    const auto f = parse(g);
    const auto &q = f.tensor("q");
    CHECK(q.n_bytes == 80);
    CHECK(q.raw_bytes().size() == 80);
    CHECK_FALSE(q.element_dtype().has_value());
    CHECK_THROWS_WITH(q.view(), Contains("tensor 'q'") && Contains("Q4_1 has no element view"));
  }
}

TEST_CASE("gguf: a file on disk is mapped and named in errors", "[formats][gguf]") {
  const auto dir = std::filesystem::temp_directory_path() / ("dms-gguf-reader-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = (dir / "small.gguf").string();
  {
    const auto g = small_file();
    std::FILE *fp = std::fopen(path.c_str(), "wb");
    REQUIRE(fp);
    std::fwrite(g.b.data(), 1, g.size(), fp);
    std::fclose(fp);
  }
  dms::gguf_file f(path);
  CHECK(f.path() == path);
  CHECK(f.tensor("a").shape() == std::vector<std::int64_t>{2, 3});
  dms::gguf_file moved = std::move(f); // spans and lookups survive a move
  CHECK(moved.tensor("b").raw_bytes().size() == 8);
  CHECK(moved.get<std::uint32_t>("llama.block_count") == 2);
  CHECK_THROWS_WITH(dms::gguf_file((dir / "missing.gguf").string()), Contains("missing.gguf") && Contains("cannot open"));
  std::filesystem::remove_all(dir);
}

// --- malformed input ------------------------------------------------------------------------------

TEST_CASE("gguf: header errors", "[formats][gguf][errors]") {
  SECTION("empty file") { expect_error(gguf_bytes{}, 0, "truncated: expected magic \"GGUF\""); }
  SECTION("wrong magic") {
    gguf_bytes g;
    g.raw("GGML").put<std::uint32_t>(3).put<std::uint64_t>(0).put<std::uint64_t>(0);
    expect_error(g, 0, "not a GGUF file: expected magic \"GGUF\", got \"GGML\"");
  }
  SECTION("binary magic is escaped") {
    gguf_bytes g;
    g.raw(std::string_view("\x7f" "ELF", 4));
    expect_error(g, 0, "got \"\\x7fELF\"");
  }
  SECTION("version 1") {
    gguf_bytes g;
    g.header(0, 0, 1);
    expect_error(g, 4, "GGUF version 1 is not supported (expected version 2 or 3");
  }
  SECTION("future version") {
    gguf_bytes g;
    g.header(0, 0, 4);
    expect_error(g, 4, "unsupported GGUF version 4 (expected 2 or 3)");
  }
  SECTION("big-endian file") {
    gguf_bytes g;
    g.header(0, 0, 0x03000000u);
    expect_error(g, 4, "big-endian GGUF files are not supported");
  }
  SECTION("truncated counts") {
    gguf_bytes g;
    g.raw("GGUF").put<std::uint32_t>(3).put<std::uint32_t>(0);
    expect_error(g, 8, "truncated: expected tensor count (u64)");
  }
  SECTION("absurd metadata count") {
    gguf_bytes g;
    g.header(0, 1ull << 60).zeros(100);
    expect_error(g, 16, "metadata count 1152921504606846976 cannot fit in the 100 bytes left");
  }
  SECTION("absurd tensor count") {
    gguf_bytes g;
    g.header(~0ull, 0).zeros(100);
    expect_error(g, 8, "tensor count 18446744073709551615 cannot fit in the 100 bytes left");
  }
  SECTION("tensor count that fits alone but not after the metadata") {
    gguf_bytes g;
    g.header(4, 2).zeros(100); // 2 * 13 + 4 * 24 > 100
    expect_error(g, 8, "tensor count 4 cannot fit");
  }
}

TEST_CASE("gguf: metadata errors", "[formats][gguf][errors]") {
  using T = dms::gguf_type;
  SECTION("absurd key length") {
    gguf_bytes g;
    g.header(0, 1).put<std::uint64_t>(1ull << 62).zeros(20);
    expect_error(g, 24, "metadata key length 4611686018427387904 runs past the end of the file");
  }
  SECTION("absurd string value length") {
    gguf_bytes g;
    g.header(0, 1).kv_type("k", T::string).put<std::uint64_t>(1000).raw("abc");
    expect_error(g, 24 + 8 + 1 + 4, "string value length 1000 runs past the end of the file (expected at most 3 bytes)");
  }
  SECTION("unknown value type") {
    gguf_bytes g;
    g.header(0, 1).str("k").put<std::uint32_t>(13).zeros(8);
    expect_error(g, 24 + 9, "unknown metadata value type 13");
  }
  SECTION("unknown array element type") {
    gguf_bytes g;
    g.header(0, 1).kv_type("k", T::array).put<std::uint32_t>(99).put<std::uint64_t>(0);
    expect_error(g, 24 + 9 + 4, "unknown metadata value type 99 for array element type");
  }
  SECTION("absurd array length") {
    gguf_bytes g;
    g.header(0, 1).kv_type("k", T::array).put<std::uint32_t>(4).put<std::uint64_t>(1ull << 40).zeros(16);
    expect_error(g, 24 + 13 + 4, "array length 1099511627776 of u32 cannot fit in the 16 bytes left (expected at most 4)");
  }
  SECTION("absurd array-of-strings length") {
    gguf_bytes g;
    g.header(0, 1).kv_type("k", T::array).put<std::uint32_t>(8).put<std::uint64_t>(5).zeros(32);
    expect_error(g, 24 + 13 + 4, "array length 5 of string cannot fit in the 32 bytes left (expected at most 4)");
  }
  SECTION("arrays nested too deep") {
    gguf_bytes g;
    g.header(0, 1).kv_type("k", T::array);
    for (int i = 0; i < 40; ++i) g.put<std::uint32_t>(9).put<std::uint64_t>(1);
    g.put<std::uint32_t>(0).put<std::uint64_t>(0);
    expect_error(g, 24 + 13 + 16 * 12, "arrays nested deeper than 16 levels");
  }
  SECTION("bool other than 0 or 1") {
    gguf_bytes g;
    g.header(0, 1).kv_type("k", T::boolean).put<std::uint8_t>(2);
    expect_error(g, 24 + 13, "bool value 2 (expected 0 or 1)");
  }
  SECTION("truncated scalar") {
    gguf_bytes g;
    g.header(0, 1).kv_type("k", T::f64).put<std::uint32_t>(0);
    expect_error(g, 24 + 13, "truncated: expected f64 value (8 bytes), 4 left");
  }
  SECTION("invalid UTF-8 key") {
    gguf_bytes g;
    g.header(0, 2).kv_u32("ok", 1).kv_u32("bad\xff", 1);
    expect_error(g, 24 + 18, "metadata key #1 is not valid UTF-8");
  }
  SECTION("duplicate key") {
    gguf_bytes g;
    g.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
    expect_error(g, 24 + 17, "duplicate metadata key 'k' (first at offset 24; expected unique keys)");
  }
  SECTION("general.alignment of the wrong type") {
    gguf_bytes g;
    g.header(0, 1).kv_type("general.alignment", T::u64).put<std::uint64_t>(32);
    expect_error(g, 24, "general.alignment has type u64 (expected u32)");
  }
  SECTION("general.alignment zero or not a power of two") {
    for (std::uint32_t a : {0u, 48u}) {
      gguf_bytes g;
      g.header(0, 1).kv_u32("general.alignment", a);
      expect_error(g, 24, "general.alignment = " + std::to_string(a) + " (expected a non-zero power of two)");
    }
  }
}

TEST_CASE("gguf: tensor info errors", "[formats][gguf][errors]") {
  // Offsets: header 24 bytes; a tensor named "t" starts with an 8+1 byte name.
  constexpr std::uint64_t info = 24, n_dims_at = info + 9, dims_at = n_dims_at + 4;
  SECTION("too many dims") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {1, 1, 1, 1, 1}, 0, 0).zeros(64);
    expect_error(g, n_dims_at, "tensor 't': invalid format: tensor has 5 dims (expected at most 4)");
  }
  SECTION("dim above int64") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {1ull << 63}, 0, 0).zeros(64);
    expect_error(g, dims_at, "dim 0 = 9223372036854775808 (expected at most 2^63-1)");
  }
  SECTION("dim product overflows") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {1ull << 32, 1ull << 30, 4}, 0, 0).zeros(64);
    expect_error(g, dims_at + 16, "element count overflows");
  }
  SECTION("dim product overflows behind a zero-length axis (found by fuzz_gguf)") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {0, 1ull << 40, 1ull << 40}, 0, 0).zeros(64);
    expect_error(g, dims_at + 16, "element count overflows");
  }
  SECTION("byte size over int64 behind zero-length axes (found by fuzz_gguf)") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {0, 0, 0, 6917529027641081856ull}, 0, 0).zeros(64);
    expect_error(g, dims_at + 32, "more than 2^63-1 bytes (expected a byte size that fits in int64)");
  }
  SECTION("unknown ggml type") {
    for (std::uint32_t id : {4u, 31u, 1000u}) {
      gguf_bytes g;
      g.header(1, 0).tensor("t", {4}, id, 0).pad(32).zeros(64);
      expect_error(g, dims_at + 8, "unknown ggml type id " + std::to_string(id));
    }
  }
  SECTION("row length not a whole number of blocks") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {33, 32}, 3, 0).pad(32).zeros(2048); // Q4_1, 32 per block
    expect_error(g, dims_at + 16, "row length ne[0] = 33 is not a multiple of the Q4_1 block size (expected a multiple of 32)");
  }
  SECTION("truncated tensor info") {
    gguf_bytes g;
    g.header(1, 0).str("t").put<std::uint32_t>(1).put<std::uint64_t>(4).put<std::uint32_t>(0);
    g.zeros(3); // the offset needs 8
    expect_error(g, dims_at + 12, "truncated: expected tensor data offset (u64)");
  }
  SECTION("invalid UTF-8 name") {
    gguf_bytes g;
    g.header(1, 0).tensor("\xc0\xaf", {4}, 0, 0).pad(32).zeros(16);
    expect_error(g, info, "tensor name #0 is not valid UTF-8");
  }
  SECTION("duplicate name") {
    gguf_bytes g;
    g.header(2, 0).tensor("t", {4}, 0, 0).tensor("t", {4}, 0, 32).pad(32).zeros(64);
    expect_error(g, info + 33, "tensor 't': invalid format: duplicate tensor name (first at offset 24; expected unique names)");
  }
  SECTION("data past the end of the file") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {8}, 0, 0).pad(32).zeros(31); // 32 bytes needed
    expect_error(g, info, "data [0, +32) runs past the end of the file (expected it within the 31-byte data section at offset 64)");
  }
  SECTION("data offset far past the end (no overflow)") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {8}, 0, ~0ull - 31).pad(32).zeros(32);
    expect_error(g, info, "runs past the end of the file");
  }
  SECTION("data section missing") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {1}, 0, 0); // header ends at 57, data would start at 64
    expect_error(g, info, "within the 0-byte data section at offset 64");
  }
  SECTION("misaligned offset") {
    gguf_bytes g;
    g.header(1, 0).tensor("t", {4}, 0, 4).pad(32).zeros(64);
    expect_error(g, info, "data offset 4 is misaligned (expected a multiple of the alignment 32)");
  }
  SECTION("overlapping tensors, in any file order") {
    gguf_bytes g;
    // c [64, 96), a [0, 64), b [32, 48): b overlaps a.
    g.header(3, 0).tensor("c", {8}, 0, 64).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32);
    g.pad(32).zeros(96);
    expect_error(g, info + 33 * 2, "tensor 'b': invalid format: data [32, 48) overlaps tensor 'a' [0, 64) (expected disjoint tensor data)");
  }
  SECTION("identical offsets overlap") {
    gguf_bytes g;
    g.header(2, 0).tensor("a", {8}, 0, 0).tensor("b", {8}, 0, 0).pad(32).zeros(32);
    expect_error(g, info + 33, "overlaps tensor 'a'");
  }
}

TEST_CASE("gguf: every truncation of a valid file fails cleanly", "[formats][gguf][errors]") {
  auto g = small_file();
  gguf_bytes with_arrays;
  with_arrays.header(1, 2).kv_str("s", "abc");
  with_arrays.kv_type("a", dms::gguf_type::array).put<std::uint32_t>(8).put<std::uint64_t>(2).str("xy").str("z");
  with_arrays.tensor("t", {2}, 0, 0).pad(32).zeros(8);
  for (const gguf_bytes *full : {&g, &with_arrays}) {
    for (std::size_t n = 0; n < full->size(); ++n) {
      gguf_bytes cut;
      cut.b.assign(full->b.begin(), full->b.begin() + static_cast<std::ptrdiff_t>(n));
      INFO("truncated to " << n << " of " << full->size() << " bytes");
      try {
        (void)parse(cut);
        FAIL("parsed a truncated file");
      } catch (const dms::error &e) {
        const std::string msg = e.what();
        CHECK_THAT(msg, Contains("bad.gguf: offset "));
        CHECK_THAT(msg, Contains("expected"));
        CHECK(e.code() == dms::errc::invalid_format);
      }
    }
    CHECK_NOTHROW(parse(*full));
  }
}
