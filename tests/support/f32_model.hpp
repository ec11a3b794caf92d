// tests/support/f32_model.hpp: the real model dequantized to F32, for peer checks of exact
// arithmetic. With F32 weights and an f32 KV cache, dms and llama.cpp compute the same f32 math and
// differ only in summation order; on the shipped Q4_1 file both round activations to 8 bits, and
// SmolLM2 is sensitive enough to that rounding that near-ties go either way (see
// tests/model/llama_smollm2_tests.cpp for both measurements).
#pragma once

#include <filesystem>
#include <vector>

#include "dms/backend/cpu/dequant.hpp"
#include "dms/formats/gguf.hpp"
#include "dms/formats/gguf_writer.hpp"

namespace dms::test {

//! Writes `src` (any GGUF) with every tensor dequantized to F32 into `dst`; returns dst.
inline std::filesystem::path write_f32_copy(const std::filesystem::path &src, const std::filesystem::path &dst) {
  dms::gguf_file f(src);
  dms::gguf_writer w;
  w.copy_metadata(f);
  w.set("general.file_type", std::uint32_t{0}); // LLAMA_FTYPE_ALL_F32
  for (const auto &t : f.tensors()) {
    std::vector<float> v(static_cast<std::size_t>(t.n_elements));
    dms::dequantize(t.type, t.raw_bytes(), v);
    w.add_tensor(t.name, t.shape(), v);
  }
  w.write(dst);
  return dst;
}

} // namespace dms::test
