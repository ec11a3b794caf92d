// dms/merge/sparsify.hpp: sparsifying task vectors before they are merged (TIES, DARE,
// breadcrumbs, DELLA), with mergekit 0.1.5's exact rules.
//
// Each function works in place on one task vector d = theta - base (an fp32 scratch copy the
// strategy owns) and zeroes the entries it drops:
//  * trim_magnitude      keeps the k = max(1, floor(density * n)) largest |d| (TIES).
//  * trim_outliers       drops the floor(gamma * n) largest and then the smallest, so that
//                        floor(density * n) entries remain (Model Breadcrumbs). mergekit before
//                        0.1.5 sliced `[n_bot:-n_top]`, which is empty when n_top = 0 and zeroed
//                        the whole delta; the rank window [n_bot, n_bot + target) has no such case.
//  * drop_random         keeps each entry with probability density (DARE).
//  * della_magprune      keeps each entry with a probability that grows with its magnitude rank
//                        in its row (DELLA).
// and rescale_l1 / the inverse-density option restore the magnitude the drop removed.
//
// Top-k is a selection, never a full sort: std::nth_element on a copy of the magnitudes (O(n)) for
// small tensors, a radix selection on the float bits (three sequential passes) for large ones.
// Ties in magnitude are broken by element index (lower index = lower rank), so results are
// deterministic; mergekit's torch.argsort breaks them arbitrarily, which only matters for tensors
// with repeated magnitudes.
//
// Random masks come from Philox4x32-10 (dms/core/rng.hpp): entry i of a tensor draws
// stream.uniform(first_index + i), with the stream keyed by (seed, tensor name, model index) and
// first_index = merge_inputs::element_offset. A mask therefore does not depend on chunking, thread
// count or tensor order. It does differ from mergekit's (torch's global generator, consumed in
// graph order): compare DARE with mergekit by statistics, or through the same mask.
//
// Whole-model TIES (the original TIES code trims each task vector over all of its tensors, not
// tensor by tensor) needs one threshold per model before any tensor is merged: kth_magnitude_finder
// finds it exactly in two streaming passes with bounded memory (a radix selection on the float
// bits), and the `ties` strategy then keeps |d| >= threshold (see its `trim_threshold` parameter).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/rng.hpp"

DMS_NAMESPACE_BEGIN

//! How a sparsified task vector regains the magnitude its dropped entries carried.
enum class rescale_mode : std::uint8_t {
  none,            //!< keep survivors as they are (mergekit with `rescale: false`)
  l1_norm,         //!< scale survivors so that the L1 norm matches the dense vector's:
                   //!< ||d||_1 / ||m * d||_1 (mergekit 0.1.5 `rescale: true`); skipped when either
                   //!< norm is below 1e-7, as in mergekit
  inverse_density, //!< divide each survivor by its keep probability: 1 / density (original DARE,
                   //!< PEFT's dare_*), 1 / p_i per entry for DELLA (the DELLA paper)
};

//! Entries magnitude trimming keeps out of n: max(1, floor(density * n)) for density in (0, 1)
//! (mergekit 0.1.5 keeps at least one), n for density >= 1, 0 for n = 0 or density <= 0.
constexpr std::size_t magnitude_keep_count(std::size_t n, double density) noexcept {
  if (n == 0 || !(density > 0.0)) return 0;
  if (density >= 1.0) return n;
  const auto k = static_cast<std::size_t>(density * static_cast<double>(n));
  return k == 0 ? 1 : std::min(k, n);
}

