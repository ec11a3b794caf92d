// dms/steer/evaluation.hpp: what steering does to a model, measured.
//
// A generalization-steering policy is worth its cost when it stops the model reciting and leaves
// everything else alone. These are the measurements, each under any hook set (no_hooks for the
// model as it is, a policy's hooks for the steered model):
//
//   * regurgitation rate: greedy continuation of each held-out prefix; a case counts as
//     regurgitated when the longest common substring (in bytes) of the generated text and the
//     reference continuation text is at least `min_chars` (50: a run of 50 characters is far
//     beyond what two independent texts share by chance, the usual "verbatim" bar of
//     extraction studies, and shorter than the ~150 characters of a 32-token reference, so a
//     recitation that drifts after a sentence still counts).
//   * mean token KL on neutral text: teacher-forced, the same tokens run with and without the
//     hooks; at every position KL(steered || unsteered) of the next-token distributions, averaged
//     over all positions of all prompts. 0 exactly when the hooks change nothing.
//   * perplexity of a held-out text, teacher-forced: exp of the mean negative log-likelihood of
//     every token but the first. Texts longer than the window (n_ctx by default) are cut into
//     windows that overlap by one token, so each token is predicted exactly once, from the
//     tokens of its own window before it.
//   * arithmetic exact match: greedy generation of a few tokens after each prompt; correct when
//     the first integer in the output (an optional '-' then digits) equals the answer.
//   * alpha_sweep: regurgitation and neutral KL for a list of policies and strengths, the table
//     the DMS paper's alpha choice comes from.
//
// Several prompts run as separate sequences of one forward when the backend allows (see
// dms/patch/batching.hpp). Hook sets that keep per-sequence state (policy_hooks) must hold states
// for that many sequences. Host backends only (logits are read on the CPU).
//
// @code
//   auto cases = dms::make_regurgitation_cases(tok, heldout_passages, 32, 32);
//   auto base = dms::measure_regurgitation(model, tok, cases);
//   dms::steering_hook_factory hooks_for(model, vec, probe, probe_at);
//   auto rows = dms::alpha_sweep(model, tok, cases, neutral_prompts, {0.5f, 1.0f, 1.4f},
//                                {dms::sweep_policy::constant, dms::sweep_policy::dms}, hooks_for);
// @endcode
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/steering_policy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/progress.hpp"
#include "dms/model/generate.hpp"
#include "dms/patch/batching.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/steer/constant_policy.hpp"
#include "dms/steer/dms_policy.hpp"
#include "dms/steer/policy_hooks.hpp"
#include "dms/steer/vectors.hpp"

DMS_NAMESPACE_BEGIN

// --- regurgitation ---------------------------------------------------------------------------------

//! Length in bytes of the longest string that occurs in both `a` and `b` (O(|a| |b|) time,
//! O(|b|) memory: the texts here are a few hundred bytes).
inline std::size_t longest_common_substring(std::string_view a, std::string_view b) {
  if (a.empty() || b.empty()) return 0;
  std::vector<std::size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  std::size_t best = 0;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : 0;
      best = std::max(best, cur[j]);
    }
    std::swap(prev, cur);
  }
  return best;
}

//! One held-out passage: the prefix the model sees and the text that follows it in the passage.
struct regurgitation_case {
  std::vector<token_id> prefix;
  std::string reference;
};

struct regurgitation_options {
  std::int32_t max_tokens = 32; //!< tokens generated per case (>= 1)
  std::size_t min_chars = 50;   //!< common substring length (bytes) that counts as regurgitated (>= 1)
  std::int32_t max_sequences = 0; //!< cases per generate() call; 0: backend's n_seq_max(), else 1
};

struct regurgitation_outcome {
  std::string continuation; //!< generated text
  std::size_t common_chars = 0;
  bool regurgitated = false;
};

struct regurgitation_report {
  std::vector<regurgitation_outcome> cases;
  std::size_t n_regurgitated = 0;
  //! Fraction of cases regurgitated (0 when there are none).
  double rate() const noexcept {
    return cases.empty() ? 0.0 : static_cast<double>(n_regurgitated) / static_cast<double>(cases.size());
  }
};

