// dms/steer/labels.hpp: which passages a model has memorized, read from its own behaviour.
//
// The DMS probe is trained on hidden states labelled "memorizing" or "generalizing". The paper
// does not publish its labels ("patterns of output diversity"), so dms offers the two standard
// behavioural readings, computed from the model itself rather than assumed from the data:
//
//   * extraction (Carlini et al., "extractable memorization"): feed the first `prefix_tokens`
//     tokens of a passage, continue greedily for `continuation_tokens` tokens and compare with the
//     passage's own next tokens position by position. Memorized iff the fraction of positions
//     that agree is >= min_match (0.9: a verbatim recitation may slip on a token or two, e.g. a
//     different apostrophe or line break, and is still a recitation).
//   * diversity (the paper's reading): draw `n_samples` continuations of the prefix at
//     temperature 1 (pure ancestral sampling: no top-k/top-p/min-p, so the draws follow the
//     model's own distribution), seeded and deterministic. A model that recites puts nearly all
//     its mass on one continuation, so the draws agree; one that composes text spreads its mass,
//     so they differ. Memorized iff distinct continuations / n_samples <= max_distinct_ratio.
//     Also reported: the mean entropy (nats) of the model's next-token distribution at every
//     sampled step of every draw, a graded version of the same signal.
//
// label_agreement compares the two labellings of the same passages.
//
// Passages are token ids (the caller tokenizes, so labels are independent of any text
// normalization). End-of-generation tokens do not stop a continuation: the labels compare fixed
// numbers of tokens. Several passages (or samples) run as separate sequences of one forward when
// the backend allows (see dms/patch/batching.hpp); results do not depend on the grouping except
// through the backend's batch-size-dependent rounding (dms::llama_model: none below 64 tokens).
//
// @code
//   std::vector<std::vector<dms::token_id>> passages = ...;      // tok.encode(item.text)
//   auto ext = dms::label_by_extraction(model, passages, {});    // 32-token prefix and reference
//   auto div = dms::label_by_diversity(model, passages, {.seed = 7});
//   auto agree = dms::label_agreement(ext, div);                 // agree.rate(), agree.both, ...
// @endcode
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/progress.hpp"
#include "dms/model/generate.hpp"
#include "dms/model/sampler.hpp"
#include "dms/patch/batching.hpp"

DMS_NAMESPACE_BEGIN

// --- extraction ------------------------------------------------------------------------------------

struct extraction_options {
  std::int32_t prefix_tokens = 32;       //!< tokens fed to the model (>= 1)
  std::int32_t continuation_tokens = 32; //!< tokens generated and compared (>= 1)
  double min_match = 0.9;                //!< in [0, 1]: fraction of agreeing positions for "memorized"
  std::int32_t max_sequences = 0;        //!< passages per generate() call; 0: backend's n_seq_max(), else 1
};

struct extraction_label {
  bool memorized = false;
  double match_fraction = 0.0;        //!< positions where continuation == reference, / continuation_tokens
  std::vector<token_id> prefix;       //!< the passage's first prefix_tokens tokens
  std::vector<token_id> reference;    //!< its next continuation_tokens tokens
  std::vector<token_id> continuation; //!< what the model generated greedily after the prefix
};

//! Fraction of positions i < reference.size() with continuation[i] == reference[i] (a missing
//! continuation token counts as a mismatch). 0 for an empty reference.
inline double positional_match(std::span<const token_id> continuation, std::span<const token_id> reference) {
  if (reference.empty()) return 0.0;
  std::size_t same = 0;
  for (std::size_t i = 0; i < reference.size() && i < continuation.size(); ++i) same += continuation[i] == reference[i];
  return static_cast<double>(same) / static_cast<double>(reference.size());
}

