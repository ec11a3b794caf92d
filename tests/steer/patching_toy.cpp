// Activation patching (dms/patch/activation_patching.hpp) on the toy backend, whose structure
// fixes many effects exactly:
//  * resid_pre of layer l at all positions is everything layers >= l read (the toy's attention
//    cache of layer l holds resid_pre of layer l), so patching it reproduces the clean run: the
//    effect is 1 at every layer, to the bit;
//  * a row at position p depends on tokens 0..p only, so positions before the first differing
//    token hold the same activations in both runs: patching them changes nothing (effect 0);
//  * with an MLP weight of 0 the MLP output is 0 in both runs: patching it changes nothing;
//  * at the last layer, the output at the last position depends on the patched site through a few
//    formulas that the test writes out from the reference activations of both prompts.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "activations_toy_backend.hpp"
#include "dms/patch/activation_patching.hpp"

namespace {

using dms::site;
using dms::token_id;
using dms::test::toy_backend;
using dms::test::toy_embd;
using dms::test::toy_forward_reference;
using dms::test::toy_vocab;

// The clean prompt predicts token 5 over token 1 by a wide margin; changing its last token
// reverses that (m_clean ~ +6.5, m_corrupt ~ -6.4 on logit differences).
const dms::patching_pair last_differs{{1, 2, 3, 4}, {1, 2, 3, 1}, 5, 1};
// The same clean prompt with its second token changed; the targets still separate the runs.
const dms::patching_pair middle_differs{{1, 2, 3, 4}, {1, 5, 3, 4}, 5, 1};

double logit_diff(const std::vector<float> &logits, token_id a, token_id b) {
  return static_cast<double>(logits[static_cast<std::size_t>(a)]) - logits[static_cast<std::size_t>(b)];
}

// Logits of a last-position residual after the last block (final norm, unembedding), as the toy computes them.
std::vector<float> toy_head(const std::vector<float> &h) {
  float ss = 0;
  for (float v : h) ss += v * v;
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(toy_embd) + 1e-5f);
  std::vector<float> logits(static_cast<std::size_t>(toy_vocab));
  for (std::int64_t v = 0; v < toy_vocab; ++v) {
    float acc = 0;
    for (std::int64_t i = 0; i < toy_embd; ++i)
      acc += dms::test::toy_unembedding(v, i) * (h[static_cast<std::size_t>(i)] * inv);
    logits[static_cast<std::size_t>(v)] = acc;
  }
  return logits;
}

template <class F> dms::errc error_code(F &&f) {
  try {
    f();
  } catch (const dms::error &e) {
    INFO(e.what());
    return e.code();
  }
  FAIL("no dms::error thrown");
  return dms::errc::io;
}

void require_same(const dms::patching_result &a, const dms::patching_result &b) {
  REQUIRE(a.patched_metric.size() == b.patched_metric.size());
  for (std::size_t i = 0; i < a.patched_metric.size(); ++i) {
    INFO("entry " << i);
    CHECK(a.patched_metric[i] == b.patched_metric[i]); // the toy is exact whatever the batching
    CHECK(a.effect[i] == b.effect[i]);
  }
  CHECK(a.clean_metric == b.clean_metric);
  CHECK(a.corrupt_metric == b.corrupt_metric);
}

} // namespace

TEST_CASE("patching: clean and corrupted metrics are the reference logit differences", "[steer][patching]") {
  toy_backend model;
  const auto r = dms::activation_patching(model, std::span(&last_differs, 1));
  const auto clean = toy_forward_reference(last_differs.clean).row(-1, site::logits, 3);
  const auto corrupt = toy_forward_reference(last_differs.corrupt).row(-1, site::logits, 3);
  CHECK(r.clean_metric[0] == logit_diff(clean, 5, 1));
  CHECK(r.corrupt_metric[0] == logit_diff(corrupt, 5, 1));
  CHECK(r.clean_metric[0] > 0);
  CHECK(r.corrupt_metric[0] < 0);
  CHECK(r.sites == std::vector<site>{site::resid_pre, site::attn_out, site::mlp_out});
  CHECK(r.layer_begin == 0);
  CHECK(r.layer_end == 3);
  CHECK(r.n_positions == 1);
  CHECK(r.n_runs == 2 + 3 * 3);
  // Uniform batches of 4: the baseline forward carries 2 unpatched runs, the last of the three
  // patched forwards (4 + 4 + 1 variants) 3 more.
  CHECK(r.n_padding_runs == 2 + 3);
  CHECK(r.n_forwards == 4);
  CHECK(model.n_sequences_held() == 0);

  dms::patching_options opt;
  opt.metric = dms::patching_metric::clean_log_prob;
  const auto lp = dms::activation_patching(model, std::span(&last_differs, 1), opt);
  double z = 0;
  for (float v : clean) z += std::exp(static_cast<double>(v));
  CHECK(lp.clean_metric[0] == Approx(clean[5] - std::log(z)).epsilon(1e-12));
}

