// TIES, DARE, breadcrumbs and DELLA: hand-computed cases, invariants and mask statistics; the
// whole-model TIES threshold.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "dms/merge/sparsify.hpp"
#include "dms/merge/strategies.hpp"
#include "strategy_test_support.hpp"
#include "support/random_floats.hpp"

using dms::test::merge_case;

namespace {
//! One model against a zero base, weight 1, no normalization: the output is the sparsified delta.
merge_case single_delta(std::vector<float> delta, std::vector<std::int64_t> shape = {}) {
  merge_case c;
  c.base.assign(delta.size(), 0.0f);
  c.models = {std::move(delta)};
  c.shape = std::move(shape);
  c.params.set("weight", 1.0).set("normalize", 0.0);
  return c;
}
std::size_t nonzero(const std::vector<float> &v) {
  return static_cast<std::size_t>(std::count_if(v.begin(), v.end(), [](float x) { return x != 0.0f; }));
}
} // namespace

TEST_CASE("ties: trim to top-k, elect the sign, mean of the agreeing entries", "[merge][strategy]") {
  merge_case c;
  c.base = {1, 1, 1, 1, 1, 1};
  const std::vector<float> d1 = {4, -3, 1, 0.5f, -2, 1.5f}, d2 = {-1, -2, 3, 1, 2.5f, -0.1f};
  c.models = {{}, {}};
  for (std::size_t i = 0; i < 6; ++i) c.models[0].push_back(1 + d1[i]), c.models[1].push_back(1 + d2[i]);
  c.params.set("weight", 1.0).set("density", 0.5);
  // Top 3: d1 -> [4,-3,0,0,-2,0], d2 -> [0,-2,3,0,2.5,0]; elected signs [+,-,+,+,+,+];
  // entry 4: d1's -2 disagrees, d2's 2.5 alone; entry 3: nobody, divisor 1 -> 0.
  CHECK(c.run("ties") == std::vector<float>{5, -1.5f, 4, 1, 3.5f, 1});
  c.params.set("lambda", 2.0).set("normalize", 0.0); // no division: sums of the agreeing entries
  CHECK(c.run("ties") == std::vector<float>{9, -9, 7, 1, 6, 1});
}

TEST_CASE("ties with density 1 and same-sign deltas is task arithmetic", "[merge][strategy]") {
  merge_case c;
  c.base = dms::test::random_floats(4096, 1);
  for (std::uint32_t m = 0; m < 3; ++m) {
    auto d = dms::test::random_floats(4096, 10 + m);
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = c.base[i] + std::abs(d[i]) + 0.01f;
    c.models.push_back(d);
    c.params.set("weight", static_cast<std::int32_t>(m), 0.5 + m);
  }
  c.params.set("lambda", 0.7);
  const auto ties = c.run("ties");
  c.params.set("normalize", 1.0);
  const auto ta = c.run("task_arithmetic");
  for (std::size_t i = 0; i < ties.size(); ++i) REQUIRE(ties[i] == Approx(ta[i]).epsilon(1e-6));
}

TEST_CASE("trim_magnitude keeps exactly the k largest magnitudes, ties broken by index", "[merge][strategy]") {
  std::vector<float> scratch;
  for (double density : {0.01, 0.1, 0.5, 0.9}) {
    auto d = dms::test::random_floats(10007, 3);
    const auto orig = d;
    dms::trim_magnitude(d, density, dms::rescale_mode::none, scratch);
    const std::size_t k = dms::magnitude_keep_count(d.size(), density);
    REQUIRE(nonzero(d) == k);
    std::vector<float> mags;
    for (float v : orig) mags.push_back(std::abs(v));
    std::sort(mags.begin(), mags.end(), std::greater<>());
    for (std::size_t i = 0; i < d.size(); ++i)
      if (d[i] != 0.0f) REQUIRE((d[i] == orig[i] && std::abs(d[i]) >= mags[k - 1]));
  }
  // Many equal magnitudes: still exactly k survivors, the later indices first.
  std::vector<float> eq = {1, -1, 1, 1, -1, 1, 2, 0.5f};
  dms::trim_magnitude(eq, 0.5, dms::rescale_mode::none, scratch); // k = 4: the 2 and three of the 1s
  CHECK(eq == std::vector<float>{0, 0, 0, 1, -1, 1, 2, 0});
  std::vector<float> tiny = {3, 1, 2};
  dms::trim_magnitude(tiny, 0.1, dms::rescale_mode::none, scratch); // floor(0.3) = 0 -> keeps 1
  CHECK(tiny == std::vector<float>{3, 0, 0});
  std::vector<float> nan = {1, std::nanf(""), 2, 3};
  CHECK_THROWS_AS(dms::trim_magnitude(nan, 0.5, dms::rescale_mode::none, scratch), dms::error);
}