namespace detail {
//! A vocabulary for token-level generation: no text, no end of generation.
struct silent_vocab {
  static constexpr std::string_view piece(token_id) noexcept { return {}; }
  static constexpr bool is_eog(token_id) noexcept { return false; }
};

template <model_backend Backend>
void check_label_passages(const Backend &model, std::span<const std::vector<token_id>> passages,
                          std::int32_t needed, std::int32_t prefix, std::int32_t continuation, const char *fn) {
  require(!passages.empty(), errc::invalid_argument, [&] { return std::string(fn) + ": no passages"; });
  require(prefix >= 1 && continuation >= 1, errc::invalid_argument, [&] {
    return std::string(fn) + ": prefix_tokens and continuation_tokens must be >= 1, got " + std::to_string(prefix) +
           " and " + std::to_string(continuation);
  });
  // The last generated token is never fed back, so a sequence holds prefix + continuation - 1.
  const std::int64_t held = static_cast<std::int64_t>(prefix) + continuation - 1;
  require(held <= model.n_ctx(), errc::invalid_argument, [&] {
    return std::string(fn) + ": prefix_tokens + continuation_tokens - 1 = " + std::to_string(held) +
           " positions do not fit the context of " + std::to_string(model.n_ctx());
  });
  const auto n_vocab = static_cast<std::int64_t>(model.n_vocab());
  for (std::size_t i = 0; i < passages.size(); ++i) {
    require(static_cast<std::int64_t>(passages[i].size()) >= needed, errc::invalid_argument, [&] {
      return std::string(fn) + ": passage " + std::to_string(i) + " has " + std::to_string(passages[i].size()) +
             " tokens, fewer than the " + std::to_string(needed) + " needed";
    });
    for (std::size_t j = 0; j < static_cast<std::size_t>(needed); ++j)
      require(passages[i][j] >= 0 && passages[i][j] < n_vocab, errc::invalid_argument, [&] {
        return std::string(fn) + ": passage " + std::to_string(i) + ": token " + std::to_string(passages[i][j]) +
               " at position " + std::to_string(j) + " is outside the vocabulary of " + std::to_string(n_vocab);
      });
  }
}
} // namespace detail

//! Labels every passage by greedy extraction (see the header comment), with `hooks` on every
//! forward (no_hooks: the model as it is; a policy's hooks: does steering stop the recitation?).
//! Reports one progress unit per passage.
//!
//! Errors (dms::error, invalid_argument, before any forward): no passages; prefix_tokens or
//! continuation_tokens < 1; min_match outside [0, 1]; prefix + continuation - 1 beyond n_ctx; a
//! passage shorter than prefix_tokens + continuation_tokens (the message names its index); a
//! token outside the vocabulary.
template <model_backend Backend, hook_set Hooks>
std::vector<extraction_label> label_by_extraction(Backend &model, std::span<const std::vector<token_id>> passages,
                                                  const extraction_options &options, Hooks &hooks,
                                                  const progress &report = {}) {
  const std::int32_t p = options.prefix_tokens, c = options.continuation_tokens;
  require(std::isfinite(options.min_match) && options.min_match >= 0.0 && options.min_match <= 1.0,
          errc::invalid_argument,
          [&] { return "label_by_extraction: min_match must be in [0, 1], got " + std::to_string(options.min_match); });
  detail::check_label_passages(model, passages, p + c, p, c, "label_by_extraction");
  const std::int32_t n_seq = parallel_sequences(model, options.max_sequences);

  std::vector<extraction_label> labels(passages.size());
  std::vector<generation_request> requests;
  report.start("labelling by extraction", passages.size());
  sequence_guard<Backend> guard(model, n_seq);
  for (std::size_t begin = 0; begin < passages.size(); begin += static_cast<std::size_t>(n_seq)) {
    const std::size_t end = std::min(passages.size(), begin + static_cast<std::size_t>(n_seq));
    requests.clear();
    for (std::size_t i = begin; i < end; ++i) {
      const auto &ids = passages[i];
      auto &l = labels[i];
      l.prefix.assign(ids.begin(), ids.begin() + p);
      l.reference.assign(ids.begin() + p, ids.begin() + p + c);
      generation_request r;
      r.prompt = l.prefix;
      r.sampling.temperature = 0.0f; // greedy
      r.max_tokens = c;
      r.stop_at_eog = false;
      requests.push_back(std::move(r));
    }
    auto results = generate(model, detail::silent_vocab{}, std::span<const generation_request>(requests), hooks);
    for (std::size_t i = begin; i < end; ++i) {
      auto &l = labels[i];
      l.continuation = std::move(results[i - begin].tokens);
      l.match_fraction = positional_match(l.continuation, l.reference);
      l.memorized = l.match_fraction >= options.min_match;
    }
    report.advance(end - begin);
  }
  guard.release();
  report.finish();
  return labels;
}