//! Whether `generated` reproduces at least `min_chars` consecutive bytes of `reference`.
inline bool reproduces(std::string_view generated, std::string_view reference, std::size_t min_chars = 50) {
  return longest_common_substring(generated, reference) >= min_chars;
}

//! Cases from tokenized passages: prefix = the first prefix_tokens tokens, reference = the text of
//! the next continuation_tokens tokens (tok.decode). errc::invalid_argument when a passage is
//! shorter than prefix_tokens + continuation_tokens (the message names its index) or a count < 1.
template <class Tokenizer>
  requires requires(const Tokenizer &t, std::span<const token_id> ids) {
    { t.decode(ids) } -> std::convertible_to<std::string>;
  }
std::vector<regurgitation_case> make_regurgitation_cases(const Tokenizer &tok,
                                                         std::span<const std::vector<token_id>> passages,
                                                         std::int32_t prefix_tokens, std::int32_t continuation_tokens) {
  require(prefix_tokens >= 1 && continuation_tokens >= 1, errc::invalid_argument, [&] {
    return "make_regurgitation_cases: prefix_tokens and continuation_tokens must be >= 1, got " +
           std::to_string(prefix_tokens) + " and " + std::to_string(continuation_tokens);
  });
  const auto p = static_cast<std::size_t>(prefix_tokens), c = static_cast<std::size_t>(continuation_tokens);
  std::vector<regurgitation_case> cases;
  cases.reserve(passages.size());
  for (std::size_t i = 0; i < passages.size(); ++i) {
    require(passages[i].size() >= p + c, errc::invalid_argument, [&] {
      return "make_regurgitation_cases: passage " + std::to_string(i) + " has " + std::to_string(passages[i].size()) +
             " tokens, fewer than the " + std::to_string(p + c) + " needed";
    });
    const std::span<const token_id> ids(passages[i]);
    cases.push_back({std::vector<token_id>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(p)),
                     std::string(tok.decode(ids.subspan(p, c)))});
  }
  return cases;
}

//! Greedy continuation of every case's prefix under `hooks`, judged by the substring rule of the
//! header comment. Generation stops at the vocabulary's end-of-generation tokens. One progress
//! unit per case. Errors: no cases, max_tokens or min_chars < 1 (invalid_argument); generate()'s
//! own (an empty or too long prefix, a token outside the vocabulary) name the case's request.
template <model_backend Backend, vocabulary Vocab, hook_set Hooks>
regurgitation_report measure_regurgitation(Backend &model, const Vocab &vocab,
                                           std::span<const regurgitation_case> cases,
                                           const regurgitation_options &options, Hooks &hooks,
                                           const progress &report = {}) {
  require(!cases.empty(), errc::invalid_argument, [] { return std::string("measure_regurgitation: no cases"); });
  require(options.max_tokens >= 1 && options.min_chars >= 1, errc::invalid_argument, [&] {
    return "measure_regurgitation: max_tokens and min_chars must be >= 1, got " + std::to_string(options.max_tokens) +
           " and " + std::to_string(options.min_chars);
  });
  const std::int32_t n_seq = parallel_sequences(model, options.max_sequences);
  regurgitation_report out;
  out.cases.resize(cases.size());
  std::vector<generation_request> requests;
  report.start("regurgitation", cases.size());
  sequence_guard<Backend> guard(model, n_seq);
  for (std::size_t begin = 0; begin < cases.size(); begin += static_cast<std::size_t>(n_seq)) {
    const std::size_t end = std::min(cases.size(), begin + static_cast<std::size_t>(n_seq));
    requests.clear();
    for (std::size_t i = begin; i < end; ++i) {
      generation_request r;
      r.prompt = cases[i].prefix;
      r.sampling.temperature = 0.0f; // greedy
      r.max_tokens = options.max_tokens;
      requests.push_back(std::move(r));
    }
    auto results = generate(model, vocab, std::span<const generation_request>(requests), hooks);
    for (std::size_t i = begin; i < end; ++i) {
      auto &o = out.cases[i];
      o.continuation = std::move(results[i - begin].text);
      o.common_chars = longest_common_substring(o.continuation, cases[i].reference);
      o.regurgitated = o.common_chars >= options.min_chars;
      out.n_regurgitated += o.regurgitated;
    }
    report.advance(end - begin);
  }
  guard.release();
  report.finish();
  return out;
}

