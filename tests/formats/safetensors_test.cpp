#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "dms/formats/safetensors.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {
fs::path scratch_dir(const std::string &name) { return dms::test::scratch_dir("dms-st-test", name); }
using dms::test::count_entries;
//! A safetensors file from a literal header and `data_bytes` bytes of data (values 0, 1, 2, ...).
std::vector<std::byte> file_with(const std::string &header, std::size_t data_bytes) {
  std::vector<std::byte> out(8);
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  for (char c : header)
    out.push_back(static_cast<std::byte>(c));
  for (std::size_t i = 0; i < data_bytes; ++i)
    out.push_back(static_cast<std::byte>(i));
  return out;
}
dms::safetensors_file open_bytes(const std::vector<std::byte> &b) {
  return dms::safetensors_file(std::span<const std::byte>(b), "bad.safetensors");
}
template <class T> std::span<const std::byte> bytes_of(const std::vector<T> &v) {
  return std::as_bytes(std::span<const T>(v));
}
} // namespace

TEST_CASE("safetensors dtype table covers every dms dtype", "[formats][safetensors]") {
  for (dms::dtype t : dms::all_dtypes) {
    const auto &d = dms::safetensors_dtype_of(t);
    CHECK(d.type == t);
    CHECK(d.bits == 8 * dms::size_of(t));
    CHECK(dms::find_safetensors_dtype(d.name) == &d);
  }
  CHECK(dms::find_safetensors_dtype("F8_E4M3")->bits == 8);
  CHECK_FALSE(dms::find_safetensors_dtype("F8_E4M3")->type.has_value());
  CHECK(dms::find_safetensors_dtype("Q4_0") == nullptr);
}

