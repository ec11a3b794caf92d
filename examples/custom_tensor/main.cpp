// examples/custom_tensor: bring your own tensor type and your own backend.
//
// An engine has its own tensor class and its own forward pass. This example shows the whole
// contract with dms in one file:
//   1. `tensor2d`, the engine's tensor type, becomes viewable by giving it `dms_view()`;
//   2. `toy_mlp_backend`, a 2-layer residual MLP language model over tensor2d, models
//      dms::model_backend: it calls hooks at resid_pre / mlp_out / resid_post of each layer and at
//      final_norm / logits;
//   3. a dms::constant_policy (h <- h + c * v at layer 0's resid_post) steers it through
//      dms::policy_hooks, and a recording hook checks that exactly c * v arrived downstream.
// It prints what it measured and "custom_tensor example: PASS", or "FAIL: ..." and exits 1.
#include <dms/dms.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

// --- 1. the engine's tensor type ---------------------------------------------------------------
struct tensor2d {
  std::vector<float> data;
  std::int64_t rows = 0, cols = 0;

  tensor2d() = default;
  tensor2d(std::int64_t r, std::int64_t c) : data(static_cast<std::size_t>(r * c)), rows(r), cols(c) {}
  dms::tensor_view dms_view() { return dms::make_view(data.data(), {rows, cols}); }
  dms::const_tensor_view dms_view() const { return dms::make_view(data.data(), {rows, cols}); }
};
static_assert(dms::viewable<tensor2d &>);

// --- 2. the engine's backend -------------------------------------------------------------------
// Token embedding E [vocab, d]; per layer h <- h + W2 relu(W1 h); final RMS norm; logits = E h
// (tied embeddings). No attention, so a token's output depends only on itself, but positions are
// still checked the way a KV cache needs them.
class toy_mlp_backend {
public:
  toy_mlp_backend(std::int64_t vocab, std::int64_t d, std::int32_t layers, std::int64_t hidden)
      : embed_(vocab, d) {
    std::uint32_t state = 12345u; // fixed LCG: the example prints the same numbers everywhere
    auto next = [&state] {
      state = state * 1664525u + 1013904223u;
      return static_cast<float>(state >> 8) / 16777216.0f - 0.5f;
    };
    for (auto &x : embed_.data) x = next();
    for (std::int32_t l = 0; l < layers; ++l) {
      tensor2d w1(hidden, d), w2(d, hidden);
      for (auto &x : w1.data) x = next();
      for (auto &x : w2.data) x = next();
      w1_.push_back(std::move(w1));
      w2_.push_back(std::move(w2));
    }
  }

  std::int32_t n_layers() const { return static_cast<std::int32_t>(w1_.size()); }
  std::int64_t n_embd() const { return embed_.cols; }
  std::int64_t n_vocab() const { return embed_.rows; }
  std::int32_t n_ctx() const { return 64; }
  dms::memory_space space() const { return dms::memory_space::host; }

  template <dms::hook_set Hooks>
  dms::matrix_view<const float> forward(const dms::token_batch &batch, Hooks &hooks) {
    const auto n = static_cast<std::int64_t>(batch.tokens.size());
    check_positions(batch);
    const auto E = dms::as_matrix<const float>(dms::view_of(embed_));
    resid_ = tensor2d(n, n_embd());
    mlp_ = tensor2d(n, n_embd());
    hidden_ = tensor2d(n, w1_.empty() ? 0 : w1_[0].rows);
    auto h = dms::as_matrix<float>(dms::view_of(resid_));
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t c = 0; c < h.cols; ++c) h(t, c) = E(batch.tokens[t], c);

