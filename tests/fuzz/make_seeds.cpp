// Writes the seed corpus of every fuzz target: small valid files of each format, each exercising a
// different part of its parser, plus a few truncated or corrupted ones near the interesting
// boundaries. libFuzzer mutates from these; starting from valid files reaches the deep code
// (tensor tables, nested arrays, zip directories) in seconds rather than hours.
//   dms_fuzz_seeds <out-dir>     writes <out-dir>/fuzz_gguf/, fuzz_safetensors/, fuzz_npz/
// GGUF seeds come from dms's own writer; safetensors and npz seeds are assembled byte by byte
// here, so that they do not depend on the code under test.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(DMS_SEEDS_WITH_ZLIB)
#include <zlib.h>
#endif

#include "dms/formats/gguf.hpp"
#include "dms/formats/gguf_writer.hpp"

namespace fs = std::filesystem;
using bytes = std::vector<std::byte>;

namespace {

void save(const fs::path &p, const bytes &b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char *>(b.data()), static_cast<std::streamsize>(b.size()));
}
bytes load(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  const std::vector<char> c{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  bytes b(c.size());
  if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
  return b;
}
template <class T>
  requires std::is_arithmetic_v<T>
void put(bytes &b, T v) {
  const auto *p = reinterpret_cast<const std::byte *>(&v);
  b.insert(b.end(), p, p + sizeof v);
}
void put_str(bytes &b, std::string_view s) {
  const auto *p = reinterpret_cast<const std::byte *>(s.data());
  b.insert(b.end(), p, p + s.size());
}
bytes prefix(const bytes &b, std::size_t n) { return bytes(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(std::min(n, b.size()))); }

// --- GGUF -----------------------------------------------------------------------------------------

void gguf_seeds(const fs::path &dir) {
  using dms::gguf_array;
  {
    dms::gguf_writer w; // header only
    w.write(dir / "empty.gguf");
  }
  {
    dms::gguf_writer w;
    w.set("general.architecture", "llama");
    w.set("general.name", "seed");
    w.set("llama.block_count", std::uint32_t{2});
    w.set("llama.embedding_length", std::uint32_t{8});
    w.set("llama.rope.freq_base", 10000.0f);
    w.set("t.u8", std::uint8_t{1});
    w.set("t.i8", std::int8_t{-1});
    w.set("t.u16", std::uint16_t{2});
    w.set("t.i16", std::int16_t{-2});
    w.set("t.i32", std::int32_t{-3});
    w.set("t.bool", true);
    w.set("t.u64", std::uint64_t{5});
    w.set("t.i64", std::int64_t{-5});
    w.set("t.f64", 0.5);
    w.set("tokenizer.ggml.tokens", gguf_array({"<s>", "</s>", "a", "\xc4\xa0the"}));
    w.set("tokenizer.ggml.scores", std::vector<float>{0, 0, -1, -2});
    w.set("tokenizer.ggml.token_type", std::vector<std::int32_t>{3, 3, 1, 1});
    w.set("t.bools", std::vector<bool>{true, false});
    w.set("t.nested", std::vector<gguf_array>{gguf_array(std::vector<std::uint16_t>{1, 2}),
                                              gguf_array(std::vector<std::uint16_t>{3})});
    w.set("t.empty", gguf_array::empty_of(dms::gguf_type::u64));
    std::vector<float> f(16);
    for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(i) / 4;
    w.add_tensor("token_embd.weight", {2, 8}, f);
    w.add_tensor("blk.0.attn_norm.weight", {8}, std::vector<dms::f16_bits>(8, dms::f16_bits{0x3c00}));
    w.add_tensor("blk.0.attn_q.weight", dms::ggml_type::q4_1, {1, 32}, bytes(20, std::byte{0x11}));
    w.add_tensor("blk.0.attn_k.weight", dms::ggml_type::q8_0, {1, 32}, bytes(34, std::byte{0x22}));
    w.add_tensor("blk.1.ffn_up.weight", {2, 2}, std::vector<dms::bf16_bits>(4, dms::bf16_bits{0x3f80}));
    w.add_tensor("output_norm.weight", {2, 1, 1, 2}, std::vector<std::int32_t>{1, 2, 3, 4});
    w.write(dir / "model_v3.gguf");
  }
  for (std::uint32_t align : {1u, 64u}) {
    dms::gguf_writer w(align);
    w.set("general.architecture", "test");
    w.add_tensor("a", {3}, std::vector<float>{1, 2, 3});
    w.add_tensor("b", {1}, std::vector<std::int8_t>{7});
    w.add_tensor("c", {2}, std::vector<double>{1, 2});
    w.write(dir / ("align" + std::to_string(align) + ".gguf"));
  }
  dms::write_control_vector(dir / "control_vector.gguf", "llama", {{1, {1, 2, 3, 4}}, {2, {-1, 0, 1, 0.5f}}});

  // Version 2: the same layout with the version field changed.
  const bytes v3 = load(dir / "model_v3.gguf");
  bytes v2 = v3;
  v2[4] = std::byte{2};
  save(dir / "model_v2.gguf", v2);
  // Truncations: in the header, in the metadata, in the tensor infos, in the data.
  const auto f = dms::gguf_file::parse(v3, "seed");
  const std::size_t cuts[] = {6, 20, 100, static_cast<std::size_t>(f.layout().header_end) - 5,
                              static_cast<std::size_t>(f.data_offset()) + 10, v3.size() - 1};
  for (std::size_t n : cuts) save(dir / ("truncated_" + std::to_string(n) + ".gguf"), prefix(v3, n));
  // A misaligned and an overlapping tensor: patch the offset field of the last tensor info.
  const auto &last = f.tensors().back();
  const std::size_t offset_field = static_cast<std::size_t>(f.layout().header_end) - 8;
  bytes misaligned = v3;
  const std::uint64_t odd = last.offset + 4, zero = 0;
  std::memcpy(misaligned.data() + offset_field, &odd, 8);
  save(dir / "misaligned.gguf", misaligned);
  bytes overlapping = v3;
  std::memcpy(overlapping.data() + offset_field, &zero, 8);
  save(dir / "overlapping.gguf", overlapping);
  // Version 1 and a bad magic.
  bytes v1 = v3;
  v1[4] = std::byte{1};
  save(dir / "version1.gguf", v1);
}

// --- safetensors ----------------------------------------------------------------------------------

bytes safetensors(std::string header, const bytes &data) {
  while ((8 + header.size()) % 8 != 0) header += ' ';
  bytes b;
  put(b, static_cast<std::uint64_t>(header.size()));
  put_str(b, header);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void safetensors_seeds(const fs::path &dir) {
  bytes data(22);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i);
  save(dir / "two.safetensors",
       safetensors(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                   R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}})",
                   data));
  save(dir / "empty.safetensors", safetensors("{}", {}));
  save(dir / "kinds.safetensors",
       safetensors(R"({"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"h":{"dtype":"F16","shape":[1,2],"data_offsets":[8,12]},)"
                   R"("z":{"dtype":"F32","shape":[0,3],"data_offsets":[12,12]},"u":{"dtype":"U8","shape":[4],"data_offsets":[12,16]},)"
                   R"("t":{"dtype":"BOOL","shape":[2],"data_offsets":[16,18]},"d":{"dtype":"F64","shape":[1],"data_offsets":[18,26]}})",
                   bytes(26, std::byte{1})));
  save(dir / "model.safetensors",
       safetensors(R"({"__metadata__":{"format":"pt","note":"\u00e9"},"model.layers.0.self_attn.q_proj.weight":)"
                   R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"model.norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                   bytes(24, std::byte{0x3f})));
  const bytes two = load(dir / "two.safetensors");
  save(dir / "truncated_header.safetensors", prefix(two, 40));
  save(dir / "truncated_data.safetensors", prefix(two, two.size() - 3));
}

// --- npz ------------------------------------------------------------------------------------------

std::uint32_t crc32_of(const bytes &b) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::byte x : b) {
    c ^= static_cast<std::uint32_t>(x);
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

//! A .npy (format 1.0) of `count` little-endian elements described by `descr`.
bytes npy(std::string_view descr, std::string_view shape, std::size_t data_bytes, bool fortran = false) {
  std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': " + (fortran ? "True" : "False") +
                       ", 'shape': " + std::string(shape) + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  bytes b;
  put_str(b, std::string_view("\x93NUMPY\x01\x00", 8));
  put(b, static_cast<std::uint16_t>(header.size()));
  put_str(b, header);
  for (std::size_t i = 0; i < data_bytes; ++i) b.push_back(static_cast<std::byte>(i * 37 + 1));
  return b;
}

struct zip_entry {
  std::string name;
  bytes data;
  bool deflate = false;
};

bytes zip(const std::vector<zip_entry> &entries) {
  bytes out, central;
  for (const auto &e : entries) {
    bytes stored = e.data;
    std::uint16_t method = 0;
#if defined(DMS_SEEDS_WITH_ZLIB)
    if (e.deflate) {
      z_stream z{};
      deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY); // raw deflate, as zip stores it
      stored.assign(deflateBound(&z, static_cast<uLong>(e.data.size())), std::byte{0});
      z.next_in = reinterpret_cast<Bytef *>(const_cast<std::byte *>(e.data.data()));
      z.avail_in = static_cast<uInt>(e.data.size());
      z.next_out = reinterpret_cast<Bytef *>(stored.data());
      z.avail_out = static_cast<uInt>(stored.size());
      deflate(&z, Z_FINISH);
      stored.resize(z.total_out);
      deflateEnd(&z);
      method = 8;
    }
#endif
    const auto offset = static_cast<std::uint32_t>(out.size());
    const std::uint32_t crc = crc32_of(e.data);
    put(out, std::uint32_t{0x04034b50});
    put(out, std::uint16_t{20});
    put(out, std::uint16_t{0});
    put(out, method);
    put(out, std::uint16_t{0});
    put(out, std::uint16_t{0x21});
    put(out, crc);
    put(out, static_cast<std::uint32_t>(stored.size()));
    put(out, static_cast<std::uint32_t>(e.data.size()));
    put(out, static_cast<std::uint16_t>(e.name.size()));
    put(out, std::uint16_t{0});
    put_str(out, e.name);
    out.insert(out.end(), stored.begin(), stored.end());

    put(central, std::uint32_t{0x02014b50});
    put(central, std::uint16_t{20});
    put(central, std::uint16_t{20});
    put(central, std::uint16_t{0});
    put(central, method);
    put(central, std::uint16_t{0});
    put(central, std::uint16_t{0x21});
    put(central, crc);
    put(central, static_cast<std::uint32_t>(stored.size()));
    put(central, static_cast<std::uint32_t>(e.data.size()));
    put(central, static_cast<std::uint16_t>(e.name.size()));
    put(central, std::uint16_t{0});
    put(central, std::uint16_t{0});
    put(central, std::uint16_t{0});
    put(central, std::uint16_t{0});
    put(central, std::uint32_t{0});
    put(central, offset);
    put_str(central, e.name);
  }
  const auto cd_offset = static_cast<std::uint32_t>(out.size());
  out.insert(out.end(), central.begin(), central.end());
  put(out, std::uint32_t{0x06054b50});
  put(out, std::uint16_t{0});
  put(out, std::uint16_t{0});
  put(out, static_cast<std::uint16_t>(entries.size()));
  put(out, static_cast<std::uint16_t>(entries.size()));
  put(out, static_cast<std::uint32_t>(central.size()));
  put(out, cd_offset);
  put(out, std::uint16_t{0});
  return out;
}