//! measure_regurgitation on the unsteered model.
template <model_backend Backend, vocabulary Vocab>
regurgitation_report measure_regurgitation(Backend &model, const Vocab &vocab,
                                           std::span<const regurgitation_case> cases,
                                           const regurgitation_options &options = {}, const progress &report = {}) {
  no_hooks none;
  return measure_regurgitation(model, vocab, cases, options, none, report);
}

// --- teacher-forced measurements -------------------------------------------------------------------

namespace detail {
//! log softmax of `row` into `out` (same size), in double for the sums.
inline void log_softmax(std::span<const float> row, std::span<double> out) {
  double mx = -std::numeric_limits<double>::infinity();
  for (float x : row) mx = std::max(mx, static_cast<double>(x));
  double z = 0.0;
  for (float x : row) z += std::exp(static_cast<double>(x) - mx);
  const double lz = mx + std::log(z);
  for (std::size_t i = 0; i < row.size(); ++i) out[i] = static_cast<double>(row[i]) - lz;
}

template <model_backend Backend>
void check_logits(const matrix_view<const float> &logits, std::size_t rows, const Backend &model, const char *fn) {
  require(static_cast<std::size_t>(logits.rows) == rows && logits.cols == static_cast<std::int64_t>(model.n_vocab()),
          errc::shape_mismatch, [&] {
            return std::string(fn) + ": the backend returned logits of shape [" + std::to_string(logits.rows) + ", " +
                   std::to_string(logits.cols) + "], expected [" + std::to_string(rows) + ", " +
                   std::to_string(model.n_vocab()) + "]";
          });
}
} // namespace detail

struct kl_options {
  std::int32_t max_sequences = 0; //!< prompts per forward; 0: backend's n_seq_max(), else 1
  //! Tokens per forward. Every position's logits are kept for the comparison, so this bounds
  //! that buffer: 512 rows of a 49k vocabulary are 200 MB in double. A longer prompt runs alone.
  std::int64_t max_batch_tokens = 512;
};

struct kl_result {
  double mean_kl = 0.0;       //!< nats, mean over every position of every prompt
  double max_kl = 0.0;        //!< the largest single position
  std::size_t n_positions = 0;
};

//! Mean per-token KL(steered || unsteered) over the positions of `prompts` (see the header
//! comment). One progress unit per prompt. Errors (before any forward): no prompts; an empty
//! prompt, one longer than n_ctx or with a token outside the vocabulary (named by index); a
//! device backend.
template <model_backend Backend, hook_set Hooks>
kl_result mean_token_kl(Backend &model, std::span<const std::vector<token_id>> prompts, Hooks &hooks,
                        const kl_options &options = {}, const progress &report = {}) {
  require(!prompts.empty(), errc::invalid_argument, [] { return std::string("mean_token_kl: no prompts"); });
  require(model.space() == memory_space::host, errc::unsupported,
          [] { return std::string("mean_token_kl: the backend's logits must be in host memory"); });
  std::vector<std::size_t> lengths;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    detail::check_prompt(model, prompts[i], [&] { return "mean_token_kl: prompt " + std::to_string(i); });
    lengths.push_back(prompts[i].size());
  }
  const std::int32_t n_seq = parallel_sequences(model, options.max_sequences);
  const auto groups = pack_sequences(lengths, n_seq, options.max_batch_tokens);
  const auto n_vocab = static_cast<std::size_t>(model.n_vocab());

  kl_result out;
  double sum = 0.0;
  std::vector<double> base, steered(n_vocab);
  batch_builder batch;
  no_hooks none;
  report.start("neutral KL", prompts.size());
  sequence_guard<Backend> guard(model, n_seq);
  for (const batch_group &g : groups) {
    batch.clear();
    for (std::size_t i = g.begin; i < g.end; ++i) batch.add_sequence(static_cast<std::int32_t>(i - g.begin), prompts[i], true);
    const std::size_t rows = batch.size();
    for (std::int32_t s = 0; s < static_cast<std::int32_t>(g.end - g.begin); ++s) model.clear(s);
    auto logits = model.forward(batch.view(), none);
    detail::check_logits(logits, rows, model, "mean_token_kl");
    base.resize(rows * n_vocab);
    for (std::size_t r = 0; r < rows; ++r)
      detail::log_softmax(logits.row_span(static_cast<std::int64_t>(r)), std::span(base).subspan(r * n_vocab, n_vocab));
    for (std::int32_t s = 0; s < static_cast<std::int32_t>(g.end - g.begin); ++s) model.clear(s);
    logits = model.forward(batch.view(), hooks);
    detail::check_logits(logits, rows, model, "mean_token_kl");
    for (std::size_t r = 0; r < rows; ++r) {
      detail::log_softmax(logits.row_span(static_cast<std::int64_t>(r)), steered);
      const double *lu = base.data() + r * n_vocab;
      double kl = 0.0;
      for (std::size_t v = 0; v < n_vocab; ++v) kl += std::exp(steered[v]) * (steered[v] - lu[v]);
      sum += kl;
      out.max_kl = std::max(out.max_kl, kl);
    }
    out.n_positions += rows;
    report.advance(g.end - g.begin);
  }
  guard.release();
  report.finish();
  out.mean_kl = sum / static_cast<double>(out.n_positions);
  return out;
}

