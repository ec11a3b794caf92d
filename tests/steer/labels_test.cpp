// dms/steer/labels.hpp on a tiny random Llama: a passage made of the model's own greedy output
// must be labelled memorized by extraction, a perturbed one must not; diversity labels are
// deterministic, independent of batching, and their entropy is the model's.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "dms/model/generate.hpp"
#include "dms/model/llama.hpp"
#include "dms/steer/labels.hpp"
#include "greedy_passage.hpp"
#include "model/tiny_model.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using dms::test::greedy_passage;
using dms::token_id;

namespace {

struct tiny_fixture {
  fs::path dir = dms::test::scratch_dir("dms-labels", "tiny");
  tiny_fixture() { dms::test::write_gguf(dms::test::make_tiny({}), dir / "model.gguf", dms::ggml_type::f32); }
  ~tiny_fixture() { fs::remove_all(dir); }
  dms::llama_model load(std::int32_t n_seq = 4) const {
    return dms::llama_model::load(dir / "model.gguf", {.n_ctx = 48, .n_seq_max = n_seq, .n_threads = 1});
  }
};


} // namespace

TEST_CASE("label_by_extraction: the model's own greedy text is memorized, a perturbed one is not", "[labels]") {
  tiny_fixture f;
  auto m = f.load();
  const dms::extraction_options opt{.prefix_tokens = 6, .continuation_tokens = 10, .min_match = 0.9};
  const auto own = greedy_passage(m, {5, 17, 42, 99, 3, 64}, 10);
  REQUIRE(own.size() == 16);
  auto one_off = own;   // 9 of 10 positions agree: exactly at the 0.9 threshold
  one_off[15] = (one_off[15] + 1) % 100;
  auto two_off = one_off; // 8 of 10
  two_off[8] = (two_off[8] + 1) % 100;
  auto all_off = own;
  for (std::size_t i = 6; i < all_off.size(); ++i) all_off[i] = (all_off[i] + 1) % 100;
  all_off.push_back(7); // longer passages are fine: only the first 16 tokens are read

  const std::vector<std::vector<token_id>> passages = {own, one_off, two_off, all_off};
  const auto labels = dms::label_by_extraction(m, passages, opt);
  REQUIRE(labels.size() == 4);
  CHECK(labels[0].memorized);
  CHECK(labels[0].match_fraction == 1.0);
  CHECK(labels[0].continuation == labels[0].reference);
  CHECK(labels[0].prefix == std::vector<token_id>(own.begin(), own.begin() + 6));
  CHECK(labels[1].memorized);
  CHECK(labels[1].match_fraction == Approx(0.9));
  CHECK_FALSE(labels[2].memorized);
  CHECK(labels[2].match_fraction == Approx(0.8));
  CHECK_FALSE(labels[3].memorized);
  CHECK(labels[3].match_fraction == 0.0);
  for (const auto &l : labels) CHECK(l.continuation == labels[0].continuation); // same prefix, same greedy text

  // One passage per forward gives the same labels as four (below 64 tokens a step is bit-exact).
  auto opt1 = opt;
  opt1.max_sequences = 1;
  const auto single = dms::label_by_extraction(m, passages, opt1);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    CHECK(single[i].continuation == labels[i].continuation);
    CHECK(single[i].memorized == labels[i].memorized);
  }
}

TEST_CASE("label_by_extraction: errors name what is wrong", "[labels]") {
  tiny_fixture f;
  auto m = f.load();
  const std::vector<std::vector<token_id>> passages = {std::vector<token_id>(20, 3), std::vector<token_id>(9, 3)};
  const dms::extraction_options opt{.prefix_tokens = 5, .continuation_tokens = 5};
  CHECK_THROWS_WITH(dms::label_by_extraction(m, passages, opt),
                    Catch::Contains("passage 1 has 9 tokens, fewer than the 10 needed"));
  CHECK_THROWS_WITH(dms::label_by_extraction(m, std::span<const std::vector<token_id>>(), opt),
                    Catch::Contains("no passages"));
  CHECK_THROWS_WITH(dms::label_by_extraction(m, std::span(passages).first(1), {.min_match = 1.5}),
                    Catch::Contains("min_match"));
  CHECK_THROWS_WITH(dms::label_by_extraction(m, std::span(passages).first(1), {.prefix_tokens = 0}),
                    Catch::Contains("must be >= 1"));
  CHECK_THROWS_WITH(dms::label_by_extraction(m, std::span(passages).first(1), {.prefix_tokens = 30, .continuation_tokens = 30}),
                    Catch::Contains("do not fit the context of 48"));
  const std::vector<std::vector<token_id>> bad = {{1, 2, 3, 4, 500, 6, 7, 8, 9, 10}};
  CHECK_THROWS_WITH(dms::label_by_extraction(m, bad, opt), Catch::Contains("token 500 at position 4"));
}

