// dms/backend/cpu/matmul.hpp: weight matrix times activations, the bulk of a CPU forward pass.
//
// A Llama decode step is a chain of mat-vecs whose time goes into streaming the weights (SmolLM2:
// ~100 MB of Q4_1/Q8_0 per token), so the weights are never converted to f32 in memory: as in
// llama.cpp, the activations are quantized once per call to 8-bit blocks shaped like the weight's
// blocks and each weight block meets them in an integer dot product (detail/vec_dot_blocks.hpp,
// detail/vec_dot_avx2.hpp). Paths, by weight type:
//   Q4_0, Q8_0 (x as Q8_0), Q4_1 (x as Q8_1), Q4_K, Q6_K (x as Q8_K)   fused integer kernels
//   F32                                                                 f32 dots straight from W
//   F16, BF16 and every other dequantizable type                        a tile of rows dequantized
//                                                                        (SIMD) into the workspace,
//                                                                        then f32 dots
// Up to 63 tokens run these kernels over tiles of 4 tokens: a weight block is unpacked once per
// tile and stays in L1 while a chunk of rows meets every token tile. From 64 tokens on (prefill;
// AVX2 level) every type takes the panel path instead: 16 rows at a time are dequantized into
// the workspace, transposed, and multiplied by 6 tokens at a time with f32 outer products (see
// panel_min_tokens for the measured crossover; it also beat dequantize + OpenBLAS sgemm).
//
// Accuracy. The fused paths round each activation to 8 bits: element c of block b is off by at
// most amax_b / 254 (amax_b the largest |x| in its block of 32, or of 256 for the K-quants), so
// |y - exact| <= sum_b (sum_{c in b} |W[r][c]|) * amax_b / 254, plus f32 rounding. llama.cpp
// makes the same trade. The dense and panel paths are f32 dot products (error <= ~cols * eps *
// sum |W x|). So one token's result depends on whether its call had fewer than 64 tokens.
// Interpretability work that compares activations with an f32 reference (transformers on the
// dequantized weights) can ask a workspace for matmul_precision::exact: every type then takes
// the f32 paths (dequantized tiles or panels), at a cost in decode speed.
//
// Threads and determinism. Output rows are split over `pool` in chunks whose boundaries depend
// only on the shapes; every y element is computed by one thread with one fixed sequence of
// operations (token tiles are fixed too, and within a path a token's sum does not depend on its
// tile), so the result is bit-identical for any pool size, and below 64 tokens for any grouping
// of tokens into calls. The kernel level (dispatch.hpp) is read once per call: scalar/SSE2
// baseline, or AVX2+FMA+F16C (also used at the AVX-512 level: the weight stream, not the vector
// width, bounds a mat-vec).
//
// @code
//   dms::cpu::weight_matrix wq{info.type, data, /*rows=*/576, /*cols=*/576};
//   dms::cpu::matmul_workspace ws;                    // one per thread that calls matmul
//   dms::cpu::matmul(wq, x, 576, n_tokens, q, 576, ws, &pool);   // q[t][r] = <W[r], x[t]>
// @endcode
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dms/backend/cpu/dequant.hpp"
#include "dms/backend/cpu/detail/vec_dot_avx2.hpp"
#include "dms/backend/cpu/detail/vec_dot_blocks.hpp"
#include "dms/backend/cpu/dispatch.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/formats/ggml_type.hpp"
#include "dms/formats/quant.hpp"

DMS_NAMESPACE_BEGIN
namespace cpu {

//! One 2-D weight as stored in a GGUF or safetensors file: `rows` output features, each a row of
//! `cols` input features in `type` blocks (row stride = ggml row size of (type, cols) bytes).
//! Non-owning; `data` needs no alignment.
struct weight_matrix {
  ggml_type type;        //!< storage type of every element
  const std::byte *data; //!< rows * row_bytes, row r at data + r * row_bytes
  std::int64_t rows;     //!< output features (GGUF ne[1])
  std::int64_t cols;     //!< input features (GGUF ne[0]); a whole number of blocks
};

//! How activations meet quantized weights: `fast` rounds activations to 8-bit blocks for integer
//! dot products (as llama.cpp); `exact` multiplies dequantized f32 weights by f32 activations.
enum class matmul_precision : std::uint8_t { fast, exact };

//! Reusable scratch (quantized activations, dequantized tiles); grows to the largest call, then
//! never allocates. Not thread-safe: one workspace per thread that calls matmul (the pool's
//! workers share the caller's, each using its own slot).
class matmul_workspace {
public:
  matmul_workspace() = default;
  explicit matmul_workspace(matmul_precision p) noexcept : precision_(p) {}

