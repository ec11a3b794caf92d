// GGUF writer: round trips through the reader (every value type, nested arrays, alignments 1, 32
// and 64, borrowed / owned / streamed tensors), byte-identical rewrites, validation, atomicity,
// and llama.cpp control vectors.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

#include "dms/formats/gguf.hpp"
#include "dms/formats/gguf_writer.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
fs::path scratch(const std::string &name) { return dms::test::scratch_dir("dms-gguf-writer", name); }
std::vector<char> slurp(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
using dms::test::count_entries;

//! Metadata with every value type, including arrays of every element type and nested arrays.
void set_all_types(dms::gguf_writer &w) {
  using dms::gguf_array;
  w.set("general.architecture", "llama");
  w.set("t.u8", std::uint8_t{255});
  w.set("t.i8", std::int8_t{-128});
  w.set("t.u16", std::uint16_t{65535});
  w.set("t.i16", std::int16_t{-32768});
  w.set("t.u32", std::uint32_t{4294967295u});
  w.set("t.i32", std::int32_t{-2147483647 - 1});
  w.set("t.f32", 3.25f);
  w.set("t.bool", true);
  w.set("t.string", "h\xc3\xa9llo, \xe4\xb8\x96\xe7\x95\x8c");
  w.set("t.u64", std::uint64_t{18446744073709551615ull});
  w.set("t.i64", std::int64_t{std::numeric_limits<std::int64_t>::min()});
  w.set("t.f64", -1.0 / 3.0);
  w.set("a.u8", std::vector<std::uint8_t>{0, 1, 255});
  w.set("a.i8", std::vector<std::int8_t>{-1, 2});
  w.set("a.u16", std::vector<std::uint16_t>{7});
  w.set("a.i16", std::vector<std::int16_t>{-7, 7});
  w.set("a.u32", std::vector<std::uint32_t>{1, 2, 3});
  w.set("a.i32", std::vector<std::int32_t>{-1, 0, 1});
  w.set("a.f32", std::vector<float>{0.5f, -0.0f, std::numeric_limits<float>::infinity()});
  w.set("a.bool", std::vector<bool>{true, false, false, true});
  w.set("a.string", gguf_array({"alpha", "", "\xce\xb2"}));
  w.set("a.u64", std::vector<std::uint64_t>{1ull << 63});
  w.set("a.i64", std::vector<std::int64_t>{-(1ll << 62)});
  w.set("a.f64", std::vector<double>{1e300, -1e-300});
  w.set("a.empty", gguf_array::empty_of(dms::gguf_type::string));
  w.set("a.nested", std::vector<gguf_array>{gguf_array(std::vector<std::int32_t>{1, 2}),
                                            gguf_array(std::vector<std::int32_t>{}),
                                            gguf_array(std::vector<std::int32_t>{3})});
  w.set("a.nested2", std::vector<gguf_array>{
                         gguf_array(std::vector<gguf_array>{gguf_array({"x", "y"})}),
                         gguf_array(std::vector<gguf_array>{})});
}
} // namespace

TEST_CASE("gguf writer: every value type round-trips", "[formats][gguf][writer]") {
  const auto dir = scratch("types");
  dms::gguf_writer w;
  set_all_types(w);
  w.write(dir / "t.gguf");
  const dms::gguf_file f((dir / "t.gguf").string());
  CHECK(f.version() == 3);
  REQUIRE(f.metadata().size() == w.metadata().size());
  for (std::size_t i = 0; i < f.metadata().size(); ++i) {
    INFO(w.metadata()[i].first);
    CHECK(f.metadata()[i].key == w.metadata()[i].first); // insertion order kept
    CHECK(f.metadata()[i].value == w.metadata()[i].second);
  }
  CHECK(f.get<std::int64_t>("t.i64") == std::numeric_limits<std::int64_t>::min());
  CHECK(f.get_array<bool>("a.bool") == std::vector<bool>{true, false, false, true});
  CHECK(f.at("a.empty").array().element_type() == dms::gguf_type::string);
  const auto &n2 = f.get_array<dms::gguf_array>("a.nested2");
  CHECK(n2[0].get<dms::gguf_array>()[0].get<std::string>() == std::vector<std::string>{"x", "y"});
  CHECK(f.invalid_utf8_keys().empty());
  fs::remove_all(dir);
}