TEST_CASE("label_by_diversity: deterministic, batch-independent, entropy of the model", "[labels]") {
  tiny_fixture f;
  auto m = f.load();
  const std::vector<std::vector<token_id>> passages = {{5, 17, 42, 99, 3, 64}, {1, 2, 3, 4, 5, 6, 7}, {80, 81, 82, 83, 84, 85}};
  dms::diversity_options opt{.prefix_tokens = 6, .n_samples = 6, .continuation_tokens = 5, .seed = 11};
  const auto a = dms::label_by_diversity(m, passages, opt);
  const auto b = dms::label_by_diversity(m, passages, opt);
  auto opt1 = opt;
  opt1.max_sequences = 1;
  const auto c = dms::label_by_diversity(m, passages, opt1);
  REQUIRE(a.size() == 3);
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].distinct_ratio == b[i].distinct_ratio);
    CHECK(a[i].mean_entropy == b[i].mean_entropy);
    CHECK(a[i].distinct_ratio == c[i].distinct_ratio);
    CHECK(a[i].mean_entropy == Approx(c[i].mean_entropy).epsilon(1e-12));
    CHECK(a[i].distinct_ratio == Approx(a[i].n_distinct / 6.0));
    CHECK(a[i].distinct_ratio >= 1.0 / 6.0);
    CHECK(a[i].distinct_ratio <= 1.0);
    CHECK(a[i].mean_entropy > 0.0);
    CHECK(a[i].mean_entropy <= std::log(100.0) + 1e-9);
    // A random model spreads its mass: 5 tokens drawn at temperature 1 practically never repeat.
    CHECK_FALSE(a[i].memorized);
  }

  // Near-greedy draws all agree: memorized, ratio 1/n.
  auto cold = opt;
  cold.temperature = 1e-4f;
  for (const auto &l : dms::label_by_diversity(m, passages, cold)) {
    CHECK(l.memorized);
    CHECK(l.n_distinct == 1);
  }

  // With one token per draw, the mean entropy is that of the prefix's next-token distribution.
  auto one = opt;
  one.continuation_tokens = 1;
  const auto l1 = dms::label_by_diversity(m, std::span(passages).first(1), one);
  m.clear(0);
  std::vector<dms::token_slot> slots;
  for (std::int32_t i = 0; i < 6; ++i) slots.push_back({0, i, i == 5});
  const auto logits = m.forward(dms::token_batch{passages[0], slots});
  double mx = -1e300, z = 0.0, zx = 0.0;
  for (std::int64_t v = 0; v < logits.cols; ++v) mx = std::max(mx, static_cast<double>(logits.row(0)[v]));
  for (std::int64_t v = 0; v < logits.cols; ++v) {
    const double x = logits.row(0)[v] - mx, e = std::exp(x);
    z += e;
    zx += e * x;
  }
  CHECK(l1[0].mean_entropy == Approx(std::log(z) - zx / z).epsilon(1e-9));
}

TEST_CASE("label_by_diversity: errors name what is wrong", "[labels]") {
  tiny_fixture f;
  auto m = f.load();
  const std::vector<std::vector<token_id>> passages = {std::vector<token_id>(8, 3), std::vector<token_id>(3, 3)};
  CHECK_THROWS_WITH(dms::label_by_diversity(m, passages, {.prefix_tokens = 4}),
                    Catch::Contains("passage 1 has 3 tokens, fewer than the 4 needed"));
  CHECK_THROWS_WITH(dms::label_by_diversity(m, std::span(passages).first(1), {.prefix_tokens = 4, .n_samples = 1}),
                    Catch::Contains("n_samples must be >= 2"));
  CHECK_THROWS_WITH(dms::label_by_diversity(m, std::span(passages).first(1), {.prefix_tokens = 4, .temperature = 0.0f}),
                    Catch::Contains("temperature must be > 0"));
  CHECK_THROWS_WITH(
      dms::label_by_diversity(m, std::span(passages).first(1), {.prefix_tokens = 4, .max_distinct_ratio = -0.1}),
      Catch::Contains("max_distinct_ratio"));
}

TEST_CASE("label_agreement: counts, rate and kappa", "[labels]") {
  std::vector<dms::extraction_label> e(5);
  std::vector<dms::diversity_label> d(5);
  const bool ev[] = {true, true, false, false, true}, dv[] = {true, false, false, true, true};
  for (std::size_t i = 0; i < 5; ++i) {
    e[i].memorized = ev[i];
    d[i].memorized = dv[i];
  }
  const auto a = dms::label_agreement(e, d);
  CHECK(a.both == 2);
  CHECK(a.neither == 1);
  CHECK(a.only_extraction == 1);
  CHECK(a.only_diversity == 1);
  CHECK(a.total() == 5);
  CHECK(a.rate() == Approx(0.6));
  // p_o = 0.6; p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52; kappa = 0.08 / 0.48.
  CHECK(a.kappa() == Approx(0.08 / 0.48));
  d.pop_back();
  CHECK_THROWS_WITH(dms::label_agreement(e, d), Catch::Contains("5 extraction labels but 4 diversity labels"));
  CHECK(dms::label_agreement_counts{}.rate() == 0.0);
}

TEST_CASE("positional_match: position by position, missing tokens count as mismatches", "[labels]") {
  const std::vector<token_id> ref = {1, 2, 3, 4};
  CHECK(dms::positional_match(std::vector<token_id>{1, 2, 3, 4}, ref) == 1.0);
  CHECK(dms::positional_match(std::vector<token_id>{2, 3, 4, 5}, ref) == 0.0); // shifted: no credit
  CHECK(dms::positional_match(std::vector<token_id>{1, 2}, ref) == 0.5);
  CHECK(dms::positional_match(std::vector<token_id>{1}, std::vector<token_id>{}) == 0.0);
}