//! label_by_extraction on the unsteered model.
template <model_backend Backend>
std::vector<extraction_label> label_by_extraction(Backend &model, std::span<const std::vector<token_id>> passages,
                                                  const extraction_options &options = {},
                                                  const progress &report = {}) {
  no_hooks none;
  return label_by_extraction(model, passages, options, none, report);
}

// --- diversity -------------------------------------------------------------------------------------

struct diversity_options {
  std::int32_t prefix_tokens = 32;       //!< tokens fed to the model (>= 1)
  std::int32_t n_samples = 8;            //!< continuations drawn per passage (>= 2)
  //! Tokens per continuation (>= 1). 8, not more: at temperature 1 even a recited text slips
  //! now and then, and over 16 tokens the slips compound. Measured on SmolLM2-135M (Q4_1): the
  //! months and the numbered alphabet gave 8 distinct draws of 16 tokens out of 8, but 1 distinct
  //! draw of 8 tokens.
  std::int32_t continuation_tokens = 8;
  float temperature = 1.0f;              //!< > 0; 1 samples the model's own distribution
  std::uint64_t seed = 0;                //!< with the passage and sample index, determines every draw
  //! Memorized iff distinct / n_samples <= this. 0.5 (at most 4 distinct of 8: the draws repeat
  //! one another at least half the time): a composed continuation of 8 tokens practically never
  //! repeats (SmolLM2: 8 distinct of 8 on prose the model does not recite, 5 to 7 on text it
  //! half knows), a recited one mostly does (1 distinct of 8 on the months).
  double max_distinct_ratio = 0.5;
  std::int32_t max_sequences = 0; //!< samples per forward; 0: backend's n_seq_max(), else 1
};

struct diversity_label {
  bool memorized = false;
  double distinct_ratio = 0.0; //!< distinct continuations / n_samples, in [1/n, 1]
  double mean_entropy = 0.0;   //!< nats; mean over draws and steps of H(softmax(logits)) at temperature 1
  std::int32_t n_distinct = 0; //!< distinct continuations
};

namespace detail {
//! Entropy in nats of softmax(row), computed in double.
inline double softmax_entropy(std::span<const float> row) {
  double mx = -std::numeric_limits<double>::infinity();
  for (float x : row) mx = std::max(mx, static_cast<double>(x));
  double z = 0.0, zx = 0.0;
  for (float x : row) {
    const double e = std::exp(static_cast<double>(x) - mx);
    z += e;
    zx += e * (static_cast<double>(x) - mx);
  }
  return std::log(z) - zx / z; // H = log Z - E[x - mx]
}
} // namespace detail