namespace detail {

[[noreturn]] inline void throw_nan_task_vector(const error_context &where) {
  throw error(errc::numeric, "the task vector holds NaN: magnitude selection needs finite values", where);
}

//! Zeroes the entries of x whose rank in ascending (|x|, index) order is outside [lo, hi).
//! Two nth_element calls on a copy of the magnitudes find the boundary values; one pass counts
//! what lies below them and one pass keeps the window, resolving equal magnitudes by index.
inline void keep_magnitude_ranks(std::span<float> x, std::size_t lo, std::size_t hi,
                                 std::vector<float> &scratch, const error_context &where = {}) {
  const std::size_t n = x.size();
  hi = std::min(hi, n);
  if (lo >= hi) {
    std::fill(x.begin(), x.end(), 0.0f);
    return;
  }
  if (lo == 0 && hi == n) return;
  scratch.resize(n);
  bool nan = false;
  for (std::size_t i = 0; i < n; ++i) {
    scratch[i] = std::abs(x[i]);
    nan |= std::isnan(x[i]);
  }
  if (nan) throw_nan_task_vector(where);
  // v_lo = value of rank lo, v_hi = value of rank hi - 1 (both in the window).
  std::nth_element(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(lo), scratch.end());
  const float v_lo = scratch[lo];
  std::nth_element(scratch.begin() + static_cast<std::ptrdiff_t>(lo),
                   scratch.begin() + static_cast<std::ptrdiff_t>(hi - 1), scratch.end());
  const float v_hi = scratch[hi - 1];
  std::size_t below_lo = 0, below_hi = 0; // entries with |x| < v_lo, < v_hi
  for (std::size_t i = 0; i < n; ++i) {
    const float m = std::abs(x[i]);
    below_lo += m < v_lo;
    below_hi += m < v_hi;
  }
  std::size_t seen_lo = 0, seen_hi = 0; // entries equal to v_lo, v_hi met so far (index order)
  for (std::size_t i = 0; i < n; ++i) {
    const float m = std::abs(x[i]);
    // A boundary value's rank is (entries below it) + (equal entries before it in index order).
    bool keep;
    if (m == v_lo) {
      const std::size_t rank = below_lo + seen_lo++;
      keep = rank >= lo && rank < hi;
    } else if (m == v_hi) {
      keep = below_hi + seen_hi++ < hi; // above v_lo, so at least lo
    } else {
      keep = m > v_lo && m < v_hi;
    }
    if (!keep) x[i] = 0.0f;
  }
}

//! Zeroes all but the k largest |x| (ties broken as keep_magnitude_ranks(x, n - k, n): among
//! equal magnitudes the higher indices rank higher), by radix selection on the bits of |x|
//! (non-negative floats order like their bit patterns): a 2^16-bin histogram of the high half,
//! one of the low half inside the bin that holds the k-th value, then one keep pass. Sequential
//! reads and no copy: several times faster than nth_element on large tensors.
//! Task vectors of BF16 checkpoints hit few bins (a difference of two BF16 values has few
//! significant bits), so each histogram is split in four interleaved copies: increments of one
//! bin by consecutive elements would otherwise wait on each other. Needs n < 2^32.
inline void keep_top_magnitudes(std::span<float> x, std::size_t k, const error_context &where = {}) {
  const std::size_t n = x.size();
  if (k >= n) return;
  if (k == 0) {
    std::fill(x.begin(), x.end(), 0.0f);
    return;
  }
  constexpr std::size_t bins = std::size_t{1} << 16, ways = 4;
  auto bits = [](float v) { return std::bit_cast<std::uint32_t>(v) & 0x7FFFFFFFu; };
  std::vector<std::uint32_t> hist(bins * ways, 0);
  // Sums the four copies into the first and walks down from the top bin: the bin holding the
  // k-th largest value, with `above` counting the entries of higher bins.
  std::uint64_t above = 0;
  auto find_bin = [&]() {
    for (std::size_t b = bins; b-- > 0;) {
      const std::uint64_t c = std::uint64_t{hist[b]} + hist[bins + b] + hist[2 * bins + b] + hist[3 * bins + b];
      if (above + c >= k) return std::pair{static_cast<std::uint32_t>(b), c};
      above += c;
    }
    return std::pair{std::uint32_t{0}, std::uint64_t{0}}; // unreachable: the counts sum to n > k
  };
  const float *p = x.data();
  std::uint32_t nan = 0;
  std::size_t i = 0;
  for (; i + ways <= n; i += ways)
    for (std::size_t w = 0; w < ways; ++w) {
      const std::uint32_t b = bits(p[i + w]);
      nan |= static_cast<std::uint32_t>(b > 0x7F800000u);
      ++hist[w * bins + (b >> 16)];
    }
  for (; i < n; ++i) {
    const std::uint32_t b = bits(p[i]);
    nan |= static_cast<std::uint32_t>(b > 0x7F800000u);
    ++hist[b >> 16];
  }
  if (nan) throw_nan_task_vector(where);
  const std::uint32_t high = find_bin().first;
  std::fill(hist.begin(), hist.end(), 0);
  // Entries outside the bin add 0 to a bin (no branch to mispredict).
  for (i = 0; i + ways <= n; i += ways)
    for (std::size_t w = 0; w < ways; ++w) {
      const std::uint32_t b = bits(p[i + w]);
      hist[w * bins + (b & 0xFFFFu)] += static_cast<std::uint32_t>((b >> 16) == high);
    }
  for (; i < n; ++i) {
    const std::uint32_t b = bits(p[i]);
    hist[b & 0xFFFFu] += static_cast<std::uint32_t>((b >> 16) == high);
  }
  const auto [low, equal] = find_bin();
  const std::uint32_t kth = (high << 16) | low;
  // `above` entries are larger than the k-th value and k - above of the `equal` ones stay: the
  // last ones by index. Keep everything >= kth (vectorizes), then zero the first equal ones.
  for (float &v : x) v = bits(v) >= kth ? v : 0.0f;
  std::uint64_t skip_equal = equal - (k - above);
  for (float *v = x.data(); skip_equal > 0; ++v)
    if (bits(*v) == kth) *v = 0.0f, --skip_equal;
}

} // namespace detail

