// GGUF checks against things outside this repository: llama.cpp's own Python package `gguf`
// (GGUFReader / GGUFWriter, in the peer venv made by scripts/peers) and the real default model
// (SmolLM2-135M-Instruct Q4_1, from $DMS_MODEL or scripts/fetch-model).
//
// These test cases are hidden from the default run ([.peer], [.model]): they need a venv or a
// 100 MB download. tests/formats/CMakeLists.txt registers them as ctest tests of their own
// (labels `peer` and `model`) with SKIP_RETURN_CODE 77. When what a test needs is missing it
// prints "SKIPPED: <why>" and exits with 77, so ctest lists it as skipped, not passed.
//
// The comparison with gguf-py is a canonical text dump of the file produced by both sides: header
// figures, every metadata field as gguf-py's ReaderField sees it (its type chain and every "part":
// lengths, element types, counts and values, floats as bit patterns), and every tensor (name,
// type, ggml dims, element and byte counts, absolute data offset, CRC-32 of its bytes).
#include <catch2/catch.hpp>

#include <array>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "dms/formats/gguf.hpp"
#include "dms/formats/gguf_names.hpp"
#include "dms/formats/gguf_writer.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string &name) { return dms::test::scratch_dir("dms-gguf-external", name); }

using dms::test::model_path;
using dms::test::peer_python;
using dms::test::quote;
using dms::test::run;
using dms::test::run_python;
using dms::test::skip;

// --- the canonical dump, dms side -----------------------------------------------------------------

std::uint32_t crc_of(std::span<const std::byte> b) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (!b.empty()) {
    const std::size_t n = std::min<std::size_t>(b.size(), 1u << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef *>(b.data()), static_cast<uInt>(n));
    b = b.subspan(n);
  }
  return static_cast<std::uint32_t>(crc);
}

struct dumper {
  std::vector<std::string> parts;
  std::string types;

  template <class T> static std::string num(T v) {
    if constexpr (std::is_same_v<T, float>) return std::to_string(std::bit_cast<std::uint32_t>(v));
    else if constexpr (std::is_same_v<T, double>) return std::to_string(std::bit_cast<std::uint64_t>(v));
    else if constexpr (std::is_same_v<T, bool>) return v ? "1" : "0";
    else return std::to_string(v);
  }
  void string_parts(const std::string &s) {
    parts.push_back(std::to_string(s.size()));
    std::string b;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (i) b += ',';
      b += std::to_string(static_cast<unsigned char>(s[i]));
    }
    parts.push_back(b);
  }
  void array_parts(const dms::gguf_array &a) {
    parts.push_back(std::to_string(static_cast<std::uint32_t>(a.element_type())));
    parts.push_back(std::to_string(a.size()));
    std::visit([&](const auto &items) {
      using X = typename std::remove_cvref_t<decltype(items)>::value_type;
      for (std::size_t i = 0; i < items.size(); ++i) {
        if constexpr (std::is_same_v<X, std::string>) string_parts(items[i]);
        else if constexpr (std::is_same_v<X, dms::gguf_array>) array_parts(items[i]);
        else parts.push_back(num(static_cast<X>(items[i])));
      }
    }, a.items());
  }
  // gguf-py records the type of an array's first element only (none for an empty array).
  static std::string chain(const dms::gguf_array &a) {
    std::string c = "9";
    if (a.empty()) return c;
    if (const auto *inner = std::get_if<std::vector<dms::gguf_array>>(&a.items())) return c + "," + chain((*inner)[0]);
    return c + "," + std::to_string(static_cast<std::uint32_t>(a.element_type()));
  }
  void value(const dms::gguf_value &v) {
    std::visit([&](const auto &x) {
      using X = std::remove_cvref_t<decltype(x)>;
      if constexpr (std::is_same_v<X, std::string>) {
        types = "8";
        string_parts(x);
      } else if constexpr (std::is_same_v<X, dms::gguf_array>) {
        types = chain(x);
        array_parts(x);
      } else {
        types = std::to_string(static_cast<std::uint32_t>(v.type()));
        parts.push_back(num(x));
      }
    }, v.raw());
  }
};

