// dms_peer_quant: compares dms's dequantization and quantization with llama.cpp's `gguf` Python
// package, record by record, from the stream gguf_peer_export.py writes (format described there).
//
//   dms_peer_quant STREAM|-     reads the stream from a file or standard input
//
// For every `tensor` record, the raw bytes are dequantized by the scalar reference
// (dms::dequantize) and by dms::cpu::dequantize at every dispatch level this CPU supports; each
// result must equal gguf's f32 bit for bit. The one tolerated difference is a NaN's payload or
// quiet bit (gguf's numpy converts an f16 signalling NaN to a signalling f32 NaN, x86's VCVTPH2PS
// and dms make it quiet), which occurs only in the all-bit-patterns records and is counted
// separately. For every `quant` record, dms::quantize of the f32 input must give gguf's bytes.
// Per type, the output states tensors, elements, mismatching elements and the max |difference|.
//
// Exit status: 0 all equal, 1 a difference, 2 a malformed or truncated stream (the exporter died).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "dms/backend/cpu/dequant.hpp"
#include "dms/backend/cpu/dispatch.hpp"
#include "dms/formats/quant.hpp"

namespace {

struct stream_error {
  std::string what;
};

class reader {
public:
  explicit reader(std::FILE *f) : f_(f) {}
  std::string line() {
    std::string s;
    for (int c; (c = std::fgetc(f_)) != EOF;) {
      if (c == '\n') return s;
      s.push_back(static_cast<char>(c));
      if (s.size() > 4096) throw stream_error{"header line too long"};
    }
    throw stream_error{"stream ends without its 'end' line (did the exporter fail?)"};
  }
  template <class T> void read(std::vector<T> &v, std::size_t n) {
    v.resize(n);
    if (n != 0 && std::fread(v.data(), sizeof(T), n, f_) != n) throw stream_error{"stream ends inside a record"};
  }

private:
  std::FILE *f_;
};

struct compare_stats {
  std::size_t records = 0, elements = 0, mismatches = 0, nan_payload_only = 0;
  double max_abs_diff = 0;
};

// Compares got with want element by element; returns the index of the first real mismatch or n.
std::size_t compare(const float *got, const float *want, std::size_t n, compare_stats &st) {
  std::size_t first = n;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::bit_cast<std::uint32_t>(got[i]) == std::bit_cast<std::uint32_t>(want[i])) continue;
    if (std::isnan(got[i]) && std::isnan(want[i])) {
      ++st.nan_payload_only;
      continue;
    }
    ++st.mismatches;
    if (first == n) first = i;
    const double d = std::fabs(double(got[i]) - double(want[i]));
    st.max_abs_diff = std::max(st.max_abs_diff, std::isnan(d) ? INFINITY : d);
  }
  return first;
}

std::string hex_bytes(const std::uint8_t *p, std::size_t n) {
  std::string s;
  char buf[4];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", p[i]);
    s += buf;
  }
  return s;
}