  //! The precision of the calls that use this workspace (see matmul_precision).
  matmul_precision precision() const noexcept { return precision_; }
  void set_precision(matmul_precision p) noexcept { precision_ = p; }

  //! Bytes currently held (for diagnostics and tests of the no-allocation guarantee).
  std::size_t capacity_bytes() const noexcept { return act_.capacity() + tiles_.capacity() * sizeof(float); }

  //! (internal) At least `n` bytes for quantized activations.
  std::byte *activations(std::size_t n) {
    if (act_.size() < n) act_.resize(n);
    return act_.data();
  }
  //! (internal) Prepares `n_slots` tiles of `floats` each; tiles are claimed by running chunks.
  void reserve_tiles(std::size_t n_slots, std::size_t floats) {
    if (!busy_) busy_ = std::make_unique<std::atomic<std::uint64_t>>(0);
    n_slots = std::min<std::size_t>(n_slots, 64);
    if (n_slots > n_slots_ || floats > tile_floats_) {
      n_slots_ = std::max(n_slots, n_slots_);
      tile_floats_ = std::max(floats, tile_floats_);
      tiles_.assign(n_slots_ * tile_floats_, 0.0f);
    }
  }
  //! (internal) Claims a free tile (the pool never runs more chunks at once than it has
  //! participants, which reserve_tiles covered); returns its index.
  std::size_t claim_tile() noexcept {
    for (;;) {
      std::uint64_t cur = busy_->load(std::memory_order_relaxed);
      for (std::size_t s = 0; s < n_slots_; ++s) {
        const std::uint64_t bit = std::uint64_t{1} << s;
        if ((cur & bit) == 0 && busy_->compare_exchange_weak(cur, cur | bit, std::memory_order_acquire))
          return s;
      }
      std::this_thread::yield(); // more participants than slots (a pool of > 64 threads)
    }
  }
  void release_tile(std::size_t s) noexcept { busy_->fetch_and(~(std::uint64_t{1} << s), std::memory_order_release); }
  float *tile(std::size_t s) noexcept { return tiles_.data() + s * tile_floats_; }

private:
  matmul_precision precision_ = matmul_precision::fast;
  std::vector<std::byte> act_;
  std::vector<float> tiles_;
  std::size_t n_slots_ = 0, tile_floats_ = 0;
  std::unique_ptr<std::atomic<std::uint64_t>> busy_; //!< bit s set while tile s is in use
};

namespace detail {

//! Validates w and returns its row size in bytes.
inline std::size_t checked_row_bytes(const weight_matrix &w, const char *what) {
  require(can_dequantize(w.type), errc::unsupported, [&] {
    return std::string(what) + ": weight type " + ::dms::detail::type_name(w.type) +
           " is not supported (dms multiplies F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, "
           "Q5_K, Q6_K)";
  });
  require(w.rows >= 0 && w.cols >= 0, errc::invalid_argument, [&] {
    return std::string(what) + ": negative weight shape " + std::to_string(w.rows) + " x " + std::to_string(w.cols);
  });
  const auto bytes = storage_bytes(w.type, static_cast<std::uint64_t>(w.cols));
  require(bytes.has_value(), errc::shape_mismatch, [&] {
    return std::string(what) + ": " + std::to_string(w.cols) + " columns are not a whole number of " +
           std::string(traits_of(w.type).name) + " blocks (" + std::to_string(traits_of(w.type).block_size) +
           " elements each)";
  });
  require(w.data != nullptr || w.rows == 0 || *bytes == 0, errc::invalid_argument,
          [&] { return std::string(what) + ": weight data is null"; });
  return static_cast<std::size_t>(*bytes);
}

inline namespace DMS_CPU_ABI_TAG {

//! The kernels of one weight type at one level: a quantizer and one dot kernel per tile width.
struct fused_kernels {
  act_kind act;
  quantize_act_fn quantize;
  vec_dot_fn dot[max_tile_tokens];
};

#define DMS_MM_FUSED(NS, KERNEL, ACT)                                                                     \
  fused_kernels {                                                                                        \
    act_kind::ACT, &NS::quantize_act<act_kind::ACT>, {                                                   \
      &NS::KERNEL<1>, &NS::KERNEL<2>, &NS::KERNEL<3>, &NS::KERNEL<4>                                     \
    }                                                                                                    \
  }

//! Whether the AVX2 kernels may run at `level` (they also need F16C for the block scales).
inline bool use_avx2_kernels(isa_level level) noexcept {
#if defined(DMS_X86_DISPATCH)
  return level != isa_level::baseline && cpu_has_f16c();
#else
  (void)level;
  return false;
#endif
}

//! The fused kernels of `type` at `level`, or nullptr for types without them.
inline const fused_kernels *select_fused(ggml_type type, isa_level level) noexcept {
  static const fused_kernels portable[] = {
      DMS_MM_FUSED(vec_dot_portable, q4_0_q8_0, q8_0), DMS_MM_FUSED(vec_dot_portable, q4_1_q8_1, q8_1),
      DMS_MM_FUSED(vec_dot_portable, q8_0_q8_0, q8_0), DMS_MM_FUSED(vec_dot_portable, q4_k_q8_k, q8_k),
      DMS_MM_FUSED(vec_dot_portable, q6_k_q8_k, q8_k)};
  const fused_kernels *table = portable;
#if defined(DMS_X86_DISPATCH)
  static const fused_kernels avx2[] = {
      DMS_MM_FUSED(vec_dot_avx2, q4_0_q8_0, q8_0), DMS_MM_FUSED(vec_dot_avx2, q4_1_q8_1, q8_1),
      DMS_MM_FUSED(vec_dot_avx2, q8_0_q8_0, q8_0), DMS_MM_FUSED(vec_dot_avx2, q4_k_q8_k, q8_k),
      DMS_MM_FUSED(vec_dot_avx2, q6_k_q8_k, q8_k)};
  if (use_avx2_kernels(level)) table = avx2;
#endif
  switch (type) {
  case ggml_type::q4_0: return &table[0];
  case ggml_type::q4_1: return &table[1];
  case ggml_type::q8_0: return &table[2];
  case ggml_type::q4_k: return &table[3];
  case ggml_type::q6_k: return &table[4];
  default: return nullptr;
  }
}
#undef DMS_MM_FUSED

//! The f32 dot kernels (one per tile width) at `level`.
inline const dot_f32_fn *select_dot_f32(isa_level level) noexcept {
  static const dot_f32_fn portable[] = {&vec_dot_portable::dot_f32<1>, &vec_dot_portable::dot_f32<2>,
                                        &vec_dot_portable::dot_f32<3>, &vec_dot_portable::dot_f32<4>};
#if defined(DMS_X86_DISPATCH)
  static const dot_f32_fn avx2[] = {&vec_dot_avx2::dot_f32<1>, &vec_dot_avx2::dot_f32<2>, &vec_dot_avx2::dot_f32<3>,
                                    &vec_dot_avx2::dot_f32<4>};
  if (use_avx2_kernels(level)) return avx2;
#endif
  return portable;
}

//! Runs f(begin, end) over [0, n) in chunks of `grain`: on the pool when there is one.
template <class F> void for_chunks(thread_pool *pool, std::size_t n, std::size_t grain, F &&f) {
  if (pool != nullptr) {
    pool->parallel_for(n, grain, f);
    return;
  }
  for (std::size_t b = 0; b < n; b += grain) f(b, std::min(n, b + grain));
}

// Rows per chunk. Fused decode: 16 rows (~10 KB of Q4_1 at 576 columns), small enough that two to
// sixteen threads get an even share of a 192-row K/V projection; prefill: 64 rows, so that more
// tokens tiles meet a chunk of weights while it sits in L1/L2. Dense tiles: as many rows as fit in
// 64 KiB of f32 (the tile is re-read by every token tile), at most 32.
inline constexpr std::size_t decode_chunk_rows = 16;
//! Decode chunks: at least 16 rows, and about 8 chunks per thread for a large matrix (the output
//! projection has 49152 rows: 16-row chunks would be 3072 trips through the pool's counter).
inline std::size_t decode_grain(std::size_t rows, const thread_pool *pool) noexcept {
  const std::size_t threads = pool != nullptr ? pool->size() : 1;
  return std::max(decode_chunk_rows, (rows / (8 * threads) + 15) / 16 * 16);
}
inline constexpr std::size_t prefill_chunk_rows = 64;
inline constexpr std::size_t dense_tile_bytes = 64 * 1024;
//! From this many tokens on, the AVX2 level dequantizes 16-row panels and runs f32 outer products
//! instead of the per-row kernels. Measured at 1536 x 576 Q4_1, one thread (thread CPU time on a
//! loaded 2-core AVX2 machine): int8 kernels ~53 GFLOP/s flat from 8 tokens on; panels 26, 39,
//! 54, 61, 73 GFLOP/s at 16, 32, 64, 128, 512 tokens (dequantize + OpenBLAS sgemm per 64 rows:
//! 44, 55, 54, 52, 64). The panel cost is the dequantize-and-transpose, amortized over tokens.
#if defined(DMS_MATMUL_PANEL_MIN_TOKENS)
inline constexpr std::size_t panel_min_tokens = DMS_MATMUL_PANEL_MIN_TOKENS;
#else
inline constexpr std::size_t panel_min_tokens = 64;
#endif

} // namespace DMS_CPU_ABI_TAG
} // namespace detail

inline namespace DMS_CPU_ABI_TAG {

//! y[t*ldy + r] = sum_c W[r][c] * x[t*ldx + c], for t < n_tokens, r < rows.
//! x: n_tokens rows of w.cols floats, stride ldx (>= cols); y: n_tokens rows of w.rows floats,
//! stride ldy (>= rows); y must not overlap x. `pool` (optional) splits the output rows; the
//! result does not depend on it. Throws errc::unsupported for a weight type dms cannot decode,
//! errc::shape_mismatch when cols is not a whole number of blocks, errc::invalid_argument for
//! negative sizes, short strides or null pointers.
inline void matmul(const weight_matrix &w, const float *x, std::int64_t ldx, std::int64_t n_tokens, float *y,
                   std::int64_t ldy, matmul_workspace &ws, thread_pool *pool = nullptr) {
  const std::size_t row_bytes = detail::checked_row_bytes(w, "matmul");
  require(n_tokens >= 0, errc::invalid_argument,
          [&] { return "matmul: negative n_tokens " + std::to_string(n_tokens); });
  require(n_tokens <= 1 || (ldx >= w.cols && ldy >= w.rows), errc::invalid_argument, [&] {
    return "matmul: strides ldx " + std::to_string(ldx) + " / ldy " + std::to_string(ldy) +
           " are shorter than the rows of x (" + std::to_string(w.cols) + ") / y (" + std::to_string(w.rows) + ")";
  });
  if (n_tokens == 0 || w.rows == 0) return;
  require(y != nullptr && (x != nullptr || w.cols == 0), errc::invalid_argument,
          [] { return std::string("matmul: null x or y"); });

  const auto rows = static_cast<std::size_t>(w.rows), cols = static_cast<std::size_t>(w.cols);
  const auto nt = static_cast<std::size_t>(n_tokens);
  const auto sx = static_cast<std::size_t>(ldx), sy = static_cast<std::size_t>(ldy);
  const isa_level level = active_isa_level();
  constexpr std::size_t tile_t = detail::max_tile_tokens;

#if defined(DMS_X86_DISPATCH)
  if (nt >= detail::panel_min_tokens && detail::use_avx2_kernels(level)) {
    // Prefill: dequantize 16-row panels once, then f32 outer products over all tokens.
    constexpr std::size_t pr = detail::vec_dot_avx2::panel_rows;
    constexpr std::size_t pt = detail::vec_dot_avx2::panel_tokens;
    using gemm_fn = void (*)(const float *, const float *, std::size_t, std::size_t, float *, std::size_t,
                             std::size_t) noexcept;
    static const gemm_fn kernels[pt] = {
        &detail::vec_dot_avx2::gemm_panel16<1>, &detail::vec_dot_avx2::gemm_panel16<2>,
        &detail::vec_dot_avx2::gemm_panel16<3>, &detail::vec_dot_avx2::gemm_panel16<4>,
        &detail::vec_dot_avx2::gemm_panel16<5>, &detail::vec_dot_avx2::gemm_panel16<6>};
    ws.reserve_tiles(pool != nullptr ? pool->size() : 1, 2 * pr * cols);
    detail::for_chunks(pool, rows, pr, [&](std::size_t r0, std::size_t r1) {
      const std::size_t s = ws.claim_tile();
      float *tmp = ws.tile(s), *panel = tmp + pr * cols;
      detail::dequantize_at(level, w.type, w.data + r0 * row_bytes, tmp, (r1 - r0) * cols);
      detail::vec_dot_avx2::pack_panel16(tmp, r1 - r0, cols, panel);
      for (std::size_t t0 = 0; t0 < nt; t0 += pt) {
        const std::size_t m = std::min(pt, nt - t0);
        kernels[m - 1](panel, x + t0 * sx, sx, cols, y + t0 * sy + r0, sy, r1 - r0);
      }
      ws.release_tile(s);
    });
    return;
  }
#endif
  const detail::fused_kernels *k =
      ws.precision() == matmul_precision::fast ? detail::select_fused(w.type, level) : nullptr;
  if (k != nullptr) {
    // Quantize every token once, then stream the weights.
    const std::size_t act_row = cols / detail::act_block_elems(k->act) * detail::act_block_bytes(k->act);
    std::byte *act = ws.activations(nt * act_row);
    detail::for_chunks(nt >= 16 ? pool : nullptr, nt, 8, [&](std::size_t t0, std::size_t t1) {
      for (std::size_t t = t0; t < t1; ++t) k->quantize(x + t * sx, cols, act + t * act_row);
    });
    const std::size_t nb = cols / traits_of(w.type).block_size;
    const std::size_t grain = nt <= 8 ? detail::decode_grain(rows, pool) : detail::prefill_chunk_rows;
    detail::for_chunks(pool, rows, grain, [&](std::size_t r0, std::size_t r1) {
      float out[tile_t];
      for (std::size_t t0 = 0; t0 < nt; t0 += tile_t) {
        const std::size_t m = std::min(tile_t, nt - t0);
        const detail::vec_dot_fn dot = k->dot[m - 1];
        const std::byte *xq = act + t0 * act_row;
        for (std::size_t r = r0; r < r1; ++r) {
          dot(w.data + r * row_bytes, xq, act_row, nb, out);
          for (std::size_t t = 0; t < m; ++t) y[(t0 + t) * sy + r] = out[t];
        }
      }
    });
    return;
  }

  const detail::dot_f32_fn *dot = detail::select_dot_f32(level);
  auto tile_products = [&](const float *wt, std::size_t r0, std::size_t r1) {
    float out[tile_t];
    for (std::size_t t0 = 0; t0 < nt; t0 += tile_t) {
      const std::size_t m = std::min(tile_t, nt - t0);
      for (std::size_t r = r0; r < r1; ++r) {
        dot[m - 1](wt + (r - r0) * cols, x + t0 * sx, sx, cols, out);
        for (std::size_t t = 0; t < m; ++t) y[(t0 + t) * sy + r] = out[t];
      }
    }
  };
  const bool direct = w.type == ggml_type::f32 && reinterpret_cast<std::uintptr_t>(w.data) % alignof(float) == 0;
  const std::size_t tile_rows =
      std::clamp<std::size_t>(detail::dense_tile_bytes / (sizeof(float) * std::max<std::size_t>(cols, 1)), 1, 32);
  if (direct) {
    const auto *wf = reinterpret_cast<const float *>(w.data);
    detail::for_chunks(pool, rows, tile_rows,
                       [&](std::size_t r0, std::size_t r1) { tile_products(wf + r0 * cols, r0, r1); });
    return;
  }
  ws.reserve_tiles(pool != nullptr ? pool->size() : 1, tile_rows * cols);
  detail::for_chunks(pool, rows, tile_rows, [&](std::size_t r0, std::size_t r1) {
    const std::size_t s = ws.claim_tile();
    float *tile = ws.tile(s);
    detail::dequantize_at(level, w.type, w.data + r0 * row_bytes, tile, (r1 - r0) * cols);
    tile_products(tile, r0, r1);
    ws.release_tile(s);
  });
}

//! One product of a matmul_group: y (stride ldy) = W x.
struct matmul_target {
  const weight_matrix *w;
  float *y;
  std::int64_t ldy;
};

//! Several matmuls of the same activations, e.g. a layer's Q, K and V projections or its gate
//! and up projections: y_i = W_i x for every target, with exactly matmul's results. When every
//! weight takes the fused integer path with the same activation blocks and the step is a decode
//! (at most 8 tokens), x is quantized once and all output rows are split over `pool` as one job:
//! a decode step then waits for the pool once per group instead of once per matrix, and chunks
//! are sized to the pool (about 8 per thread) rather than to each matrix. Otherwise each target
//! is a matmul call. Errors as matmul, for the first bad target.
inline void matmul_group(std::span<const matmul_target> targets, const float *x, std::int64_t ldx,
                         std::int64_t n_tokens, matmul_workspace &ws, thread_pool *pool = nullptr) {
  constexpr std::size_t max_targets = 8;
  struct part {
    std::size_t first_row, rows, row_bytes, blocks;
    const detail::fused_kernels *k;
  };
  part parts[max_targets];
  const isa_level level = active_isa_level();
  bool grouped = !targets.empty() && targets.size() <= max_targets && n_tokens >= 1 && n_tokens <= 8 &&
                 x != nullptr && ws.precision() == matmul_precision::fast;
  std::size_t total_rows = 0;
  for (std::size_t i = 0; grouped && i < targets.size(); ++i) {
    const matmul_target &t = targets[i];
    const detail::fused_kernels *k = detail::select_fused(t.w->type, level);
    grouped = k != nullptr && k->act == (i == 0 ? k->act : parts[0].k->act) && t.w->cols == targets[0].w->cols &&
              t.y != nullptr && (n_tokens == 1 || (ldx >= t.w->cols && t.ldy >= t.w->rows));
    if (!grouped) break;
    const auto rows = static_cast<std::size_t>(t.w->rows);
    parts[i] = {total_rows, rows, detail::checked_row_bytes(*t.w, "matmul_group"),
                static_cast<std::size_t>(t.w->cols) / traits_of(t.w->type).block_size, k};
    total_rows += rows;
  }
  if (!grouped || total_rows == 0) {
    for (const matmul_target &t : targets) matmul(*t.w, x, ldx, n_tokens, t.y, t.ldy, ws, pool);
    return;
  }
  const auto cols = static_cast<std::size_t>(targets[0].w->cols), nt = static_cast<std::size_t>(n_tokens);
  const detail::act_kind act_type = parts[0].k->act;
  const std::size_t act_row = cols / detail::act_block_elems(act_type) * detail::act_block_bytes(act_type);
  std::byte *act = ws.activations(nt * act_row);
  for (std::size_t t = 0; t < nt; ++t) parts[0].k->quantize(x + t * static_cast<std::size_t>(ldx), cols, act + t * act_row);
  const std::size_t grain = detail::decode_grain(total_rows, pool);
  constexpr std::size_t tile_t = detail::max_tile_tokens;
  detail::for_chunks(pool, total_rows, grain, [&](std::size_t r0, std::size_t r1) {
    float out[detail::max_tile_tokens];
    std::size_t i = 0;
    while (parts[i].first_row + parts[i].rows <= r0) ++i;
    for (std::size_t r = r0; r < r1; ++i) { // the rows of target i in [r0, r1), then the next target's
      const part &p = parts[i];
      const matmul_target &t = targets[i];
      const std::size_t begin = r - p.first_row, end = std::min(r1 - p.first_row, p.rows);
      const auto sy = static_cast<std::size_t>(t.ldy);
      for (std::size_t t0 = 0; t0 < nt; t0 += tile_t) {
        const std::size_t m = std::min(tile_t, nt - t0);
        const detail::vec_dot_fn dot = p.k->dot[m - 1];
        const std::byte *xq = act + t0 * act_row;
        for (std::size_t row = begin; row < end; ++row) {
          dot(t.w->data + row * p.row_bytes, xq, act_row, p.blocks, out);
          for (std::size_t q = 0; q < m; ++q) t.y[(t0 + q) * sy + row] = out[q];
        }
      }
      r = p.first_row + end;
    }
  });
}

//! Dequantizes rows `ids` of w (embedding lookup): out[i*cols + c] = W[ids[i]][c]. Throws
//! errc::invalid_argument for an id outside [0, rows), and as matmul for a bad weight.
inline void get_rows(const weight_matrix &w, std::span<const std::int32_t> ids, float *out) {
  const std::size_t row_bytes = detail::checked_row_bytes(w, "get_rows");
  const auto cols = static_cast<std::size_t>(w.cols);
  for (std::size_t i = 0; i < ids.size(); ++i)
    require(ids[i] >= 0 && ids[i] < w.rows, errc::invalid_argument, [&] {
      return "get_rows: row id " + std::to_string(ids[i]) + " (index " + std::to_string(i) + ") is outside [0, " +
             std::to_string(w.rows) + ")";
    });
  require(out != nullptr || ids.empty() || cols == 0, errc::invalid_argument,
          [] { return std::string("get_rows: null output"); });
  const isa_level level = active_isa_level();
  for (std::size_t i = 0; i < ids.size(); ++i)
    detail::dequantize_at(level, w.type, w.data + static_cast<std::size_t>(ids[i]) * row_bytes, out + i * cols,
                          cols);
}

} // namespace DMS_CPU_ABI_TAG
} // namespace cpu
DMS_NAMESPACE_END