std::string dms_dump(const dms::gguf_file &f) {
  std::ostringstream o;
  o << "version " << f.version() << "\ntensor_count " << f.tensors().size() << "\nkv_count "
    << f.metadata().size() << "\nalignment " << f.alignment() << "\ndata_offset " << f.data_offset() << "\n";
  for (const auto &kv : f.metadata()) {
    dumper d;
    d.value(kv.value);
    o << "kv " << kv.key << " types=" << d.types << " parts=";
    for (std::size_t i = 0; i < d.parts.size(); ++i) o << (i ? ";" : "") << d.parts[i];
    o << "\n";
  }
  for (const auto &t : f.tensors()) {
    o << "tensor " << t.name << " type=" << static_cast<std::uint32_t>(t.type) << " ne=";
    for (std::uint32_t i = 0; i < t.n_dims; ++i) o << (i ? "," : "") << t.ne[i];
    o << " n_elements=" << t.n_elements << " n_bytes=" << t.n_bytes << " offset=" << t.file_offset
      << " crc=" << crc_of(t.raw_bytes()) << "\n";
  }
  return o.str();
}

// --- the canonical dump, gguf-py side -------------------------------------------------------------

constexpr const char *py_dump = R"PY(
import sys, zlib
import numpy as np
import gguf

def fmt(p):
    if p.dtype == np.float32: p = p.view(np.uint32)
    elif p.dtype == np.float64: p = p.view(np.uint64)
    elif p.dtype == np.bool_: p = p.astype(np.uint8)
    return ",".join(str(int(x)) for x in p.tolist())

r = gguf.GGUFReader(sys.argv[1])
out = []
out.append(f"version {int(r.fields['GGUF.version'].parts[0][0])}")
out.append(f"tensor_count {int(r.fields['GGUF.tensor_count'].parts[0][0])}")
out.append(f"kv_count {int(r.fields['GGUF.kv_count'].parts[0][0])}")
out.append(f"alignment {int(r.alignment)}")
out.append(f"data_offset {int(r.data_offset)}")
for name, f in r.fields.items():
    if name.startswith("GGUF."): continue
    types = ",".join(str(int(t)) for t in f.types)
    parts = ";".join(fmt(p) for p in f.parts[3:])  # after key length, key bytes, value type
    out.append(f"kv {name} types={types} parts={parts}")
for t in r.tensors:
    ne = ",".join(str(int(d)) for d in t.shape.tolist())
    crc = zlib.crc32(t.data.tobytes())
    out.append(f"tensor {t.name} type={int(t.tensor_type)} ne={ne} n_elements={int(t.n_elements)} "
               f"n_bytes={int(t.n_bytes)} offset={int(t.data_offset)} crc={crc}")
sys.stdout.write("\n".join(out) + "\n")
)PY";

//! Compares the two dumps line by line, reporting the first difference (lines can be megabytes).
void compare_dumps(const std::string &ours, const std::string &theirs) {
  std::istringstream a(ours), b(theirs);
  std::string la, lb;
  std::size_t line = 0;
  while (true) {
    const bool ga = static_cast<bool>(std::getline(a, la)), gb = static_cast<bool>(std::getline(b, lb));
    ++line;
    if (!ga && !gb) break;
    if (!ga || !gb || la != lb) {
      INFO("first difference at line " << line << "\n  dms:     " << la.substr(0, 400)
                                       << "\n  gguf-py: " << lb.substr(0, 400));
      FAIL("dumps differ");
    }
  }
  SUCCEED("dumps agree on " << line - 1 << " lines");
}

std::size_t count_lines(const std::string &s, std::string_view prefix) {
  std::size_t n = 0;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) n += l.starts_with(prefix);
  return n;
}

} // namespace

// --- peer checks ---------------------------------------------------------------------------------