TEST_CASE("gguf writer: tensors at alignments 1, 32 and 64", "[formats][gguf][writer]") {
  const auto dir = scratch("align");
  std::vector<float> a(15);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.5f;
  std::vector<std::byte> q(2 * 34, std::byte{0x5a}); // Q8_0: 2 blocks of 34 bytes (64 elements)
  const std::vector<dms::f16_bits> h{{0x3c00}, {0xc000}};
  for (std::uint32_t align : {1u, 32u, 64u}) {
    INFO("alignment " << align);
    dms::gguf_writer w(align);
    w.set("general.architecture", "test");
    w.add_tensor("a", {3, 5}, a);                                    // F32, copied
    w.add_tensor("q", dms::ggml_type::q8_0, {1, 64}, std::span<const std::byte>(q)); // borrowed
    w.add_tensor("h", {2}, h);                                       // F16
    w.add_tensor("s", dms::ggml_type::i32, {2}, [](dms::gguf_tensor_sink &out) {   // streamed
      const std::int32_t v[2] = {-5, 6};
      out.write(std::span<const std::int32_t>(v));
    });
    const auto path = dir / ("a" + std::to_string(align) + ".gguf");
    w.write(path);

    const dms::gguf_file f(path.string());
    CHECK(f.alignment() == align);
    CHECK(f.contains("general.alignment") == (align != 32));
    CHECK(f.data_offset() % align == 0);
    REQUIRE(f.tensors().size() == 4);
    for (const auto &t : f.tensors()) CHECK(t.offset % align == 0);
    // Every tensor, the last included, is padded to the alignment (as llama.cpp and gguf-py do).
    CHECK(f.file_size() % align == 0);

    const auto &ta = f.tensor("a");
    CHECK(ta.shape() == std::vector<std::int64_t>{3, 5});
    CHECK(ta.ne[0] == 5);
    CHECK(std::memcmp(ta.raw_bytes().data(), a.data(), a.size() * 4) == 0);
    const auto &tq = f.tensor("q");
    CHECK(tq.type == dms::ggml_type::q8_0);
    CHECK(tq.n_bytes == 68);
    CHECK(std::memcmp(tq.raw_bytes().data(), q.data(), q.size()) == 0);
    CHECK(f.tensor("h").view().type == dms::dtype::f16);
    std::int32_t s[2];
    std::memcpy(s, f.tensor("s").raw_bytes().data(), 8);
    CHECK(s[0] == -5);
    CHECK(s[1] == 6);
  }
  fs::remove_all(dir);
}

TEST_CASE("gguf writer: rewriting a file reproduces it byte for byte", "[formats][gguf][writer]") {
  const auto dir = scratch("rewrite");
  {
    dms::gguf_writer w(64);
    set_all_types(w);
    w.add_tensor("x", {2, 32}, std::vector<float>(64, 1.5f));
    w.add_tensor("y", dms::ggml_type::q4_1, {2, 32}, std::vector<std::byte>(40, std::byte{3}));
    w.write(dir / "one.gguf");
  }
  const dms::gguf_file one((dir / "one.gguf").string());
  dms::gguf_writer w2(static_cast<std::uint32_t>(one.alignment()));
  for (const auto &kv : one.metadata()) w2.set(kv.key, kv.value);
  for (const auto &t : one.tensors()) w2.add_tensor(t.name, t.type, t.shape(), t.raw_bytes());
  w2.write(dir / "two.gguf");
  CHECK(slurp(dir / "one.gguf") == slurp(dir / "two.gguf"));
  // header_bytes() is exactly the part before the padding.
  const auto head = w2.header_bytes();
  CHECK(head.size() == one.layout().header_end);
  CHECK(std::memcmp(head.data(), one.bytes().data(), head.size()) == 0);
  fs::remove_all(dir);
}