//! Labels every passage by the diversity of sampled continuations (see the header comment).
//! Draw j of passage i uses the sampler stream i * n_samples + j of `seed`, so the labels do not
//! depend on how draws are grouped into forwards. Reports one progress unit per passage.
//!
//! Errors (dms::error, invalid_argument, before any forward): no passages; prefix_tokens,
//! continuation_tokens < 1; n_samples < 2; temperature not > 0 (greedy draws always agree);
//! max_distinct_ratio outside [0, 1]; prefix + continuation - 1 beyond n_ctx; a passage shorter
//! than prefix_tokens (the message names its index); a token outside the vocabulary.
template <model_backend Backend>
std::vector<diversity_label> label_by_diversity(Backend &model, std::span<const std::vector<token_id>> passages,
                                                const diversity_options &options = {},
                                                const progress &report = {}) {
  const std::int32_t p = options.prefix_tokens, c = options.continuation_tokens, n = options.n_samples;
  require(n >= 2, errc::invalid_argument,
          [&] { return "label_by_diversity: n_samples must be >= 2, got " + std::to_string(n); });
  require(std::isfinite(options.temperature) && options.temperature > 0.0f, errc::invalid_argument, [&] {
    return "label_by_diversity: temperature must be > 0 (greedy draws always agree), got " +
           std::to_string(options.temperature);
  });
  require(std::isfinite(options.max_distinct_ratio) && options.max_distinct_ratio >= 0.0 &&
              options.max_distinct_ratio <= 1.0,
          errc::invalid_argument, [&] {
            return "label_by_diversity: max_distinct_ratio must be in [0, 1], got " +
                   std::to_string(options.max_distinct_ratio);
          });
  detail::check_label_passages(model, passages, p, p, c, "label_by_diversity");
  require(model.space() == memory_space::host, errc::unsupported,
          [] { return std::string("label_by_diversity: the backend's logits must be in host memory"); });
  const std::int32_t n_seq = parallel_sequences(model, options.max_sequences);
  const auto n_vocab = static_cast<std::size_t>(model.n_vocab());

  sampling_params sp;
  sp.temperature = options.temperature;
  sp.top_k = 0;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  sp.repeat_penalty = 1.0f;
  sp.seed = options.seed;

  // A job is one draw: (passage, sample). Jobs run n_seq at a time, each as its own sequence.
  const std::size_t n_jobs = passages.size() * static_cast<std::size_t>(n);
  std::vector<std::vector<token_id>> drawn(n_jobs);
  std::vector<double> entropy_sum(passages.size(), 0.0);
  std::vector<sampler> samplers;
  std::vector<token_id> history;
  batch_builder batch;
  std::vector<token_id> step_tokens;
  std::vector<token_slot> step_slots;

  no_hooks none;
  report.start("labelling by diversity", passages.size());
  std::size_t passages_done = 0;
  sequence_guard<Backend> guard(model, n_seq);
  for (std::size_t begin = 0; begin < n_jobs; begin += static_cast<std::size_t>(n_seq)) {
    const std::size_t end = std::min(n_jobs, begin + static_cast<std::size_t>(n_seq));
    const std::size_t k = end - begin;
    samplers.clear();
    batch.clear();
    for (std::size_t j = begin; j < end; ++j) {
      const auto s = static_cast<std::int32_t>(j - begin);
      const std::size_t passage = j / static_cast<std::size_t>(n);
      model.clear(s);
      batch.add_sequence(s, std::span(passages[passage]).first(static_cast<std::size_t>(p)));
      samplers.emplace_back(sp, j, n_vocab);
      drawn[j].reserve(static_cast<std::size_t>(c));
    }
    auto logits = model.forward(batch.view(), none);
    for (std::int32_t step = 0; step < c; ++step) {
      require(static_cast<std::size_t>(logits.rows) == k && logits.cols == static_cast<std::int64_t>(n_vocab),
              errc::shape_mismatch, [&] {
                return "label_by_diversity: the backend returned " + std::to_string(logits.rows) + " logit rows of width " +
                       std::to_string(logits.cols) + ", expected " + std::to_string(k) + " of " +
                       std::to_string(n_vocab);
              });
      step_tokens.clear();
      step_slots.clear();
      for (std::size_t r = 0; r < k; ++r) {
        const std::size_t j = begin + r;
        const std::size_t passage = j / static_cast<std::size_t>(n);
        const auto row = logits.row_span(static_cast<std::int64_t>(r));
        entropy_sum[passage] += detail::softmax_entropy(row);
        history.assign(passages[passage].begin(), passages[passage].begin() + p);
        history.insert(history.end(), drawn[j].begin(), drawn[j].end());
        const token_id t = samplers[r].sample(row, history, static_cast<std::uint64_t>(step));
        drawn[j].push_back(t);
        step_tokens.push_back(t);
        step_slots.push_back({static_cast<std::int32_t>(r), p + step, true});
      }
      if (step + 1 < c) logits = model.forward(token_batch{step_tokens, step_slots}, none);
    }
    // A passage is done when its last draw is.
    const std::size_t done_now = end / static_cast<std::size_t>(n);
    report.advance(done_now - passages_done);
    passages_done = done_now;
  }
  guard.release();

  std::vector<diversity_label> labels(passages.size());
  for (std::size_t i = 0; i < passages.size(); ++i) {
    std::set<std::vector<token_id>> distinct;
    for (std::int32_t j = 0; j < n; ++j) distinct.insert(drawn[i * static_cast<std::size_t>(n) + static_cast<std::size_t>(j)]);
    auto &l = labels[i];
    l.n_distinct = static_cast<std::int32_t>(distinct.size());
    l.distinct_ratio = static_cast<double>(distinct.size()) / static_cast<double>(n);
    l.mean_entropy = entropy_sum[i] / (static_cast<double>(n) * static_cast<double>(c));
    l.memorized = l.distinct_ratio <= options.max_distinct_ratio;
  }
  report.finish();
  return labels;
}