TEST_CASE("patching: resid_pre at all positions restores the clean run at every layer", "[steer][patching]") {
  toy_backend model;
  for (const auto &pair : {last_differs, middle_differs}) {
    const auto r = dms::activation_patching(model, std::span(&pair, 1));
    for (std::int32_t l = 0; l < 3; ++l) {
      INFO("layer " << l);
      CHECK(r.pair_patched_metric(0, site::resid_pre, l) == r.clean_metric[0]);
      CHECK(r.mean(site::resid_pre, l) == 1.0);
    }
    // Every layer ties at 1: the earliest wins, also inside a restricted range.
    CHECK(dms::choose_steering_layer(r, site::resid_pre) == 0);
    CHECK(dms::choose_steering_layer(r, site::resid_pre, 1, 3) == 1);
  }
}

TEST_CASE("patching: per position, only positions that differ carry an effect", "[steer][patching]") {
  toy_backend model;
  dms::patching_options opt;
  opt.per_position = true;
  opt.sites = {site::resid_pre, site::attn_out, site::mlp_out};

  // Tokens differ at position 3 only: rows 0..2 agree in both runs at every site and layer.
  const auto r = dms::activation_patching(model, std::span(&last_differs, 1), opt);
  REQUIRE(r.n_positions == 4);
  CHECK(r.n_runs == 2 + 3 * 3 * 4);
  for (std::int32_t l = 0; l < 3; ++l)
    for (std::int32_t p = 0; p < 4; ++p) {
      INFO("layer " << l << " position " << p);
      CHECK(r.mean(site::resid_pre, l, p) == (p == 3 ? 1.0 : 0.0));
      if (p < 3) {
        CHECK(r.mean(site::attn_out, l, p) == 0.0);
        CHECK(r.mean(site::mlp_out, l, p) == 0.0);
      }
    }

  // Tokens differ at position 1: at layer 0 that row is the whole difference; position 0 never matters.
  const auto m = dms::activation_patching(model, std::span(&middle_differs, 1), opt);
  for (std::int32_t p = 0; p < 4; ++p) CHECK(m.mean(site::resid_pre, 0, p) == (p == 1 ? 1.0 : 0.0));
  for (std::int32_t l = 0; l < 3; ++l) CHECK(m.mean(site::resid_pre, l, 0) == 0.0);
  // Later, positions 2 and 3 carry the corrupted token too: position 1 alone no longer restores
  // the clean run (the toy overshoots: about 1.34).
  CHECK(std::abs(m.mean(site::resid_pre, 1, 1) - 1.0) > 1e-3);
}

TEST_CASE("patching: last_position_only equals the per-position sweep's last position", "[steer][patching]") {
  toy_backend model;
  dms::patching_options every;
  every.per_position = true;
  every.sites = {site::resid_pre, site::attn_out, site::mlp_out};
  dms::patching_options last;
  last.last_position_only = true;
  last.sites = every.sites;
  for (const auto &pair : {last_differs, middle_differs}) {
    const auto pp = dms::activation_patching(model, std::span(&pair, 1), every);
    const auto lp = dms::activation_patching(model, std::span(&pair, 1), last);
    REQUIRE(lp.n_positions == 1);
    CHECK(lp.n_runs == 2 + 3 * 3);
    for (site s : every.sites)
      for (std::int32_t l = 0; l < 3; ++l) {
        INFO(dms::name_of(s) << " layer " << l);
        CHECK(lp.mean(s, l) == pp.mean(s, l, 3));
      }
  }
  // Tokens differ at position 1: patching only the last position at layer 0 restores nothing.
  const auto m = dms::activation_patching(model, std::span(&middle_differs, 1), last);
  CHECK(m.mean(site::resid_pre, 0) == 0.0);
}