TEST_CASE("gguf peer: a file dms writes reads identically in gguf-py", "[.peer]") {
  const auto dir = scratch("dms-to-py");
  const auto python = peer_python(dir);
  for (std::uint32_t align : {1u, 32u, 64u}) {
    INFO("alignment " << align);
    dms::gguf_writer w(align);
    w.set("general.architecture", "llama");
    w.set("t.u8", std::uint8_t{200});
    w.set("t.i8", std::int8_t{-100});
    w.set("t.u16", std::uint16_t{60000});
    w.set("t.i16", std::int16_t{-30000});
    w.set("t.u32", std::uint32_t{4000000000u});
    w.set("t.i32", std::int32_t{-2000000000});
    w.set("t.f32", 0.1f);
    w.set("t.bool", false);
    w.set("t.string", "h\xc3\xa9llo");
    w.set("t.raw", "\xff\xfe not UTF-8"); // bytes are kept, both sides see the same parts
    w.set("t.u64", std::uint64_t{1ull << 60});
    w.set("t.i64", std::int64_t{-(1ll << 60)});
    w.set("t.f64", 1.0 / 3.0);
    w.set("a.u8", std::vector<std::uint8_t>{1, 2, 3});
    w.set("a.i16", std::vector<std::int16_t>{-1, 1});
    w.set("a.f32", std::vector<float>{0.25f, -0.0f});
    w.set("a.bool", std::vector<bool>{true, false});
    w.set("a.string", dms::gguf_array({"a", "", "\xe4\xb8\x96"}));
    w.set("a.u64", std::vector<std::uint64_t>{~0ull});
    w.set("a.f64", std::vector<double>{-2.5});
    w.set("a.empty", dms::gguf_array::empty_of(dms::gguf_type::i32));
    w.set("a.nested", std::vector<dms::gguf_array>{dms::gguf_array(std::vector<std::int32_t>{1, 2}),
                                                   dms::gguf_array(std::vector<std::int32_t>{3})});
    w.set("a.nested.str", std::vector<dms::gguf_array>{dms::gguf_array({"x"}), dms::gguf_array({"y", "z"})});
    std::vector<float> f32(6);
    for (std::size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<float>(i) - 2.5f;
    w.add_tensor("w.f32", {2, 3}, f32);
    w.add_tensor("w.f16", {4}, std::vector<dms::f16_bits>{{0x3c00}, {0}, {0x8000}, {0x7bff}});
    w.add_tensor("w.bf16", {1, 2}, std::vector<dms::bf16_bits>{{0x3f80}, {0xc000}});
    w.add_tensor("w.i32", {3}, std::vector<std::int32_t>{-1, 0, 7});
    w.add_tensor("w.i8", {2, 2, 2}, std::vector<std::int8_t>{1, 2, 3, 4, 5, 6, 7, 8});
    std::vector<std::byte> q41(2 * 2 * 20), q80(34);
    for (std::size_t i = 0; i < q41.size(); ++i) q41[i] = static_cast<std::byte>(i * 7);
    w.add_tensor("w.q4_1", dms::ggml_type::q4_1, {2, 64}, std::span<const std::byte>(q41));
    w.add_tensor("w.q8_0", dms::ggml_type::q8_0, {32}, std::span<const std::byte>(q80));
    const auto path = dir / ("dms" + std::to_string(align) + ".gguf");
    w.write(path);

    const dms::gguf_file f(path.string());
    const auto theirs = run_python(python, py_dump, {path.string()}, dir);
    compare_dumps(dms_dump(f), theirs);
    CHECK(count_lines(theirs, "kv ") == w.metadata().size() + (align != 32 ? 1 : 0));
    CHECK(count_lines(theirs, "tensor ") == 7);
  }
  fs::remove_all(dir);
}

TEST_CASE("gguf peer: a file gguf-py writes reads identically in dms", "[.peer]") {
  const auto dir = scratch("py-to-dms");
  const auto python = peer_python(dir);
  constexpr const char *writer = R"PY(
import sys
import numpy as np
import gguf
from gguf import GGUFValueType as T

w = gguf.GGUFWriter(sys.argv[1], "llama")
w.add_custom_alignment(64)
w.add_uint8("t.u8", 200); w.add_int8("t.i8", -100)
w.add_uint16("t.u16", 60000); w.add_int16("t.i16", -30000)
w.add_uint32("t.u32", 4000000000); w.add_int32("t.i32", -2000000000)
w.add_float32("t.f32", 0.1); w.add_float64("t.f64", 1/3)
w.add_uint64("t.u64", 1 << 60); w.add_int64("t.i64", -(1 << 60))
w.add_bool("t.bool", True); w.add_string("t.string", "h\u00e9llo")
w.add_array("a.i32", [1, -2, 3])
w.add_array("a.f32", [0.5, -1.5])
w.add_array("a.bool", [True, False, True])
w.add_array("a.str", ["x", "", "\u4e16"])
w.add_array("a.nested", [[1, 2], [3]])
w.add_key_value("a.u16", [1, 2, 65535], T.ARRAY, sub_type=T.UINT16)
w.add_key_value("a.u64", [1 << 63], T.ARRAY, sub_type=T.UINT64)
w.add_tensor("w.f32", np.arange(6, dtype=np.float32).reshape(2, 3))
w.add_tensor("w.f16", np.array([1, -2, 0.5], dtype=np.float16))
w.add_tensor("w.f64", np.array([[1.0], [2.0]], dtype=np.float64))
w.add_tensor("w.i8", np.array([-1, 2], dtype=np.int8))
w.add_tensor("w.i16", np.array([-300], dtype=np.int16))
w.add_tensor("w.i32", np.arange(4, dtype=np.int32).reshape(2, 1, 2))
w.add_tensor("w.i64", np.array([1 << 40], dtype=np.int64))
w.add_tensor("w.q8_0", np.arange(68, dtype=np.uint8).reshape(2, 34), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
)PY";
  const auto path = dir / "py.gguf";
  run_python(python, writer, {path.string()}, dir);

  const dms::gguf_file f(path.string());
  compare_dumps(dms_dump(f), run_python(python, py_dump, {path.string()}, dir));

  CHECK(f.version() == 3);
  CHECK(f.alignment() == 64);
  CHECK(f.architecture() == "llama");
  CHECK(f.get<std::uint8_t>("t.u8") == 200);
  CHECK(f.get<std::int64_t>("t.i64") == -(1ll << 60));
  CHECK(f.get<float>("t.f32") == 0.1f);
  CHECK(f.get<double>("t.f64") == 1.0 / 3.0);
  CHECK(f.get<bool>("t.bool"));
  CHECK(f.get_string("t.string") == "h\xc3\xa9llo");
  CHECK(f.get_array<bool>("a.bool") == std::vector<bool>{true, false, true});
  CHECK(f.get_array<std::string>("a.str") == std::vector<std::string>{"x", "", "\xe4\xb8\x96"});
  CHECK(f.get_array<std::uint16_t>("a.u16") == std::vector<std::uint16_t>{1, 2, 65535});
  const auto &nested = f.get_array<dms::gguf_array>("a.nested");
  REQUIRE(nested.size() == 2);
  CHECK(nested[0].get<std::int32_t>() == std::vector<std::int32_t>{1, 2});
  CHECK(nested[1].get<std::int32_t>() == std::vector<std::int32_t>{3});
  const auto &w = f.tensor("w.f32");
  CHECK(w.shape() == std::vector<std::int64_t>{2, 3});
  const auto v = w.view();
  const float *p = v.data_as<float>();
  for (int i = 0; i < 6; ++i) CHECK(p[i] == static_cast<float>(i));
  CHECK(f.tensor("w.i32").shape() == std::vector<std::int64_t>{2, 1, 2});
  CHECK(f.tensor("w.f64").view().type == dms::dtype::f64);
  CHECK(f.tensor("w.q8_0").shape() == std::vector<std::int64_t>{2, 32});
  CHECK(f.tensor("w.q8_0").n_bytes == 68);
  fs::remove_all(dir);
}

TEST_CASE("gguf peer: control vectors as gguf-py reads them", "[.peer]") {
  const auto dir = scratch("cv");
  const auto python = peer_python(dir);
  const auto path = dir / "cv.gguf";
  dms::write_control_vector(path, "llama", {{2, {0.5f, -1.0f, 2.0f}}, {1, {1.0f, 0.0f, -0.25f}}});
  constexpr const char *check = R"PY(
import sys
import gguf
r = gguf.GGUFReader(sys.argv[1])
f = r.fields
print("arch", f["general.architecture"].contents())
print("hint", f["controlvector.model_hint"].contents())
print("layer_count", f["controlvector.layer_count"].types[0].name, f["controlvector.layer_count"].contents())
for t in r.tensors:
    print(t.name, t.tensor_type.name, t.shape.tolist(), [float(x) for x in t.data.tolist()])
)PY";
  CHECK(run_python(python, check, {path.string()}, dir) ==
        "arch controlvector\nhint llama\nlayer_count INT32 2\n"
        "direction.1 F32 [3] [1.0, 0.0, -0.25]\ndirection.2 F32 [3] [0.5, -1.0, 2.0]\n");
  fs::remove_all(dir);
}

