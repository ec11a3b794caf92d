// dms/patch/batching.hpp: running many short prompts through a backend, several at a time.
//
// Activation datasets and activation patching run hundreds of independent forwards of short
// prompts. A backend's forward() takes tokens of several sequences at once, and one step of k
// sequences costs far less than k steps (the weights are read once; the mat-muls get wider), so
// dms packs independent runs into the sequences of one batch:
//   * `parallel_sequences` decides how many sequences one batch may hold: what the caller asked
//     for, else the backend's `n_seq_max()` when it has one (dms::llama_model does), else 1,
//     because the model_backend concept itself promises only sequence 0;
//   * `pack_sequences` groups consecutive runs under that count and a token budget;
//   * `batch_builder` lays the tokens and slots of a group out, each run as its own sequence
//     from position 0;
//   * `sequence_guard` clears the sequences a job used when it ends, normally or by an
//     exception, so the next job (or the caller's generation) starts from an empty cache.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

namespace detail {
template <class B>
concept reports_n_seq_max = requires(const B &b) {
  { b.n_seq_max() } -> std::convertible_to<std::int32_t>;
};

//! Checks prompts against a backend: non-empty, within n_ctx, tokens inside the vocabulary.
//! `what()` names the prompt in messages.
template <model_backend Backend, class What>
void check_prompt(const Backend &backend, std::span<const token_id> prompt, What &&what) {
  require(!prompt.empty(), errc::invalid_argument, [&] { return what() + ": empty prompt"; });
  const auto n_ctx = static_cast<std::int64_t>(backend.n_ctx());
  require(static_cast<std::int64_t>(prompt.size()) <= n_ctx, errc::invalid_argument, [&] {
    return what() + ": " + std::to_string(prompt.size()) + " tokens, more than the context of " +
           std::to_string(n_ctx);
  });
  const auto n_vocab = static_cast<std::int64_t>(backend.n_vocab());
  for (std::size_t j = 0; j < prompt.size(); ++j)
    require(prompt[j] >= 0 && prompt[j] < n_vocab, errc::invalid_argument, [&] {
      return what() + ": token " + std::to_string(prompt[j]) + " at position " + std::to_string(j) +
             " is outside the vocabulary of " + std::to_string(n_vocab);
    });
}

} // namespace detail

//! How many sequences one forward of `backend` may hold: `requested` when > 0 (checked against
//! the backend's n_seq_max() when it reports one), else that n_seq_max(), else 1.
template <model_backend Backend>
std::int32_t parallel_sequences(const Backend &backend, std::int32_t requested) {
  require(requested >= 0, errc::invalid_argument,
          [&] { return "max_sequences must be >= 0 (0: automatic), got " + std::to_string(requested); });
  if constexpr (detail::reports_n_seq_max<Backend>) {
    const auto cap = static_cast<std::int32_t>(backend.n_seq_max());
    require(requested <= cap, errc::invalid_argument, [&] {
      return "max_sequences is " + std::to_string(requested) + " but the backend holds at most " +
             std::to_string(cap) + " sequences";
    });
    return requested > 0 ? requested : std::max<std::int32_t>(cap, 1);
  } else {
    (void)backend;
    return requested > 0 ? requested : 1;
  }
}

//! A run of consecutive items [begin, end) that go into one forward.
struct batch_group {
  std::size_t begin = 0;
  std::size_t end = 0;
};

//! Splits items of the given token lengths, in order, into groups of at most `max_sequences`
//! items and at most `max_tokens` tokens (max_tokens <= 0: no token limit). An item longer than
//! max_tokens forms a group of its own rather than failing: the budget bounds batching, not
//! which prompts may run.
inline std::vector<batch_group> pack_sequences(std::span<const std::size_t> lengths, std::int32_t max_sequences,
                                               std::int64_t max_tokens) {
  require(max_sequences >= 1, errc::invalid_argument,
          [&] { return "pack_sequences: max_sequences must be >= 1, got " + std::to_string(max_sequences); });
  std::vector<batch_group> groups;
  std::size_t begin = 0;
  std::int64_t tokens = 0;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const auto n = static_cast<std::int64_t>(lengths[i]);
    const bool full = i - begin == static_cast<std::size_t>(max_sequences) ||
                      (max_tokens > 0 && i > begin && tokens + n > max_tokens);
    if (full) {
      groups.push_back({begin, i});
      begin = i;
      tokens = 0;
    }
    tokens += n;
  }
  if (begin < lengths.size()) groups.push_back({begin, lengths.size()});
  return groups;
}

//! The tokens and slots of one forward, reused from group to group (it keeps its capacity).
class batch_builder {
public:
  void clear() noexcept {
    tokens_.clear();
    slots_.clear();
  }
  //! Appends `tokens` as sequence `seq`, positions 0, 1, ...; the last token wants logits (every
  //! token when `all_logits`).
  void add_sequence(std::int32_t seq, std::span<const token_id> tokens, bool all_logits = false) {
    for (std::size_t j = 0; j < tokens.size(); ++j) {
      tokens_.push_back(tokens[j]);
      slots_.push_back({seq, static_cast<std::int32_t>(j), all_logits || j + 1 == tokens.size()});
    }
  }
  token_batch view() const noexcept { return {tokens_, slots_}; }
  std::size_t size() const noexcept { return tokens_.size(); }
  std::span<const token_slot> slots() const noexcept { return slots_; }

private:
  std::vector<token_id> tokens_;
  std::vector<token_slot> slots_;
};

//! Clears sequences 0 .. n-1 of a backend now (release()) or when destroyed. A failure to clear
//! while an exception is already leaving is swallowed: the first error is the one to report.
template <model_backend Backend> class sequence_guard {
public:
  sequence_guard(Backend &backend, std::int32_t n) noexcept : backend_(&backend), n_(n) {}
  sequence_guard(const sequence_guard &) = delete;
  sequence_guard &operator=(const sequence_guard &) = delete;
  ~sequence_guard() {
    if (released_) return;
    try {
      release();
    } catch (...) {
    }
  }
  //! Clears the sequences now; the destructor then does nothing. Errors propagate.
  void release() {
    released_ = true;
    for (std::int32_t s = 0; s < n_; ++s) backend_->clear(s);
  }

private:
  Backend *backend_;
  std::int32_t n_;
  bool released_ = false;
};

DMS_NAMESPACE_END