TEST_CASE("safetensors writer reproduces the Rust crate's bytes", "[formats][safetensors]") {
  // Test vectors from huggingface/safetensors tensor.rs (test_serialization, test_empty,
  // test_serialization_forced_alignement).
  const std::vector<float> v{0, 1, 2, 3, 4, 5};
  dms::safetensors_writer w;
  w.add("attn.0", dms::dtype::f32, {1, 2, 3}, bytes_of(v));
  const auto out = w.serialize();
  const std::string expect_header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  REQUIRE(out.size() == 8 + 64 + 24);
  CHECK(static_cast<int>(out[0]) == 64);
  CHECK(std::string(reinterpret_cast<const char *>(out.data()) + 8, 64) == expect_header);
  CHECK(std::memcmp(out.data() + 72, v.data(), 24) == 0);

  dms::safetensors_writer w2;
  w2.add("attn0", dms::dtype::f32, {1, 1, 2, 3}, bytes_of(v));
  CHECK(w2.header() ==
        R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" + std::string(7, ' '));

  dms::safetensors_writer empty;
  CHECK(empty.header() == "{}      ");
  empty.set_metadata("framework", "pt");
  CHECK(empty.header() == R"({"__metadata__":{"framework":"pt"}})" + std::string(5, ' '));
  CHECK(empty.file_bytes() == 8 + 40);
}

TEST_CASE("safetensors round trip of every dtype, metadata, scalars and empty tensors",
          "[formats][safetensors]") {
  const std::vector<float> f32{1.5f, -2.0f, 3.25f, 0.0f, -0.5f, 8.0f};
  const std::vector<double> f64{1.0, -0.125, 1e30};
  std::vector<dms::f16_bits> f16;
  std::vector<dms::bf16_bits> bf16;
  for (float x : f32) {
    f16.push_back(dms::to_f16(x));
    bf16.push_back(dms::to_bf16(x));
  }
  const std::vector<std::int64_t> i64{-1, 2, 1LL << 40};
  const std::vector<std::int32_t> i32{-7, 7};
  const std::vector<std::int16_t> i16{-300, 300, 1};
  const std::vector<std::int8_t> i8{-1, 1, -128};
  const std::vector<std::uint8_t> u8{255, 0, 7, 9, 1};
  const std::vector<std::uint8_t> boolean{1, 0, 1};
  const std::vector<float> scalar{42.0f};

  dms::safetensors_writer w;
  w.set_metadata("format", "pt");
  w.set_metadata("note", "caf\xc3\xa9 \"quoted\"\n");
  w.add("f32", dms::dtype::f32, {2, 3}, bytes_of(f32));
  w.add("f16", dms::dtype::f16, {3, 2}, bytes_of(f16));
  w.add("bf16", dms::dtype::bf16, {6}, bytes_of(bf16));
  w.add("f64", dms::dtype::f64, {3}, bytes_of(f64));
  w.add("i64", dms::dtype::i64, {3}, bytes_of(i64));
  w.add("i32", dms::dtype::i32, {1, 2}, bytes_of(i32));
  w.add("i16", dms::dtype::i16, {3}, bytes_of(i16));
  w.add("i8", dms::dtype::i8, {3}, bytes_of(i8));
  w.add("u8", dms::dtype::u8, {5}, bytes_of(u8));
  w.add("bool", dms::dtype::boolean, {3}, bytes_of(boolean));
  w.add("scalar", dms::make_view(scalar.data(), {}));
  w.add("empty", dms::dtype::f32, {0, 4}, std::span<const std::byte>{});
  const auto bytes = w.serialize();

  const dms::safetensors_file f(bytes, "mem.safetensors");
  CHECK(f.size() == 12);
  CHECK(f.metadata().size() == 2);
  CHECK(f.metadata("note") == "caf\xc3\xa9 \"quoted\"\n");
  CHECK_FALSE(f.metadata("missing").has_value());
  CHECK(f.data_offset() % 8 == 0);

  // Canonical order: dtype alignment descending (I64, F64, F32, I32, BF16, F16, I16, I8, U8,
  // BOOL), then name; every tensor starts at a multiple of its element size.
  std::vector<std::string> order;
  for (const auto &t : f.tensors()) {
    order.push_back(t.name);
    if (t.type) CHECK(t.file_offset % dms::size_of(*t.type) == 0);
  }
  CHECK(order == std::vector<std::string>{"i64", "f64", "empty", "f32", "scalar", "i32", "bf16", "f16", "i16",
                                          "i8", "u8", "bool"});

  CHECK(f.to_f32("f32") == f32);
  CHECK(f.to_f32("f16") == f32);
  CHECK(f.to_f32("bf16") == f32);
  CHECK(f.to_f32("f64") == std::vector<float>{1.0f, -0.125f, 1e30f});
  CHECK(f.to_f32("scalar") == scalar);
  CHECK(f.to_f32("empty").empty());

  const auto v = f.view("f16");
  CHECK(v.type == dms::dtype::f16);
  CHECK(v.rank == 2);
  CHECK(v.extents[0] == 3);
  CHECK(v.extents[1] == 2);
  CHECK(v.strides[0] == 2);
  CHECK(v.is_contiguous());
  CHECK(v.data == f.raw("f16").data()); // zero-copy
  CHECK(f.view("scalar").rank == 0);
  CHECK(f.view("empty").numel() == 0);
  CHECK(std::memcmp(f.view("i64").data, i64.data(), 24) == 0);
  CHECK(f.at("u8").shape == std::vector<std::int64_t>{5});
  CHECK(f.at("bool").dtype_name == "BOOL");
  CHECK(std::memcmp(f.raw("i16").data(), i16.data(), 6) == 0);

  CHECK_THROWS_WITH(f.to_f32("i32"),
                    Contains("tensor 'i32'") && Contains("unsupported") && Contains("floating tensors"));
  CHECK_THROWS_WITH(f.at("nope"), Contains("mem.safetensors") && Contains("no tensor named 'nope'"));
  std::vector<float> small(2);
  CHECK_THROWS_WITH(f.to_f32(f.at("f32"), small), Contains("output holds 2 floats"));
}

TEST_CASE("safetensors insertion order keeps the add() order", "[formats][safetensors]") {
  const std::vector<std::uint8_t> a{1, 2, 3};
  const std::vector<float> b{1, 2};
  dms::safetensors_writer w;
  w.add("z", dms::dtype::u8, {3}, bytes_of(a));
  w.add("a", dms::dtype::f32, {2}, bytes_of(b));
  const auto bytes = w.serialize(dms::tensor_order::insertion);
  const dms::safetensors_file f(bytes, "ins");
  CHECK(f.tensors()[0].name == "z");
  CHECK(f.tensors()[1].name == "a");
  CHECK(f.tensors()[1].file_offset % 4 != 0); // misaligned, and still read correctly
  CHECK(f.to_f32("a") == b);
}

TEST_CASE("safetensors files on disk: atomic write, streaming producers", "[formats][safetensors]") {
  const auto dir = scratch_dir("disk");
  std::vector<float> rows(1000);
  for (std::size_t i = 0; i < rows.size(); ++i)
    rows[i] = static_cast<float>(i) * 0.5f;

  dms::safetensors_writer w;
  w.set_metadata("format", "pt");
  // A producer writing bf16 rows in chunks, as a merge would.
  w.add("stream", dms::dtype::bf16, {10, 100}, [&](dms::tensor_sink &s) {
    for (std::size_t r = 0; r < 10; ++r) {
      std::vector<dms::bf16_bits> chunk(100);
      for (std::size_t j = 0; j < 100; ++j)
        chunk[j] = dms::to_bf16(rows[r * 100 + j]);
      s.write(std::span<const dms::bf16_bits>(chunk));
    }
  });
  w.add("plain", dms::dtype::f32, {1000}, bytes_of(rows));
  const auto path = dir / "model.safetensors";
  const std::uint64_t n = w.write(path);
  CHECK(n == fs::file_size(path));
  CHECK(count_entries(dir) == 1);

  const dms::safetensors_file f(path.string());
  CHECK(f.path() == path.string());
  CHECK(f.to_f32("plain") == rows);
  std::vector<float> rounded;
  for (float x : rows)
    rounded.push_back(dms::to_f32(dms::to_bf16(x)));
  CHECK(f.to_f32("stream") == rounded);
  CHECK(f.metadata("format") == "pt");

  // A producer that writes too little or too much fails, and leaves nothing behind.
  dms::safetensors_writer short_w;
  short_w.add("t", dms::dtype::f32, {4},
              [&](dms::tensor_sink &s) { s.write(std::span<const float>(rows.data(), 3)); });
  CHECK_THROWS_WITH(short_w.write(dir / "short.safetensors"),
                    Contains("tensor 't'") && Contains("producer wrote 12 of the 16 bytes"));
  dms::safetensors_writer long_w;
  long_w.add("t", dms::dtype::f32, {2},
             [&](dms::tensor_sink &s) { s.write(std::span<const float>(rows.data(), 3)); });
  CHECK_THROWS_WITH(long_w.write(dir / "long.safetensors"),
                    Contains("producer wrote 12 bytes with only 8 left"));
  CHECK(count_entries(dir) == 1);
  CHECK_THROWS_WITH(w.write(dir / "missing-dir" / "x.safetensors"), Contains("cannot create temporary file"));
  fs::remove_all(dir);
}

TEST_CASE("safetensors writer refuses bad tensors", "[formats][safetensors]") {
  const std::vector<float> v{1, 2, 3};
  dms::safetensors_writer w;
  w.add("a", dms::dtype::f32, {3}, bytes_of(v));
  CHECK_THROWS_WITH(w.add("a", dms::dtype::f32, {3}, bytes_of(v)),
                    Contains("tensor 'a'") && Contains("added twice"));
  CHECK_THROWS_WITH(w.add("__metadata__", dms::dtype::f32, {3}, bytes_of(v)), Contains("reserved"));
  CHECK_THROWS_WITH(w.add("b", dms::dtype::f32, {2, 2}, bytes_of(v)),
                    Contains("shape [2, 2] of F32 needs 16 bytes, got 12"));
  CHECK_THROWS_WITH(w.add("c", dms::dtype::f32, {-1}, bytes_of(v)), Contains("negative extent"));
  CHECK_THROWS_WITH(w.add("d", dms::dtype::f32, {1LL << 62, 8}, bytes_of(v)), Contains("overflows 64 bits"));
  CHECK_THROWS_WITH(w.add("\xff", dms::dtype::f32, {3}, bytes_of(v)), Contains("not valid UTF-8"));
  CHECK_THROWS_WITH(w.add_raw("e", "Q4_0", {3}, bytes_of(v)), Contains("unknown safetensors dtype 'Q4_0'"));
  CHECK_THROWS_WITH(w.set_metadata("k", "\xc3"), Contains("not valid UTF-8"));
  // F4 packs two elements per byte: an odd count is not a whole number of bytes.
  CHECK_THROWS_WITH(w.add_raw("f4", "F4", {3}, {}), Contains("not a whole number of bytes"));
  const std::vector<std::uint8_t> packed{0x12, 0x34};
  w.add_raw("f4", "F4", {4}, bytes_of(packed));
  const auto bytes = w.serialize();
  const dms::safetensors_file f(bytes, "f4");
  CHECK(f.at("f4").dtype_name == "F4");
  CHECK(f.raw("f4").size() == 2);
}

TEST_CASE("safetensors dtypes dms does not read, ranks above 4, unaligned halves", "[formats][safetensors]") {
  // Header of 77 bytes: the data section starts at 85, an odd offset.
  std::string h =
      R"({"fp8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]},"h":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}})";
  auto b = file_with(h, 4);
  const dms::f16_bits one = dms::to_f16(1.5f);
  std::memcpy(b.data() + 8 + h.size() + 2, &one, 2);
  const auto f = open_bytes(b);
  REQUIRE((f.data_offset() + 2) % 2 == 1);
  CHECK(f.to_f32("h") == std::vector<float>{1.5f});
  CHECK(f.raw("fp8").size() == 2);
  CHECK_THROWS_WITH(f.view("fp8"),
                    Contains("bad.safetensors: offset 9: tensor 'fp8': unsupported: "
                             "dtype F8_E4M3 is listed by safetensors but dms does not read it"));
  CHECK_THROWS_WITH(f.to_f32("fp8"), Contains("F8_E4M3"));

  const auto b5 = file_with(R"({"t":{"dtype":"U8","shape":[1,1,1,1,2],"data_offsets":[0,2]}})", 2);
  const auto f5 = open_bytes(b5);
  CHECK_THROWS_WITH(f5.view("t"), Contains("rank 5 exceeds dms::max_rank"));
  CHECK(f5.raw("t").size() == 2);
}