TEST_CASE("gguf peer: Q/K permutation equals convert_hf_to_gguf's numpy code", "[.peer]") {
  const auto dir = scratch("permute");
  const auto python = peer_python(dir);
  constexpr const char *script = R"PY(
import sys
import numpy as np
# LlamaModel.permute from llama.cpp's convert_hf_to_gguf.py, on numpy arrays.
def permute(weights, n_head, n_head_kv):
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))
rows, cols, n_head, n_head_kv = (int(a) for a in sys.argv[1:5])
w = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
print(" ".join(str(int(x)) for x in permute(w, n_head, n_head if sys.argv[5] == "q" else n_head_kv).ravel()))
)PY";
  // SmolLM2's shapes: q_proj 576 x 576 with 9 heads, k_proj 192 x 576 with 3 KV heads.
  for (const auto &[rows, which, name] : {std::tuple<std::int64_t, const char *, const char *>{576, "q", "blk.0.attn_q.weight"},
                                         {192, "k", "model.layers.0.self_attn.k_proj.weight"}}) {
    INFO(name);
    const std::int64_t cols = 576, n_head = 9, n_head_kv = 3;
    std::vector<float> hf(static_cast<std::size_t>(rows * cols)), gg(hf.size()), back(hf.size());
    for (std::size_t i = 0; i < hf.size(); ++i) hf[i] = static_cast<float>(i);
    const auto heads = dms::llama_qk_permute_heads(name, n_head, n_head_kv);
    REQUIRE(heads.has_value());
    dms::permute_qk<float>(hf, gg, rows, cols, *heads);
    std::ostringstream ours;
    for (std::size_t i = 0; i < gg.size(); ++i) ours << (i ? " " : "") << static_cast<std::int64_t>(gg[i]);
    ours << "\n";
    const auto theirs = run_python(python, script,
                                   {std::to_string(rows), std::to_string(cols), std::to_string(n_head),
                                    std::to_string(n_head_kv), which}, dir);
    CHECK((ours.str() == theirs));
    dms::unpermute_qk<float>(gg, back, rows, cols, *heads);
    CHECK(back == hf);
  }
  fs::remove_all(dir);
}

