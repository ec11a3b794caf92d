// libFuzzer target: dms::safetensors_file over arbitrary bytes.
//
// Beyond "no crash, no UB, no leak", it checks one property: whatever the reader accepts, the
// writer can write back (in file order) and the reader accepts again with the same names,
// dtypes, shapes, bytes and metadata. Only dms::error is an expected outcome of parsing; any
// other exception, or a failed round trip, aborts and is reported as a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>

#include "dms/formats/safetensors.hpp"

namespace {
void check(bool ok) {
  if (!ok) std::abort();
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte *>(data), size);
  std::optional<dms::safetensors_file> file;
  try {
    file.emplace(bytes, "fuzz.safetensors");
  } catch (const dms::error &) {
    return 0;
  }
  const dms::safetensors_file &f = *file;
  unsigned sum = 0;
  for (const auto &t : f.tensors()) {
    const auto raw = f.raw(t);
    check(raw.size() == t.size_bytes() && t.file_offset + raw.size() <= size);
    if (!raw.empty()) sum += static_cast<unsigned>(raw.front()) + static_cast<unsigned>(raw.back());
    try {
      const auto v = f.view(t);
      check(v.size_bytes() == raw.size());
    } catch (const dms::error &) {
    }
    // Bounded so that a valid file with a large tensor does not dominate the run time.
    if (t.type && dms::is_floating(*t.type) && t.numel() <= (1u << 16)) {
      const auto values = f.to_f32(t);
      check(values.size() == t.numel());
    }
  }
  (void)sum;

  dms::safetensors_writer w;
  for (const auto &[k, v] : f.metadata())
    w.set_metadata(k, v);
  for (const auto &t : f.tensors())
    w.add_raw(t.name, t.dtype_name, t.shape, f.raw(t));
  const auto out = w.serialize(dms::tensor_order::insertion);
  const dms::safetensors_file g(out, "roundtrip.safetensors");
  check(g.size() == f.size() && g.metadata() == f.metadata());
  for (std::size_t i = 0; i < f.size(); ++i) {
    const auto &a = f.tensors()[i];
    const auto &b = g.tensors()[i];
    check(a.name == b.name && a.dtype_name == b.dtype_name && a.shape == b.shape);
    const auto ra = f.raw(a), rb = g.raw(b);
    check(ra.size() == rb.size() && (ra.empty() || std::memcmp(ra.data(), rb.data(), ra.size()) == 0));
  }
  return 0;
}