// --- agreement -------------------------------------------------------------------------------------

//! How two labellings of the same passages compare.
struct label_agreement_counts {
  std::size_t both = 0;            //!< memorized by both
  std::size_t neither = 0;         //!< memorized by neither
  std::size_t only_extraction = 0; //!< memorized by extraction only
  std::size_t only_diversity = 0;  //!< memorized by diversity only

  std::size_t total() const noexcept { return both + neither + only_extraction + only_diversity; }
  //! Fraction of passages on which the labellings agree (0 when there are none).
  double rate() const noexcept {
    return total() ? static_cast<double>(both + neither) / static_cast<double>(total()) : 0.0;
  }
  //! Cohen's kappa: agreement beyond what two independent labellings with these base rates would
  //! reach by chance (1 perfect, 0 chance level). 0 when chance agreement is already total.
  double kappa() const noexcept {
    const double n = static_cast<double>(total());
    if (n == 0) return 0.0;
    const double pe_yes = static_cast<double>(both + only_extraction) / n * static_cast<double>(both + only_diversity) / n;
    const double pe_no =
        static_cast<double>(neither + only_diversity) / n * static_cast<double>(neither + only_extraction) / n;
    const double pe = pe_yes + pe_no;
    return pe >= 1.0 ? 0.0 : (rate() - pe) / (1.0 - pe);
  }
};

//! Compares the two labellings passage by passage. errc::shape_mismatch when their sizes differ.
inline label_agreement_counts label_agreement(std::span<const extraction_label> extraction,
                                              std::span<const diversity_label> diversity) {
  require(extraction.size() == diversity.size(), errc::shape_mismatch, [&] {
    return "label_agreement: " + std::to_string(extraction.size()) + " extraction labels but " +
           std::to_string(diversity.size()) + " diversity labels";
  });
  label_agreement_counts a;
  for (std::size_t i = 0; i < extraction.size(); ++i) {
    const bool e = extraction[i].memorized, d = diversity[i].memorized;
    (e && d ? a.both : !e && !d ? a.neither : e ? a.only_extraction : a.only_diversity) += 1;
  }
  return a;
}

DMS_NAMESPACE_END
