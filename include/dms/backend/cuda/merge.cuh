// dms/backend/cuda/merge.cuh: model-merging kernels of the CUDA backend.
//
// The same merges as the CPU strategies (dms/merge/strategies/linear.hpp, task_arithmetic.hpp),
// on tensors already in device memory, queued on the caller's stream:
//  * merge_linear           out = sum_i w_i x_i (/ sum_i w_i with normalize)
//  * merge_task_arithmetic  out = base + sum_i c_i (x_i - base), c_i = lambda w_i (/ sum w)
//  * merge_ties             TIES: each task vector d_i = x_i - base keeps its k_i largest |d|
//                           (k_i = magnitude_keep_count(n, density_i)), then sign election and
//                           disjoint mean (dms::mix_task_vectors)
//  * merge_dare             DARE: entry j of model i survives when u < density_i, with u drawn
//                           from the Philox stream key_for(seed, tensor name, i), element
//                           element_offset + j: the CPU's stream, so masks are bit-identical
//  * task_vectors           the sparsified task vectors themselves (what the mix sees), for
//                           inspection and for the bit-exact tests of the masks
//
// Selection without sorting. TIES needs the k-th largest |d| of a whole tensor. The CPU ranks
// entries by (|d|, index) ascending and keeps ranks [n - k, n), so ties in magnitude keep the
// highest indices. Here each entry gets the 63-bit key (bits(|d|) << 32) | index, which orders
// exactly like (|d|, index) (non-negative floats order like their bit patterns), and the k-th
// largest key is found by a radix selection over its digits (11, 10, 10 bits of magnitude, then
// 11, 11, 10 bits of index): each pass histograms the digit of the entries that share the prefix
// chosen so far (shared-memory atomics, 2048 bins = 8 KiB), and a one-block kernel scans the
// histogram and picks the next digit, all on the device, so the host never waits. As soon as
// the chosen bin holds exactly the entries still needed, selection stops (later passes return
// at once); for tensors without repeated magnitudes that is after the three magnitude passes.
// Entry j is kept iff key_j >= the selected key: the CPU's mask, bit for bit.
//
// Arithmetic. Task vectors x - base, masks and the 1 / density rescale are computed exactly as
// on the CPU (bit-identical task vectors for rescale none and inverse_density). The weighted sums
// and the election accumulate in fp32 (the CPU accumulates in double): results differ from the
// CPU's by at most a few ulps of sum_i |w_i d_i| per element, and the elected sign can differ
// where the weighted sum is within that rounding of zero. The L1 rescale (rescale_mode::l1_norm,
// mergekit's default for DARE) sums norms in double with atomics (order-dependent in the last
// bits), then rescales by float(l1_before / l1_after) as the CPU does.
//
// Inputs are f32, f16 or bf16 (merge_source; converted exactly as dms::to_f32 does), outputs f32.
// At most max_merge_models models per call: their pointers travel as kernel parameters, so no
// device-side pointer table has to be allocated. Merges read every input once (linear, task
// arithmetic), DARE twice with L1 rescaling, TIES up to 6 + 2 times (selection passes, then the
// mix). Nothing here synchronizes or allocates: TIES and DARE take a caller-provided device
// workspace of merge_workspace_bytes(n_models) bytes (8-byte aligned; any cudaMalloc'd memory
// is), so every call may be captured in a CUDA graph. A workspace may be reused by calls queued
// on the same stream. NaN in a task vector is not detected on the device (the CPU throws): its
// magnitude ranks above infinity, and the merged values are NaN.
// Compile with nvcc.
//
// @code
//   std::vector<dms::cuda::merge_source> xs = {a.data(), b.data()};  // device tensors, n each
//   const float w[] = {0.7f, 0.3f};
//   const double density[] = {0.2, 0.2};
//   dms::cuda::device_buffer<std::byte> ws(dms::cuda::merge_workspace_bytes(2), stream);
//   dms::cuda::merge_ties(base.data(), xs, w, density, {}, ws.span(), out.span(), stream);
// @endcode
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <cuda_runtime.h>

#include "dms/backend/cuda/error.cuh"
#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/core/half.hpp"
#include "dms/core/rng.hpp"
#include "dms/merge/consensus.hpp" // consensus_method
#include "dms/merge/sparsify.hpp"  // rescale_mode, magnitude_keep_count

DMS_NAMESPACE_BEGIN
namespace cuda {

//! One input tensor of a GPU merge: device memory holding as many elements as the output, as
//! f32, f16 or bf16.
struct merge_source {
  const void *data = nullptr;
  dtype type = dtype::f32;

