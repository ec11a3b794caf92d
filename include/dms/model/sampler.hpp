// dms/model/sampler.hpp: picks the next token from a row of logits, as llama.cpp does.
//
// Steering is judged by what a model writes, so the text dms generates must be comparable with
// what people get from llama.cpp with the same settings. The sampler therefore runs llama.cpp's
// default chain (common/common.h, `common_params_sampling::samplers`, with the samplers that are
// off by default left out) and the same formulas:
//
//   penalties -> top_k -> top_p -> min_p -> temperature -> dist
//
//  * penalties (llama_sampler_penalties): every distinct token among the last `repeat_last_n`
//    tokens of the history has its logit divided by `repeat_penalty` when positive and multiplied
//    by it when zero or negative (CTRL's penalty with the usual fix for negative logits).
//  * top_k: keeps the k largest logits. A partial selection (nth_element, then sorting only the
//    k survivors), never a sort of the whole vocabulary.
//  * top_p: softmax over the survivors (of the untempered logits, because llama.cpp applies the
//    temperature last), then the smallest prefix, largest first, whose probabilities add up to at
//    least p; at least one token is always kept.
//  * min_p: keeps the tokens whose probability is at least min_p times the largest one, i.e.
//    logit >= max_logit + log(min_p); the largest is always kept.
//  * temperature: logits /= temperature; temperature <= 0 means greedy (the first largest logit
//    after the penalties, which every filter above keeps anyway).
//  * dist: one draw from the softmax of what is left.
//
// Ties are broken by token id (the smaller id ranks first), so the kept set and the draw do not
// depend on the order a sort happens to leave equal logits in.
//
// Random numbers come from dms's counter-based Philox (dms/core/rng.hpp): the draw of step t
// (the t-th generated token of a sequence, from 0) of sequence s with seed `seed` is a pure
// function of (seed, s, t). No generator state is carried from step to step, so a sequence gives
// the same tokens whichever other sequences share its batches and in whatever order they run.
//
// Allocation: the constructor (or reserve()) sizes the buffers for a vocabulary; sample() then
// allocates nothing, whatever the vocabulary and history it is given later (a larger vocabulary
// grows the buffers once).
//
// @code
//   dms::sampler s({.temperature = 0.7f, .top_k = 40, .seed = 42}, /*sequence=*/0, n_vocab);
//   for (std::uint64_t step = 0; ...; ++step) {
//     dms::token_id next = s.sample(logits_row, history, step);
//     history.push_back(next);
//   }
// @endcode
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/rng.hpp"

DMS_NAMESPACE_BEGIN

namespace detail {
//! Shortest text that reads back as `x` ("2", "0.95", "nan"), for error messages.
inline std::string shortest(float x) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}
} // namespace detail

//! Settings of the sampling chain. The defaults are llama.cpp's (common_params_sampling in
//! common/common.h: temp 0.80, top_k 40, top_p 0.95, min_p 0.05, penalty_repeat 1.00,
//! penalty_last_n 64), except the seed: llama.cpp draws a random one by default, dms uses 0 so
//! that a run is reproducible unless the caller asks otherwise.
struct sampling_params {
  float temperature = 0.8f;         //!< <= 0: greedy (argmax); otherwise logits are divided by it
  std::int32_t top_k = 40;          //!< keep the k largest logits; 0 = off
  float top_p = 0.95f;              //!< nucleus mass in (0, 1]; 1 = off
  float min_p = 0.05f;              //!< in [0, 1]: drop tokens below min_p * max probability; 0 = off
  float repeat_penalty = 1.0f;      //!< > 0; 1 = off
  std::int32_t repeat_last_n = 64;  //!< tokens of history penalized; 0 = off, -1 = all of it
  std::uint64_t seed = 0;           //!< with the sequence and step, determines every draw

  //! True when the chain reduces to the argmax.
  constexpr bool greedy() const noexcept { return temperature <= 0.0f || top_k == 1; }

