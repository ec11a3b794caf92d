// Steering policies on hand-made activation blocks, with a simulated forward pass that calls hook
// sets the way a backend does (per layer: resid_pre, attn_out, resid_mid, mlp_out, resid_post).
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <vector>

#include "dms/probe/logistic.hpp"
#include "dms/steer/composite_policy.hpp"
#include "dms/steer/conditional_policy.hpp"
#include "dms/steer/constant_policy.hpp"
#include "dms/steer/dms_policy.hpp"
#include "dms/steer/policy_hooks.hpp"
#include "dms/steer/select_policy.hpp"

using dms::hook_point;
using dms::site;
using dms::token_slot;

namespace {

constexpr std::int64_t d = 4;
constexpr std::int32_t n_layers = 4;

//! A toy forward step: one residual buffer (rows x d), changed between layers by a fixed,
//! input-independent delta, so that what a policy adds survives to the end unchanged and the
//! expected output is base + the additions.
template <class Hooks> void simulate(std::vector<float> &resid, std::span<const token_slot> slots, Hooks &hooks) {
  const auto n = static_cast<std::int64_t>(slots.size());
  std::vector<float> side(resid.size(), 0.0f); // attn_out / mlp_out
  for (std::int32_t l = 0; l < n_layers; ++l) {
    for (site s : {site::resid_pre, site::attn_out, site::resid_mid, site::mlp_out, site::resid_post}) {
      std::vector<float> &buf = (s == site::attn_out || s == site::mlp_out) ? side : resid;
      if (hooks.wants({l, s})) {
        dms::activation_block b{{l, s}, {buf.data(), n, d, d}, slots};
        hooks(b);
      }
    }
    for (std::size_t i = 0; i < resid.size(); ++i) resid[i] += 0.1f * float(l + 1) * float(i % d + 1) - 0.05f * float(i);
  }
}

//! Copies the rows at one hook point.
struct recorder {
  hook_point at;
  std::vector<float> rows;
  bool wants(hook_point p) const { return p == at; }
  void operator()(dms::activation_block &b) {
    rows.assign(b.rows.data, b.rows.data + b.rows.rows * b.rows.cols);
  }
};

std::vector<float> initial_rows(std::size_t n) {
  std::vector<float> r(n * d);
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = std::sin(0.7f * float(i)) * (1.0f + float(i % 3));
  return r;
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

const dms::logistic_probe &test_probe() {
  static const dms::logistic_probe p({0.8f, -0.5f, 0.3f, 0.1f}, -0.2f, {0.1f, 0.0f, -0.3f, 0.2f}, {1.0f, 2.0f, 0.5f, 1.5f});
  return p;
}
double probe_by_hand(std::span<const float> h) {
  const auto &p = test_probe();
  double z = p.bias();
  for (std::size_t j = 0; j < 4; ++j) z += double(p.weight()[j]) * (h[j] - p.mean()[j]) / p.scale()[j];
  return sigmoid(z);
}

// Prefill of two sequences in one step: seq 0 has 3 prompt tokens, seq 1 has 2.
const std::vector<token_slot> prefill{{0, 0, false}, {0, 1, false}, {0, 2, true}, {1, 0, false}, {1, 1, true}};

} // namespace

TEST_CASE("dms_policy: adds alpha * p * v row-wise, p read at an earlier layer in the same pass",
          "[steer][policy]") {
  const std::vector<float> v{1.0f, -1.0f, 0.5f, 2.0f};
  const hook_point probe_at{1, site::resid_mid}, steer_at{3, site::resid_pre};
  const dms::dms_policy policy(test_probe(), probe_at, {steer_at.layer, steer_at.where, v});
  policy.validate(n_layers, d);
  CHECK(policy.alpha() == 1.4f);

  // What the probe sees, and the unsteered output.
  std::vector<float> base = initial_rows(5);
  recorder rec{probe_at, {}};
  simulate(base, prefill, rec);
  REQUIRE(rec.rows.size() == 5 * d);

  std::vector<float> rows = initial_rows(5);
  std::vector<dms::dms_policy<>::state_type> states(2);
  std::vector<float> trace(8, -1.0f);
  states[0].trace = trace;
  std::vector<float> scratch(5);
  dms::policy_hooks hooks(policy, std::span(states), std::span(scratch));
  simulate(rows, prefill, hooks);

  std::vector<double> p(5);
  for (std::size_t r = 0; r < 5; ++r) {
    p[r] = probe_by_hand(std::span(rec.rows).subspan(r * d, d));
    for (std::size_t j = 0; j < d; ++j)
      CHECK(rows[r * d + j] == Approx(base[r * d + j] + 1.4 * p[r] * v[j]).margin(1e-5));
  }
  // The rows really differ in p (the test would not see a mix-up otherwise).
  CHECK(std::abs(p[0] - p[3]) > 0.05);
  CHECK(states[0].n_scored == 3);
  CHECK(states[1].n_scored == 2);
  CHECK(states[0].last_score == Approx(p[2]));
  CHECK(states[1].last_score == Approx(p[4]));
  CHECK(states[0].mean_score() == Approx((p[0] + p[1] + p[2]) / 3));
  CHECK(trace[0] == Approx(p[0]));
  CHECK(trace[2] == Approx(p[2]));
  CHECK(trace[3] == -1.0f);

  // Decode step, one row per sequence, in the other order.
  const std::vector<token_slot> decode{{1, 2, true}, {0, 3, true}};
  std::vector<float> dbase = initial_rows(2), drows = dbase;
  recorder drec{probe_at, {}};
  simulate(dbase, decode, drec);
  simulate(drows, decode, hooks);
  for (std::size_t r = 0; r < 2; ++r) {
    const double pr = probe_by_hand(std::span(drec.rows).subspan(r * d, d));
    for (std::size_t j = 0; j < d; ++j) CHECK(drows[r * d + j] == Approx(dbase[r * d + j] + 1.4 * pr * v[j]).margin(1e-5));
  }
  CHECK(states[0].n_scored == 4);
  CHECK(states[1].n_scored == 3);
  CHECK(trace[3] == Approx(probe_by_hand(std::span(drec.rows).subspan(d, d))));
}

TEST_CASE("dms_policy: probe and steering at the same point read before adding", "[steer][policy]") {
  const std::vector<float> v{0.5f, 0.5f, -0.5f, 1.0f};
  const hook_point at{2, site::resid_post};
  const dms::dms_policy policy(test_probe(), at, {at.layer, at.where, v}, 0.8f);
  std::vector<float> base = initial_rows(5);
  recorder rec{at, {}};
  simulate(base, prefill, rec);
  std::vector<float> rows = initial_rows(5);
  std::vector<dms::dms_policy<>::state_type> states(2);
  std::vector<float> scratch(5);
  dms::policy_hooks hooks(policy, std::span(states), std::span(scratch));
  simulate(rows, prefill, hooks);
  for (std::size_t r = 0; r < 5; ++r) {
    const double pr = probe_by_hand(std::span(rec.rows).subspan(r * d, d));
    for (std::size_t j = 0; j < d; ++j) CHECK(rows[r * d + j] == Approx(base[r * d + j] + 0.8 * pr * v[j]).margin(1e-5));
  }
}

TEST_CASE("dms_policy: validation errors", "[steer][policy]") {
  const std::vector<float> v{1.0f, 1.0f, 1.0f, 1.0f};
  CHECK_THROWS_WITH(dms::dms_policy(test_probe(), {3, site::resid_post}, {2, site::resid_post, v}),
                    Catch::Contains("comes after the steering point"));
  CHECK_THROWS_WITH(dms::dms_policy(test_probe(), {2, site::resid_post}, {2, site::resid_pre, v}),
                    Catch::Contains("comes after the steering point"));
  CHECK_THROWS_WITH(dms::dms_policy(test_probe(), {1, site::resid_post}, {2, site::resid_post, v}, NAN),
                    Catch::Contains("alpha is not finite"));
  CHECK_THROWS_WITH(dms::dms_policy(test_probe(), {1, site::resid_post}, {2, site::resid_post, {1.0f, 2.0f}}),
                    Catch::Contains("width 4, the steering vector has width 2"));
  const dms::dms_policy ok(test_probe(), {1, site::resid_post}, {7, site::resid_post, v});
  CHECK_THROWS_WITH(ok.validate(n_layers, d), Catch::Contains("steering layer 7 is out of range [0, 4)"));
  const dms::dms_policy ok2(test_probe(), {1, site::resid_post}, {2, site::resid_post, v});
  CHECK_THROWS_WITH(ok2.validate(n_layers, 576), Catch::Contains("model has n_embd 576"));
  ok2.validate(n_layers, d);
  // scratch too small for the step
  std::vector<dms::dms_policy<>::state_type> states(2);
  std::vector<float> scratch(3), rows = initial_rows(5);
  dms::policy_hooks hooks(ok2, std::span(states), std::span(scratch));
  CHECK_THROWS_WITH(simulate(rows, prefill, hooks), Catch::Contains("scratch holds 3"));
}

TEST_CASE("conditional_policy: CAST similarity, per-sequence decision, steering", "[steer][policy]") {
  const std::vector<float> c{1.0f, 0.5f, -0.25f, 0.0f};
  const std::vector<float> v{0.0f, 1.0f, 0.0f, -1.0f};
  const hook_point cond_at{1, site::resid_post}, steer_at{2, site::resid_post};

  // sim by hand with the explicit projector matrix.
  auto sim_of = [&](std::span<const float> h) {
    double cc = 0;
    for (float x : c) cc += double(x) * x;
    std::vector<double> ph(d, 0.0);
    for (std::size_t i = 0; i < d; ++i)
      for (std::size_t j = 0; j < d; ++j) ph[i] += double(c[i]) * c[j] / cc * h[j];
    double hu = 0, hh = 0, uu = 0;
    for (std::size_t i = 0; i < d; ++i) {
      const double u = std::tanh(ph[i]);
      hu += h[i] * u;
      hh += double(h[i]) * h[i];
      uu += u * u;
    }
    return hu / std::sqrt(hh * uu);
  };
  std::vector<float> base = initial_rows(5);
  recorder rec{cond_at, {}};
  simulate(base, prefill, rec);
  auto mean_of = [&](std::size_t r0, std::size_t r1) {
    std::vector<float> m(d, 0.0f);
    for (std::size_t r = r0; r < r1; ++r)
      for (std::size_t j = 0; j < d; ++j) m[j] += rec.rows[r * d + j] / float(r1 - r0);
    return m;
  };
  const double s0 = sim_of(mean_of(0, 3)), s1 = sim_of(mean_of(3, 5));
  INFO("sim of seq 0 " << s0 << ", seq 1 " << s1);
  REQUIRE(std::abs(s0 - s1) > 0.02);
  const float threshold = float(0.5 * (s0 + s1));
  const auto cmp = s0 > s1 ? dms::condition_compare::above : dms::condition_compare::below; // seq 0 steered
  const dms::conditional_policy policy(cond_at, c, threshold, cmp, {steer_at.layer, steer_at.where, v}, 2.0f);
  policy.validate(n_layers, d);

  std::vector<float> rows = initial_rows(5);
  std::vector<dms::conditional_policy::state_type> states(2);
  std::vector<float> scratch(5);
  dms::policy_hooks hooks(policy, std::span(states), std::span(scratch));
  simulate(rows, prefill, hooks);
  using decision = dms::conditional_policy::state_type::decision;
  CHECK(states[0].decided == decision::steer);
  CHECK(states[1].decided == decision::skip);
  CHECK(states[0].similarity == Approx(s0).epsilon(1e-5));
  CHECK(states[1].similarity == Approx(s1).epsilon(1e-5));
  for (std::size_t r = 0; r < 5; ++r)
    for (std::size_t j = 0; j < d; ++j)
      CHECK(rows[r * d + j] == Approx(base[r * d + j] + (r < 3 ? 2.0f * v[j] : 0.0f)).margin(1e-5));

  // Later steps keep the decision.
  const std::vector<token_slot> decode{{0, 3, true}, {1, 2, true}};
  std::vector<float> dbase = initial_rows(2), drows = dbase;
  dms::no_hooks none;
  simulate(dbase, decode, none);
  simulate(drows, decode, hooks);
  for (std::size_t j = 0; j < d; ++j) {
    CHECK(drows[j] == Approx(dbase[j] + 2.0f * v[j]).margin(1e-5));
    CHECK(drows[d + j] == Approx(dbase[d + j]).margin(1e-6));
  }

  // last_token mode uses the last prompt row.
  const dms::conditional_policy last(cond_at, c, 0.0f, dms::condition_compare::above, {steer_at.layer, steer_at.where, v},
                                     1.0f, dms::condition_mode::last_token);
  std::vector<dms::conditional_policy::state_type> st2(2);
  std::vector<float> r2 = initial_rows(5);
  dms::policy_hooks h2(last, std::span(st2), std::span(scratch));
  simulate(r2, prefill, h2);
  CHECK(st2[0].similarity == Approx(sim_of(std::span(rec.rows).subspan(2 * d, d))).epsilon(1e-5));
  CHECK(st2[1].similarity == Approx(sim_of(std::span(rec.rows).subspan(4 * d, d))).epsilon(1e-5));

  CHECK_THROWS_WITH(dms::conditional_policy(cond_at, {0, 0, 0, 0}, 0.0f, cmp, {2, site::resid_post, v}, 1.0f),
                    Catch::Contains("zero condition vector"));
  CHECK_THROWS_WITH(dms::conditional_policy({3, site::resid_post}, c, 0.0f, cmp, {2, site::resid_post, v}, 1.0f),
                    Catch::Contains("comes after the steering point"));
  CHECK_THROWS_WITH(dms::conditional_policy(cond_at, c, 0.0f, cmp, {2, site::resid_post, v}, INFINITY),
                    Catch::Contains("coefficient is not finite"));
  CHECK_THROWS_WITH(policy.validate(2, d), Catch::Contains("steering layer 2 is out of range [0, 2)"));
}

TEST_CASE("choose_threshold: F1 grid search", "[steer][policy]") {
  const std::vector<float> s{0.1f, 0.2f, 0.3f, 0.4f};
  auto t = dms::choose_threshold(s, std::vector<int>{0, 0, 1, 1});
  CHECK(t.compare == dms::condition_compare::above);
  CHECK(t.threshold == Approx(0.25f));
  CHECK(t.f1 == 1.0);
  t = dms::choose_threshold(s, std::vector<int>{1, 1, 0, 0});
  CHECK(t.compare == dms::condition_compare::below);
  CHECK(t.threshold == Approx(0.25f));
  CHECK(t.f1 == 1.0);
  // Not separable: labels 1 at 0.1 and 0.3, 0.4; best "above 0.15": tp 2, fp 1 -> P 2/3, R 2/3
  // vs "above 0.05" (all): P 3/4, R 1 -> F1 6/7, which wins.
  t = dms::choose_threshold(s, std::vector<int>{1, 0, 1, 1}, dms::condition_compare::above);
  CHECK(t.f1 == Approx(6.0 / 7.0));
  CHECK(t.recall == 1.0);
  CHECK(t.precision == Approx(0.75));
  CHECK(t.threshold < 0.1f);
  // a caller's grid
  const std::vector<float> grid{0.0f, 0.35f};
  t = dms::choose_threshold(s, std::vector<int>{0, 0, 1, 1}, std::nullopt, grid);
  CHECK(t.threshold == 0.0f); // "above 0" and "above 0.35" both have F1 2/3: the first candidate wins
  CHECK(t.f1 == Approx(2.0 / 3.0));
  // ties in the similarities
  const std::vector<float> tied{0.5f, 0.5f, 0.5f, 0.9f};
  t = dms::choose_threshold(tied, std::vector<int>{0, 1, 0, 1}, dms::condition_compare::above);
  CHECK(t.threshold == Approx(-0.5f)); // "all" (F1 2/3) ties "above 0.7" (F1 2/3); the tie never splits 0.5s
  CHECK(t.f1 == Approx(2.0 / 3.0));
  t = dms::choose_threshold(tied, std::vector<int>{0, 0, 0, 1}, dms::condition_compare::above);
  CHECK(t.threshold == Approx(0.7f));
  CHECK(t.f1 == 1.0);
  CHECK_THROWS_WITH(dms::choose_threshold(s, std::vector<int>{0, 0, 0, 0}), Catch::Contains("no positive label"));
  CHECK_THROWS_WITH(dms::choose_threshold(s, std::vector<int>{0, 1}), Catch::Contains("4 similarities but 2 labels"));
}

TEST_CASE("composite_policy: children in order, each with its own score lane and state", "[steer][policy]") {
  const std::vector<float> va{1.0f, 0.0f, 0.0f, 0.0f}, vb{0.0f, 0.0f, 1.0f, 0.0f}, vc{0.0f, 0.5f, 0.0f, 0.5f};
  const hook_point pa{0, site::resid_post}, pb{1, site::resid_post};
  const dms::dms_policy a(test_probe(), pa, {2, site::resid_pre, va}, 1.0f);
  const dms::dms_policy b(test_probe(), pb, {3, site::resid_post, vb}, 2.0f);
  const dms::constant_policy k({2, site::resid_pre}, vc, 3.0f);
  const dms::composite_policy all(a, k, b);
  static_assert(dms::steering_policy<decltype(all)>);
  CHECK(dms::row_score_lanes(all) == 3);
  CHECK(all.wants(pa));
  CHECK(all.wants({2, site::resid_pre}));
  CHECK_FALSE(all.wants({2, site::resid_post}));
  all.validate(n_layers, d);

  std::vector<float> base = initial_rows(5);
  recorder ra{pa, {}}, rb{pb, {}};
  { std::vector<float> tmp = base; simulate(tmp, prefill, ra); }
  { std::vector<float> tmp = base; simulate(tmp, prefill, rb); }
  dms::no_hooks none;
  simulate(base, prefill, none);

  std::vector<float> rows = initial_rows(5);
  std::vector<decltype(all)::state_type> states(2);
  std::vector<float> scratch(dms::row_score_lanes(all) * 5);
  dms::policy_hooks hooks(all, std::span(states), std::span(scratch));
  simulate(rows, prefill, hooks);
  for (std::size_t r = 0; r < 5; ++r) {
    const double p_a = probe_by_hand(std::span(ra.rows).subspan(r * d, d));
    const double p_b = probe_by_hand(std::span(rb.rows).subspan(r * d, d));
    for (std::size_t j = 0; j < d; ++j)
      CHECK(rows[r * d + j] == Approx(base[r * d + j] + 1.0 * p_a * va[j] + 3.0 * vc[j] + 2.0 * p_b * vb[j]).margin(1e-5));
  }
  CHECK(std::get<0>(states[0]).n_scored == 3);
  CHECK(std::get<2>(states[1]).n_scored == 2);
  CHECK(std::get<0>(states[1]).last_score == Approx(probe_by_hand(std::span(ra.rows).subspan(4 * d, d))));
  CHECK(std::get<2>(states[1]).last_score == Approx(probe_by_hand(std::span(rb.rows).subspan(4 * d, d))));

  // A vector of the wrong width anywhere inside fails the composite's validation.
  const dms::composite_policy bad(a, dms::constant_policy({2, site::resid_pre}, {1.0f, 2.0f}, 1.0f));
  CHECK_THROWS_WITH(bad.validate(n_layers, d), Catch::Contains("constant_policy: vector has width 2"));
}

TEST_CASE("select_policy: each sequence its own configuration, or none", "[steer][policy]") {
  const std::vector<float> v{1.0f, 2.0f, 3.0f, 4.0f};
  const hook_point pa{1, site::resid_post};
  using P = dms::dms_policy<>;
  dms::select_policy<P> sel({P(test_probe(), pa, {2, site::resid_post, v}, 1.4f), P(test_probe(), pa, {2, site::resid_post, v}, 0.5f)});
  sel.choose(0, 1);
  sel.choose(2, 0); // sequence 1: never chosen -> none
  CHECK(sel.choice(1) == dms::select_policy<P>::none);
  CHECK(sel.choice(99) == dms::select_policy<P>::none);
  CHECK_THROWS_WITH(sel.choose(0, 2), Catch::Contains("configuration 2 for sequence 0"));
  sel.validate(n_layers, d);

  const std::vector<token_slot> slots{{0, 0, false}, {0, 1, true}, {1, 0, false}, {1, 1, true}, {2, 0, true}, {0, 2, true}};
  std::vector<float> base = initial_rows(6);
  recorder rec{pa, {}};
  { std::vector<float> tmp = base; simulate(tmp, slots, rec); }
  dms::no_hooks none;
  simulate(base, slots, none);
  std::vector<float> rows = initial_rows(6);
  std::vector<P::state_type> states(3);
  std::vector<float> scratch(6);
  dms::policy_hooks hooks(sel, std::span(states), std::span(scratch));
  simulate(rows, slots, hooks);
  const double alpha_of_row[6] = {0.5, 0.5, 0.0, 0.0, 1.4, 0.5};
  for (std::size_t r = 0; r < 6; ++r) {
    const double p = probe_by_hand(std::span(rec.rows).subspan(r * d, d));
    for (std::size_t j = 0; j < d; ++j)
      CHECK(rows[r * d + j] == Approx(base[r * d + j] + alpha_of_row[r] * p * v[j]).margin(1e-5));
  }
  CHECK(states[0].n_scored == 3);
  CHECK(states[1].n_scored == 0); // not steered, not probed
  CHECK(states[2].n_scored == 1);
}

TEST_CASE("hook_rank and parse_hook_point", "[steer][policy]") {
  CHECK(dms::hook_rank({1, site::resid_post}) < dms::hook_rank({2, site::resid_pre}));
  CHECK(dms::hook_rank({2, site::resid_pre}) < dms::hook_rank({2, site::attn_out}));
  CHECK(dms::hook_rank({2, site::mlp_out}) < dms::hook_rank({2, site::resid_post}));
  CHECK(dms::hook_rank({29, site::resid_post}) < dms::hook_rank({-1, site::final_norm}));
  for (std::int32_t l : {0, 7, 123})
    for (site s : {site::resid_pre, site::attn_out, site::resid_mid, site::mlp_out, site::resid_post})
      CHECK(dms::parse_hook_point(dms::to_string(hook_point{l, s})) == hook_point{l, s});
  CHECK(dms::parse_hook_point("hook_final_norm") == hook_point{-1, site::final_norm});
  CHECK_FALSE(dms::parse_hook_point("blocks.07.hook_resid_post"));
  CHECK_FALSE(dms::parse_hook_point("blocks.7.hook_final_norm"));
  CHECK_FALSE(dms::parse_hook_point("blocks..hook_resid_post"));
  CHECK_FALSE(dms::parse_hook_point("blocks.7.resid_post"));
}