    auto call = [&](dms::hook_point p, dms::matrix_view<float> rows) {
      if (hooks.wants(p)) {
        dms::activation_block blk{p, rows, batch.slots};
        hooks(blk);
      }
    };
    for (std::int32_t l = 0; l < n_layers(); ++l) {
      call({l, dms::site::resid_pre}, h);
      auto W1 = dms::as_matrix<const float>(dms::view_of(w1_[l]));
      auto W2 = dms::as_matrix<const float>(dms::view_of(w2_[l]));
      auto a = dms::as_matrix<float>(dms::view_of(hidden_));
      auto m = dms::as_matrix<float>(dms::view_of(mlp_));
      for (std::int64_t t = 0; t < n; ++t) {
        for (std::int64_t j = 0; j < W1.rows; ++j) {
          float s = 0;
          for (std::int64_t c = 0; c < W1.cols; ++c) s += W1(j, c) * h(t, c);
          a(t, j) = s > 0 ? s : 0;
        }
        for (std::int64_t c = 0; c < W2.rows; ++c) {
          float s = 0;
          for (std::int64_t j = 0; j < W2.cols; ++j) s += W2(c, j) * a(t, j);
          m(t, c) = s;
        }
      }
      call({l, dms::site::mlp_out}, m);
      for (std::int64_t t = 0; t < n; ++t)
        for (std::int64_t c = 0; c < h.cols; ++c) h(t, c) += m(t, c);
      call({l, dms::site::resid_post}, h);
    }
    for (std::int64_t t = 0; t < n; ++t) { // RMS norm
      float ss = 0;
      for (std::int64_t c = 0; c < h.cols; ++c) ss += h(t, c) * h(t, c);
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(h.cols) + 1e-6f);
      for (std::int64_t c = 0; c < h.cols; ++c) h(t, c) *= inv;
    }
    call({-1, dms::site::final_norm}, h);

    std::int64_t n_out = 0;
    for (const auto &s : batch.slots) n_out += s.want_logits ? 1 : 0;
    logits_ = tensor2d(n_out, n_vocab());
    auto L = dms::as_matrix<float>(dms::view_of(logits_));
    std::int64_t o = 0;
    for (std::int64_t t = 0; t < n; ++t) {
      if (!batch.slots[t].want_logits) continue;
      for (std::int64_t v = 0; v < E.rows; ++v) {
        float s = 0;
        for (std::int64_t c = 0; c < E.cols; ++c) s += E(v, c) * h(t, c);
        L(o, v) = s;
      }
      ++o;
    }
    std::vector<dms::token_slot> out_slots;
    for (const auto &s : batch.slots)
      if (s.want_logits) out_slots.push_back(s);
    if (hooks.wants({-1, dms::site::logits})) {
      dms::activation_block blk{{-1, dms::site::logits}, L, out_slots};
      hooks(blk);
    }
    return L;
  }

  void clear(std::int32_t seq) {
    if (seq >= 0 && static_cast<std::size_t>(seq) < lengths_.size()) lengths_[seq] = 0;
  }

private:
  void check_positions(const dms::token_batch &batch) {
    dms::require(batch.tokens.size() == batch.slots.size(), dms::errc::invalid_argument,
                 [] { return std::string("tokens and slots differ in length"); });
    for (std::size_t i = 0; i < batch.tokens.size(); ++i) {
      const auto &s = batch.slots[i];
      dms::require(batch.tokens[i] >= 0 && batch.tokens[i] < n_vocab(), dms::errc::invalid_argument,
                   [&] { return "token " + std::to_string(batch.tokens[i]) + " outside the vocabulary"; });
      if (static_cast<std::size_t>(s.seq) >= lengths_.size()) lengths_.resize(static_cast<std::size_t>(s.seq) + 1, 0);
      dms::require(s.pos == lengths_[s.seq] && s.pos < n_ctx(), dms::errc::invalid_argument, [&] {
        return "sequence " + std::to_string(s.seq) + " expects position " + std::to_string(lengths_[s.seq]) +
               ", got " + std::to_string(s.pos);
      });
      ++lengths_[s.seq];
    }
  }

  tensor2d embed_;
  std::vector<tensor2d> w1_, w2_;
  tensor2d resid_, mlp_, hidden_, logits_;
  std::vector<std::int32_t> lengths_;
};
static_assert(dms::model_backend<toy_mlp_backend>);

// --- 3. steer it -------------------------------------------------------------------------------
// Records one hook point's rows (a copy: views die with the call).
struct recorder {
  dms::hook_point at;
  std::vector<float> rows;
  bool wants(dms::hook_point p) const { return p == at; }
  void operator()(dms::activation_block &b) {
    rows.clear();
    for (std::int64_t r = 0; r < b.rows.rows; ++r)
      for (float x : b.rows.row_span(r)) rows.push_back(x);
  }
};

