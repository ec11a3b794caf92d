// dms/backend/cuda/dequant.cuh against the scalar reference dms::dequantize: bit-identical for
// every type, on the GPU when there is one and, through the kernel's own element function, on
// the host everywhere.
//
// Test data: random bytes for every quant, bit and scale, with the f16 scale fields replaced by
// random finite f16 values (normal and subnormal): a NaN scale would still match bit for bit on
// the host, but its payload through an f32 multiply is hardware-defined. F16 and BF16 tensors are
// fully random bits, NaNs and infinities included (a pure bit conversion on both sides).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "dms/backend/cuda/dequant.cuh"
#include "dms/backend/cuda/device.cuh"
#include "dms/formats/quant.hpp"
#include "gpu_guard.hpp"

namespace {

constexpr dms::ggml_type all_types[] = {
    dms::ggml_type::f32,  dms::ggml_type::f16,  dms::ggml_type::bf16, dms::ggml_type::q4_0, dms::ggml_type::q4_1,
    dms::ggml_type::q5_0, dms::ggml_type::q5_1, dms::ggml_type::q8_0, dms::ggml_type::q2_k, dms::ggml_type::q3_k,
    dms::ggml_type::q4_k, dms::ggml_type::q5_k, dms::ggml_type::q6_k};

//! Byte offsets of the f16 scale fields of a block type.
template <class Block> std::vector<std::size_t> f16_fields() {
  using namespace dms;
  if constexpr (std::is_same_v<Block, block_q4_0>) return {offsetof(block_q4_0, d)};
  else if constexpr (std::is_same_v<Block, block_q4_1>) return {offsetof(block_q4_1, d), offsetof(block_q4_1, m)};
  else if constexpr (std::is_same_v<Block, block_q5_0>) return {offsetof(block_q5_0, d)};
  else if constexpr (std::is_same_v<Block, block_q5_1>) return {offsetof(block_q5_1, d), offsetof(block_q5_1, m)};
  else if constexpr (std::is_same_v<Block, block_q8_0>) return {offsetof(block_q8_0, d)};
  else if constexpr (std::is_same_v<Block, block_q2_k>) return {offsetof(block_q2_k, d), offsetof(block_q2_k, dmin)};
  else if constexpr (std::is_same_v<Block, block_q3_k>) return {offsetof(block_q3_k, d)};
  else if constexpr (std::is_same_v<Block, block_q4_k>) return {offsetof(block_q4_k, d), offsetof(block_q4_k, dmin)};
  else if constexpr (std::is_same_v<Block, block_q5_k>) return {offsetof(block_q5_k, d), offsetof(block_q5_k, dmin)};
  else if constexpr (std::is_same_v<Block, block_q6_k>) return {offsetof(block_q6_k, d)};
  else return {};
}

//! Raw bytes of n_blocks blocks of `Block`, as described at the top of the file.
template <class Block> std::vector<std::byte> random_blocks(std::size_t n_blocks, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::byte> raw(n_blocks * sizeof(Block));
  for (auto &b : raw) b = static_cast<std::byte>(gen() & 0xFF);
  if constexpr (std::is_same_v<Block, float>) { // finite f32 values
    for (std::size_t i = 0; i < n_blocks; ++i) {
      const float x = static_cast<float>(static_cast<std::int32_t>(gen())) * 0x1p-20f;
      std::memcpy(raw.data() + 4 * i, &x, 4);
    }
  }
  for (std::size_t i = 0; i < n_blocks; ++i)
    for (std::size_t off : f16_fields<Block>()) {
      // Exponent field 0..29: subnormals and normals up to 2^14, never infinity or NaN.
      const auto bits = static_cast<std::uint16_t>((gen() & 0x83FFu) | ((gen() % 30u) << 10));
      std::memcpy(raw.data() + i * sizeof(Block) + off, &bits, 2);
    }
  return raw;
}

std::size_t bit_mismatches(const std::vector<float> &a, const std::vector<float> &b) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < a.size(); ++i) bad += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return bad;
}

} // namespace

