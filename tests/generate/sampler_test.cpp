// The sampling chain against hand-computed sets and llama.cpp's formulas, and its draws against
// the softmax they should follow.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <set>
#include <span>
#include <vector>

#include <dms/model/sampler.hpp>

#include "alloc_counter.hpp"

namespace {

using dms::sampler;
using dms::sampling_params;
using dms::token_id;

//! Only the temperature: no top-k, top-p, min-p or penalty.
sampling_params plain(float temperature = 1.0f, std::uint64_t seed = 0) {
  sampling_params p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

std::vector<float> random_logits(std::size_t n, std::uint64_t seed) {
  const dms::philox_stream s(dms::key_for(seed, "test logits", 0), 0);
  std::vector<float> l(n);
  for (std::size_t i = 0; i < n; ++i) l[i] = 8.0f * s.uniform(i) - 4.0f;
  return l;
}

std::set<token_id> kept(const sampler &s) {
  std::set<token_id> ids;
  for (const auto &c : s.candidates()) ids.insert(c.id);
  return ids;
}

//! Logits whose softmax is `probs` (ids in the given order).
std::vector<float> logits_of(const std::vector<double> &probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

} // namespace

TEST_CASE("sampler: greedy is the argmax, ties to the smaller id", "[sampler]") {
  sampling_params p;
  p.temperature = 0.0f;
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    const auto l = random_logits(49152, seed);
    sampler s(p, seed, l.size());
    const auto expected = static_cast<token_id>(std::max_element(l.begin(), l.end()) - l.begin());
    CHECK(s.sample(l, {}, seed) == expected);
    REQUIRE(s.candidates().size() == 1);
    CHECK(s.candidates()[0].p == 1.0f);
  }
  std::vector<float> tie{1.0f, 3.0f, -2.0f, 3.0f, 3.0f};
  sampler s(p);
  CHECK(s.sample(tie, {}, 0) == 1);
  p.temperature = -1.0f; // any temperature <= 0 is greedy, as in llama.cpp
  sampler neg(p);
  CHECK(neg.sample(tie, {}, 0) == 1);
}

TEST_CASE("sampler: top_k = 1 is greedy at any temperature", "[sampler]") {
  for (float t : {0.1f, 0.8f, 1.0f, 5.0f, 100.0f}) {
    sampling_params p;
    p.temperature = t;
    p.top_k = 1;
    p.seed = 7;
    sampler s(p, 3);
    for (std::uint64_t step = 0; step < 50; ++step) {
      const auto l = random_logits(1000, step);
      const auto expected = static_cast<token_id>(std::max_element(l.begin(), l.end()) - l.begin());
      REQUIRE(s.sample(l, {}, step) == expected);
    }
  }
}

TEST_CASE("sampler: top_p keeps the smallest prefix reaching p", "[sampler]") {
  // ids:             0     1     2     3     4
  const auto l = logits_of({0.10, 0.50, 0.05, 0.20, 0.15});
  auto p = plain();
  p.top_p = 0.8f; // 0.5 + 0.2 = 0.7 < 0.8 <= 0.85
  sampler s(p);
  s.sample(l, {}, 0);
  CHECK(kept(s) == std::set<token_id>{1, 3, 4});
  double sum = 0;
  for (const auto &c : s.candidates()) sum += c.p;
  CHECK(sum == Approx(1.0));
  CHECK(s.candidates()[0].p == Approx(0.50 / 0.85).epsilon(1e-5)); // renormalized among survivors

  p.top_p = 0.69f;
  sampler s2(p);
  s2.sample(l, {}, 0);
  CHECK(kept(s2) == std::set<token_id>{1, 3});
  p.top_p = 0.01f; // never fewer than one
  sampler s3(p);
  CHECK(s3.sample(l, {}, 0) == 1);
  CHECK(kept(s3) == std::set<token_id>{1});
  p.top_p = 1.0f; // off
  sampler s4(p);
  s4.sample(l, {}, 0);
  CHECK(s4.candidates().size() == 5);
}

TEST_CASE("sampler: min_p keeps probabilities >= min_p * max", "[sampler]") {
  // ids:             0     1     2     3     4
  const auto l = logits_of({0.06, 0.30, 0.40, 0.04, 0.20});
  auto p = plain();
  p.min_p = 0.2f; // threshold 0.08
  sampler s(p);
  s.sample(l, {}, 0);
  CHECK(kept(s) == std::set<token_id>{1, 2, 4});
  p.min_p = 0.6f; // threshold 0.24
  sampler s2(p);
  s2.sample(l, {}, 0);
  CHECK(kept(s2) == std::set<token_id>{1, 2});
  p.min_p = 1.0f; // only the largest (and any exact tie)
  sampler s3(p);
  CHECK(s3.sample(l, {}, 0) == 2);
  CHECK(kept(s3) == std::set<token_id>{2});
}

TEST_CASE("sampler: llama.cpp's order: top_k, then top_p on the survivors, temperature last", "[sampler]") {
  const auto l = logits_of({0.4, 0.3, 0.2, 0.1});
  auto p = plain();
  p.top_p = 0.5f; // alone: 0.4 < 0.5 <= 0.7 keeps two
  sampler a(p);
  a.sample(l, {}, 0);
  CHECK(kept(a) == std::set<token_id>{0, 1});
  p.top_k = 2; // after top_k the survivors renormalize to 0.571, 0.429: one reaches 0.5
  sampler b(p);
  b.sample(l, {}, 0);
  CHECK(kept(b) == std::set<token_id>{0});

  // top_p sees the untempered distribution: at temperature 0.1 token 0 alone would hold 97% of
  // the mass, yet two tokens are kept, and only then sharpened.
  auto q = plain(0.1f);
  q.top_p = 0.6f;
  sampler c(q);
  c.sample(l, {}, 0);
  REQUIRE(kept(c) == std::set<token_id>{0, 1});
  const double r = std::pow(0.3 / 0.4, 10.0); // p1 / p0 after dividing log-probabilities by 0.1
  CHECK(c.candidates()[0].p == Approx(1.0 / (1.0 + r)).epsilon(1e-4));
}

TEST_CASE("sampler: repeat penalty divides positive logits, multiplies the others, once per token", "[sampler]") {
  const std::vector<float> l{2.0f, -2.0f, 1.0f, 0.0f, 0.5f};
  const std::vector<token_id> history{0, 1, 1, 3};
  auto p = plain();
  p.repeat_penalty = 2.0f;
  p.repeat_last_n = 64;
  sampler s(p);
  s.sample(l, history, 0);
  std::vector<float> after(l.size());
  for (const auto &c : s.candidates()) after[static_cast<std::size_t>(c.id)] = c.logit;
  CHECK(after == std::vector<float>{1.0f, -4.0f, 1.0f, 0.0f, 0.5f});

  p.repeat_last_n = 2; // only the last two tokens of the history: 1 and 3
  sampler w(p);
  w.sample(l, history, 0);
  for (const auto &c : w.candidates()) after[static_cast<std::size_t>(c.id)] = c.logit;
  CHECK(after == std::vector<float>{2.0f, -4.0f, 1.0f, 0.0f, 0.5f});

  p.repeat_last_n = 0; // off
  sampler off(p);
  off.sample(l, history, 0);
  for (const auto &c : off.candidates()) after[static_cast<std::size_t>(c.id)] = c.logit;
  CHECK(after == l);

  // Greedy sees the penalty too: token 0 (2 -> 0.67 at penalty 3) loses to token 2.
  sampling_params g;
  g.temperature = 0.0f;
  g.repeat_penalty = 3.0f;
  sampler gs(g);
  CHECK(gs.sample(l, history, 0) == 2);

  const std::vector<token_id> bad{0, 5};
  CHECK_THROWS_WITH(s.sample(l, bad, 0), Catch::Contains("history token 5 is outside the vocabulary of 5"));
}

TEST_CASE("sampler: draws are a function of (seed, sequence, step)", "[sampler]") {
  const auto l = random_logits(512, 99);
  auto run = [&](std::uint64_t seed, std::uint64_t seq, bool reverse) {
    sampler s(plain(1.5f, seed), seq, l.size());
    std::vector<token_id> out(200);
    for (std::size_t i = 0; i < out.size(); ++i) {
      const std::size_t step = reverse ? out.size() - 1 - i : i; // no state carried between steps
      out[step] = s.sample(l, {}, step);
    }
    return out;
  };
  const auto a = run(1, 0, false);
  CHECK(run(1, 0, false) == a);
  CHECK(run(1, 0, true) == a);
  CHECK(run(2, 0, false) != a);
  CHECK(run(1, 1, false) != a);
  CHECK(std::set<token_id>(a.begin(), a.end()).size() > 20); // it does sample, not repeat one token
}

namespace {
//! Pearson's chi-square statistic of `counts` against probabilities `p` (all > 0).
double chi_square(const std::vector<std::size_t> &counts, const std::vector<double> &p, std::size_t n) {
  double x = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double e = p[i] * static_cast<double>(n);
    x += (static_cast<double>(counts[i]) - e) * (static_cast<double>(counts[i]) - e) / e;
  }
  return x;
}
} // namespace