TEST_CASE("safetensors reader rejects malformed files with file, offset and expectation",
          "[formats][safetensors]") {
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  auto fails = [](const std::vector<std::byte> &b) {
    try {
      open_bytes(b);
    } catch (const dms::error &e) {
      CHECK(e.where().file == "bad.safetensors");
      return std::string(e.what());
    }
    FAIL("no error");
    return std::string();
  };

  SECTION("too short for the length") {
    std::vector<std::byte> b(5);
    CHECK_THAT(
        fails(b),
        Contains("offset 0: invalid format: truncated: expected the 8-byte little-endian header length"));
  }
  SECTION("header length past the end") {
    auto b = file_with("{}", 0);
    b[0] = std::byte{200};
    CHECK_THAT(fails(b), Contains("offset 0") &&
                             Contains("header length 200 runs past the end of the file (expected <= 2)"));
  }
  SECTION("header length above the limit") {
    auto b = file_with("{}", 0);
    const std::uint64_t n = 100'000'001;
    std::memcpy(b.data(), &n, 8);
    CHECK_THAT(fails(b), Contains("header length 100000001 exceeds the limit of 100000000 bytes"));
  }
  SECTION("header not an object") {
    CHECK_THAT(fails(file_with("[]", 0)),
               Contains("offset 8: invalid format: header must be a JSON object, got array"));
    CHECK_THAT(fails(file_with(" 3", 0)), Contains("header must be a JSON object, got number"));
    CHECK_THAT(fails(file_with("", 0)),
               Contains("offset 8: invalid format: invalid JSON: syntax error while parsing value - "
                        "unexpected end of input"));
  }
  SECTION("header not UTF-8") {
    CHECK_THAT(fails(file_with("{\"a\xff\":1}", 0)),
               Contains("offset 11: invalid format: JSON text is not valid UTF-8"));
  }
  SECTION("header not JSON") {
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32",}})", 0)),
               Contains("offset 28") && Contains("invalid JSON: syntax error while parsing object key"));
    CHECK_THAT(fails(file_with(R"({"a":1} x)", 0)), Contains("expected end of input"));
  }
  SECTION("duplicate tensor name") {
    CHECK_THAT(fails(file_with("{" + ok_entry + "," + ok_entry + "}", 8)),
               Contains("offset 62: invalid format: duplicate key 'a' in a JSON object"));
  }
  SECTION("duplicate field inside an entry") {
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", 8)),
               Contains("duplicate key 'dtype'"));
  }
  SECTION("missing or mistyped fields") {
    CHECK_THAT(fails(file_with(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8)),
               Contains("offset 9: tensor 'a': invalid format: missing key 'dtype'"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8)),
               Contains("missing key 'shape'"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[2]}})", 8)),
               Contains("missing key 'data_offsets'"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", 8)),
               Contains("key 'dtype': expected a string, got integer"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8)),
               Contains("unknown dtype 'F33' (expected one of BOOL, F4,"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8)),
               Contains("key 'shape': expected an array of integers, got integer"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)),
               Contains("shape[0]: expected an integer in [0, 9223372036854775807], got -2"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8)),
               Contains("shape[0]: expected an integer"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8)),
               Contains("key 'data_offsets': expected an array [begin, end] of two integers"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-1,8]}})", 8)),
               Contains("data_offsets[0]: expected a non-negative integer"));
    CHECK_THAT(fails(file_with(R"({"a":[1]})", 8)), Contains("tensor entry: expected an object, got array"));
  }
  SECTION("metadata must map strings to strings") {
    CHECK_THAT(fails(file_with(R"({"__metadata__":{"n":1}})", 0)),
               Contains("offset 9: tensor '__metadata__'") &&
                   Contains("__metadata__['n']: expected a string, got integer"));
    CHECK_THAT(fails(file_with(R"({"__metadata__":[]})", 0)), Contains("__metadata__: expected an object"));
  }
  SECTION("offsets") {
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)),
               Contains("data_offsets [8, 0]: expected begin <= end"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)),
               Contains("data_offsets [0, 8] run past the end of the file (the data section holds 4 bytes)"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", 12)),
               Contains("shape [2] of F32 needs 8 bytes, data_offsets [0, 12] give 12"));
    CHECK_THAT(
        fails(file_with(R"({"a":{"dtype":"F64","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8)),
        Contains("overflows 64 bits"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2)),
               Contains("not a whole number of bytes"));
  }
  SECTION("tensors must tile the data section") {
    // Overlap: b starts inside a.
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                               8)),
               Contains("tensor 'b'") &&
                   Contains("data_offsets [4, 8] overlap tensor 'a' [0, 8] (expected begin >= 8)"));
    // Same range twice.
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                               8)),
               Contains("overlap tensor 'a'"));
    // Hole before the first tensor and between tensors.
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
               Contains("leave a hole of 4 bytes before the tensor (expected begin == 0"));
    CHECK_THAT(fails(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[6,10]}})",
                               10)),
               Contains("tensor 'b'") && Contains("hole of 2 bytes"));
    // Bytes after the last tensor.
    const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    CHECK_THAT(fails(file_with(h, 7)), Contains("offset " + std::to_string(8 + h.size() + 4)) &&
                                           Contains("3 bytes after the last tensor belong to no tensor"));
    CHECK_THAT(fails(file_with("{}", 1)), Contains("1 bytes after the last tensor"));
  }
  SECTION("valid corner cases pass") {
    CHECK(open_bytes(file_with("{}", 0)).size() == 0);
    CHECK(open_bytes(file_with("{}   \n ", 0)).size() == 0);
    CHECK(open_bytes(file_with("  {}    ", 0)).size() == 0); // leading whitespace, as the Rust crate allows
    // Zero-sized tensors may share an offset; unknown fields are ignored as by the Rust crate.
    const auto f = open_bytes(file_with(R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                                        R"("y":{"dtype":"U8","shape":[0,3],"data_offsets":[0,0],"extra":1},)"
                                        R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                                        2));
    CHECK(f.size() == 3);
  }
}

TEST_CASE("safetensors_file opens files and reports I/O errors", "[formats][safetensors]") {
  const auto dir = scratch_dir("open");
  CHECK_THROWS_WITH(dms::safetensors_file((dir / "none.safetensors").string()),
                    Contains("none.safetensors: I/O error: cannot open"));
  const auto b = file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 3);
  std::ofstream(dir / "cut.safetensors", std::ios::binary)
      .write(reinterpret_cast<const char *>(b.data()), static_cast<std::streamsize>(b.size()));
  CHECK_THROWS_WITH(
      dms::safetensors_file((dir / "cut.safetensors").string()),
      Contains(
          "cut.safetensors: offset 9: tensor 'a': invalid format: data_offsets [0, 4] run past the end"));
  fs::remove_all(dir);
}