  constexpr merge_source() noexcept = default;
  constexpr merge_source(const float *p) noexcept : data(p), type(dtype::f32) {}
  constexpr merge_source(const f16_bits *p) noexcept : data(p), type(dtype::f16) {}
  constexpr merge_source(const bf16_bits *p) noexcept : data(p), type(dtype::bf16) {}
};

//! Models per merge call. Their pointers and parameters are kernel arguments (under 1 KiB at 16;
//! CUDA allows 4 KiB); mergekit configs rarely have more than a handful of models.
inline constexpr std::size_t max_merge_models = 16;

//! How merge_ties and merge_dare mix the sparsified task vectors (dms::mix_options, plus the
//! rescale of the survivors). mergekit's defaults: ties {sum, normalize, none};
//! dare_ties {sum, no normalize, l1_norm}; dare_linear {none, no normalize, l1_norm}.
struct gta_options {
  consensus_method consensus = consensus_method::sum;
  bool normalize = true;
  double lambda = 1.0;
  rescale_mode rescale = rescale_mode::none;
};

//! Where DARE's random stream comes from: the CPU's key_for(seed, tensor_name, model index),
//! stream 0, element element_offset + j (merge_inputs::element_offset when a tensor is chunked).
struct dare_stream {
  std::uint64_t seed = 0;
  std::string_view tensor_name;
  std::uint64_t element_offset = 0;
};

namespace detail {

// Kernel-side description of one model.
enum class sparsify_kind : std::uint8_t { none, magnitude, random };

struct gta_model {
  const void *data;
  dtype type;
  sparsify_kind sparsify;
  bool rescale_l1;
  float weight;      //!< w_i as the CPU holds it (fp32)
  float keep_scale;  //!< survivors are multiplied by this: float(1 / density) or 1
  float density;     //!< DARE keep probability as float (the CPU compares u < float(density))
  philox_key rng_key; //!< DARE: key of this model's stream (stream id 0)
};

struct gta_params {
  gta_model models[max_merge_models];
  int n_models;
  const void *base;
  dtype base_type;
  std::uint64_t n;
  std::uint64_t first_block; //!< element_offset / 4: the Philox block of group 0
  unsigned lead;             //!< element_offset % 4: positions of group 0 before element 0
  consensus_method consensus;
  bool normalize;
  float lambda;
  float plain_scale; //!< consensus none: lambda / (normalize ? sum w (or 1) : 1)
  std::uint64_t k_keep[max_merge_models]; //!< TIES: entries model i keeps
};

//! Per-model selection state in the workspace.
struct select_state {
  unsigned long long prefix;    //!< key digits chosen so far
  unsigned long long k_rem;     //!< entries still to keep among those sharing `prefix`
  unsigned long long threshold; //!< keep iff key >= threshold (valid once done)
  unsigned consumed_bits;       //!< key bits in `prefix`
  unsigned done;
  double l1_before, l1_after;   //!< L1 norms of the task vector before and after the mask
  float l1_factor;              //!< the CPU's rescale_l1 factor (1 when not rescaled)
  float pad;
};

inline constexpr unsigned select_bins = 2048; // 11-bit digits: 8 KiB of shared histogram
inline constexpr unsigned key_bits = 63;      // 31 magnitude bits (sign cleared) + 32 index bits
inline constexpr unsigned digit_widths[] = {11, 10, 10, 11, 11, 10};
inline constexpr unsigned merge_threads = 256;
// Grid-stride kernels stop at this many blocks per model: 4096 x 256 threads keep every SM of a
// current GPU busy, and fewer blocks mean fewer shared histograms to flush.
inline constexpr std::uint64_t max_merge_blocks = 4096;
inline constexpr std::uint64_t max_histogram_blocks = 512;

inline std::size_t workspace_state_bytes(std::size_t n_models) noexcept {
  return n_models * sizeof(select_state);
}

DMS_HOST_DEVICE inline float load_f32(const void *p, dtype t, std::uint64_t i) noexcept {
  switch (t) {
  case dtype::f16: return to_f32(static_cast<const f16_bits *>(p)[i]);
  case dtype::bf16: return to_f32(static_cast<const bf16_bits *>(p)[i]);
  default: return static_cast<const float *>(p)[i];
  }
}

//! The selection key of entry j with task-vector value d: orders like (|d|, j).
DMS_HOST_DEVICE inline unsigned long long select_key(float d, std::uint64_t j) noexcept {
  const unsigned long long mag = dms::detail::half_bit_cast<std::uint32_t>(d) & 0x7FFFFFFFu;
  return (mag << 32) | (j & 0xFFFFFFFFu);
}

inline unsigned blocks_for(std::uint64_t work, std::uint64_t cap) noexcept {
  const std::uint64_t b = (work + merge_threads - 1) / merge_threads;
  return static_cast<unsigned>(b == 0 ? 1 : (b < cap ? b : cap));
}

// --- linear and task arithmetic --------------------------------------------------------------------

struct weighted_params {
  const void *data[max_merge_models];
  dtype type[max_merge_models];
  float coef[max_merge_models];
  int n_models;
  const void *base; //!< null: plain weighted sum
  dtype base_type;
  std::uint64_t n;
};

__global__ void weighted_sum_kernel(weighted_params P, float *out) {
  const std::uint64_t step = std::uint64_t{gridDim.x} * blockDim.x;
  for (std::uint64_t j = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; j < P.n; j += step) {
    float acc = 0.0f;
    if (P.base == nullptr) {
      for (int i = 0; i < P.n_models; ++i) acc = fmaf(P.coef[i], load_f32(P.data[i], P.type[i], j), acc);
      out[j] = acc;
    } else {
      const float b = load_f32(P.base, P.base_type, j);
      for (int i = 0; i < P.n_models; ++i) acc = fmaf(P.coef[i], load_f32(P.data[i], P.type[i], j) - b, acc);
      out[j] = b + acc;
    }
  }
}

// --- TIES selection ------------------------------------------------------------------------------------

__global__ void select_init_kernel(gta_params P, select_state *states, unsigned *hist) {
  const int m = blockIdx.x;
  if (threadIdx.x == 0) {
    select_state s{};
    s.k_rem = P.k_keep[m];
    s.done = P.models[m].sparsify == sparsify_kind::magnitude ? 0u : 1u;
    s.l1_factor = 1.0f;
    states[m] = s;
  }
  for (unsigned b = threadIdx.x; b < select_bins; b += blockDim.x) hist[m * select_bins + b] = 0;
}

//! grid (blocks, n_models): histogram of digit [shift, shift + width) of the keys sharing the
//! chosen prefix.
__global__ void select_histogram_kernel(gta_params P, const select_state *states, unsigned *hist, unsigned shift,
                                        unsigned width) {
  const int m = blockIdx.y;
  const select_state &st = states[m];
  if (st.done) return;
  const unsigned long long prefix = st.prefix;
  __shared__ unsigned h[select_bins];
  const unsigned bins = 1u << width;
  for (unsigned b = threadIdx.x; b < bins; b += blockDim.x) h[b] = 0;
  __syncthreads();
  const gta_model &model = P.models[m];
  const std::uint64_t step = std::uint64_t{gridDim.x} * blockDim.x;
  for (std::uint64_t j = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; j < P.n; j += step) {
    const float d = load_f32(model.data, model.type, j) - load_f32(P.base, P.base_type, j);
    const unsigned long long key = select_key(d, j);
    if ((key >> (shift + width)) == prefix) atomicAdd(&h[(key >> shift) & (bins - 1)], 1u);
  }
  __syncthreads();
  for (unsigned b = threadIdx.x; b < bins; b += blockDim.x)
    if (h[b] != 0) atomicAdd(&hist[m * select_bins + b], h[b]);
}

inline constexpr unsigned select_threads = select_bins / 2; // each thread scans two bins

//! The k_rem-th largest key lies in bin `digit` of this pass, which holds `count` keys, with
//! `above` keys in higher bins: append the digit; stop when the whole bin is kept.
DMS_HOST_DEVICE inline void apply_pick(select_state &st, unsigned digit, unsigned long long above,
                                       unsigned long long count, unsigned width) noexcept {
  st.prefix = (st.prefix << width) | digit;
  st.consumed_bits += width;
  st.k_rem -= above;
  if (count == st.k_rem) { // every key of the bin is kept: no need to look further
    st.done = 1;
    st.threshold = st.prefix << (key_bits - st.consumed_bits);
  }
}

//! One block per model: finds the bin holding the k_rem-th largest key, appends its digit to the
//! prefix, and zeroes the histogram for the next pass.
__global__ void select_pick_kernel(select_state *states, unsigned *hist, unsigned width) {
  const int m = blockIdx.x;
  select_state &st = states[m];
  if (st.done) return; // uniform across the block
  const unsigned bins = 1u << width;
  unsigned *hm = hist + m * select_bins;
  // Thread t owns descending positions r = 2t, 2t + 1, i.e. bins bins - 1 - r.
  const unsigned t = threadIdx.x;
  const unsigned r0 = 2 * t, r1 = 2 * t + 1;
  const unsigned long long c0 = r0 < bins ? hm[bins - 1 - r0] : 0, c1 = r1 < bins ? hm[bins - 1 - r1] : 0;
  // Exclusive prefix sum of c0 + c1 over threads (warp shuffles, then warp totals).
  __shared__ unsigned long long warp_total[select_threads / 32];
  const unsigned lane = t % 32, warp = t / 32;
  unsigned long long incl = c0 + c1;
  for (unsigned off = 1; off < 32; off <<= 1) {
    const unsigned long long y = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += y;
  }
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  unsigned long long before_warp = 0;
  for (unsigned w = 0; w < warp; ++w) before_warp += warp_total[w];
  const unsigned long long excl = before_warp + incl - (c0 + c1);
  const unsigned long long k = st.k_rem;
  int chosen = -1;
  unsigned long long above = 0, count = 0;
  if (excl < k && excl + c0 >= k) {
    chosen = static_cast<int>(r0), above = excl, count = c0;
  } else if (excl + c0 < k && excl + c0 + c1 >= k) {
    chosen = static_cast<int>(r1), above = excl + c0, count = c1;
  }
  __syncthreads(); // everybody has read st.k_rem and the histogram
  if (r0 < bins) hm[bins - 1 - r0] = 0;
  if (r1 < bins) hm[bins - 1 - r1] = 0;
  if (chosen >= 0) // exactly one thread
    apply_pick(st, bins - 1 - static_cast<unsigned>(chosen), above, count, width);
}

// --- per-element masks, L1 norms, mixing -----------------------------------------------------------

//! Uniforms of the 4 elements of group q (Philox block first_block + q) for a DARE model.
DMS_HOST_DEVICE inline philox_counter group_bits(const gta_params &P, const gta_model &m, std::uint64_t q) {
  return philox_stream(m.rng_key, 0).block((P.first_block + q) & ((std::uint64_t{1} << 62) - 1));
}

DMS_HOST_DEVICE inline bool keep_entry(const gta_model &m, const select_state &st, float d, std::uint64_t j,
                                  std::uint32_t bits) {
  switch (m.sparsify) {
  case sparsify_kind::magnitude: return select_key(d, j) >= st.threshold;
  case sparsify_kind::random: return uniform_from_bits(bits) < m.density;
  default: return true;
  }
}

//! Group q covers elements j = 4q + e - lead, e < 4 (those in [0, n)).
DMS_HOST_DEVICE inline bool group_element(std::uint64_t q, unsigned e, unsigned lead, std::uint64_t n,
                                          std::uint64_t &j) noexcept {
  const std::uint64_t p = 4 * q + e;
  if (p < lead) return false;
  j = p - lead;
  return j < n;
}

DMS_HOST_DEVICE inline std::uint64_t group_count(std::uint64_t n, unsigned lead) noexcept { return (n + lead + 3) / 4; }

//! grid (blocks, n_models): L1 norms of d and of the masked d (scaled by keep_scale), in double.
__global__ void l1_norms_kernel(gta_params P, select_state *states) {
  const int m = blockIdx.y;
  const gta_model &model = P.models[m];
  if (!model.rescale_l1) return;
  const select_state &st = states[m];
  double before = 0.0, after = 0.0;
  const std::uint64_t groups = group_count(P.n, P.lead), step = std::uint64_t{gridDim.x} * blockDim.x;
  for (std::uint64_t q = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; q < groups; q += step) {
    philox_counter c{};
    if (model.sparsify == sparsify_kind::random) c = group_bits(P, model, q);
    for (unsigned e = 0; e < 4; ++e) {
      std::uint64_t j;
      if (!group_element(q, e, P.lead, P.n, j)) continue;
      const float d = load_f32(model.data, model.type, j) - load_f32(P.base, P.base_type, j);
      before += fabs(static_cast<double>(d));
      if (keep_entry(model, st, d, j, c.v[e])) after += fabs(static_cast<double>(d * model.keep_scale));
    }
  }
  for (int off = 16; off > 0; off >>= 1) {
    before += __shfl_xor_sync(0xffffffffu, before, off);
    after += __shfl_xor_sync(0xffffffffu, after, off);
  }
  if (threadIdx.x % 32 == 0) {
    atomicAdd(&states[m].l1_before, before);
    atomicAdd(&states[m].l1_after, after);
  }
}

//! The CPU's rescale_l1 factor: l1_before / l1_after rounded to float, or 1 below 1e-7.
__global__ void l1_factor_kernel(gta_params P, select_state *states) {
  const int m = threadIdx.x;
  if (m >= P.n_models || !P.models[m].rescale_l1) return;
  const double before = states[m].l1_before, after = states[m].l1_after;
  states[m].l1_factor = before < 1e-7 || after < 1e-7 ? 1.0f : static_cast<float>(before / after);
}

//! The sparsified, rescaled task vector entry of one model (0 when dropped).
DMS_HOST_DEVICE inline float sparse_delta(const gta_model &m, const select_state &st, float d, std::uint64_t j,
                                     std::uint32_t bits) {
  // Two roundings, as on the CPU: d * keep_scale (drop_random / trim_magnitude), then * factor
  // (rescale_l1); each multiplication by 1 is exact.
  return keep_entry(m, st, d, j, bits) ? (d * m.keep_scale) * st.l1_factor : 0.0f;
}

//! One thread per group of 4 elements (one Philox block). Writes the merged tensor to `out`
//! (when not null) and model i's sparsified task vector to task_out[i * n + j] (when not null).
__global__ void gta_mix_kernel(gta_params P, const select_state *states, float *out, float *task_out) {
  const std::uint64_t groups = group_count(P.n, P.lead), step = std::uint64_t{gridDim.x} * blockDim.x;
  for (std::uint64_t q = std::uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; q < groups; q += step) {
    std::uint64_t js[4];
    bool valid[4];
    float b[4], acc[4] = {0, 0, 0, 0}, elect[4] = {0, 0, 0, 0};
    for (unsigned e = 0; e < 4; ++e) {
      valid[e] = group_element(q, e, P.lead, P.n, js[e]);
      b[e] = valid[e] ? load_f32(P.base, P.base_type, js[e]) : 0.0f;
    }
    for (int i = 0; i < P.n_models; ++i) {
      const gta_model &m = P.models[i];
      const select_state &st = states[i];
      philox_counter c{};
      if (m.sparsify == sparsify_kind::random) c = group_bits(P, m, q);
      for (unsigned e = 0; e < 4; ++e) {
        if (!valid[e]) continue;
        const float d = load_f32(m.data, m.type, js[e]) - b[e];
        const float s = sparse_delta(m, st, d, js[e], c.v[e]);
        if (task_out != nullptr) task_out[static_cast<std::uint64_t>(i) * P.n + js[e]] = s;
        const float wd = m.weight * s;
        switch (P.consensus) {
        case consensus_method::none: acc[e] += wd; break;
        case consensus_method::sum: elect[e] += wd; break;
        case consensus_method::count: elect[e] += static_cast<float>((wd > 0.0f) - (wd < 0.0f)); break;
        }
      }
    }
    if (out == nullptr) continue;
    if (P.consensus == consensus_method::none) {
      for (unsigned e = 0; e < 4; ++e)
        if (valid[e]) out[js[e]] = b[e] + P.plain_scale * acc[e];
      continue;
    }
    float divisor[4] = {0, 0, 0, 0};
    // Second pass: the entries whose sign agrees with the elected one. Inputs are re-read (from
    // L1/L2: this thread read them a moment ago) and the Philox block recomputed, instead of
    // keeping 4 x n_models values in registers.
    for (int i = 0; i < P.n_models; ++i) {
      const gta_model &m = P.models[i];
      const select_state &st = states[i];
      philox_counter c{};
      if (m.sparsify == sparsify_kind::random) c = group_bits(P, m, q);
      for (unsigned e = 0; e < 4; ++e) {
        if (!valid[e]) continue;
        const float d = load_f32(m.data, m.type, js[e]) - b[e];
        const float wd = m.weight * sparse_delta(m, st, d, js[e], c.v[e]);
        const bool taken = elect[e] >= 0.0f ? wd > 0.0f : wd < 0.0f;
        acc[e] += taken ? wd : 0.0f;
        divisor[e] += taken ? m.weight : 0.0f;
      }
    }
    for (unsigned e = 0; e < 4; ++e) {
      if (!valid[e]) continue;
      const float div = divisor[e] == 0.0f ? 1.0f : divisor[e];
      const float mixed = P.normalize ? acc[e] / div : acc[e];
      out[js[e]] = b[e] + P.lambda * mixed;
    }
  }
}

// --- host side -----------------------------------------------------------------------------------------

inline void check_sources(const char *what, std::span<const merge_source> models, std::size_t n_weights) {
  require(!models.empty(), errc::invalid_argument, [&] { return std::string(what) + ": no models to merge"; });
  require(models.size() <= max_merge_models, errc::unsupported, [&] {
    return std::string(what) + ": " + std::to_string(models.size()) + " models; the CUDA backend merges at most " +
           std::to_string(max_merge_models) + " per call";
  });
  require(n_weights == models.size(), errc::shape_mismatch, [&] {
    return std::string(what) + ": " + std::to_string(models.size()) + " models but " + std::to_string(n_weights) +
           " weights";
  });
  for (std::size_t i = 0; i < models.size(); ++i) {
    const dtype t = models[i].type;
    require(t == dtype::f32 || t == dtype::f16 || t == dtype::bf16, errc::unsupported, [&] {
      return std::string(what) + ": model " + std::to_string(i) + " has dtype " + std::string(name_of(t)) +
             " (the CUDA merges read f32, f16 and bf16)";
    });
  }
}

inline void check_base(const char *what, const merge_source &base) {
  require(base.type == dtype::f32 || base.type == dtype::f16 || base.type == dtype::bf16, errc::unsupported, [&] {
    return std::string(what) + ": the base has dtype " + std::string(name_of(base.type)) +
           " (the CUDA merges read f32, f16 and bf16)";
  });
}

inline void check_workspace(const char *what, std::span<std::byte> workspace, std::size_t n_models);

inline void run_gta(const char *what, merge_source base, std::span<const merge_source> models,
                    std::span<const float> weights, std::span<const double> densities, sparsify_kind kind,
                    const dare_stream &rng, const gta_options &opt, std::span<std::byte> workspace, float *out,
                    float *task_out, std::size_t n, cudaStream_t stream);

} // namespace detail

//! Bytes of device workspace merge_ties, merge_dare and task_vectors need for n_models models.
constexpr std::size_t merge_workspace_bytes(std::size_t n_models) noexcept {
  return n_models * (sizeof(detail::select_state) + detail::select_bins * sizeof(unsigned));
}

//! out[j] = sum_i c_i x_i[j] with c_i = w_i / sum_k w_k under normalize (the CPU refuses weights
//! summing to |sum| < 1e-8 then, and so does this), else c_i = w_i: mergekit's `linear`.
//! Coefficients are formed in double from the fp32 weights, as the CPU does, then rounded to
//! float; the sum is fp32 (one FMA per model). out.size() elements; device memory.
inline void merge_linear(std::span<const merge_source> models, std::span<const float> weights, bool normalize,
                         std::span<float> out, cudaStream_t stream) {
  constexpr const char *what = "merge_linear";
  detail::check_sources(what, models, weights.size());
  double total = 0.0;
  for (float w : weights) total += static_cast<double>(w);
  require(!normalize || std::abs(total) >= 1e-8, errc::invalid_argument, [&] {
    return std::string(what) + ": the weights sum to " + std::to_string(total) +
           ": normalize would divide by zero (pass normalize = false or change the weights)";
  });
  detail::weighted_params P{};
  P.n_models = static_cast<int>(models.size());
  for (std::size_t i = 0; i < models.size(); ++i) {
    P.data[i] = models[i].data;
    P.type[i] = models[i].type;
    P.coef[i] = static_cast<float>(static_cast<double>(weights[i]) / (normalize ? total : 1.0));
  }
  P.base = nullptr;
  P.n = out.size();
  if (out.empty()) return;
  detail::weighted_sum_kernel<<<detail::blocks_for(out.size(), detail::max_merge_blocks), detail::merge_threads, 0,
                                stream>>>(P, out.data());
  DMS_CUDA_CHECK(cudaGetLastError());
}

//! out[j] = base[j] + sum_i c_i (x_i[j] - base[j]), c_i = lambda w_i / (normalize and
//! |sum w| >= 1e-8 ? sum w : 1): mergekit's `task_arithmetic`, as the CPU computes it (task vector
//! in fp32, coefficients in double then float; the sum here is fp32).
inline void merge_task_arithmetic(merge_source base, std::span<const merge_source> models,
                                  std::span<const float> weights, double lambda, bool normalize,
                                  std::span<float> out, cudaStream_t stream) {
  constexpr const char *what = "merge_task_arithmetic";
  detail::check_sources(what, models, weights.size());
  detail::check_base(what, base);
  double total = 0.0;
  for (float w : weights) total += static_cast<double>(w);
  const double divisor = normalize && std::abs(total) >= 1e-8 ? total : 1.0;
  detail::weighted_params P{};
  P.n_models = static_cast<int>(models.size());
  for (std::size_t i = 0; i < models.size(); ++i) {
    P.data[i] = models[i].data;
    P.type[i] = models[i].type;
    P.coef[i] = static_cast<float>(lambda * static_cast<double>(weights[i]) / divisor);
  }
  P.base = base.data;
  P.base_type = base.type;
  P.n = out.size();
  if (out.empty()) return;
  detail::weighted_sum_kernel<<<detail::blocks_for(out.size(), detail::max_merge_blocks), detail::merge_threads, 0,
                                stream>>>(P, out.data());
  DMS_CUDA_CHECK(cudaGetLastError());
}

//! TIES (mergekit `ties`, and `breadcrumbs`-free magnitude trimming): model i's task vector keeps
//! its magnitude_keep_count(n, densities[i]) largest entries (ties in magnitude keep the higher
//! index, as on the CPU), survivors are rescaled per opt.rescale, then mixed per opt (sign
//! election, disjoint mean). densities in (0, 1]; 1 leaves the task vector dense (and
//! unrescaled, as the CPU). `workspace`: merge_workspace_bytes(models.size()) device bytes.
//! Needs out.size() < 2^32 (the selection key holds the index in 32 bits).
inline void merge_ties(merge_source base, std::span<const merge_source> models, std::span<const float> weights,
                       std::span<const double> densities, const gta_options &opt, std::span<std::byte> workspace,
                       std::span<float> out, cudaStream_t stream) {
  detail::run_gta("merge_ties", base, models, weights, densities, detail::sparsify_kind::magnitude, {}, opt,
                  workspace, out.data(), nullptr, out.size(), stream);
}

//! DARE (mergekit `dare_ties` with opt.consensus = sum, `dare_linear` with none): entry j of
//! model i is kept when key_for(rng.seed, rng.tensor_name, i)'s stream 0 gives
//! uniform(rng.element_offset + j) < float(densities[i]), exactly the CPU's drop_random mask;
//! survivors are rescaled per opt.rescale and mixed per opt.
inline void merge_dare(merge_source base, std::span<const merge_source> models, std::span<const float> weights,
                       std::span<const double> densities, const dare_stream &rng, const gta_options &opt,
                       std::span<std::byte> workspace, std::span<float> out, cudaStream_t stream) {
  detail::run_gta("merge_dare", base, models, weights, densities, detail::sparsify_kind::random, rng, opt,
                  workspace, out.data(), nullptr, out.size(), stream);
}

//! The sparsified, rescaled task vectors TIES (`random` false) or DARE (`random` true) would mix:
//! task_out[i * n + j] for model i, n = task_out.size() / models.size(). Bit-identical to the
//! CPU's trim_magnitude / drop_random for rescale none and inverse_density.
inline void task_vectors(merge_source base, std::span<const merge_source> models, std::span<const double> densities,
                         bool random, const dare_stream &rng, rescale_mode rescale, std::span<std::byte> workspace,
                         std::span<float> task_out, cudaStream_t stream) {
  constexpr const char *what = "task_vectors";
  require(!models.empty() && task_out.size() % models.size() == 0, errc::shape_mismatch, [&] {
    return std::string(what) + ": the output holds " + std::to_string(task_out.size()) +
           " elements, not a whole number of task vectors of " + std::to_string(models.size()) + " models";
  });
  const std::vector<float> ones(models.size(), 1.0f);
  gta_options opt;
  opt.consensus = consensus_method::none;
  opt.rescale = rescale;
  detail::run_gta(what, base, models, ones, densities,
                  random ? detail::sparsify_kind::random : detail::sparsify_kind::magnitude, rng, opt, workspace,
                  nullptr, task_out.data(), task_out.size() / models.size(), stream);
}

namespace detail {

inline void check_workspace(const char *what, std::span<std::byte> workspace, std::size_t n_models) {
  const std::size_t need = merge_workspace_bytes(n_models);
  require(workspace.size() >= need, errc::invalid_argument, [&] {
    return std::string(what) + ": the workspace has " + std::to_string(workspace.size()) + " bytes, " +
           std::to_string(n_models) + " models need " + std::to_string(need) + " (merge_workspace_bytes)";
  });
  require(reinterpret_cast<std::uintptr_t>(workspace.data()) % alignof(select_state) == 0, errc::invalid_argument,
          [&] { return std::string(what) + ": the workspace must be 8-byte aligned"; });
}

//! Checks the arguments of a TIES / DARE call and builds the kernels' parameters (host only).
inline gta_params make_gta_params(const char *what, merge_source base, std::span<const merge_source> models,
                                  std::span<const float> weights, std::span<const double> densities,
                                  sparsify_kind kind, const dare_stream &rng, const gta_options &opt,
                                  std::span<std::byte> workspace, std::size_t n) {
  check_sources(what, models, weights.size());
  check_base(what, base);
  require(densities.size() == models.size(), errc::shape_mismatch, [&] {
    return std::string(what) + ": " + std::to_string(models.size()) + " models but " +
           std::to_string(densities.size()) + " densities";
  });
  for (std::size_t i = 0; i < densities.size(); ++i)
    require(densities[i] > 0.0 && densities[i] <= 1.0, errc::invalid_argument, [&] {
      return std::string(what) + ": density of model " + std::to_string(i) + " is " + std::to_string(densities[i]) +
             ", expected (0, 1]";
    });
  check_workspace(what, workspace, models.size());
  require(kind != sparsify_kind::magnitude || n <= std::uint64_t{0xFFFFFFFFu}, errc::unsupported, [&] {
    return std::string(what) + ": " + std::to_string(n) +
           " elements; TIES selection on the GPU handles tensors of up to 2^32 - 1 elements";
  });

  gta_params P{};
  P.n_models = static_cast<int>(models.size());
  P.base = base.data;
  P.base_type = base.type;
  P.n = n;
  P.first_block = rng.element_offset / 4;
  P.lead = static_cast<unsigned>(rng.element_offset % 4);
  P.consensus = opt.consensus;
  P.normalize = opt.normalize;
  P.lambda = static_cast<float>(opt.lambda);
  double weight_sum = 0.0;
  for (float w : weights) weight_sum += static_cast<double>(w);
  const double plain_divisor = std::abs(weight_sum) < 1e-8 ? 1.0 : weight_sum;
  P.plain_scale = static_cast<float>(opt.lambda / (opt.normalize ? plain_divisor : 1.0));
  for (std::size_t i = 0; i < models.size(); ++i) {
    gta_model &m = P.models[i];
    m.data = models[i].data;
    m.type = models[i].type;
    m.weight = weights[i];
    const double density = densities[i];
    // density 1: the CPU returns before masking and before any rescale.
    m.sparsify = density >= 1.0 ? sparsify_kind::none : kind;
    m.rescale_l1 = m.sparsify != sparsify_kind::none && opt.rescale == rescale_mode::l1_norm;
    m.keep_scale = m.sparsify != sparsify_kind::none && opt.rescale == rescale_mode::inverse_density
                       ? static_cast<float>(1.0 / density)
                       : 1.0f;
    m.density = static_cast<float>(density);
    m.rng_key = key_for(rng.seed, rng.tensor_name, static_cast<std::uint32_t>(i));
    P.k_keep[i] = m.sparsify == sparsify_kind::magnitude ? magnitude_keep_count(n, density) : 0;
  }
  return P;
}

inline void run_gta(const char *what, merge_source base, std::span<const merge_source> models,
                    std::span<const float> weights, std::span<const double> densities, sparsify_kind kind,
                    const dare_stream &rng, const gta_options &opt, std::span<std::byte> workspace, float *out,
                    float *task_out, std::size_t n, cudaStream_t stream) {
  const gta_params P = make_gta_params(what, base, models, weights, densities, kind, rng, opt, workspace, n);
  if (n == 0) return;

  auto *states = reinterpret_cast<select_state *>(workspace.data());
  auto *hist = reinterpret_cast<unsigned *>(workspace.data() + workspace_state_bytes(models.size()));
  const auto n_models = static_cast<unsigned>(models.size());
  select_init_kernel<<<n_models, 256, 0, stream>>>(P, states, hist);
  DMS_CUDA_CHECK(cudaGetLastError());
  bool any_magnitude = false, any_l1 = false;
  for (unsigned i = 0; i < n_models; ++i) {
    any_magnitude |= P.models[i].sparsify == sparsify_kind::magnitude;
    any_l1 |= P.models[i].rescale_l1;
  }
  if (any_magnitude) {
    unsigned consumed = 0;
    const dim3 hgrid(blocks_for(n, max_histogram_blocks), n_models);
    for (unsigned width : digit_widths) {
      const unsigned shift = key_bits - consumed - width;
      select_histogram_kernel<<<hgrid, merge_threads, 0, stream>>>(P, states, hist, shift, width);
      DMS_CUDA_CHECK(cudaGetLastError());
      select_pick_kernel<<<n_models, select_threads, 0, stream>>>(states, hist, width);
      DMS_CUDA_CHECK(cudaGetLastError());
      consumed += width;
    }
  }
  const std::uint64_t groups = group_count(n, P.lead);
  if (any_l1) {
    const dim3 grid(blocks_for(groups, max_merge_blocks), n_models);
    l1_norms_kernel<<<grid, merge_threads, 0, stream>>>(P, states);
    DMS_CUDA_CHECK(cudaGetLastError());
    l1_factor_kernel<<<1, max_merge_models, 0, stream>>>(P, states);
    DMS_CUDA_CHECK(cudaGetLastError());
  }
  gta_mix_kernel<<<blocks_for(groups, max_merge_blocks), merge_threads, 0, stream>>>(P, states, out, task_out);
  DMS_CUDA_CHECK(cudaGetLastError());
}

} // namespace detail
} // namespace cuda
DMS_NAMESPACE_END
