// Fuzz target for the GGUF reader (dms/formats/gguf.hpp) and, on what it accepts, the writer.
//
// Any input must either parse or throw dms::error: anything else (a crash, an out-of-bounds read,
// UB, a leak, another exception type) is a finding. On a successful parse the target also checks
// the promises the reader makes to the rest of dms (every tensor's bytes lie inside the input,
// plain-typed tensors give views, lookups agree with iteration) and round-trips the file through
// gguf_writer: the rewritten file must parse to the same metadata and tensors.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "dms/formats/gguf.hpp"
#include "dms/formats/gguf_writer.hpp"

namespace {

// A broken invariant is a bug in dms, not in the input: abort so that libFuzzer records it.
#define DMS_FUZZ_CHECK(cond)                                                                       \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "fuzz_gguf: invariant failed: %s (line %d)\n", #cond, __LINE__);      \
      std::abort();                                                                                \
    }                                                                                              \
  } while (0)

//! The bytes gguf_writer::write would produce, assembled in memory (the writer itself only writes
//! files, atomically).
std::vector<std::byte> rewrite(const dms::gguf_file &f) {
  dms::gguf_writer w(static_cast<std::uint32_t>(f.alignment()));
  for (const auto &kv : f.metadata()) w.set(kv.key, kv.value);
  for (const auto &t : f.tensors()) w.add_tensor(t.name, t.type, t.shape(), t.raw_bytes());
  std::vector<std::byte> out = w.header_bytes();
  const auto pad = [&] {
    while (out.size() % f.alignment() != 0) out.push_back(std::byte{0});
  };
  pad();
  for (const auto &t : f.tensors()) {
    out.insert(out.end(), t.raw_bytes().begin(), t.raw_bytes().end());
    pad();
  }
  return out;
}

void check(const dms::gguf_file &f, std::span<const std::byte> input) {
  DMS_FUZZ_CHECK(f.data_offset() % f.alignment() == 0);
  DMS_FUZZ_CHECK(f.layout().header_end <= input.size());
  for (const auto &kv : f.metadata()) DMS_FUZZ_CHECK(f.find(kv.key) == &kv.value);
  for (const auto &t : f.tensors()) {
    DMS_FUZZ_CHECK(f.find_tensor(t.name) == &t);
    DMS_FUZZ_CHECK(t.raw_bytes().size() == t.n_bytes);
    if (t.n_bytes) {
      DMS_FUZZ_CHECK(t.raw_bytes().data() >= input.data());
      DMS_FUZZ_CHECK(t.raw_bytes().data() + t.n_bytes <= input.data() + input.size());
      DMS_FUZZ_CHECK(t.file_offset % f.alignment() == 0);
    }
    DMS_FUZZ_CHECK(t.shape().size() == t.n_dims);
    if (t.element_dtype()) {
      const auto v = t.view();
      DMS_FUZZ_CHECK(static_cast<std::uint64_t>(v.numel()) == t.n_elements);
      DMS_FUZZ_CHECK(v.size_bytes() == t.n_bytes);
    }
  }
  try {
    (void)dms::read_control_vector(f);
  } catch (const dms::error &) {
  }
}

void round_trip(const dms::gguf_file &f) {
  std::vector<std::byte> again;
  try {
    again = rewrite(f);
  } catch (const dms::error &e) {
    // The writer is stricter than the reader on purpose (it writes only what llama.cpp loads:
    // names of 1..63 bytes, 1..4 dims); anything else it refuses is a bug.
    DMS_FUZZ_CHECK(e.code() == dms::errc::invalid_argument);
    return;
  }
  const auto g = dms::gguf_file::parse(again, "rewritten.gguf");
  DMS_FUZZ_CHECK(g.alignment() == f.alignment());
  DMS_FUZZ_CHECK(g.metadata().size() == f.metadata().size());
  for (std::size_t i = 0; i < f.metadata().size(); ++i) {
    DMS_FUZZ_CHECK(g.metadata()[i].key == f.metadata()[i].key);
    DMS_FUZZ_CHECK(g.metadata()[i].value.type() == f.metadata()[i].value.type());
  }
  // Values compare by their bytes (operator== would call a NaN unequal to itself): the rewrite
  // of the rewrite must be the same file.
  DMS_FUZZ_CHECK(rewrite(g) == again);
  DMS_FUZZ_CHECK(g.tensors().size() == f.tensors().size());
  for (std::size_t i = 0; i < f.tensors().size(); ++i) {
    const auto &a = f.tensors()[i];
    const auto &b = g.tensors()[i];
    DMS_FUZZ_CHECK(a.name == b.name && a.type == b.type && a.ne == b.ne && a.n_bytes == b.n_bytes);
    DMS_FUZZ_CHECK(a.n_bytes == 0 || std::memcmp(a.raw_bytes().data(), b.raw_bytes().data(), a.n_bytes) == 0);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
  const auto input = std::as_bytes(std::span(data, size));
  try {
    const auto f = dms::gguf_file::parse(input, "fuzz.gguf");
    check(f, input);
    // The rewrite pads the header to the file's alignment, which may legally be as large as
    // 2^31: that is memory proportional to a number in the file, not a parser bug. Round-trip
    // only what a rewrite can hold in a fuzzer's memory budget.
    constexpr std::uint64_t max_rewrite_alignment = std::uint64_t{1} << 20;
    if (f.alignment() <= max_rewrite_alignment) round_trip(f);
  } catch (const dms::error &e) {
    // Every rejection must say where and what was expected.
    DMS_FUZZ_CHECK(e.where().file == "fuzz.gguf");
    DMS_FUZZ_CHECK(e.where().offset.has_value());
    DMS_FUZZ_CHECK(*e.where().offset <= size); // offsets point into the input
  }
  return 0;
}