TEST_CASE("breadcrumbs: drops the gamma largest and the smallest, gamma 0 keeps the top", "[merge][strategy]") {
  auto c = single_delta({1, -2, 3, -4, 5, -6, 7, -8, 9, -10});
  c.params.set("density", 0.5).set("gamma", 0.1); // keep 5 of ranks: n_top 1, n_bot 4
  CHECK(c.run("breadcrumbs") == std::vector<float>{0, 0, 0, 0, 5, -6, 7, -8, 9, 0});
  c.params.set("gamma", 0.0); // int(gamma * n) = 0: the top 5 survive (mergekit < 0.1.5 zeroed all)
  CHECK(c.run("breadcrumbs") == std::vector<float>{0, 0, 0, 0, 0, -6, 7, -8, 9, -10});
  c.params.set("gamma", 0.8); // more outliers than density allows: n_bot = 0, ranks [0, 5)
  CHECK(c.run("breadcrumbs") == std::vector<float>{1, -2, 3, -4, 5, 0, 0, 0, 0, 0});
  c.params.set("gamma", 0.1).set("rescale", 1.0); // L1 match: 55 / 35
  const auto r = c.run("breadcrumbs");
  CHECK(r[4] == Approx(5 * 55.0 / 35.0));
  CHECK(dms::l1_norm(r) == Approx(55.0));
}

TEST_CASE("dare: density 1 drops nothing, the mask keeps ~density, both rescales", "[merge][strategy]") {
  auto d = dms::test::random_floats(200000, 5);
  auto c = single_delta(d);
  c.params.set("density", 1.0);
  CHECK(c.run("dare_linear") == d);
  for (double density : {0.1, 0.5, 0.9}) {
    c.params.set("density", density).set("rescale", 0.0);
    const auto masked = c.run("dare_linear");
    const double kept = static_cast<double>(nonzero(masked)) / static_cast<double>(d.size());
    const double sigma = std::sqrt(density * (1 - density) / static_cast<double>(d.size()));
    CHECK(std::abs(kept - density) < 5 * sigma);
    for (std::size_t i = 0; i < d.size(); ++i) REQUIRE((masked[i] == 0.0f || masked[i] == d[i]));
    c.params.set("rescale", 1.0); // L1-norm matching (mergekit 0.1.5)
    const auto l1 = c.run("dare_linear");
    CHECK(dms::l1_norm(l1) == Approx(dms::l1_norm(d)).epsilon(1e-5));
    c.params.set("rescale_by_density", 1.0); // 1 / density (DARE paper, PEFT)
    const auto inv = c.run("dare_linear");
    const auto f = static_cast<float>(1.0 / density);
    for (std::size_t i = 0; i < d.size(); ++i) REQUIRE(inv[i] == (masked[i] == 0.0f ? 0.0f : d[i] * f));
    c.params.set("rescale_by_density", 0.0);
  }
  // Same seed, same mask; another seed, tensor or model index, another mask.
  c.params.set("density", 0.5).set("rescale", 0.0);
  const auto a = c.run("dare_linear");
  CHECK(c.run("dare_linear") == a);
  c.seed = 43;
  CHECK(c.run("dare_linear") != a);
  c.seed = 42;
  c.name = "model.layers.1.mlp.up_proj.weight";
  CHECK(c.run("dare_linear") != a);
}

TEST_CASE("della: keep probability grows with the magnitude rank in each row", "[merge][strategy]") {
  const std::size_t rows = 400, cols = 1001;
  std::vector<float> d(rows * cols);
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto &x : d) x = u(gen);
  auto c = single_delta(d, {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols)});
  c.params.set("density", 0.5).set("epsilon", 0.4).set("rescale", 0.0);
  const auto out = c.run("della_linear");
  // p(rank r) = 0.1 + 0.8 r / 1000: the bottom 100 ranks of each row keep ~14%, the top ~86%.
  std::size_t low = 0, high = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    std::vector<std::size_t> order(cols);
    for (std::size_t k = 0; k < cols; ++k) order[k] = k;
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return std::abs(d[r * cols + a]) < std::abs(d[r * cols + b]); });
    for (std::size_t k = 0; k < 100; ++k) {
      low += out[r * cols + order[k]] != 0.0f;
      high += out[r * cols + order[cols - 1 - k]] != 0.0f;
    }
  }
  const double n = 100.0 * rows;
  CHECK(static_cast<double>(low) / n == Approx(0.1 + 0.8 * 49.5 / 1000).margin(0.01));
  CHECK(static_cast<double>(high) / n == Approx(0.9 - 0.8 * 49.5 / 1000).margin(0.01));
  // Inverse-probability rescale: survivors divided by their own p.
  c.params.set("rescale", 1.0).set("rescale_by_density", 1.0);
  const auto inv = c.run("della_linear");
  for (std::size_t i = 0; i < d.size(); ++i) REQUIRE((inv[i] == 0.0f) == (out[i] == 0.0f));
  c.params.set("density", 1.0); // density 1: untouched
  CHECK(c.run("della_linear") == d);
}