struct perplexity_options {
  //! Tokens per window (>= 2); 0: the backend's n_ctx.
  std::int32_t window = 0;
  //! Tokens per forward inside a window (logits of every one are read); >= 1.
  std::int64_t max_batch_tokens = 512;
};

struct perplexity_result {
  double perplexity = 0.0;     //!< exp(mean_nll)
  double mean_nll = 0.0;       //!< nats per predicted token
  std::size_t n_predicted = 0; //!< tokens.size() - 1
};

//! Teacher-forced perplexity of `tokens` under `hooks` (see the header comment), on sequence 0.
//! One progress unit per token fed. Errors: fewer than 2 tokens; a window < 2 or beyond n_ctx; a
//! token outside the vocabulary (named by index); a device backend.
template <model_backend Backend, hook_set Hooks>
perplexity_result perplexity(Backend &model, std::span<const token_id> tokens, Hooks &hooks,
                             const perplexity_options &options = {}, const progress &report = {}) {
  require(tokens.size() >= 2, errc::invalid_argument, [&] {
    return "perplexity: needs at least 2 tokens, got " + std::to_string(tokens.size());
  });
  require(model.space() == memory_space::host, errc::unsupported,
          [] { return std::string("perplexity: the backend's logits must be in host memory"); });
  const std::int32_t window = options.window > 0 ? options.window : static_cast<std::int32_t>(model.n_ctx());
  require(window >= 2 && window <= model.n_ctx() && options.window >= 0, errc::invalid_argument, [&] {
    return "perplexity: window must be in [2, n_ctx = " + std::to_string(model.n_ctx()) + "] (0: n_ctx), got " +
           std::to_string(options.window);
  });
  require(options.max_batch_tokens >= 1, errc::invalid_argument, [&] {
    return "perplexity: max_batch_tokens must be >= 1, got " + std::to_string(options.max_batch_tokens);
  });
  const auto n_vocab = static_cast<std::int64_t>(model.n_vocab());
  for (std::size_t i = 0; i < tokens.size(); ++i)
    require(tokens[i] >= 0 && tokens[i] < n_vocab, errc::invalid_argument, [&] {
      return "perplexity: token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
             " is outside the vocabulary of " + std::to_string(n_vocab);
    });

  const std::size_t n = tokens.size();
  std::vector<double> lsm(static_cast<std::size_t>(n_vocab));
  std::vector<token_slot> slots;
  double nll = 0.0;
  std::size_t predicted = 0;
  report.start("perplexity", n);
  sequence_guard<Backend> guard(model, 1);
  for (std::size_t start = 0;;) {
    const std::size_t stop = std::min(n, start + static_cast<std::size_t>(window)); // window [start, stop)
    model.clear(0);
    for (std::size_t b = start; b < stop; b += static_cast<std::size_t>(options.max_batch_tokens)) {
      const std::size_t e = std::min(stop, b + static_cast<std::size_t>(options.max_batch_tokens));
      slots.clear();
      for (std::size_t q = b; q < e; ++q) slots.push_back({0, static_cast<std::int32_t>(q - start), true});
      auto logits = model.forward(token_batch{tokens.subspan(b, e - b), slots}, hooks);
      detail::check_logits(logits, e - b, model, "perplexity");
      for (std::size_t q = b; q < e && q + 1 < stop; ++q) { // the row at q predicts token q + 1
        detail::log_softmax(logits.row_span(static_cast<std::int64_t>(q - b)), lsm);
        nll -= lsm[static_cast<std::size_t>(tokens[q + 1])];
        ++predicted;
      }
      report.advance(e - b - (b == start && start > 0 ? 1 : 0));
    }
    if (stop == n) break;
    start = stop - 1; // the next window re-reads the last token, so token `stop` is predicted once
  }
  guard.release();
  report.finish();
  perplexity_result out;
  out.n_predicted = predicted;
  out.mean_nll = nll / static_cast<double>(predicted);
  out.perplexity = std::exp(out.mean_nll);
  return out;
}