  //! Throws errc::invalid_argument (errc::numeric for a non-finite value) naming the first
  //! parameter outside its domain.
  void validate() const {
    require(std::isfinite(temperature), errc::numeric,
            [&] { return "sampling: temperature must be finite, got " + detail::shortest(temperature); });
    require(top_k >= 0, errc::invalid_argument,
            [&] { return "sampling: top_k must be >= 0 (0 = off), got " + std::to_string(top_k); });
    require(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f, errc::invalid_argument,
            [&] { return "sampling: top_p must be in (0, 1] (1 = off), got " + detail::shortest(top_p); });
    require(std::isfinite(min_p) && min_p >= 0.0f && min_p <= 1.0f, errc::invalid_argument,
            [&] { return "sampling: min_p must be in [0, 1] (0 = off), got " + detail::shortest(min_p); });
    require(std::isfinite(repeat_penalty) && repeat_penalty > 0.0f, errc::invalid_argument, [&] {
      return "sampling: repeat_penalty must be finite and > 0 (1 = off), got " + detail::shortest(repeat_penalty);
    });
    require(repeat_last_n >= -1, errc::invalid_argument, [&] {
      return "sampling: repeat_last_n must be >= -1 (0 = off, -1 = whole history), got " +
             std::to_string(repeat_last_n);
    });
  }
};

//! A token that survived the chain, with its logit (after penalties and temperature) and its
//! probability among the survivors.
struct token_candidate {
  token_id id = 0;
  float logit = 0.0f;
  float p = 0.0f;
};

class sampler {
public:
  //! Validates `params` (see sampling_params::validate). `sequence` selects the random stream
  //! (the draws of two sequences with one seed are independent); `n_vocab` sizes the buffers.
  explicit sampler(const sampling_params &params, std::uint64_t sequence = 0, std::size_t n_vocab = 0)
      : params_(params), stream_(key_for(params.seed, "dms.sampler", 0), sequence) {
    params_.validate();
    reserve(n_vocab);
  }

  //! Sizes the buffers for a vocabulary of `n_vocab` tokens, so sample() never allocates.
  void reserve(std::size_t n_vocab) {
    if (buf_.capacity() < n_vocab) buf_.reserve(n_vocab);
    if (seen_.size() < n_vocab) seen_.resize(n_vocab, 0);
  }

  const sampling_params &params() const noexcept { return params_; }
  std::uint64_t sequence() const noexcept { return stream_.stream_id(); }

  //! The next token for one row of logits (one per vocabulary entry, -inf allowed, NaN not).
  //! `history` is what the sequence holds so far (prompt and generated tokens; only its last
  //! repeat_last_n matter), `step` the index of the token being generated (0 for the first).
  token_id sample(std::span<const float> logits, std::span<const token_id> history, std::uint64_t step) {
    const std::size_t n = logits.size();
    require(n > 0, errc::invalid_argument, [] { return std::string("sampler: empty logits row"); });
    reserve(n);
    buf_.resize(n); // within capacity: no allocation
    bool nan = false;
    for (std::size_t i = 0; i < n; ++i) {
      buf_[i] = {static_cast<token_id>(i), logits[i], 0.0f};
      nan |= std::isnan(logits[i]);
    }
    require(!nan, errc::numeric, [] { return std::string("sampler: the logits contain NaN"); });
    apply_penalties(history);

    if (params_.greedy()) {
      // First largest logit: what llama.cpp's greedy and temp <= 0 samplers select.
      std::size_t best = 0;
      for (std::size_t i = 1; i < n; ++i)
        if (buf_[i].logit > buf_[best].logit) best = i;
      require(buf_[best].logit > -INFINITY, errc::numeric,
              [] { return std::string("sampler: every logit is -inf"); });
      buf_[0] = {buf_[best].id, buf_[best].logit, 1.0f};
      buf_.resize(1);
      return buf_[0].id;
    }

    apply_top_k();
    require(buf_[0].logit > -INFINITY, errc::numeric,
            [] { return std::string("sampler: every logit is -inf"); });
    apply_top_p();
    apply_min_p();
    const float inv_t = 1.0f / params_.temperature;
    for (auto &c : buf_) c.logit *= inv_t;
    return draw(step);
  }