TEST_CASE("gguf peer: the real model's metadata and tensor table equal gguf-py's", "[.peer][model]") {
  const auto dir = scratch("model-peer");
  const auto python = peer_python(dir);
  const auto path = model_path(dir);
  const dms::gguf_file f(path);
  const auto t0 = std::chrono::steady_clock::now();
  const auto theirs = run_python(python, py_dump, {path}, dir);
  const auto t1 = std::chrono::steady_clock::now();
  const auto ours = dms_dump(f);
  compare_dumps(ours, theirs);
  const auto n_kv = count_lines(theirs, "kv "), n_tensors = count_lines(theirs, "tensor ");
  CHECK(f.metadata().size() == n_kv);
  CHECK(f.tensors().size() == n_tensors);
  std::cout << "gguf peer: " << path << ": dms and gguf-py agree on " << n_kv << " metadata keys and " << n_tensors
            << " tensors (names, types, dims, offsets, CRC-32 of all " << f.file_size() << " bytes of data); "
            << "gguf-py took " << std::chrono::duration<double>(t1 - t0).count() << " s\n";
  fs::remove_all(dir);
}

// --- the real model -------------------------------------------------------------------------------

TEST_CASE("gguf model: SmolLM2-135M-Instruct opens and has the expected structure", "[.model]") {
  const auto dir = scratch("model");
  const auto path = model_path(dir);
  const auto t0 = std::chrono::steady_clock::now();
  const dms::gguf_file f(path);
  const auto t1 = std::chrono::steady_clock::now();

  CHECK(f.version() == 3);
  CHECK(f.architecture() == "llama");
  const auto n_layer = f.get<std::uint32_t>("llama.block_count");
  CHECK(n_layer == 30);
  CHECK(f.get<std::uint32_t>("llama.embedding_length") == 576);
  CHECK(f.get<std::uint32_t>("llama.attention.head_count") == 9);
  CHECK(f.get<std::uint32_t>("llama.attention.head_count_kv") == 3);
  CHECK(f.get_integer<int>("llama.feed_forward_length") == 1536);
  CHECK(f.get_array<std::string>("tokenizer.ggml.tokens").size() == 49152);
  CHECK(f.get_array<std::int32_t>("tokenizer.ggml.token_type").size() == 49152);
  CHECK_FALSE(f.get_array<std::string>("tokenizer.ggml.merges").empty());
  CHECK(f.get_string("tokenizer.ggml.model") == "gpt2");
  CHECK(f.invalid_utf8_keys().empty());

  // 9 tensors per block plus token_embd and output_norm (and output, unless tied to token_embd).
  const std::size_t expected = 2 + 9 * std::size_t{n_layer} + (f.find_tensor("output.weight") ? 1 : 0);
  CHECK(f.tensors().size() == expected);
  std::uint64_t data_bytes = 0;
  for (const auto &t : f.tensors()) {
    INFO(t.name);
    CHECK(t.file_offset >= f.data_offset());
    CHECK(t.file_offset + t.n_bytes <= f.file_size());
    CHECK(t.raw_bytes().data() == f.bytes().data() + t.file_offset);
    CHECK(dms::gguf_to_hf_name(t.name).has_value()); // every tensor is in the Llama table
    if (const auto l = dms::layer_index(t.name)) CHECK(*l < static_cast<std::int32_t>(n_layer));
    data_bytes += t.n_bytes;
  }
  CHECK(data_bytes <= f.file_size() - f.data_offset());

  const auto &embd = f.tensor("token_embd.weight");
  CHECK(embd.shape() == std::vector<std::int64_t>{49152, 576});
  CHECK(f.tensor("blk.0.attn_q.weight").shape() == std::vector<std::int64_t>{576, 576});
  const auto &k = f.tensor("blk.0.attn_k.weight");
  CHECK(k.shape() == std::vector<std::int64_t>{192, 576}); // 3 KV heads of 64
  CHECK(k.type == dms::ggml_type::q4_1);
  const auto norm = f.tensor("output_norm.weight").view();
  CHECK(norm.type == dms::dtype::f32);
  CHECK(norm.rank == 1);
  CHECK(norm.extents[0] == 576);
  std::cout << "gguf model: parsed " << f.metadata().size() << " keys and " << f.tensors().size()
            << " tensors of " << path << " (" << f.file_size() << " bytes) in "
            << std::chrono::duration<double, std::milli>(t1 - t0).count() << " ms\n";
  fs::remove_all(dir);
}