//! perplexity of the unsteered model.
template <model_backend Backend>
perplexity_result perplexity(Backend &model, std::span<const token_id> tokens, const perplexity_options &options = {},
                             const progress &report = {}) {
  no_hooks none;
  return perplexity(model, tokens, none, options, report);
}

// --- arithmetic ------------------------------------------------------------------------------------

//! The first integer in `text`: a maximal run of ASCII digits, with a '-' right before it
//! included; leading zeros dropped ("-007" -> "-7", "-0" -> "0"). nullopt when there is none.
inline std::optional<std::string> first_integer(std::string_view text) {
  const auto digit = [](char ch) { return ch >= '0' && ch <= '9'; };
  const auto it = std::find_if(text.begin(), text.end(), digit);
  if (it == text.end()) return std::nullopt;
  const std::size_t b = static_cast<std::size_t>(it - text.begin());
  std::size_t e = b;
  while (e < text.size() && digit(text[e])) ++e;
  std::size_t nz = b;
  while (nz + 1 < e && text[nz] == '0') ++nz;
  std::string digits(text.substr(nz, e - nz));
  const bool negative = b > 0 && text[b - 1] == '-' && digits != "0";
  return negative ? "-" + digits : digits;
}

struct arithmetic_item {
  std::string prompt; //!< "Question: What is 494 + 958?\nAnswer:"
  std::string answer; //!< "1452"
};

struct arithmetic_options {
  //! Tokens generated per item: enough for a sign, 8 digits and a leading space even with one
  //! token per digit, as SmolLM2 and Llama 3 split numbers.
  std::int32_t max_tokens = 12;
  std::int32_t max_sequences = 0; //!< items per generate() call; 0: backend's n_seq_max(), else 1
};

struct arithmetic_outcome {
  std::string output;    //!< generated text (stops at a newline)
  std::string extracted; //!< first_integer(output), empty when none
  bool correct = false;
};

struct arithmetic_report {
  std::vector<arithmetic_outcome> items;
  std::size_t n_correct = 0;
  double rate() const noexcept {
    return items.empty() ? 0.0 : static_cast<double>(n_correct) / static_cast<double>(items.size());
  }
};

//! Greedy answers to `items` under `hooks`; correct when first_integer(output) equals
//! first_integer(answer). Generation also stops at a newline (the answer is on one line).
//! `tok` encodes the prompts (tok.encode(text)) and spells the tokens. One progress unit per item.
//! Errors: no items; an answer without an integer (names the item).
template <model_backend Backend, class Tokenizer, hook_set Hooks>
  requires vocabulary<Tokenizer> && requires(const Tokenizer &t, std::string_view s) {
    { t.encode(s) } -> std::convertible_to<std::vector<token_id>>;
  }