TEST_CASE("gguf writer: validates sizes, names, shapes and metadata", "[formats][gguf][writer]") {
  dms::gguf_writer w;
  const std::vector<std::byte> b40(40);
  CHECK_THROWS_WITH(w.add_tensor("q", dms::ggml_type::q4_1, {2, 32}, std::span<const std::byte>(b40.data(), 39)),
                    Contains("tensor 'q'") && Contains("39 bytes given (expected 40 for Q4_1)"));
  CHECK_THROWS_WITH(w.add_tensor("q", dms::ggml_type::q4_1, {2, 33}, std::span<const std::byte>(b40)),
                    Contains("row length 33 is not a multiple of the Q4_1 block size 32"));
  CHECK_THROWS_WITH(w.add_tensor("r", dms::ggml_type::f32, {1, 2, 3, 4, 5}, std::span<const std::byte>(b40)),
                    Contains("shape has 5 axes (expected 1 to 4)"));
  CHECK_THROWS_WITH(w.add_tensor("r", dms::ggml_type::f32, {}, std::span<const std::byte>(b40)),
                    Contains("shape has 0 axes"));
  CHECK_THROWS_WITH(w.add_tensor("r", dms::ggml_type::f32, {-1}, std::span<const std::byte>(b40)),
                    Contains("negative extent -1"));
  CHECK_THROWS_WITH(w.add_tensor("r", dms::ggml_type::f32, {1ll << 40, 1ll << 40, 0}, std::span<const std::byte>()),
                    Contains("element count overflows int64"));
  CHECK_THROWS_WITH(w.add_tensor("r", static_cast<dms::ggml_type>(4), {32}, std::span<const std::byte>(b40)),
                    Contains("unknown ggml type id 4"));
  CHECK_THROWS_WITH(w.add_tensor(std::string(64, 'n'), {1}, std::vector<float>{1}),
                    Contains("llama.cpp accepts at most 63"));
  CHECK_THROWS_WITH(w.add_tensor("\xff", {1}, std::vector<float>{1}), Contains("non-empty UTF-8"));
  w.add_tensor("ok", {1}, std::vector<float>{1});
  CHECK_THROWS_WITH(w.add_tensor("ok", {1}, std::vector<float>{1}), Contains("tensor 'ok'") && Contains("duplicate tensor name"));
  CHECK(w.tensor_count() == 1);

  CHECK_THROWS_WITH(w.set("", 1), Contains("non-empty UTF-8"));
  CHECK_THROWS_WITH(w.set("general.alignment", std::uint64_t{64}), Contains("general.alignment must be a u32, got u64"));
  CHECK_THROWS_WITH(w.set("general.alignment", std::uint32_t{48}), Contains("alignment 48 (expected a non-zero power of two)"));
  CHECK_THROWS_WITH(dms::gguf_writer(0), Contains("alignment 0"));
  w.set("general.alignment", std::uint32_t{16});
  CHECK(w.alignment() == 16);
  w.set("k", 1);
  w.set("k", "replaced"); // keeps its position
  CHECK(w.metadata().back().first == "k");
  CHECK(w.find("k")->get<std::string>() == "replaced");
  CHECK(w.erase("general.alignment"));
  CHECK(w.alignment() == 32);
  CHECK_FALSE(w.erase("general.alignment"));

  dms::gguf_array deep(std::vector<std::int32_t>{1});
  for (int i = 0; i < dms::gguf_max_array_depth; ++i) deep = dms::gguf_array(std::vector<dms::gguf_array>{deep});
  CHECK_THROWS_WITH(w.set("deep", deep), Contains("arrays nested deeper than 16 levels"));
}

