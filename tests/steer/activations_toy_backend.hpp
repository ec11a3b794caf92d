// tests/steer/activations_toy_backend.hpp: a tiny transformer-shaped dms::model_backend for the
// activation and patching tests, plus a plain reference forward to check it against.
//
// Shape: n_layers = 3, n_embd = 4, n_vocab = 6. Per layer l, with h the residual stream:
//   resid_pre  h
//   attn_out   a_l * (causal mean over positions s <= t of resid_pre[s]) rotated by one feature
//   resid_mid  h + attn_out
//   mlp_out    m_l * tanh(resid_mid + bias)
//   resid_post resid_mid + mlp_out
// then final_norm = RMS-normalized resid_post and logits = W final_norm. Positions matter only
// through the causal mean, which is kept per sequence and layer in a "KV cache" (the resid_pre
// rows seen so far), so a sequence may be fed in several steps as with a real backend. Every row
// depends on its own sequence only: batching never changes a value, bit for bit.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/core/error.hpp"

namespace dms::test {

struct toy_weights {
  float attn[3] = {0.5f, -0.7f, 0.9f};
  float mlp[3] = {1.0f, 0.6f, 0.8f};
};

inline constexpr std::int32_t toy_layers = 3;
inline constexpr std::int64_t toy_embd = 4;
inline constexpr std::int64_t toy_vocab = 6;

inline float toy_embedding(token_id t, std::int64_t i) {
  return std::sin(0.9f * static_cast<float>(t) + 0.4f * static_cast<float>(i) + 0.3f);
}
inline float toy_unembedding(std::int64_t v, std::int64_t i) {
  return std::cos(0.7f * static_cast<float>(v) - 0.5f * static_cast<float>(i));
}
inline float toy_mlp(const toy_weights &w, std::int32_t l, std::int64_t i, float x) {
  return w.mlp[l] * std::tanh(x + 0.1f * static_cast<float>(i + l));
}

//! The toy model as a backend. `Reports` gives it an n_seq_max() member (as dms::llama_model
//! has); without it dms runs one sequence per forward.
template <bool Reports> class basic_toy_backend {
public:
  explicit basic_toy_backend(std::int32_t n_seq_max = 4, toy_weights w = {}) : n_seq_max_(n_seq_max), w_(w) {}

  std::int32_t n_layers() const noexcept { return toy_layers; }
  std::int64_t n_embd() const noexcept { return toy_embd; }
  std::int64_t n_vocab() const noexcept { return toy_vocab; }
  std::int32_t n_ctx() const noexcept { return 16; }
  std::int32_t n_seq_max() const noexcept
    requires Reports
  {
    return n_seq_max_;
  }
  memory_space space() const noexcept { return memory_space::host; }

  void clear(std::int32_t seq) { cache_.erase(seq); }

  //! A site whose hooks this backend never calls (to test that dms notices).
  std::optional<site> silent_site;

  // Statistics for the tests.
  std::size_t n_forwards = 0;
  std::size_t max_sequences_seen = 0;
  std::size_t n_sequences_held() const noexcept { return cache_.size(); }

  template <hook_set Hooks> matrix_view<const float> forward(const token_batch &batch, Hooks &hooks) {
    const std::size_t n = batch.tokens.size();
    require(n == batch.slots.size() && n > 0, errc::invalid_argument, [] { return std::string("toy: bad batch"); });
    const auto d = static_cast<std::size_t>(toy_embd);
    std::map<std::int32_t, std::int32_t> next; // seq -> next expected position
    for (std::size_t r = 0; r < n; ++r) {
      const token_slot &s = batch.slots[r];
      require(s.seq >= 0 && s.seq < n_seq_max_, errc::invalid_argument,
              [&] { return "toy: sequence " + std::to_string(s.seq) + " out of range"; });
      require(batch.tokens[r] >= 0 && batch.tokens[r] < toy_vocab, errc::invalid_argument,
              [] { return std::string("toy: token out of range"); });
      auto it = next.find(s.seq);
      const std::int32_t expected =
          it != next.end() ? it->second
                           : (cache_.count(s.seq) ? static_cast<std::int32_t>(cache_[s.seq][0].size() / d) : 0);
      require(s.pos == expected, errc::invalid_argument, [&] {
        return "toy: sequence " + std::to_string(s.seq) + " position " + std::to_string(s.pos) + ", expected " +
               std::to_string(expected);
      });
      next[s.seq] = expected + 1;
    }
    ++n_forwards;
    max_sequences_seen = std::max(max_sequences_seen, next.size());

    h_.assign(n * d, 0.0f);
    tmp_.assign(n * d, 0.0f);
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t i = 0; i < d; ++i) h_[r * d + i] = toy_embedding(batch.tokens[r], static_cast<std::int64_t>(i));

    for (std::int32_t l = 0; l < toy_layers; ++l) {
      call(hooks, {l, site::resid_pre}, h_, d, batch);
      for (std::size_t r = 0; r < n; ++r) {
        auto &c = cache_[batch.slots[r].seq];
        c.resize(toy_layers);
        c[static_cast<std::size_t>(l)].insert(c[static_cast<std::size_t>(l)].end(), h_.begin() + static_cast<std::ptrdiff_t>(r * d),
                                              h_.begin() + static_cast<std::ptrdiff_t>((r + 1) * d));
      }
      for (std::size_t r = 0; r < n; ++r) {
        const auto &c = cache_[batch.slots[r].seq][static_cast<std::size_t>(l)];
        const auto upto = static_cast<std::size_t>(batch.slots[r].pos) + 1;
        for (std::size_t i = 0; i < d; ++i) {
          float sum = 0;
          for (std::size_t s = 0; s < upto; ++s) sum += c[s * d + (i + 1) % d];
          tmp_[r * d + i] = w_.attn[l] * sum / static_cast<float>(upto);
        }
      }
      call(hooks, {l, site::attn_out}, tmp_, d, batch);
      for (std::size_t k = 0; k < n * d; ++k) h_[k] += tmp_[k];
      call(hooks, {l, site::resid_mid}, h_, d, batch);
      for (std::size_t r = 0; r < n; ++r)
        for (std::size_t i = 0; i < d; ++i)
          tmp_[r * d + i] = toy_mlp(w_, l, static_cast<std::int64_t>(i), h_[r * d + i]);
      call(hooks, {l, site::mlp_out}, tmp_, d, batch);
      for (std::size_t k = 0; k < n * d; ++k) h_[k] += tmp_[k];
      call(hooks, {l, site::resid_post}, h_, d, batch);
    }
    for (std::size_t r = 0; r < n; ++r) {
      float ss = 0;
      for (std::size_t i = 0; i < d; ++i) ss += h_[r * d + i] * h_[r * d + i];
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + 1e-5f);
      for (std::size_t i = 0; i < d; ++i) tmp_[r * d + i] = h_[r * d + i] * inv;
    }
    call(hooks, {-1, site::final_norm}, tmp_, d, batch);
    const auto V = static_cast<std::size_t>(toy_vocab);
    all_logits_.assign(n * V, 0.0f);
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t v = 0; v < V; ++v) {
        float acc = 0;
        for (std::size_t i = 0; i < d; ++i)
          acc += toy_unembedding(static_cast<std::int64_t>(v), static_cast<std::int64_t>(i)) * tmp_[r * d + i];
        all_logits_[r * V + v] = acc;
      }
    call(hooks, {-1, site::logits}, all_logits_, V, batch);
    logits_.clear();
    std::int64_t rows = 0;
    for (std::size_t r = 0; r < n; ++r)
      if (batch.slots[r].want_logits) {
        logits_.insert(logits_.end(), all_logits_.begin() + static_cast<std::ptrdiff_t>(r * V),
                       all_logits_.begin() + static_cast<std::ptrdiff_t>((r + 1) * V));
        ++rows;
      }
    return {logits_.data(), rows, toy_vocab, toy_vocab};
  }