TEST_CASE("sampler: draw frequencies follow the softmax (chi-square)", "[sampler]") {
  // Fixed seeds, so the test cannot flake: it either always passes or always fails. The bounds are
  // the 0.999 quantiles of chi-square (7 dof: 24.32, 4 dof: 18.47); a sampler with a biased
  // draw (off by one in the cumulative walk, float rounding of small p) fails them by far at
  // 40000 draws.
  const std::vector<float> l{0.3f, -1.0f, 2.0f, 0.0f, 1.2f, -0.5f, 0.9f, -2.5f};
  constexpr std::size_t n = 40000;
  {
    sampler s(plain(1.0f, 12345), 0, l.size());
    std::vector<std::size_t> counts(l.size());
    for (std::size_t i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(s.sample(l, {}, i))];
    std::vector<double> p(l.size());
    double z = 0;
    for (std::size_t i = 0; i < l.size(); ++i) z += p[i] = std::exp(static_cast<double>(l[i]));
    for (auto &x : p) x /= z;
    CHECK(chi_square(counts, p, n) < 24.32);
  }
  {
    auto params = plain(0.7f, 777);
    params.top_k = 5; // tokens 1, 5, 7 can never be drawn
    sampler s(params, 4, l.size());
    std::vector<std::size_t> counts(l.size());
    for (std::size_t i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(s.sample(l, {}, i))];
    CHECK(counts[1] + counts[5] + counts[7] == 0);
    const std::vector<std::size_t> top{2, 4, 6, 0, 3};
    std::vector<double> p;
    std::vector<std::size_t> c;
    double z = 0;
    for (auto i : top) z += std::exp(static_cast<double>(l[i]) / 0.7);
    for (auto i : top) {
      p.push_back(std::exp(static_cast<double>(l[i]) / 0.7) / z);
      c.push_back(counts[i]);
    }
    CHECK(chi_square(c, p, n) < 18.47);
  }
}