// Two hook sets as one: the policy first, then the recorder.
template <class A, class B> struct both {
  A &a;
  B &b;
  bool wants(dms::hook_point p) const { return a.wants(p) || b.wants(p); }
  void operator()(dms::activation_block &blk) {
    if (a.wants(blk.at)) a(blk);
    if (b.wants(blk.at)) b(blk);
  }
};

int main() {
  int failures = 0;
  auto expect = [&](bool ok, const std::string &what) {
    if (!ok) {
      std::printf("FAIL: %s\n", what.c_str());
      ++failures;
    }
  };

  toy_mlp_backend model(/*vocab=*/16, /*d=*/8, /*layers=*/2, /*hidden=*/32);
  // Two sequences of different lengths in one batch: seq 0 = [3 1 4 1 5], seq 1 = [9 2 6].
  const std::vector<dms::token_id> tokens{3, 1, 4, 1, 5, 9, 2, 6};
  const std::vector<dms::token_slot> slots{{0, 0, false}, {0, 1, false}, {0, 2, false}, {0, 3, false},
                                           {0, 4, true},  {1, 0, false}, {1, 1, false}, {1, 2, true}};
  const dms::token_batch batch{tokens, slots};

  // Unsteered run, recording layer 1's input (= layer 0's output after the policy).
  recorder rec{{1, dms::site::resid_pre}, {}};
  const auto base_logits = model.forward(batch, rec);
  const std::vector<float> base_rows = rec.rows;
  std::vector<float> base(base_logits.data, base_logits.data + base_logits.rows * base_logits.cols);
  std::printf("unsteered: %lld logit rows, seq 0 last-token logit[0] = %+.4f\n",
              static_cast<long long>(base_logits.rows), static_cast<double>(base[0]));

  // Steered run: h <- h + c * v at layer 0's resid_post.
  const float c = 1.5f;
  std::vector<float> v(8);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = (i % 2 ? -0.25f : 0.5f);
  dms::constant_policy policy({0, dms::site::resid_post}, v, c);
  dms::validate_policy(policy, model.n_layers(), model.n_embd());
  std::vector<dms::constant_policy::state_type> states(2);
  std::vector<float> scratch(tokens.size());
  dms::policy_hooks steer(policy, std::span(states), std::span(scratch));
  both<decltype(steer), recorder> hooks{steer, rec};
  model.clear(0);
  model.clear(1);
  const auto steered_logits = model.forward(batch, hooks);

  double max_err = 0, max_shift = 0;
  for (std::size_t i = 0; i < rec.rows.size(); ++i) {
    const double want = base_rows[i] + c * v[i % v.size()];
    max_err = std::fmax(max_err, std::fabs(rec.rows[i] - want));
  }
  for (std::int64_t i = 0; i < steered_logits.rows * steered_logits.cols; ++i)
    max_shift = std::fmax(max_shift, std::fabs(steered_logits.data[i] - base[static_cast<std::size_t>(i)]));
  std::printf("steered:   layer-1 input = unsteered + c*v to within %.2e; max logit shift %.4f\n", max_err,
              max_shift);
  expect(max_err < 1e-5, "the steering vector did not arrive intact at layer 1");
  expect(max_shift > 1e-3, "steering did not change the logits");

  // A wrong-width vector is refused before it can corrupt a forward pass.
  bool refused = false;
  try {
    dms::validate_policy(dms::constant_policy({0, dms::site::resid_post}, std::vector<float>(5, 1.0f), c),
                         model.n_layers(), model.n_embd());
  } catch (const dms::error &e) {
    refused = e.code() == dms::errc::shape_mismatch;
    std::printf("refused:   %s\n", e.what());
  }
  expect(refused, "a 5-wide vector was accepted by an 8-wide model");

  // Positions must continue each sequence: replaying position 0 without clear() is an error.
  bool positions_checked = false;
  try {
    model.forward(batch, rec);
  } catch (const dms::error &e) {
    positions_checked = true;
    std::printf("refused:   %s\n", e.what());
  }
  expect(positions_checked, "a replayed position was accepted");

  if (failures) return 1;
  std::printf("custom_tensor example: PASS (dms %s)\n", dms::version.string);
  return 0;
}