TEST_CASE("patching: the last layer's effects follow from the reference activations", "[steer][patching]") {
  toy_backend model;
  const auto r = dms::activation_patching(model, std::span(&last_differs, 1));
  const auto clean = toy_forward_reference(last_differs.clean);
  const auto corrupt = toy_forward_reference(last_differs.corrupt);
  const std::size_t last = 3;
  const dms::test::toy_weights w;

  // mlp_out of layer 2: resid_post = corrupted resid_mid + clean mlp_out.
  {
    auto h = corrupt.row(2, site::resid_mid, last);
    const auto mlp = clean.row(2, site::mlp_out, last);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += mlp[i];
    const double expected = logit_diff(toy_head(h), 5, 1);
    CHECK(r.pair_patched_metric(0, site::mlp_out, 2) == Approx(expected).epsilon(1e-6));
    CHECK(r.mean(site::mlp_out, 2) ==
          Approx((expected - r.corrupt_metric[0]) / (r.clean_metric[0] - r.corrupt_metric[0])).epsilon(1e-6));
  }
  // attn_out of layer 2: resid_mid = corrupted resid_pre + clean attn_out, then the MLP runs on it.
  {
    auto h = corrupt.row(2, site::resid_pre, last);
    const auto attn = clean.row(2, site::attn_out, last);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += attn[i];
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += dms::test::toy_mlp(w, 2, static_cast<std::int64_t>(i), h[i]);
    CHECK(r.pair_patched_metric(0, site::attn_out, 2) == Approx(logit_diff(toy_head(h), 5, 1)).epsilon(1e-6));
  }
}

TEST_CASE("patching: a site the model does not use has no effect", "[steer][patching]") {
  dms::test::toy_weights w;
  w.mlp[0] = 0.0f; // dead MLPs at layers 0 and 2: their output is 0 in every run
  w.mlp[2] = 0.0f;
  w.mlp[1] = 0.9f;
  toy_backend model(4, w);
  dms::patching_options opt;
  opt.sites = {site::mlp_out, site::attn_out};
  const auto r = dms::activation_patching(model, std::span(&last_differs, 1), opt);
  CHECK(r.mean(site::mlp_out, 0) == 0.0);
  CHECK(r.mean(site::mlp_out, 2) == 0.0);
  REQUIRE(r.mean(site::mlp_out, 1) > 0.1); // the live MLP carries part of the answer
  CHECK(dms::choose_steering_layer(r, site::mlp_out) == 1);
  CHECK(r.site_index(site::attn_out) == 1);
}

TEST_CASE("patching: batched variants equal sequential ones", "[steer][patching]") {
  const std::vector<dms::patching_pair> pairs = {last_differs, middle_differs, {{2, 3, 1, 0}, {2, 4, 1, 0}, 0, 4}};
  dms::patching_options opt;
  opt.per_position = true;

  dms::test::toy_backend_one_seq single;
  const auto a = dms::activation_patching(single, pairs, opt);
  CHECK(single.max_sequences_seen == 1);
  CHECK(a.n_forwards == a.n_runs);

  toy_backend four(4);
  const auto b = dms::activation_patching(four, pairs, opt);
  CHECK(four.max_sequences_seen == 4);
  CHECK(b.n_forwards == 3 * (1 + 36 / 4)); // per pair: clean + corrupt together, then 36 variants 4 at a time

  toy_backend three(4);
  opt.max_sequences = 3;
  opt.max_batch_tokens = 8; // 4-token prompts: at most 2 per forward
  const auto c = dms::activation_patching(three, pairs, opt);
  CHECK(three.max_sequences_seen == 2);

  toy_backend unpadded(4);
  opt = {};
  opt.per_position = true;
  opt.uniform_batches = false;
  const auto d = dms::activation_patching(unpadded, pairs, opt);
  CHECK(d.n_padding_runs == 0);
  CHECK(b.n_padding_runs == 3 * 2); // per pair: 2 in the baseline forward, none after (36 = 9 x 4)

  require_same(a, b);
  require_same(a, c);
  require_same(a, d);
  CHECK(four.n_sequences_held() == 0);
}

TEST_CASE("patching: pack_sequences groups runs under both limits", "[steer][patching]") {
  const auto groups = [](std::vector<std::size_t> lengths, std::int32_t seqs, std::int64_t tokens) {
    std::vector<std::pair<std::size_t, std::size_t>> out;
    for (const auto &g : dms::pack_sequences(lengths, seqs, tokens)) out.emplace_back(g.begin, g.end);
    return out;
  };
  using groups_t = std::vector<std::pair<std::size_t, std::size_t>>;
  CHECK(groups({3, 2, 4, 1}, 4, 0) == groups_t{{0, 4}});
  CHECK(groups({3, 2, 4, 1}, 3, 0) == groups_t{{0, 3}, {3, 4}});
  CHECK(groups({3, 2, 4, 1}, 4, 5) == groups_t{{0, 2}, {2, 4}});
  CHECK(groups({3, 9, 1}, 4, 5) == groups_t{{0, 1}, {1, 2}, {2, 3}}); // a prompt over budget runs alone
  CHECK(groups({}, 4, 5).empty());
  CHECK(error_code([] { (void)dms::pack_sequences({}, 0, 0); }) == dms::errc::invalid_argument);
}