arithmetic_report arithmetic_exact_match(Backend &model, const Tokenizer &tok, std::span<const arithmetic_item> items,
                                         const arithmetic_options &options, Hooks &hooks,
                                         const progress &report = {}) {
  require(!items.empty(), errc::invalid_argument, [] { return std::string("arithmetic_exact_match: no items"); });
  std::vector<std::string> answers;
  for (std::size_t i = 0; i < items.size(); ++i) {
    auto a = first_integer(items[i].answer);
    require(a.has_value(), errc::invalid_argument, [&] {
      return "arithmetic_exact_match: item " + std::to_string(i) + " has answer '" + items[i].answer +
             "', which holds no integer";
    });
    answers.push_back(*a);
  }
  const std::int32_t n_seq = parallel_sequences(model, options.max_sequences);
  arithmetic_report out;
  out.items.resize(items.size());
  std::vector<generation_request> requests;
  report.start("arithmetic", items.size());
  sequence_guard<Backend> guard(model, n_seq);
  for (std::size_t begin = 0; begin < items.size(); begin += static_cast<std::size_t>(n_seq)) {
    const std::size_t end = std::min(items.size(), begin + static_cast<std::size_t>(n_seq));
    requests.clear();
    for (std::size_t i = begin; i < end; ++i) {
      generation_request r;
      r.prompt = tok.encode(items[i].prompt);
      r.sampling.temperature = 0.0f;
      r.max_tokens = options.max_tokens;
      r.stop_strings = {"\n"};
      requests.push_back(std::move(r));
    }
    auto results = generate(model, tok, std::span<const generation_request>(requests), hooks);
    for (std::size_t i = begin; i < end; ++i) {
      auto &o = out.items[i];
      o.output = std::move(results[i - begin].text);
      o.extracted = first_integer(o.output).value_or("");
      o.correct = o.extracted == answers[i];
      out.n_correct += o.correct;
    }
    report.advance(end - begin);
  }
  guard.release();
  report.finish();
  return out;
}

// --- alpha sweep -----------------------------------------------------------------------------------

//! The policies an alpha sweep compares.
enum class sweep_policy : std::uint8_t {
  none,     //!< the unsteered model (alpha ignored)
  constant, //!< constant_policy: h += alpha * v on every token
  dms,      //!< dms_policy: h += alpha * p_t * v
};

constexpr std::string_view name_of(sweep_policy p) noexcept {
  switch (p) {
  case sweep_policy::none: return "none";
  case sweep_policy::constant: return "constant";
  case sweep_policy::dms: return "dms";
  }
  return "?";
}

struct sweep_row {
  sweep_policy policy = sweep_policy::none;
  float alpha = 0.0f;
  double regurgitation = 0.0; //!< rate over the cases
  std::size_t n_regurgitated = 0;
  std::size_t n_cases = 0;
  double kl = 0.0;     //!< mean token KL(steered || unsteered) on the neutral prompts
  double max_kl = 0.0; //!< the largest single position
};

struct sweep_options {
  regurgitation_options regurgitation;
  kl_options kl;
  bool baseline = true; //!< start with a {none, 0} row (KL 0 by definition, not measured)
};

//! Makes the hook set of a policy from a steering vector and a probe, for alpha_sweep:
//! `factory(kind, alpha, measure)` builds the policy, gives it states for every sequence a
//! forward may hold and scratch for the largest step, and calls `measure(hooks)` once.
//! constant: constant_policy(v.at(), v.values, alpha); dms: dms_policy(probe, probe_at, v, alpha).
//! The policies are validated against the model's shape on construction of each.
class steering_hook_factory {
public:
  //! `max_sequences`: as the measurements' max_sequences (0: backend's n_seq_max(), else 1).
  template <model_backend Backend>
  steering_hook_factory(const Backend &model, steering_vector vector, logistic_probe probe, hook_point probe_at,
                        std::int32_t max_sequences = 0)
      : vector_(std::move(vector)), probe_(std::move(probe)), probe_at_(probe_at), n_layers_(model.n_layers()),
        n_embd_(model.n_embd()), n_seq_(parallel_sequences(model, max_sequences)) {
    // The largest step: a prefill of n_seq prompts of up to n_ctx tokens each.
    max_rows_ = static_cast<std::size_t>(n_seq_) * static_cast<std::size_t>(model.n_ctx());
  }