private:
  template <class Hooks>
  void call(Hooks &hooks, hook_point p, std::vector<float> &rows, std::size_t width, const token_batch &batch) {
    if (silent_site && p.where == *silent_site) return;
    if (!hooks.wants(p)) return;
    activation_block b{p,
                       {rows.data(), static_cast<std::int64_t>(batch.slots.size()), static_cast<std::int64_t>(width),
                        static_cast<std::int64_t>(width)},
                       batch.slots};
    hooks(b);
  }

  std::int32_t n_seq_max_;
  toy_weights w_;
  std::map<std::int32_t, std::vector<std::vector<float>>> cache_; // seq -> layer -> resid_pre rows
  std::vector<float> h_, tmp_, all_logits_, logits_;
};

using toy_backend = basic_toy_backend<true>;
using toy_backend_one_seq = basic_toy_backend<false>;

static_assert(model_backend<toy_backend>);
static_assert(model_backend<toy_backend_one_seq>);

//! Every activation of one prompt, computed the plain way (whole prompt at once, no cache, no
//! hooks): acts[{layer, site}] = [n_tokens][n_embd] row-major (layer -1 for final_norm/logits).
struct toy_reference {
  std::map<std::pair<std::int32_t, site>, std::vector<float>> acts;
  std::vector<float> row(std::int32_t layer, site s, std::size_t pos) const {
    const auto &m = acts.at({layer, s});
    const std::size_t w = s == site::logits ? static_cast<std::size_t>(toy_vocab) : static_cast<std::size_t>(toy_embd);
    return {m.begin() + static_cast<std::ptrdiff_t>(pos * w), m.begin() + static_cast<std::ptrdiff_t>((pos + 1) * w)};
  }
};

