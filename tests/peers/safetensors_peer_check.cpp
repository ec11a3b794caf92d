// dms's half of the safetensors / npy / npz peer test (driven by safetensors_peer_check.py).
//   dms_safetensors_peer write DIR   writes dms files into DIR for Python to read
//   dms_safetensors_peer check DIR   reads the files Python wrote into DIR and compares them with
//                                    the values both sides compute from the same formula
// Exit status 0 when everything matched, 1 otherwise (each mismatch is printed).
//
// Values: element i of a tensor with seed s is k / 16 with k = (37 i + 11 s) % 255 - 127, exact in
// every floating dtype (bf16 included); integer dtypes store k scaled into their range. The table
// of tensors below is repeated in safetensors_peer_check.py: keep the two in sync.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "dms/formats/hf_checkpoint.hpp"
#include "dms/formats/npy.hpp"
#include "dms/formats/npz.hpp"
#include "dms/formats/safetensors.hpp"

namespace fs = std::filesystem;

namespace {
struct spec {
  const char *name;
  dms::dtype type;
  std::vector<std::int64_t> shape;
  int seed;
};
const std::vector<spec> &tensors() {
  static const std::vector<spec> t = {
      {"model.embed_tokens.weight", dms::dtype::f32, {7, 5}, 1},
      {"model.layers.0.self_attn.q_proj.weight", dms::dtype::bf16, {4, 6}, 2},
      {"model.layers.0.mlp.down_proj.weight", dms::dtype::f16, {3, 5}, 3},
      {"double", dms::dtype::f64, {5}, 4},
      {"ids", dms::dtype::i64, {2, 3}, 5},
      {"i32", dms::dtype::i32, {4}, 6},
      {"i16", dms::dtype::i16, {3, 1}, 7},
      {"i8", dms::dtype::i8, {9}, 8},
      {"u8", dms::dtype::u8, {2, 2, 2}, 9},
      {"mask", dms::dtype::boolean, {5}, 10},
      {"scalar", dms::dtype::f32, {}, 11},
      {"empty", dms::dtype::f32, {0, 3}, 12},
  };
  return t;
}
const char *note = "dms peer \xc3\xa9 \"quoted\"";

std::int64_t numel(const std::vector<std::int64_t> &shape) {
  std::int64_t n = 1;
  for (auto e : shape)
    n *= e;
  return n;
}
int k_of(std::int64_t i, int seed) { return static_cast<int>((37 * i + 11 * seed) % 255) - 127; }
float value(std::int64_t i, int seed) { return static_cast<float>(k_of(i, seed)) / 16.0f; }

//! The little-endian bytes of tensor `s`.
std::vector<std::byte> bytes_of(const spec &s) {
  std::vector<std::byte> out;
  auto put = [&](const auto v) {
    const auto *p = reinterpret_cast<const std::byte *>(&v);
    out.insert(out.end(), p, p + sizeof v);
  };
  for (std::int64_t i = 0; i < numel(s.shape); ++i) {
    const int k = k_of(i, s.seed);
    switch (s.type) {
    case dms::dtype::f32: put(value(i, s.seed)); break;
    case dms::dtype::f64: put(static_cast<double>(value(i, s.seed))); break;
    case dms::dtype::f16: put(dms::to_f16(value(i, s.seed))); break;
    case dms::dtype::bf16: put(dms::to_bf16(value(i, s.seed))); break;
    case dms::dtype::i64: put(static_cast<std::int64_t>(k) * (std::int64_t{1} << 33)); break;
    case dms::dtype::i32: put(static_cast<std::int32_t>(k * 65536)); break;
    case dms::dtype::i16: put(static_cast<std::int16_t>(k * 64)); break;
    case dms::dtype::i8: put(static_cast<std::int8_t>(k)); break;
    case dms::dtype::u8: put(static_cast<std::uint8_t>((37 * i + s.seed) % 256)); break;
    case dms::dtype::boolean: put(static_cast<std::uint8_t>((7 * i + s.seed) % 3 == 0)); break;
    }
  }
  return out;
}
std::vector<float> floats(std::int64_t n, int seed) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = value(i, seed);
  return v;
}

int failures = 0;
void expect(bool ok, const std::string &what) {
  if (!ok) {
    ++failures;
    std::printf("MISMATCH: %s\n", what.c_str());
  }
}
std::vector<std::byte> slurp(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::vector<std::byte> b(c.size());
  if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
  return b;
}

void write(const fs::path &dir) {
  std::vector<std::vector<std::byte>> keep;
  keep.reserve(tensors().size());
  dms::safetensors_writer all, np;
  all.set_metadata("format", "pt");
  all.set_metadata("note", note);
  np.set_metadata("format", "pt"); // one key: the Rust crate's hash-map order cannot differ
  dms::hf_checkpoint_writer sharded({.max_shard_bytes = 100});
  for (const auto &s : tensors()) {
    keep.push_back(bytes_of(s));
    all.add(s.name, s.type, s.shape, keep.back());
    if (s.type != dms::dtype::bf16) np.add(s.name, s.type, s.shape, keep.back()); // numpy has no bf16
    sharded.add(s.name, s.type, s.shape, keep.back());
  }
  all.write(dir / "dms_all.safetensors");
  np.write(dir / "dms_np.safetensors");
  sharded.set_metadata("format", "pt");
  sharded.write(dir / "dms_sharded");

  const auto a = floats(35, 1);
  dms::write_npy(dir / "dms_f32.npy", a, std::vector<std::int64_t>{7, 5});
  const auto s = floats(1, 11);
  dms::write_npy(dir / "dms_scalar.npy", s, std::vector<std::int64_t>{});
  dms::npz_writer z;
  z.add("W_enc", a, {5, 7});
  z.add("b_enc", floats(7, 2), {7});
  z.add("threshold", floats(0, 3), {0});
  z.write(dir / "dms_stored.npz");
  z.write(dir / "dms_deflated.npz", {.compress = true});
  z.write(dir / "dms_zip64.npz", {.compress = true, .force_zip64 = true});
}