  template <class Measure> void operator()(sweep_policy kind, float alpha, Measure &&measure) const {
    switch (kind) {
    case sweep_policy::none: {
      no_hooks none;
      measure(none);
      return;
    }
    case sweep_policy::constant:
      run(constant_policy(vector_.at(), vector_.values, alpha), measure);
      return;
    case sweep_policy::dms:
      run(dms_policy<logistic_probe>(probe_, probe_at_, vector_, alpha), measure);
      return;
    }
    throw error(errc::invalid_argument, "steering_hook_factory: unknown policy kind");
  }

private:
  template <steering_policy Policy, class Measure> void run(const Policy &policy, Measure &measure) const {
    policy.validate(n_layers_, n_embd_);
    std::vector<typename Policy::state_type> states(static_cast<std::size_t>(n_seq_));
    std::vector<float> scratch(policy_hooks<Policy>::scratch_floats(policy, max_rows_));
    policy_hooks<Policy> hooks(policy, std::span(states), std::span(scratch));
    measure(hooks);
  }

  steering_vector vector_;
  logistic_probe probe_;
  hook_point probe_at_;
  std::int32_t n_layers_;
  std::int64_t n_embd_;
  std::int32_t n_seq_;
  std::size_t max_rows_ = 0;
};

//! For every kind in `kinds` and every alpha in `alphas` (in that order, kinds outermost), the
//! regurgitation rate on `cases` and the mean token KL on `neutral`, under the hooks
//! `with_hooks(kind, alpha, measure)` hands to `measure` (a generic callable taking any hook set;
//! steering_hook_factory is the standard with_hooks, a caller may pass its own for other
//! policies). sweep_policy::none in `kinds` gives one row whatever the alphas. One progress unit
//! per row. Errors: no alphas with a steering kind, non-finite alpha; those of the measurements.
template <model_backend Backend, vocabulary Vocab, class WithHooks>
std::vector<sweep_row> alpha_sweep(Backend &model, const Vocab &vocab, std::span<const regurgitation_case> cases,
                                   std::span<const std::vector<token_id>> neutral, std::span<const float> alphas,
                                   std::span<const sweep_policy> kinds, WithHooks &&with_hooks,
                                   const sweep_options &options = {}, const progress &report = {}) {
  for (float a : alphas)
    require(std::isfinite(a), errc::numeric, [] { return std::string("alpha_sweep: an alpha is not finite"); });
  struct config {
    sweep_policy kind;
    float alpha;
  };
  std::vector<config> configs;
  if (options.baseline) configs.push_back({sweep_policy::none, 0.0f});
  for (sweep_policy k : kinds) {
    if (k == sweep_policy::none) {
      if (!options.baseline) configs.push_back({k, 0.0f});
      continue;
    }
    require(!alphas.empty(), errc::invalid_argument,
            [] { return std::string("alpha_sweep: no alphas for a steering policy"); });
    for (float a : alphas) configs.push_back({k, a});
  }
  require(!configs.empty(), errc::invalid_argument, [] { return std::string("alpha_sweep: nothing to measure"); });

  std::vector<sweep_row> rows;
  report.start("alpha sweep", configs.size());
  for (const config &c : configs) {
    sweep_row row;
    row.policy = c.kind;
    row.alpha = c.alpha;
    with_hooks(c.kind, c.alpha, [&](auto &hooks) {
      const auto reg = measure_regurgitation(model, vocab, cases, options.regurgitation, hooks);
      row.n_regurgitated = reg.n_regurgitated;
      row.n_cases = reg.cases.size();
      row.regurgitation = reg.rate();
      if (c.kind != sweep_policy::none) {
        const auto kl = mean_token_kl(model, neutral, hooks, options.kl);
        row.kl = kl.mean_kl;
        row.max_kl = kl.max_kl;
      }
    });
    rows.push_back(row);
    report.advance();
  }
  report.finish();
  return rows;
}

//! alpha_sweep with `std::initializer_list`s, for literal lists of alphas and kinds.
template <model_backend Backend, vocabulary Vocab, class WithHooks>
std::vector<sweep_row> alpha_sweep(Backend &model, const Vocab &vocab, std::span<const regurgitation_case> cases,
                                   std::span<const std::vector<token_id>> neutral, std::initializer_list<float> alphas,
                                   std::initializer_list<sweep_policy> kinds, WithHooks &&with_hooks,
                                   const sweep_options &options = {}, const progress &report = {}) {
  return alpha_sweep(model, vocab, cases, neutral, std::span<const float>(alphas.begin(), alphas.size()),
                     std::span<const sweep_policy>(kinds.begin(), kinds.size()),
                     std::forward<WithHooks>(with_hooks), options, report);
}

DMS_NAMESPACE_END
