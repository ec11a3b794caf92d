// tests/generate: a deterministic stand-in for a model backend and a tokenizer, so the generation
// loop is tested without weights. The logits of a token are a pure function of (token, position),
// and the backend checks what a real one would (positions continue each sequence's cache, the
// sequence exists, the token is in the vocabulary), so a wrong batch is a failing test, not a
// silently different result.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <dms/concepts/model_backend.hpp>
#include <dms/core/error.hpp>
#include <dms/model/generate.hpp>

namespace dms::test {

//! Tokens whose pieces let tests build stop strings across token boundaries and split UTF-8.
struct fake_vocab {
  std::vector<std::string> pieces{"<eos>", "a", "b",  "c",    "hello", " world", "<",  "/",
                                  "s",     ">", "x", "\xC3", "\xA9", "!",      "<e", "nd>"};
  std::string_view piece(token_id t) const { return pieces.at(static_cast<std::size_t>(t)); }
  bool is_eog(token_id t) const { return t == 0; }
  token_id id(std::string_view p) const {
    for (std::size_t i = 0; i < pieces.size(); ++i)
      if (pieces[i] == p) return static_cast<token_id>(i);
    throw error(errc::invalid_argument, "fake_vocab: no piece '" + std::string(p) + "'");
  }
};
static_assert(vocabulary<fake_vocab>);

class fake_model {
public:
  //! fills `row` (n_vocab floats) with the logits that follow `token` at position `pos`.
  using rule = std::function<void(token_id token, std::int32_t pos, std::span<float> row)>;

  fake_model(std::int32_t n_vocab, std::int32_t n_ctx, std::int32_t n_seq, rule r)
      : n_vocab_(n_vocab), n_ctx_(n_ctx), rule_(std::move(r)), lengths_(static_cast<std::size_t>(n_seq), -1) {
    // Reserved up front so that the backend allocates nothing per step (tests count allocations).
    logits_.reserve(static_cast<std::size_t>(n_vocab) * 64);
    logit_slots_.reserve(64);
    batch_sizes.reserve(4096);
  }

  //! Smooth pseudo-random logits in [-3, 3]: every token is possible, none is certain.
  static rule smooth() {
    return [](token_id t, std::int32_t pos, std::span<float> row) {
      for (std::size_t v = 0; v < row.size(); ++v)
        row[v] = 3.0f * std::sin(0.7f * static_cast<float>(t) + 1.3f * static_cast<float>(pos) +
                                 2.1f * static_cast<float>(v) + 0.01f * static_cast<float>(t * v));
    };
  }
  //! After token t comes next[t] with a margin no temperature below 10 overturns.
  static rule chain(std::vector<token_id> next) {
    return [next = std::move(next)](token_id t, std::int32_t, std::span<float> row) {
      for (auto &x : row) x = 0.0f;
      row[static_cast<std::size_t>(next.at(static_cast<std::size_t>(t)))] = 100.0f;
    };
  }

  std::int32_t n_layers() const { return 1; }
  std::int64_t n_embd() const { return 1; }
  std::int64_t n_vocab() const { return n_vocab_; }
  std::int32_t n_ctx() const { return n_ctx_; }
  memory_space space() const { return memory_space::host; }

  template <hook_set Hooks> matrix_view<const float> forward(const token_batch &batch, Hooks &hooks) {
    require(batch.tokens.size() == batch.slots.size() && !batch.tokens.empty(), errc::invalid_argument,
            [] { return std::string("fake_model: bad batch"); });
    ++forwards;
    batch_sizes.push_back(static_cast<std::int32_t>(batch.tokens.size()));
    std::size_t rows = 0;
    for (const auto &s : batch.slots) rows += s.want_logits ? 1 : 0;
    logits_.resize(rows * static_cast<std::size_t>(n_vocab_));
    std::size_t r = 0;
    for (std::size_t i = 0; i < batch.tokens.size(); ++i) {
      const auto &s = batch.slots[i];
      require(s.seq >= 0 && static_cast<std::size_t>(s.seq) < lengths_.size() && lengths_[s.seq] >= 0,
              errc::invalid_argument, [&] { return "fake_model: sequence " + std::to_string(s.seq) + " not cleared"; });
      require(s.pos == lengths_[s.seq], errc::invalid_argument, [&] {
        return "fake_model: sequence " + std::to_string(s.seq) + " expects position " +
               std::to_string(lengths_[s.seq]) + ", got " + std::to_string(s.pos);
      });
      require(s.pos < n_ctx_, errc::invalid_argument, [] { return std::string("fake_model: context full"); });
      require(batch.tokens[i] >= 0 && batch.tokens[i] < n_vocab_, errc::invalid_argument,
              [] { return std::string("fake_model: token out of range"); });
      ++lengths_[s.seq];
      if (!s.want_logits) continue;
      rule_(batch.tokens[i], s.pos, std::span(logits_).subspan(r * static_cast<std::size_t>(n_vocab_),
                                                                 static_cast<std::size_t>(n_vocab_)));
      ++r;
    }
    matrix_view<float> m{logits_.data(), static_cast<std::int64_t>(rows), n_vocab_, n_vocab_};
    if (hooks.wants({-1, site::logits})) {
      // (the slots of the rows with logits only, as a real backend's logits hook would see them)
      logit_slots_.clear();
      for (const auto &s : batch.slots)
        if (s.want_logits) logit_slots_.push_back(s);
      activation_block blk{{-1, site::logits}, m, logit_slots_};
      hooks(blk);
    }
    return m;
  }

  void clear(std::int32_t seq) {
    require(seq >= 0 && static_cast<std::size_t>(seq) < lengths_.size(), errc::invalid_argument,
            [&] { return "fake_model: no sequence " + std::to_string(seq) + " (n_seq_max " +
                         std::to_string(lengths_.size()) + ")"; });
    lengths_[static_cast<std::size_t>(seq)] = 0;
  }
  std::int32_t seq_length(std::int32_t seq) const { return lengths_.at(static_cast<std::size_t>(seq)); }

  int forwards = 0;
  std::vector<std::int32_t> batch_sizes;

private:
  std::int64_t n_vocab_;
  std::int32_t n_ctx_;
  rule rule_;
  std::vector<std::int32_t> lengths_;
  std::vector<float> logits_;
  std::vector<token_slot> logit_slots_;
};
static_assert(model_backend<fake_model>);

} // namespace dms::test