inline toy_reference toy_forward_reference(std::span<const token_id> tokens, const toy_weights &w = {}) {
  const std::size_t n = tokens.size(), d = static_cast<std::size_t>(toy_embd);
  toy_reference ref;
  std::vector<float> h(n * d);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t i = 0; i < d; ++i) h[t * d + i] = toy_embedding(tokens[t], static_cast<std::int64_t>(i));
  for (std::int32_t l = 0; l < toy_layers; ++l) {
    ref.acts[{l, site::resid_pre}] = h;
    std::vector<float> attn(n * d), mlp(n * d);
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t i = 0; i < d; ++i) {
        float sum = 0;
        for (std::size_t s = 0; s <= t; ++s) sum += h[s * d + (i + 1) % d];
        attn[t * d + i] = w.attn[l] * sum / static_cast<float>(t + 1);
      }
    ref.acts[{l, site::attn_out}] = attn;
    for (std::size_t k = 0; k < n * d; ++k) h[k] += attn[k];
    ref.acts[{l, site::resid_mid}] = h;
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t i = 0; i < d; ++i) mlp[t * d + i] = toy_mlp(w, l, static_cast<std::int64_t>(i), h[t * d + i]);
    ref.acts[{l, site::mlp_out}] = mlp;
    for (std::size_t k = 0; k < n * d; ++k) h[k] += mlp[k];
    ref.acts[{l, site::resid_post}] = h;
  }
  std::vector<float> fn(n * d), logits(n * static_cast<std::size_t>(toy_vocab));
  for (std::size_t t = 0; t < n; ++t) {
    float ss = 0;
    for (std::size_t i = 0; i < d; ++i) ss += h[t * d + i] * h[t * d + i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + 1e-5f);
    for (std::size_t i = 0; i < d; ++i) fn[t * d + i] = h[t * d + i] * inv;
    for (std::int64_t v = 0; v < toy_vocab; ++v) {
      float acc = 0;
      for (std::size_t i = 0; i < d; ++i) acc += toy_unembedding(v, static_cast<std::int64_t>(i)) * fn[t * d + i];
      logits[t * static_cast<std::size_t>(toy_vocab) + static_cast<std::size_t>(v)] = acc;
    }
  }
  ref.acts[{-1, site::final_norm}] = fn;
  ref.acts[{-1, site::logits}] = logits;
  return ref;
}

} // namespace dms::test