//! Sum of |x| in double.
inline double l1_norm(std::span<const float> x) noexcept {
  double s = 0.0;
  for (float v : x) s += static_cast<double>(std::abs(v));
  return s;
}

//! mergekit's L1 rescale: multiplies the sparsified `masked` by l1_before / ||masked||_1, unless
//! either norm is below 1e-7 (mergekit's eps: nothing meaningful to match).
inline void rescale_l1(std::span<float> masked, double l1_before) noexcept {
  const double after = l1_norm(masked);
  if (l1_before < 1e-7 || after < 1e-7) return;
  const auto factor = static_cast<float>(l1_before / after);
  for (float &v : masked) v *= factor;
}

//! TIES trimming: keeps the magnitude_keep_count(n, density) largest |delta|, zeroes the rest,
//! then rescales as asked (the inverse-density factor is 1 / density).
inline void trim_magnitude(std::span<float> delta, double density, rescale_mode rescale,
                           std::vector<float> &scratch, const error_context &where = {}) {
  if (density >= 1.0) return;
  const std::size_t n = delta.size();
  const std::size_t k = magnitude_keep_count(n, density);
  const double before = rescale == rescale_mode::l1_norm ? l1_norm(delta) : 0.0;
  // Radix selection pays for its 1 MiB of histograms from about 64 Ki elements on.
  if (n >= (std::size_t{1} << 16) && n < (std::uint64_t{1} << 32)) detail::keep_top_magnitudes(delta, k, where);
  else detail::keep_magnitude_ranks(delta, n - k, n, scratch, where);
  if (rescale == rescale_mode::l1_norm) rescale_l1(delta, before);
  else if (rescale == rescale_mode::inverse_density) {
    const auto f = static_cast<float>(1.0 / density);
    for (float &v : delta) v *= f;
  }
}