TEST_CASE("patching: caller hooks ride along in every run", "[steer][patching]") {
  // Zeroing mlp_out of layer 0 with a hook is the same model as an MLP weight of 0 there.
  struct zero_mlp0 {
    bool wants(dms::hook_point p) const { return p == dms::hook_point{0, site::mlp_out}; }
    void operator()(dms::activation_block &b) {
      for (std::int64_t r = 0; r < b.rows.rows; ++r)
        for (std::int64_t i = 0; i < b.rows.cols; ++i) b.rows(r, i) = 0.0f;
    }
  } extra;
  const std::vector<dms::patching_pair> pairs = {last_differs, middle_differs};
  toy_backend hooked;
  const auto a = dms::activation_patching(hooked, pairs, {}, extra);
  dms::test::toy_weights w;
  w.mlp[0] = 0.0f;
  toy_backend dead(4, w);
  const auto b = dms::activation_patching(dead, pairs);
  require_same(a, b);
  CHECK(a.mean(site::mlp_out, 0) == 0.0);
}

TEST_CASE("patching: averages over pairs", "[steer][patching]") {
  const std::vector<dms::patching_pair> pairs = {last_differs, middle_differs};
  toy_backend model;
  const auto r = dms::activation_patching(model, pairs);
  const std::size_t block = r.block_size();
  REQUIRE(block == 9);
  for (std::size_t j = 0; j < block; ++j) {
    CHECK(r.mean_effect[j] == Approx((r.effect[j] + r.effect[block + j]) / 2));
    const double pooled = ((r.patched_metric[j] + r.patched_metric[block + j]) / 2 -
                           (r.corrupt_metric[0] + r.corrupt_metric[1]) / 2) /
                          ((r.clean_metric[0] + r.clean_metric[1]) / 2 - (r.corrupt_metric[0] + r.corrupt_metric[1]) / 2);
    CHECK(r.pooled_effect[j] == Approx(pooled));
  }
  // Per pair, the entries match a run of that pair alone.
  const auto alone = dms::activation_patching(model, std::span(&pairs[1], 1));
  for (std::size_t j = 0; j < block; ++j) CHECK(r.effect[block + j] == alone.effect[j]);
}

TEST_CASE("patching: degenerate pairs are an error or NaN, as asked", "[steer][patching]") {
  toy_backend model;
  // Same prompt twice: m_clean == m_corrupt.
  const std::vector<dms::patching_pair> pairs = {last_differs, {{1, 2, 3, 4}, {1, 2, 3, 4}, 5, 1}};
  CHECK(error_code([&] { (void)dms::activation_patching(model, pairs); }) == dms::errc::numeric);
  CHECK(model.n_sequences_held() == 0); // cleared on the way out

  dms::patching_options opt;
  opt.on_degenerate = dms::degenerate_policy::nan;
  const auto r = dms::activation_patching(model, pairs, opt);
  CHECK(r.degenerate == std::vector<std::uint8_t>{0, 1});
  CHECK(std::isnan(r.pair_effect(1, site::resid_pre, 0)));
  CHECK(std::isnan(r.pair_patched_metric(1, site::attn_out, 2)));
  CHECK(r.n_runs == 2 * 2 + 9); // the degenerate pair's variants are skipped
  for (std::size_t j = 0; j < r.block_size(); ++j) CHECK(r.mean_effect[j] == r.effect[j]); // pair 0 alone

  // Every pair degenerate: no effect at all, so no layer can be chosen.
  const auto all = dms::activation_patching(model, std::span(&pairs[1], 1), opt);
  CHECK(std::isnan(all.mean(site::resid_pre, 1)));
  CHECK(error_code([&] { (void)dms::choose_steering_layer(all, site::resid_pre); }) == dms::errc::numeric);
}