  //! The survivors of the last sample() (largest logit first; only the chosen token after a
  //! greedy step), each with its probability among them. Valid until the next sample().
  std::span<const token_candidate> candidates() const noexcept { return buf_; }

  //! The uniform number in [0, 1) that step `step` of this sequence draws with (53 bits).
  double uniform(std::uint64_t step) const noexcept {
    const philox_counter c = stream_.block(step);
    // 27 + 26 bits: every double in [0, 1) with 53-bit spacing, as in std::generate_canonical.
    const std::uint64_t hi = c.v[0] >> 5, lo = c.v[1] >> 6;
    return static_cast<double>((hi << 26) | lo) * 0x1p-53;
  }

private:
  //! Larger logit first, then smaller id: a strict total order, so results never depend on how a
  //! sort arranges ties.
  static bool before(const token_candidate &a, const token_candidate &b) noexcept {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  }

  void apply_penalties(std::span<const token_id> history) {
    if (params_.repeat_penalty == 1.0f || params_.repeat_last_n == 0 || history.empty()) return;
    const std::size_t window =
        params_.repeat_last_n < 0 ? history.size()
                                  : std::min(history.size(), static_cast<std::size_t>(params_.repeat_last_n));
    const auto recent = history.last(window);
    const std::size_t n = buf_.size();
    for (token_id t : recent)
      require(t >= 0 && static_cast<std::size_t>(t) < n, errc::invalid_argument, [&] {
        return "sampler: history token " + std::to_string(t) + " is outside the vocabulary of " + std::to_string(n);
      });
    // buf_ is still indexed by token id here; seen_ makes the penalty apply once per distinct token.
    const float r = params_.repeat_penalty;
    for (token_id t : recent) {
      const auto i = static_cast<std::size_t>(t);
      if (seen_[i]) continue;
      seen_[i] = 1;
      float &l = buf_[i].logit;
      l = l <= 0.0f ? l * r : l / r;
    }
    for (token_id t : recent) seen_[static_cast<std::size_t>(t)] = 0;
  }

  //! Leaves buf_ sorted by before(), cut to top_k when that is on.
  void apply_top_k() {
    const auto n = buf_.size();
    const auto k = static_cast<std::size_t>(params_.top_k);
    if (k > 0 && k < n) {
      std::nth_element(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(k - 1), buf_.end(), before);
      buf_.resize(k);
    }
    std::sort(buf_.begin(), buf_.end(), before);
  }

  //! Writes the softmax of the current logits into p (double sums: 49152 terms in float lose
  //! about 3 significant digits).
  void softmax() {
    const float max_l = buf_[0].logit; // sorted
    double sum = 0.0;
    for (auto &c : buf_) {
      c.p = std::exp(c.logit - max_l);
      sum += c.p;
    }
    for (auto &c : buf_) c.p = static_cast<float>(c.p / sum);
  }

  void apply_top_p() {
    if (params_.top_p >= 1.0f) return;
    softmax();
    double cum = 0.0;
    std::size_t keep = buf_.size();
    for (std::size_t i = 0; i < buf_.size(); ++i) {
      cum += buf_[i].p;
      if (cum >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
    buf_.resize(keep);
  }

  void apply_min_p() {
    if (params_.min_p <= 0.0f) return;
    const float min_logit = buf_[0].logit + std::log(params_.min_p);
    std::size_t keep = 1;
    while (keep < buf_.size() && buf_[keep].logit >= min_logit) ++keep;
    buf_.resize(keep);
  }

  token_id draw(std::uint64_t step) {
    softmax();
    const double target = uniform(step); // probabilities now sum to 1 (up to rounding)
    double cum = 0.0;
    for (const auto &c : buf_) {
      cum += c.p;
      if (cum > target) return c.id;
    }
    return buf_.back().id; // rounding left the sum a hair below target
  }

  sampling_params params_;
  philox_stream stream_;
  std::vector<token_candidate> buf_;
  std::vector<unsigned char> seen_;
};

DMS_NAMESPACE_END