TEST_CASE("sampler: invalid settings and logits are errors that name the value", "[sampler]") {
  const auto bad = [](auto change) {
    sampling_params p;
    change(p);
    return p;
  };
  using Catch::Contains;
  CHECK_THROWS_WITH(sampler(bad([](auto &p) { p.temperature = std::numeric_limits<float>::quiet_NaN(); })),
                    Contains("temperature must be finite"));
  CHECK_THROWS_WITH(sampler(bad([](auto &p) { p.temperature = INFINITY; })), Contains("temperature"));
  CHECK_THROWS_WITH(sampler(bad([](auto &p) { p.top_k = -1; })), Contains("top_k must be >= 0"));
  CHECK_THROWS_WITH(sampler(bad([](auto &p) { p.top_p = 0.0f; })), Contains("top_p must be in (0, 1]"));
  CHECK_THROWS_WITH(sampler(bad([](auto &p) { p.top_p = 1.5f; })), Contains("got 1.5"));
  CHECK_THROWS_WITH(sampler(bad([](auto &p) { p.min_p = -0.1f; })), Contains("min_p must be in [0, 1]"));
  CHECK_THROWS_WITH(sampler(bad([](auto &p) { p.repeat_penalty = 0.0f; })), Contains("repeat_penalty"));
  CHECK_THROWS_WITH(sampler(bad([](auto &p) { p.repeat_last_n = -2; })), Contains("repeat_last_n"));
  try {
    sampler(bad([](auto &p) { p.top_p = 2.0f; }));
    FAIL("no error");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::invalid_argument);
  }

  sampler s{sampling_params{}};
  const std::vector<float> nan{1.0f, std::numeric_limits<float>::quiet_NaN()};
  CHECK_THROWS_WITH(s.sample(nan, {}, 0), Contains("NaN"));
  const std::vector<float> all_masked(4, -INFINITY);
  CHECK_THROWS_WITH(s.sample(all_masked, {}, 0), Contains("every logit is -inf"));
  CHECK_THROWS_WITH(s.sample({}, {}, 0), Contains("empty logits"));
  // Masked tokens (-inf) are never drawn.
  std::vector<float> masked(100, -INFINITY);
  masked[17] = 0.0f;
  masked[42] = 0.5f;
  sampler m(plain(2.0f));
  for (std::uint64_t step = 0; step < 200; ++step) {
    const auto t = m.sample(masked, {}, step);
    REQUIRE((t == 17 || t == 42));
  }
}

TEST_CASE("sampler: no allocation after the first sample, no full sort with top_k", "[sampler]") {
  const auto l = random_logits(49152, 5);
  std::vector<token_id> history(64);
  std::iota(history.begin(), history.end(), 100);
  sampling_params p;
  p.repeat_penalty = 1.1f;
  sampler s(p, 0, l.size());
  s.sample(l, history, 0);
  dms::test::counting_scope allocations;
  for (std::uint64_t step = 1; step < 50; ++step) s.sample(l, history, step);
  CHECK(allocations.count() == 0);
  // With top_k = 40 at most 40 candidates survive, in order.
  REQUIRE(s.candidates().size() <= 40);
  CHECK(std::is_sorted(s.candidates().begin(), s.candidates().end(),
                       [](const auto &a, const auto &b) { return a.logit > b.logit; }));
}