int run(std::FILE *in) {
  reader r(in);
  if (r.line() != "DMSPEER 1") throw stream_error{"not a DMSPEER 1 stream"};

  std::vector<dms::cpu::isa_level> levels;
  for (auto l : dms::cpu::all_isa_levels)
    if (dms::cpu::cpu_supports(l)) levels.push_back(l);
  // Paths: "reference" and one per level.
  std::vector<std::string> paths = {"reference"};
  for (auto l : levels) paths.push_back("cpu/" + std::string(dms::cpu::name_of(l)));

  std::map<std::string, std::map<std::string, compare_stats>> deq_stats; // type -> path -> stats
  std::map<std::string, std::size_t> quant_records, quant_blocks, quant_bad_blocks;
  std::size_t records = 0;
  bool ok = true;
  std::vector<std::uint8_t> raw;
  std::vector<float> want, got, input;

  for (;;) {
    std::istringstream hdr(r.line());
    std::string kind, name;
    std::uint32_t type_id = 0;
    std::size_t n = 0, n_bytes = 0;
    hdr >> kind;
    if (kind == "end") {
      std::size_t count = 0;
      hdr >> count;
      if (count != records) throw stream_error{"end line counts " + std::to_string(count) + " records, read " +
                                               std::to_string(records)};
      break;
    }
    if (!(hdr >> name >> type_id >> n >> n_bytes) || (kind != "tensor" && kind != "quant"))
      throw stream_error{"bad record header"};
    ++records;
    const auto traits = dms::traits_of(type_id);
    if (!traits) throw stream_error{"unknown type id " + std::to_string(type_id)};
    const auto type = static_cast<dms::ggml_type>(type_id);
    const std::string tname(traits->name);

    if (kind == "tensor") {
      r.read(raw, n_bytes);
      r.read(want, n);
      got.assign(n, 0.0f);
      const auto src = std::as_bytes(std::span(raw));
      for (const std::string &path : paths) {
        std::fill(got.begin(), got.end(), -12345.0f);
        if (path == "reference") {
          dms::dequantize(type, src, got, {"", std::nullopt, name});
        } else {
          dms::cpu::scoped_isa_level force(*dms::cpu::parse_isa_level(path.substr(4)));
          dms::cpu::dequantize(type, src, got, {"", std::nullopt, name});
        }
        auto &st = deq_stats[tname][path];
        ++st.records;
        st.elements += n;
        const std::size_t before = st.mismatches;
        const std::size_t i = compare(got.data(), want.data(), n, st);
        if (st.mismatches != before) {
          ok = false;
          std::printf("MISMATCH %s (%s) via %s: %zu elements differ; first at %zu: dms %.9g (0x%08x), gguf %.9g "
                      "(0x%08x)\n",
                      name.c_str(), tname.c_str(), path.c_str(), st.mismatches - before, i, double(got[i]),
                      std::bit_cast<std::uint32_t>(got[i]), double(want[i]), std::bit_cast<std::uint32_t>(want[i]));
        }
      }
    } else {
      r.read(input, n);
      r.read(raw, n_bytes);
      std::vector<std::byte> mine(n_bytes);
      dms::quantize(type, input, mine, {"", std::nullopt, name});
      const std::size_t ts = traits->type_size, bs = traits->block_size;
      const std::size_t n_blocks = n / bs;
      quant_records[tname] += 1;
      quant_blocks[tname] += n_blocks;
      std::size_t bad = 0;
      for (std::size_t b = 0; b < n_blocks; ++b) {
        const auto *m = reinterpret_cast<const std::uint8_t *>(mine.data()) + b * ts;
        if (std::memcmp(m, raw.data() + b * ts, ts) == 0) continue;
        if (bad++ == 0) {
          std::printf("MISMATCH quantize %s (%s): block %zu: dms %s, gguf %s; input:", name.c_str(), tname.c_str(), b,
                      hex_bytes(m, ts).c_str(), hex_bytes(raw.data() + b * ts, ts).c_str());
          for (std::size_t j = 0; j < bs; ++j) std::printf(" %.9g", double(input[b * bs + j]));
          std::printf("\n");
        }
      }
      if (bad != 0) {
        ok = false;
        std::printf("MISMATCH quantize %s: %zu of %zu blocks differ\n", name.c_str(), bad, n_blocks);
      }
      quant_bad_blocks[tname] += bad;
    }
  }

  std::printf("\ndequantization vs gguf.quants.dequantize (bit-exact required; NaN payload differences "
              "listed, not failures):\n");
  std::printf("  %-6s %-14s %8s %12s %10s %14s %10s\n", "type", "path", "tensors", "elements", "mismatch",
              "max |diff|", "NaN-only");
  for (const auto &[tname, by_path] : deq_stats)
    for (const auto &[path, st] : by_path)
      std::printf("  %-6s %-14s %8zu %12zu %10zu %14.9g %10zu\n", tname.c_str(), path.c_str(), st.records,
                  st.elements, st.mismatches, st.max_abs_diff, st.nan_payload_only);
  if (!quant_records.empty()) {
    std::printf("\nquantization vs gguf.quants.quantize (bit-exact required):\n");
    std::printf("  %-6s %8s %10s %12s\n", "type", "records", "blocks", "blocks diff");
    for (const auto &[tname, count] : quant_records)
      std::printf("  %-6s %8zu %10zu %12zu\n", tname.c_str(), count, quant_blocks[tname], quant_bad_blocks[tname]);
  }
  for (auto l : dms::cpu::all_isa_levels)
    if (!dms::cpu::cpu_supports(l))
      std::printf("\nnote: ISA level %s is not available on this CPU; its kernels were not run\n",
                  std::string(dms::cpu::name_of(l)).c_str());
  std::printf("\n%s: %zu records\n", ok ? "PASS" : "FAIL", records);
  return ok ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s STREAM|-\n", argv[0]);
    return 2;
  }
  std::FILE *in = stdin;
  std::unique_ptr<std::FILE, int (*)(std::FILE *)> owned(nullptr, &std::fclose);
  if (std::strcmp(argv[1], "-") != 0) {
    owned.reset(std::fopen(argv[1], "rb"));
    if (!owned) {
      std::perror(argv[1]);
      return 2;
    }
    in = owned.get();
  }
  try {
    return run(in);
  } catch (const stream_error &e) {
    std::printf("FAIL: malformed peer stream: %s\n", e.what.c_str());
    return 2;
  } catch (const dms::error &e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