//! Whole-model TIES trimming: zeroes the entries with |delta| < threshold (a threshold from
//! kth_magnitude_finder over all of the model's task-vector entries).
inline void trim_below(std::span<float> delta, float threshold) noexcept {
  for (float &v : delta) v = std::abs(v) >= threshold ? v : 0.0f;
}

//! Model Breadcrumbs (mergekit 0.1.5 magnitude_outliers): target = floor(density * n) entries
//! survive, n_top = floor(gamma * n) largest are dropped as outliers (fewer if density needs
//! them), and the smallest n_bot = max(0, n - target - n_top) are dropped; i.e. ranks
//! [n_bot, n_bot + target) in ascending magnitude survive. density >= 1 keeps everything.
inline void trim_outliers(std::span<float> delta, double density, double gamma, rescale_mode rescale,
                          std::vector<float> &scratch, const error_context &where = {}) {
  if (density >= 1.0) return;
  const std::size_t n = delta.size();
  const auto target = static_cast<std::size_t>(density * static_cast<double>(n));
  const auto n_top = static_cast<std::size_t>(gamma * static_cast<double>(n));
  const std::size_t n_bot = n >= target + n_top ? n - target - n_top : 0;
  const double before = rescale == rescale_mode::l1_norm ? l1_norm(delta) : 0.0;
  detail::keep_magnitude_ranks(delta, n_bot, n_bot + target, scratch, where);
  if (rescale == rescale_mode::l1_norm) rescale_l1(delta, before);
  else if (rescale == rescale_mode::inverse_density && target != 0) {
    const auto f = static_cast<float>(1.0 / density);
    for (float &v : delta) v *= f;
  }
}

//! DARE: keeps entry i with probability density (stream.uniform(first_index + i) < density),
//! then rescales as asked (inverse density: 1 / density).
inline void drop_random(std::span<float> delta, double density, rescale_mode rescale,
                        const philox_stream &stream, std::uint64_t first_index) {
  if (density >= 1.0) return;
  const double before = rescale == rescale_mode::l1_norm ? l1_norm(delta) : 0.0;
  const auto p = static_cast<float>(density);
  // u is a multiple of 2^-24 in [0, 1): comparing in float is exact for u and rounds density to
  // the nearest float, a 2^-25 relative change of the keep rate.
  const float keep_scale = rescale == rescale_mode::inverse_density ? static_cast<float>(1.0 / density) : 1.0f;
  constexpr std::size_t block = 1024;
  float u[block];
  for (std::size_t b = 0; b < delta.size(); b += block) {
    const std::size_t len = std::min(block, delta.size() - b);
    fill_uniform(stream, first_index + b, std::span<float>(u, len));
    float *d = delta.data() + b;
    for (std::size_t j = 0; j < len; ++j) d[j] = u[j] < p ? d[j] * keep_scale : 0.0f;
  }
  if (rescale == rescale_mode::l1_norm) rescale_l1(delta, before);
}

