// dms/backend/cuda/dequant.cuh: dequantization of ggml storage types to f32 on the GPU.
//
// A GGUF checkpoint copied to the device as raw bytes becomes f32 weights here, with exactly the
// bits of the scalar reference dms::dequantize (dms/formats/quant.hpp) for every type the CPU
// decodes: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. The
// reference's formulas are exact in f32 (every product of f16 scales and small integers is
// representable; the one subtraction or addition rounds once), and each formula below is the
// reference's, factor for factor, with __fmul_rn / __fadd_rn / __fsub_rn so nvcc cannot
// contract them (a fused multiply-add would give the same bits anyway, since the products are
// exact; the intrinsics make that not depend on the argument). f16 scales go through
// dms::to_f32, the reference's own conversion.
//
// The element functions are DMS_HOST_DEVICE so tests run them on the host too, against the
// reference, on machines without a GPU.
//
// One thread per output element: consecutive threads write consecutive floats (coalesced) and
// read the few bytes of their block (scale, quant byte, high bits) through L1, so there is no
// per-block shared-memory staging and the source needs no alignment at all, as on the CPU.
// Queued on the caller's stream; no allocation, no synchronization. Compile with nvcc.
//
// @code
//   // raw: a Q4_K tensor's bytes already in device memory, n elements
//   dms::cuda::device_buffer<float> w(n, stream);
//   dms::cuda::dequantize(dms::ggml_type::q4_k, raw, w.span(), stream);  // same checks as the CPU
// @endcode
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include <cuda_runtime.h>

#include "dms/backend/cuda/error.cuh"
#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/core/half.hpp"
#include "dms/formats/ggml_type.hpp"
#include "dms/formats/quant.hpp"

DMS_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

using u8 = std::uint8_t;

DMS_HOST_DEVICE inline float f16_at(const u8 *p) {
  return to_f32(f16_bits{static_cast<std::uint16_t>(p[0] | (p[1] << 8))}); // GGUF is little-endian
}
DMS_HOST_DEVICE inline std::uint32_t u32_at(const u8 *p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}
// Round-to-nearest arithmetic that nvcc never contracts into an FMA. On the host (where the tests
// run the element functions without a GPU) plain operators: the products are exact, so a
// contraction there cannot change a result either.
DMS_HOST_DEVICE inline float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
DMS_HOST_DEVICE inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return add(a, b);
#else
  return a + b;
#endif
}
DMS_HOST_DEVICE inline float sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return sub(a, b);
#else
  return a - b;
#endif
}

// Element i of one block at `b`: the reference's dequantize_block, one output at a time.

DMS_HOST_DEVICE inline float dequant_element(std::type_identity<float>, const u8 *b, unsigned) {
  return dms::detail::half_bit_cast<float>(u32_at(b)); // dequantize() copies F32 instead
}
DMS_HOST_DEVICE inline float dequant_element(std::type_identity<f16_bits>, const u8 *b, unsigned) { return f16_at(b); }
DMS_HOST_DEVICE inline float dequant_element(std::type_identity<bf16_bits>, const u8 *b, unsigned) {
  return to_f32(bf16_bits{static_cast<std::uint16_t>(b[0] | (b[1] << 8))});
}

DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q4_0>, const u8 *b, unsigned i) {
  const u8 q = b[offsetof(block_q4_0, qs) + (i & 15)];
  const int x = (i < 16 ? q & 0x0F : q >> 4) - 8;
  return mul(static_cast<float>(x), f16_at(b + offsetof(block_q4_0, d)));
}

DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q4_1>, const u8 *b, unsigned i) {
  const u8 q = b[offsetof(block_q4_1, qs) + (i & 15)];
  const int x = i < 16 ? q & 0x0F : q >> 4;
  return add(mul(static_cast<float>(x), f16_at(b + offsetof(block_q4_1, d))),
                   f16_at(b + offsetof(block_q4_1, m)));
}

// Q5: the 5th bit of element i (i < 32) is bit i of the little-endian qh word (the reference's
// xh_0 / xh_1 shifts pick exactly that bit for the low and high halves).
DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q5_0>, const u8 *b, unsigned i) {
  const u8 q = b[offsetof(block_q5_0, qs) + (i & 15)];
  const std::uint32_t qh = u32_at(b + offsetof(block_q5_0, qh));
  const int x = ((i < 16 ? q & 0x0F : q >> 4) | static_cast<int>(((qh >> i) & 1u) << 4)) - 16;
  return mul(static_cast<float>(x), f16_at(b + offsetof(block_q5_0, d)));
}

DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q5_1>, const u8 *b, unsigned i) {
  const u8 q = b[offsetof(block_q5_1, qs) + (i & 15)];
  const std::uint32_t qh = u32_at(b + offsetof(block_q5_1, qh));
  const int x = (i < 16 ? q & 0x0F : q >> 4) | static_cast<int>(((qh >> i) & 1u) << 4);
  return add(mul(static_cast<float>(x), f16_at(b + offsetof(block_q5_1, d))),
                   f16_at(b + offsetof(block_q5_1, m)));
}

DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q8_0>, const u8 *b, unsigned i) {
  const auto q = static_cast<std::int8_t>(b[offsetof(block_q8_0, qs) + i]);
  return mul(static_cast<float>(q), f16_at(b + offsetof(block_q8_0, d)));
}

// Q2_K and Q3_K: element i = 128 n + 32 j + 16 h + l (l < 16) uses scale 8 n + 2 j + h and bits
// 2 j, 2 j + 1 of qs[32 n + 16 h + l].
DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q2_k>, const u8 *b, unsigned i) {
  const unsigned n = i / 128, j = (i % 128) / 32, h = (i % 32) / 16, l = i % 16;
  const u8 sc = b[offsetof(block_q2_k, scales) + 8 * n + 2 * j + h];
  const int q = (b[offsetof(block_q2_k, qs) + 32 * n + 16 * h + l] >> (2 * j)) & 3;
  const float dl = mul(f16_at(b + offsetof(block_q2_k, d)), static_cast<float>(sc & 0xF));
  const float ml = mul(f16_at(b + offsetof(block_q2_k, dmin)), static_cast<float>(sc >> 4));
  return sub(mul(dl, static_cast<float>(q)), ml);
}

DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q3_k>, const u8 *b, unsigned i) {
  const unsigned n = i / 128, j = (i % 128) / 32, h = (i % 32) / 16, l = i % 32; // l includes 16 h
  const unsigned k = 8 * n + 2 * j + h;                                           // scale index
  const u8 *packed = b + offsetof(block_q3_k, scales);
  const int low4 = k < 8 ? (packed[k] & 0xF) : (packed[k - 8] >> 4);
  const int high2 = (packed[8 + k % 4] >> (2 * (k / 4))) & 3;
  const int s = low4 | (high2 << 4);
  const float dl = mul(f16_at(b + offsetof(block_q3_k, d)), static_cast<float>(s - 32));
  const int low = (b[offsetof(block_q3_k, qs) + 32 * n + l] >> (2 * j)) & 3;
  const unsigned hbit = 1u << (4 * n + j); // hmask bit k of hmask[l] belongs to element 32 k + l
  const bool high = (b[offsetof(block_q3_k, hmask) + l] & hbit) != 0;
  return mul(dl, static_cast<float>(low - (high ? 0 : 4)));
}

//! ggml's get_scale_min_k4 (dms::detail::scale_min_k4), on the device.
DMS_HOST_DEVICE inline void scale_min_k4(unsigned j, const u8 *q, unsigned &sc, unsigned &m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K and Q5_K: element i = 64 c + 32 h + l (l < 32) uses scale/min 2 c + h and the low (h = 0)
// or high (h = 1) nibble of qs[32 c + l]; Q5_K's 5th bit is bit 2 c + h of qh[l].
DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q4_k>, const u8 *b, unsigned i) {
  const unsigned c = i / 64, h = (i % 64) / 32, l = i % 32;
  unsigned sc, m;
  scale_min_k4(2 * c + h, b + offsetof(block_q4_k, scales), sc, m);
  const float d1 = mul(f16_at(b + offsetof(block_q4_k, d)), static_cast<float>(sc));
  const float m1 = mul(f16_at(b + offsetof(block_q4_k, dmin)), static_cast<float>(m));
  const u8 q = b[offsetof(block_q4_k, qs) + 32 * c + l];
  return sub(mul(d1, static_cast<float>(h == 0 ? q & 0xF : q >> 4)), m1);
}

DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q5_k>, const u8 *b, unsigned i) {
  const unsigned c = i / 64, h = (i % 64) / 32, l = i % 32;
  unsigned sc, m;
  scale_min_k4(2 * c + h, b + offsetof(block_q5_k, scales), sc, m);
  const float d1 = mul(f16_at(b + offsetof(block_q5_k, d)), static_cast<float>(sc));
  const float m1 = mul(f16_at(b + offsetof(block_q5_k, dmin)), static_cast<float>(m));
  const u8 q = b[offsetof(block_q5_k, qs) + 32 * c + l];
  const bool fifth = (b[offsetof(block_q5_k, qh) + l] >> (2 * c + h)) & 1u;
  const int x = (h == 0 ? q & 0xF : q >> 4) + (fifth ? 16 : 0);
  return sub(mul(d1, static_cast<float>(x)), m1);
}

// Q6_K: element i = 128 n + 32 k + l (l < 32): low 4 bits from ql[64 n + l + 32 (k & 1)] (low
// nibble for k < 2, high for k >= 2), high 2 bits from bits 2 k, 2 k + 1 of qh[32 n + l], scale
// scales[8 n + l / 16 + 2 k]; y = d * scale * (q - 32), in that order.
DMS_HOST_DEVICE inline float dequant_element(std::type_identity<block_q6_k>, const u8 *b, unsigned i) {
  const unsigned n = i / 128, k = (i % 128) / 32, l = i % 32;
  const u8 lo = b[offsetof(block_q6_k, ql) + 64 * n + l + 32 * (k & 1)];
  const u8 hi = b[offsetof(block_q6_k, qh) + 32 * n + l];
  const int q = ((k < 2 ? lo & 0xF : lo >> 4) | (((hi >> (2 * k)) & 3) << 4)) - 32;
  const auto sc = static_cast<std::int8_t>(b[offsetof(block_q6_k, scales) + 8 * n + l / 16 + 2 * k]);
  return mul(mul(f16_at(b + offsetof(block_q6_k, d)), static_cast<float>(sc)), static_cast<float>(q));
}

//! Output element e of a tensor of `Block`s: the work of one thread.
template <class Block> DMS_HOST_DEVICE inline float dequantize_item(const u8 *src, std::uint64_t e) {
  constexpr unsigned block_size = ggml_block_traits<Block>::block_size;
  return dequant_element(std::type_identity<Block>{}, src + (e / block_size) * sizeof(Block),
                         static_cast<unsigned>(e % block_size));
}

template <class Block>
__global__ void dequantize_kernel(const u8 *src, float *dst, std::uint64_t n_elements) {
  const std::uint64_t step = std::uint64_t{gridDim.x} * blockDim.x;
  for (std::uint64_t e = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; e < n_elements; e += step)
    dst[e] = dequantize_item<Block>(src, e);
}

} // namespace detail

//! Dequantizes `src`, the raw bytes (device memory, any alignment) of dst.size() elements of
//! `type`, into `dst` (device memory), queued on `stream`: the bits of dms::dequantize. Same
//! checks and messages as the CPU, on the host before anything is queued: errc::unsupported for
//! a type dms cannot decode, errc::shape_mismatch unless dst.size() is a whole number of blocks
//! and src.size() exactly their bytes; `where` is attached to either error.
inline void dequantize(ggml_type type, std::span<const std::byte> src, std::span<float> dst, cudaStream_t stream,
                       const error_context &where = {}) {
  dms::detail::check_dequantize(type, src.size(), dst.size(), where);
  if (dst.empty()) return;
  if (type == ggml_type::f32) {
    DMS_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.size(), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  // 256 threads per block, at most 65535 blocks then grid-stride: every current GPU is full, and
  // the launch is valid on every architecture.
  constexpr unsigned threads = 256;
  const std::uint64_t wanted = (dst.size() + threads - 1) / threads;
  const auto blocks = static_cast<unsigned>(wanted < 65535 ? wanted : 65535);
  const auto *bytes = reinterpret_cast<const std::uint8_t *>(src.data());
  visit_ggml_block(type, [&]<class Block>(std::type_identity<Block>) {
    if constexpr (!std::is_same_v<Block, float>) {
      detail::dequantize_kernel<Block><<<blocks, threads, 0, stream>>>(bytes, dst.data(), dst.size());
    }
  });
  DMS_CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
DMS_NAMESPACE_END