void npz_seeds(const fs::path &dir) {
  // The Gemma Scope SAE layout (params.npz), tiny: d_in 4, d_sae 3.
  const std::vector<zip_entry> sae = {
      {"W_enc.npy", npy("<f4", "(4, 3)", 48)},  {"W_dec.npy", npy("<f4", "(3, 4)", 48)},
      {"b_enc.npy", npy("<f4", "(3,)", 12)},    {"b_dec.npy", npy("<f4", "(4,)", 16)},
      {"threshold.npy", npy("<f4", "(3,)", 12)},
  };
  save(dir / "sae_stored.npz", zip(sae));
  std::vector<zip_entry> compressed = sae;
  for (auto &e : compressed) e.deflate = true;
  save(dir / "sae_deflated.npz", zip(compressed));
  save(dir / "kinds.npz", zip({{"f8.npy", npy("<f8", "(2,)", 16)},
                               {"f2.npy", npy("<f2", "(2, 2)", 8), true},
                               {"i4.npy", npy("<i4", "()", 4)},
                               {"empty.npy", npy("<f4", "(0, 5)", 0)},
                               {"fortran.npy", npy("<f4", "(2, 3)", 24, true)},
                               {"big_endian.npy", npy(">f4", "(1,)", 4)}}));
  save(dir / "empty.npz", zip({}));
  const bytes s = load(dir / "sae_stored.npz");
  save(dir / "truncated.npz", prefix(s, s.size() - 10));
  save(dir / "a.npy.npz", zip({{"a.npy", npy("<f4", "(3,)", 12)}}));
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <out-dir>\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  const std::map<std::string, void (*)(const fs::path &)> targets = {
      {"fuzz_gguf", gguf_seeds}, {"fuzz_safetensors", safetensors_seeds}, {"fuzz_npz", npz_seeds}};
  try {
    for (const auto &[name, make] : targets) {
      fs::remove_all(out / name);
      fs::create_directories(out / name);
      make(out / name);
      std::size_t n = 0;
      for ([[maybe_unused]] const auto &e : fs::directory_iterator(out / name)) ++n;
      std::printf("%s: %zu seeds in %s\n", name.c_str(), n, (out / name).c_str());
    }
  } catch (const std::exception &e) {
    std::fprintf(stderr, "dms_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