//! DELLA's MagPrune (mergekit 0.1.5 della_magprune). Rows are the lines along dimension 1 of
//! `shape` (a 2-D [rows, cols] tensor: each row; a 1-D tensor: one row; N-D: as torch's dim=1).
//! In each row of length L, the entry of ascending magnitude rank r (1..L) is kept with
//! probability p = (density - epsilon) + 2 epsilon (r - 1) / (L - 1) (p = density when L = 1,
//! where mergekit divides 0 by 0), drawn as stream.uniform(first_index + i) < p.
//! Requires 0 < density - epsilon and density + epsilon < 1 when density < 1 (mergekit's check).
inline void della_magprune(std::span<float> delta, std::span<const std::int64_t> shape, double density,
                           double epsilon, rescale_mode rescale, const philox_stream &stream,
                           std::uint64_t first_index, const error_context &where = {}) {
  if (density >= 1.0) return;
  require(density - epsilon > 0.0 && density + epsilon < 1.0, errc::invalid_argument,
          [&] {
            return "della: parameter 'epsilon' (" + std::to_string(epsilon) +
                   ") must leave density +/- epsilon inside (0, 1); density is " + std::to_string(density);
          },
          where);
  const std::size_t n = delta.size();
  std::size_t rows = 1, len = n, stride = 1; // line k of row (outer, inner): outer*len*stride + k*stride + inner
  if (shape.size() >= 2) {
    rows = static_cast<std::size_t>(shape[0]);
    len = static_cast<std::size_t>(shape[1]);
    stride = 1;
    for (std::size_t d = 2; d < shape.size(); ++d) stride *= static_cast<std::size_t>(shape[d]);
  }
  require(rows * len * stride == n, errc::shape_mismatch,
          [&] { return "della: the shape holds " + std::to_string(rows * len * stride) +
                       " elements, the tensor " + std::to_string(n); },
          where);
  for (float v : delta)
    if (std::isnan(v)) detail::throw_nan_task_vector(where);
  const double before = rescale == rescale_mode::l1_norm ? l1_norm(delta) : 0.0;
  std::vector<std::uint32_t> order(len);
  std::vector<float> magnitude(len);
  for (std::size_t outer = 0; outer < rows; ++outer)
    for (std::size_t inner = 0; inner < stride; ++inner) {
      const std::size_t origin = outer * len * stride + inner;
      for (std::size_t k = 0; k < len; ++k) magnitude[k] = std::abs(delta[origin + k * stride]);
      std::iota(order.begin(), order.end(), std::uint32_t{0});
      // Ranks need the full order of the row: a sort, but of one row at a time.
      std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
        return magnitude[a] < magnitude[b] || (magnitude[a] == magnitude[b] && a < b);
      });
      for (std::size_t r = 0; r < len; ++r) {
        const std::size_t i = origin + order[r] * stride;
        const double rank_norm = len > 1 ? static_cast<double>(r) / static_cast<double>(len - 1) : 0.5;
        const double p = (density - epsilon) + rank_norm * 2.0 * epsilon;
        const bool keep = static_cast<double>(stream.uniform(first_index + i)) < p;
        if (!keep) delta[i] = 0.0f;
        else if (rescale == rescale_mode::inverse_density) delta[i] = static_cast<float>(delta[i] / p);
      }
    }
  if (rescale == rescale_mode::l1_norm) rescale_l1(delta, before);
}

//! The k-th largest magnitude over a stream of chunks, exactly, in two passes and 768 KiB:
//! a radix selection on the bits of |x| (non-negative floats order like their bit patterns).
//! Pass 0 histograms the top 15 bits (sign cleared) and finds the bin holding the k-th value;
//! pass 1 histograms the low 16 bits of the values in that bin. Feed every chunk of every
//! model's task vector to add(), call finish_pass(), and repeat once.
//! @code
//!   auto f = dms::kth_magnitude_finder::from_density(0.2);   // TIES over the whole model
//!   while (!f.done()) {
//!     for (auto &tensor : model_tensors) f.add(task_vector(tensor));  // any chunking
//!     f.finish_pass();
//!   }
//!   params.set("trim_threshold", model_index, f.threshold());
//! @endcode
//! Several finders of the same pass (one per thread) combine with merge() before finish_pass().
class kth_magnitude_finder {
public:
  //! The k-th largest (k >= 1) magnitude of all values added.
  explicit kth_magnitude_finder(std::uint64_t k) : k_(k), coarse_(coarse_bins, 0) {
    require(k >= 1, errc::invalid_argument, [] { return std::string("kth_magnitude_finder: k must be at least 1"); });
  }
  //! k = magnitude_keep_count(total, density), total counted in pass 0: the threshold TIES keeps.
  static kth_magnitude_finder from_density(double density) {
    require(density > 0.0 && density <= 1.0, errc::invalid_argument,
            [&] { return "kth_magnitude_finder: density must be in (0, 1], got " + std::to_string(density); });
    kth_magnitude_finder f(1);
    f.density_ = density;
    return f;
  }