void check_safetensors(const fs::path &file, bool with_bf16,
                       const std::vector<std::pair<std::string, std::string>> &meta) {
  const dms::safetensors_file f(file.string());
  std::size_t expected = 0;
  for (const auto &s : tensors()) {
    if (s.type == dms::dtype::bf16 && !with_bf16) continue;
    ++expected;
    const auto *t = f.find(s.name);
    if (!t) {
      expect(false, file.filename().string() + ": missing tensor " + s.name);
      continue;
    }
    expect(t->type == s.type, file.filename().string() + ": dtype of " + s.name + " is " + t->dtype_name);
    expect(t->shape == s.shape, file.filename().string() + ": shape of " + s.name);
    const auto want = bytes_of(s);
    const auto got = f.raw(*t);
    expect(got.size() == want.size() &&
               (want.empty() || std::memcmp(got.data(), want.data(), want.size()) == 0),
           file.filename().string() + ": bytes of " + s.name);
    if (dms::is_floating(s.type))
      expect(f.to_f32(*t) == floats(numel(s.shape), s.seed),
             file.filename().string() + ": to_f32 of " + s.name);
  }
  expect(f.size() == expected, file.filename().string() + ": tensor count " + std::to_string(f.size()));
  expect(f.metadata().size() == meta.size(), file.filename().string() + ": metadata size");
  for (const auto &[k, v] : meta)
    expect(f.metadata(k) == v, file.filename().string() + ": metadata " + k);
}

void check_npy(const dms::npy_array &a, const std::vector<std::int64_t> &shape, int seed,
               const std::string &what) {
  expect(a.shape == shape, what + ": shape");
  expect(a.data == floats(numel(shape), seed), what + ": values");
}

void check(const fs::path &dir) {
  // safetensors.numpy.save_file, and safetensors.serialize_file with a bf16 tensor.
  check_safetensors(dir / "py_np.safetensors", false, {{"format", "pt"}, {"source", "python"}});
  check_safetensors(dir / "py_all.safetensors", true, {{"format", "pt"}, {"note", note}});
  // The Rust crate and dms must produce the same bytes for the same tensors and metadata.
  const auto ours = slurp(dir / "dms_np.safetensors");
  const auto theirs = slurp(dir / "py_np_same.safetensors");
  expect(!ours.empty() && ours == theirs, "dms_np.safetensors and the Rust crate's serialization differ");

  check_npy(dms::read_npy(dir / "py_f32.npy"), {7, 5}, 1, "py_f32.npy");
  check_npy(dms::read_npy(dir / "py_f64.npy"), {5}, 4, "py_f64.npy");
  check_npy(dms::read_npy(dir / "py_f16.npy"), {3, 5}, 3, "py_f16.npy");
  check_npy(dms::read_npy(dir / "py_fortran.npy"), {3, 4}, 13, "py_fortran.npy");
  check_npy(dms::read_npy(dir / "py_big_endian.npy"), {2, 2}, 14, "py_big_endian.npy");
  check_npy(dms::read_npy(dir / "py_scalar.npy"), {}, 11, "py_scalar.npy");
  const auto a = floats(35, 1);
  expect(dms::encode_npy(a, std::vector<std::int64_t>{7, 5}) == slurp(dir / "py_f32.npy"),
         "dms encode_npy and np.save bytes differ");
  for (const char *name : {"py_savez.npz", "py_savez_compressed.npz"}) {
    const dms::npz_file z((dir / name).string());
    expect(z.names() == std::vector<std::string>{"W_enc", "b_enc", "threshold"},
           std::string(name) + ": names");
    check_npy(z.read("W_enc"), {5, 7}, 1, std::string(name) + "[W_enc]");
    check_npy(z.read("b_enc"), {7}, 2, std::string(name) + "[b_enc]");
    check_npy(z.read("threshold"), {0}, 3, std::string(name) + "[threshold]");
  }
}
} // namespace

int main(int argc, char **argv) {
  if (argc != 3 || (std::string(argv[1]) != "write" && std::string(argv[1]) != "check")) {
    std::fprintf(stderr, "usage: %s write|check DIR\n", argv[0]);
    return 2;
  }
  try {
    if (std::string(argv[1]) == "write") {
      write(argv[2]);
      return 0;
    }
    check(argv[2]);
  } catch (const std::exception &e) {
    std::printf("ERROR: %s\n", e.what());
    return 1;
  }
  std::printf("dms read the Python-written files: %s\n", failures ? "MISMATCHES" : "all equal");
  return failures ? 1 : 0;
}