TEST_CASE("the GPU dequantization's element functions give the reference's bits (run on the host)",
          "[cuda][dequant]") {
  // Runs everywhere: each output element is computed by the same DMS_HOST_DEVICE function the
  // kernel's threads call, here on the CPU.
  for (dms::ggml_type type : all_types) {
    if (type == dms::ggml_type::f32) continue; // a device-to-device copy, no kernel
    dms::visit_ggml_block(type, [&]<class Block>(std::type_identity<Block>) {
      constexpr std::size_t bs = dms::ggml_block_traits<Block>::block_size;
      const std::size_t n_blocks = 64;
      const auto raw = random_blocks<Block>(n_blocks, 7u + static_cast<std::uint32_t>(type));
      std::vector<float> want(n_blocks * bs), got(want.size());
      dms::dequantize(type, raw, want);
      const auto *bytes = reinterpret_cast<const std::uint8_t *>(raw.data());
      for (std::size_t e = 0; e < got.size(); ++e) got[e] = dms::cuda::detail::dequantize_item<Block>(bytes, e);
      INFO(dms::traits_of(type).name);
      CHECK(bit_mismatches(want, got) == 0);
    });
  }
}

TEST_CASE("dequantize on the GPU gives the reference's bits", "[cuda][dequant]") {
  DMS_REQUIRE_GPU();
  cudaStream_t stream = nullptr;
  DMS_CUDA_CHECK(cudaStreamCreate(&stream));
  for (dms::ggml_type type : all_types) {
    dms::visit_ggml_block(type, [&]<class Block>(std::type_identity<Block>) {
      constexpr std::size_t bs = dms::ggml_block_traits<Block>::block_size;
      // Enough blocks for a grid-stride loop (> 65535 * 256 elements for the 1-element types),
      // and an odd source offset: the kernel must not need aligned blocks.
      const std::size_t n_blocks = bs == 1 ? (std::size_t{1} << 24) + 3 : 3001;
      for (std::size_t misalign : {std::size_t{0}, std::size_t{1}}) {
        INFO(dms::traits_of(type).name << ", source offset " << misalign);
        const auto raw = random_blocks<Block>(n_blocks, 11u + static_cast<std::uint32_t>(type));
        std::vector<float> want(n_blocks * bs), got(want.size());
        dms::dequantize(type, raw, want);
        dms::cuda::device_buffer<std::byte> d_raw(raw.size() + misalign, stream);
        dms::cuda::device_buffer<float> d_out(want.size(), stream);
        d_raw.copy_from_host(raw, misalign);
        dms::cuda::dequantize(type, d_raw.span().subspan(misalign), d_out.span(), stream);
        d_out.copy_to_host(got);
        dms::cuda::synchronize(stream);
        CHECK(bit_mismatches(want, got) == 0);
      }
    });
  }
  DMS_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("dequantize on the GPU checks types and sizes on the host", "[cuda][dequant]") {
  // Runs without a GPU: the checks throw before any CUDA call, with the CPU's messages.
  using Catch::Contains;
  const std::byte *src = nullptr;
  float *dst = nullptr;
  CHECK_THROWS_WITH(dms::cuda::dequantize(dms::ggml_type::q8_1, {src, 36}, {dst, 32}, nullptr),
                    Contains("Q8_1 is not supported"));
  CHECK_THROWS_WITH(dms::cuda::dequantize(dms::ggml_type::q4_0, {src, 18}, {dst, 31}, nullptr),
                    Contains("31 elements are not a whole number of Q4_0 blocks"));
  CHECK_THROWS_WITH(dms::cuda::dequantize(dms::ggml_type::q4_k, {src, 143}, {dst, 256}, nullptr),
                    Contains("takes 144 bytes, got 143"));
  try {
    dms::cuda::dequantize(dms::ggml_type::q6_k, {src, 1}, {dst, 256}, nullptr,
                          dms::error_context{"model.gguf", 4096, "blk.0.ffn_down.weight"});
    FAIL("no exception");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::shape_mismatch);
    CHECK_THAT(e.what(), Contains("blk.0.ffn_down.weight"));
  }
  CHECK_NOTHROW(dms::cuda::dequantize(dms::ggml_type::q4_0, {src, 0}, {dst, 0}, nullptr));
}