  int pass() const noexcept { return pass_; }
  bool done() const noexcept { return pass_ == 2; }
  std::uint64_t count() const noexcept { return total_; }

  //! Adds a chunk of the current pass. NaN throws errc::numeric (naming `where`).
  void add(std::span<const float> values, const error_context &where = {}) {
    if (pass_ == 0) {
      for (float v : values) {
        const std::uint32_t b = std::bit_cast<std::uint32_t>(v) & 0x7FFFFFFFu;
        if (b > 0x7F800000u) detail::throw_nan_task_vector(where);
        ++coarse_[b >> 16];
      }
      total_ += values.size();
    } else if (pass_ == 1) {
      for (float v : values) {
        const std::uint32_t b = std::bit_cast<std::uint32_t>(v) & 0x7FFFFFFFu;
        if ((b >> 16) == prefix_) ++fine_[b & 0xFFFFu];
      }
    } else {
      throw error(errc::invalid_argument, "kth_magnitude_finder: add() after both passes are done");
    }
  }

  //! Adds the histograms of `other` (same k, same pass) to this one.
  void merge(const kth_magnitude_finder &other) {
    require(other.pass_ == pass_ && other.k_ == k_ && other.density_ == density_, errc::invalid_argument,
            [] { return std::string("kth_magnitude_finder::merge: finders of different passes or k"); });
    if (pass_ == 0) {
      for (std::size_t i = 0; i < coarse_bins; ++i) coarse_[i] += other.coarse_[i];
      total_ += other.total_;
    } else if (pass_ == 1) {
      for (std::size_t i = 0; i < fine_bins; ++i) fine_[i] += other.fine_[i];
    }
  }

  //! Ends a pass: after pass 0 it picks the bin, after pass 1 the value. Throws when fewer than
  //! k values were added.
  void finish_pass() {
    if (pass_ == 0) {
      if (density_) k_ = std::max<std::uint64_t>(1, magnitude_keep_count(total_, *density_));
      require(total_ >= k_, errc::invalid_argument,
              [&] { return "kth_magnitude_finder: asked for the " + std::to_string(k_) +
                           "-th largest magnitude of " + std::to_string(total_) + " values"; });
      std::uint64_t above = 0;
      for (std::size_t b = coarse_bins; b-- > 0;) {
        if (above + coarse_[b] >= k_) {
          prefix_ = static_cast<std::uint32_t>(b);
          break;
        }
        above += coarse_[b];
      }
      k_in_bin_ = k_ - above;
      fine_.assign(fine_bins, 0);
      pass_ = 1;
    } else if (pass_ == 1) {
      std::uint64_t above = 0;
      for (std::size_t b = fine_bins; b-- > 0;) {
        if (above + fine_[b] >= k_in_bin_) {
          threshold_ = std::bit_cast<float>((prefix_ << 16) | static_cast<std::uint32_t>(b));
          break;
        }
        above += fine_[b];
      }
      coarse_ = {};
      fine_ = {};
      pass_ = 2;
    }
  }

  //! The k-th largest magnitude; valid once done().
  float threshold() const {
    require(done(), errc::invalid_argument,
            [] { return std::string("kth_magnitude_finder: threshold() before both passes are finished"); });
    return threshold_;
  }

private:
  static constexpr std::size_t coarse_bins = std::size_t{1} << 15; // sign bit cleared: 15 high bits
  static constexpr std::size_t fine_bins = std::size_t{1} << 16;

  std::uint64_t k_;
  std::optional<double> density_;
  int pass_ = 0;
  std::uint64_t total_ = 0;
  std::uint32_t prefix_ = 0;
  std::uint64_t k_in_bin_ = 0;
  float threshold_ = 0.0f;
  std::vector<std::uint64_t> coarse_, fine_;
};

DMS_NAMESPACE_END