TEST_CASE("kth_magnitude_finder: exact k-th largest magnitude in two streaming passes", "[merge][strategy]") {
  std::vector<float> all;
  std::vector<std::vector<float>> chunks;
  for (std::uint32_t i = 0; i < 5; ++i) {
    chunks.push_back(dms::test::random_floats(3000 + 1000 * i, 20 + i));
    all.insert(all.end(), chunks.back().begin(), chunks.back().end());
  }
  std::vector<float> mags;
  for (float v : all) mags.push_back(std::abs(v));
  std::sort(mags.begin(), mags.end(), std::greater<>());
  for (std::uint64_t k : {std::uint64_t{1}, std::uint64_t{17}, std::uint64_t{5000}, std::uint64_t{all.size()}}) {
    dms::kth_magnitude_finder f(k);
    while (!f.done()) {
      for (const auto &ch : chunks) f.add(ch);
      f.finish_pass();
    }
    CHECK(f.threshold() == mags[k - 1]);
  }
  // From a density, with per-thread finders merged.
  auto f = dms::kth_magnitude_finder::from_density(0.2);
  while (!f.done()) {
    auto g = f; // a second "thread" of the same pass takes half the chunks
    for (std::size_t i = 0; i < chunks.size(); ++i) (i % 2 ? g : f).add(chunks[i]);
    f.merge(g);
    f.finish_pass();
  }
  CHECK(f.threshold() == mags[dms::magnitude_keep_count(all.size(), 0.2) - 1]);
  dms::kth_magnitude_finder too_many(all.size() + 1);
  for (const auto &ch : chunks) too_many.add(ch);
  CHECK_THROWS_AS(too_many.finish_pass(), dms::error);
}

TEST_CASE("ties: a whole-model trim_threshold over one tensor equals the per-tensor top-k", "[merge][strategy]") {
  merge_case c;
  c.base = dms::test::random_floats(5000, 30);
  for (std::uint32_t m = 0; m < 2; ++m) c.models.push_back(dms::test::random_floats(5000, 31 + m));
  c.params.set("weight", 1.0).set("density", 0.3);
  const auto per_tensor = c.run("ties");
  for (std::int32_t m = 0; m < 2; ++m) {
    auto f = dms::kth_magnitude_finder::from_density(0.3);
    std::vector<float> delta(5000);
    for (std::size_t i = 0; i < delta.size(); ++i) delta[i] = c.models[m][i] - c.base[i];
    while (!f.done()) {
      f.add(std::span<const float>(delta).first(2000)); // chunked, as an engine streams
      f.add(std::span<const float>(delta).subspan(2000));
      f.finish_pass();
    }
    c.params.set("trim_threshold", m, f.threshold());
  }
  CHECK(c.run("ties") == per_tensor);
}

TEST_CASE("trim_magnitude on large tensors: radix selection equals the nth_element ranks", "[merge][strategy]") {
  // Above 64 Ki elements trim_magnitude selects by a histogram of the float bits; values on a
  // coarse grid (many equal magnitudes, both zeros, both signs) check its tie-breaking by index.
  std::uint64_t state = 12345;
  std::vector<float> x(70001);
  for (float &v : x) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<float>(static_cast<std::int64_t>(state >> 52) - 2048) / 256.0f;
  }
  x[7] = -0.0f;
  std::vector<float> scratch;
  for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{777}, x.size() / 3, x.size() - 1, x.size()}) {
    INFO("k = " << k);
    std::vector<float> want = x, got = x;
    dms::detail::keep_magnitude_ranks(want, x.size() - k, x.size(), scratch);
    dms::detail::keep_top_magnitudes(got, k);
    CHECK(std::memcmp(want.data(), got.data(), x.size() * sizeof(float)) == 0);
  }
  std::vector<float> nan = x;
  nan[500] = std::nanf("");
  CHECK_THROWS_AS(dms::detail::keep_top_magnitudes(nan, 10), dms::error);
}
