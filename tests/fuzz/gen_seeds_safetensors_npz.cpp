// Seed inputs for fuzz_safetensors and fuzz_npz, written with dms's own writers.
//
// make_seeds.cpp assembles its safetensors and npz seeds byte by byte, independently of the code
// under test; these complement them with what dms's writers produce: every dtype in canonical
// order, the insertion order (misaligned tensors), dtypes dms lists but does not read, metadata
// with escapes, zip64 archives, deflated entries, an archive comment, Fortran-ordered and
// big-endian .npy files, and bare .npy files. File names start with "dms_" so that both sets can
// share a directory.
//   gen_seeds_safetensors_npz <out-dir>   writes <out-dir>/fuzz_safetensors/ and <out-dir>/fuzz_npz/
// The committed copies live in tests/fuzz/seeds/ (scripts/fuzz adds that directory to the corpus);
// regenerate them with:
//   g++ -std=c++20 -Iinclude tests/fuzz/gen_seeds_safetensors_npz.cpp -lz -o /tmp/gen &&
//   /tmp/gen tests/fuzz/seeds
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dms/formats/npz.hpp"
#include "dms/formats/safetensors.hpp"

namespace fs = std::filesystem;

namespace {
void save(const fs::path &p, const std::vector<std::byte> &b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char *>(b.data()), static_cast<std::streamsize>(b.size()));
}
template <class T> std::span<const std::byte> bytes_of(const std::vector<T> &v) {
  return std::as_bytes(std::span<const T>(v));
}
std::vector<std::byte> raw_npy(const std::string &dict, std::size_t data_bytes) {
  std::string h = dict;
  h.append(64 - (10 + h.size() + 1) % 64, ' ');
  h += '\n';
  std::vector<std::byte> b;
  for (char c : std::string("\x93NUMPY\x01\x00", 8))
    b.push_back(static_cast<std::byte>(c));
  b.push_back(static_cast<std::byte>(h.size() & 0xff));
  b.push_back(static_cast<std::byte>(h.size() >> 8));
  for (char c : h)
    b.push_back(static_cast<std::byte>(c));
  for (std::size_t i = 0; i < data_bytes; ++i)
    b.push_back(static_cast<std::byte>(0x3c + i % 3));
  return b;
}

void safetensors_seeds(const fs::path &dir) {
  const std::vector<float> f32{1.5f, -2.0f, 0.25f, 8.0f, 0.0f, -0.0f};
  const std::vector<double> f64{1.0, -1e300};
  const std::vector<std::uint16_t> halves{0x3c00, 0xc000, 0x7c00, 0x7e01};
  const std::vector<std::int64_t> i64{-1, 1LL << 40};
  const std::vector<std::int32_t> i32{7, -7};
  const std::vector<std::int16_t> i16{300};
  const std::vector<std::uint8_t> small{1, 0, 255};

  dms::safetensors_writer all;
  all.set_metadata("format", "pt");
  all.set_metadata("escapes", "tab\t quote\" backslash\\ caf\xc3\xa9 \x01");
  all.add("f32", dms::dtype::f32, {2, 3}, bytes_of(f32));
  all.add("f64", dms::dtype::f64, {2}, bytes_of(f64));
  all.add("f16", dms::dtype::f16, {2, 2}, bytes_of(halves));
  all.add("bf16", dms::dtype::bf16, {4}, bytes_of(halves));
  all.add("i64", dms::dtype::i64, {2}, bytes_of(i64));
  all.add("i32", dms::dtype::i32, {1, 2}, bytes_of(i32));
  all.add("i16", dms::dtype::i16, {}, bytes_of(i16));
  all.add("i8", dms::dtype::i8, {3}, bytes_of(small));
  all.add("u8", dms::dtype::u8, {3, 1}, bytes_of(small));
  all.add("bool", dms::dtype::boolean, {3}, bytes_of(small));
  all.add("empty", dms::dtype::f32, {0, 7}, std::span<const std::byte>{});
  all.add_raw("fp8", "F8_E4M3", {3}, bytes_of(small));
  all.add_raw("u16", "U16", {4}, bytes_of(i32));
  const std::vector<std::uint8_t> packed{0x12, 0x34}; // four F4 elements
  all.add_raw("f4", "F4", {2, 2}, bytes_of(packed));
  all.add_raw("rank5", "U8", {1, 1, 1, 1, 3}, bytes_of(small));
  save(dir / "dms_all_dtypes.safetensors", all.serialize());
  save(dir / "dms_insertion_order.safetensors", all.serialize(dms::tensor_order::insertion));

  dms::safetensors_writer lora;
  const std::vector<float> a(2 * 4, 0.5f), b(3 * 2, -0.25f);
  lora.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", dms::dtype::f32, {2, 4},
           bytes_of(a));
  lora.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", dms::dtype::f32, {3, 2},
           bytes_of(b));
  save(dir / "dms_lora.safetensors", lora.serialize());

  dms::safetensors_writer empty;
  save(dir / "dms_empty.safetensors", empty.serialize());
  empty.set_metadata("total_size", "0");
  save(dir / "dms_metadata_only.safetensors", empty.serialize());
}

void npz_seeds(const fs::path &dir) {
  const std::vector<float> w_enc{0.5f, -1.0f, 2.0f, 0.0f, 1.0f, 3.0f};
  const std::vector<float> b_enc{0.1f, 0.2f, 0.3f};
  dms::npz_writer sae;
  sae.add("W_enc", w_enc, {2, 3});
  sae.add("W_dec", w_enc, {3, 2});
  sae.add("b_enc", b_enc, {3});
  sae.add("threshold", b_enc, {3});
  sae.add("scalar", std::vector<float>{4.0f}, {});
  save(dir / "dms_sae_stored.npz", sae.serialize());
  save(dir / "dms_sae_deflated.npz", sae.serialize({.compress = true}));
  save(dir / "dms_sae_zip64.npz", sae.serialize({.force_zip64 = true}));
  save(dir / "dms_sae_zip64_deflated.npz", sae.serialize({.compress = true, .force_zip64 = true}));

  auto commented = sae.serialize();
  const std::string comment = "PK\x05\x06 comment";
  commented[commented.size() - 2] = static_cast<std::byte>(comment.size());
  for (char c : comment)
    commented.push_back(static_cast<std::byte>(c));
  save(dir / "dms_comment.npz", commented);

  dms::npz_writer kinds;
  kinds.add_entry("f8.npy", raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16));
  kinds.add_entry("f2.npy", raw_npy("{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }", 8));
  kinds.add_entry("be.npy", raw_npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", 4));
  kinds.add_entry("fortran.npy", raw_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24));
  kinds.add_entry("i8.npy", raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", 8));
  kinds.add_entry("notes.txt", std::vector<std::byte>(5, std::byte{'x'}));
  save(dir / "dms_kinds.npz", kinds.serialize({.compress = true}));

  save(dir / "dms_bare.npy", dms::encode_npy(w_enc, std::vector<std::int64_t>{3, 2}));
  save(dir / "dms_fortran.npy", raw_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 1), }", 24));
  save(dir / "dms_empty.npz", dms::npz_writer().serialize());
}
} // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <out-dir>\n", argv[0]);
    return 2;
  }
  try {
    const fs::path out = argv[1];
    fs::create_directories(out / "fuzz_safetensors");
    fs::create_directories(out / "fuzz_npz");
    safetensors_seeds(out / "fuzz_safetensors");
    npz_seeds(out / "fuzz_npz");
  } catch (const std::exception &e) {
    std::fprintf(stderr, "gen_seeds_safetensors_npz: %s\n", e.what());
    return 1;
  }
  return 0;
}