TEST_CASE("gguf writer: a failing producer leaves no file behind", "[formats][gguf][writer]") {
  const auto dir = scratch("atomic");
  SECTION("producer writes too little") {
    dms::gguf_writer w;
    w.add_tensor("t", dms::ggml_type::f32, {4}, [](dms::gguf_tensor_sink &out) {
      const float v[3] = {1, 2, 3};
      out.write(std::span<const float>(v));
    });
    CHECK_THROWS_WITH(w.write(dir / "x.gguf"), Contains("x.gguf") && Contains("tensor 't'") &&
                                                    Contains("producer wrote 12 bytes (expected 16)"));
  }
  SECTION("producer writes too much") {
    dms::gguf_writer w;
    w.add_tensor("t", dms::ggml_type::f32, {2}, [](dms::gguf_tensor_sink &out) {
      const float v[3] = {1, 2, 3};
      out.write(std::span<const float>(v));
    });
    CHECK_THROWS_WITH(w.write(dir / "x.gguf"), Contains("tensor 't'") && Contains("(expected 8)"));
  }
  SECTION("producer throws") {
    dms::gguf_writer w;
    w.add_tensor("t", dms::ggml_type::f32, {2}, [](dms::gguf_tensor_sink &) {
      throw dms::error(dms::errc::numeric, "merge produced NaN");
    });
    CHECK_THROWS_WITH(w.write(dir / "x.gguf"), Contains("merge produced NaN"));
  }
  CHECK(count_entries(dir) == 0); // neither the target nor a temporary
  fs::remove_all(dir);
}

TEST_CASE("gguf writer: llama.cpp control vectors", "[formats][gguf][writer][control_vector]") {
  const auto dir = scratch("cv");
  std::map<std::int32_t, std::vector<float>> dirs;
  dirs[3] = {1, 2, 3, 4};
  dirs[1] = {-1, 0.5f, 0, 2};
  dms::write_control_vector(dir / "cv.gguf", "llama", dirs);

  const dms::gguf_file f((dir / "cv.gguf").string());
  CHECK(f.architecture() == "controlvector");
  CHECK(f.get_string("controlvector.model_hint") == "llama");
  CHECK(f.get<std::int32_t>("controlvector.layer_count") == 2);
  REQUIRE(f.tensors().size() == 2);
  CHECK(f.tensors()[0].name == "direction.1"); // ascending layers
  CHECK(f.tensors()[1].name == "direction.3");
  for (const auto &t : f.tensors()) {
    CHECK(t.type == dms::ggml_type::f32);
    CHECK(t.n_dims == 1);
    CHECK(t.ne[0] == 4);
  }
  const auto cv = dms::read_control_vector(f);
  CHECK(cv.model_hint == "llama");
  CHECK(cv.n_embd == 4);
  CHECK(cv.directions == dirs);

  CHECK_THROWS_WITH(dms::write_control_vector(dir / "e.gguf", "llama", {}), Contains("at least one direction"));
  CHECK_THROWS_WITH(dms::write_control_vector(dir / "e.gguf", "llama", {{0, {1.0f}}}),
                    Contains("tensor 'direction.0'") && Contains("expected >= 1"));
  CHECK_THROWS_WITH(dms::write_control_vector(dir / "e.gguf", "llama", {{1, {1.0f}}, {2, {1.0f, 2.0f}}}),
                    Contains("tensor 'direction.2'") && Contains("length 2 (expected 1)"));
  CHECK_THROWS_WITH(dms::write_control_vector(dir / "e.gguf", "llama", {{1, {std::nanf("")}}}),
                    Contains("element 0 is not finite"));
  CHECK_FALSE(fs::exists(dir / "e.gguf"));

  // The reader applies llama.cpp's checks to files it did not write.
  dms::gguf_writer w;
  w.add_tensor("direction.x", {2}, std::vector<float>{1, 2});
  w.write(dir / "bad1.gguf");
  CHECK_THROWS_WITH(dms::read_control_vector((dir / "bad1.gguf").string()),
                    Contains("bad1.gguf: offset ") && Contains("expected a name direction.N with layer N >= 1"));
  dms::gguf_writer w2;
  w2.add_tensor("direction.1", {2, 2}, std::vector<float>{1, 2, 3, 4});
  w2.write(dir / "bad2.gguf");
  CHECK_THROWS_WITH(dms::read_control_vector((dir / "bad2.gguf").string()), Contains("(expected F32 with 1 dim)"));
  dms::gguf_writer w3;
  w3.add_tensor("direction.1", {2}, std::vector<float>{1, 2});
  w3.add_tensor("direction.01", {2}, std::vector<float>{1, 2});
  w3.write(dir / "bad3.gguf");
  CHECK_THROWS_WITH(dms::read_control_vector((dir / "bad3.gguf").string()), Contains("second direction for layer 1"));
  fs::remove_all(dir);
}