TEST_CASE("patching: choose_steering_layer on a hand-made result", "[steer][patching]") {
  dms::patching_result r;
  r.sites = {site::resid_pre, site::mlp_out};
  r.layer_begin = 2;
  r.layer_end = 7;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  //               layer:  2    3    4    5    6
  r.mean_effect = {0.1, 0.7, 0.3, 0.7, 0.2,  // resid_pre
                   nan, 0.2, 0.9, nan, 0.95}; // mlp_out
  CHECK(dms::choose_steering_layer(r, site::resid_pre) == 3);       // ties -> earliest
  CHECK(dms::choose_steering_layer(r, site::resid_pre, 4, 7) == 5); // restricted range
  CHECK(dms::choose_steering_layer(r, site::resid_pre, 4, 5) == 4);
  CHECK(dms::choose_steering_layer(r, site::mlp_out) == 6);         // NaN skipped
  CHECK(dms::choose_steering_layer(r, site::mlp_out, 2, 6) == 4);
  CHECK(error_code([&] { (void)dms::choose_steering_layer(r, site::attn_out); }) == dms::errc::invalid_argument);
  CHECK(error_code([&] { (void)dms::choose_steering_layer(r, site::mlp_out, 1, 4); }) == dms::errc::invalid_argument);
  CHECK(error_code([&] { (void)dms::choose_steering_layer(r, site::mlp_out, 4, 4); }) == dms::errc::invalid_argument);
  CHECK(error_code([&] { (void)dms::choose_steering_layer(r, site::mlp_out, 5, 6); }) == dms::errc::numeric);

  // Per position: a layer scores its best position.
  dms::patching_result p;
  p.sites = {site::resid_pre};
  p.layer_begin = 0;
  p.layer_end = 2;
  p.per_position = true;
  p.n_positions = 3;
  p.mean_effect = {0.5, 0.1, 0.2,  // layer 0
                   0.0, 0.6, 0.0}; // layer 1
  CHECK(dms::choose_steering_layer(p, site::resid_pre) == 1);
}

TEST_CASE("patching: progress counts every prompt run", "[steer][patching]") {
  toy_backend model;
  std::vector<dms::progress_state> seen;
  dms::patching_options opt;
  opt.report = dms::progress([&](const dms::progress_state &s) { seen.push_back(s); }, {std::chrono::nanoseconds(0), {}});
  const std::vector<dms::patching_pair> pairs = {last_differs, middle_differs};
  const auto r = dms::activation_patching(model, pairs, opt);
  REQUIRE(!seen.empty());
  CHECK(seen.back().finished);
  CHECK(seen.back().total == 2 * (2 + 9));
  CHECK(seen.back().done == seen.back().total);
  CHECK(r.n_runs == seen.back().total);
}

TEST_CASE("patching: errors", "[steer][patching]") {
  using dms::errc;
  toy_backend model;
  const auto code = [&](std::vector<dms::patching_pair> pairs, dms::patching_options opt = {}) {
    return error_code([&] { (void)dms::activation_patching(model, pairs, opt); });
  };
  CHECK(code({}) == errc::invalid_argument);
  CHECK(code({{{1, 2}, {1, 2, 3}, 0, 1}}) == errc::invalid_argument); // lengths differ
  CHECK(code({{{}, {}, 0, 1}}) == errc::invalid_argument);            // empty
  CHECK(code({{{1, 2}, {1, 6}, 0, 1}}) == errc::invalid_argument);    // token outside the vocabulary
  CHECK(code({{{1, 2}, {1, 3}, 6, 1}}) == errc::invalid_argument);    // target outside the vocabulary
  CHECK(code({{{1, 2}, {1, 3}, 0, -1}}) == errc::invalid_argument);
  dms::patching_options opt;
  opt.sites = {};
  CHECK(code({last_differs}, opt) == errc::invalid_argument);
  opt.sites = {site::logits};
  CHECK(code({last_differs}, opt) == errc::invalid_argument);
  opt.sites = {site::attn_out, site::attn_out};
  CHECK(code({last_differs}, opt) == errc::invalid_argument);
  opt = {};
  opt.layer_begin = 2;
  opt.layer_end = 2;
  CHECK(code({last_differs}, opt) == errc::invalid_argument);
  opt.layer_end = 4;
  CHECK(code({last_differs}, opt) == errc::invalid_argument);
  opt = {};
  opt.per_position = true;
  CHECK(code({last_differs, {{1, 2}, {1, 3}, 0, 1}}, opt) == errc::invalid_argument); // lengths across pairs
  CHECK(model.n_forwards == 0);

  // A restricted layer range reports only those layers.
  opt = {};
  opt.layer_begin = 1;
  opt.layer_end = 3;
  const auto r = dms::activation_patching(model, std::span(&last_differs, 1), opt);
  CHECK(r.n_layers() == 2);
  CHECK(error_code([&] { (void)r.mean(site::resid_pre, 0); }) == errc::invalid_argument);

  // A backend that skips a site's hooks is caught rather than read as "no effect".
  model.silent_site = site::attn_out;
  CHECK(code({last_differs}) == errc::unsupported);
  CHECK(model.n_sequences_held() == 0);
}
