// Activation datasets (dms/steer/activations.hpp) on the toy backend: every selector against the
// plain reference forward, batching, save/load, errors.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "activations_toy_backend.hpp"
#include "dms/formats/safetensors.hpp"
#include "dms/steer/activations.hpp"
#include "support/scratch_dir.hpp"

namespace {

using dms::hook_point;
using dms::site;
using dms::token_id;
using dms::test::toy_backend;
using dms::test::toy_forward_reference;

const std::vector<std::vector<token_id>> prompts = {{1, 2, 3}, {4, 0}, {5, 5, 1, 2}, {3}};

const std::vector<hook_point> points = {
    {0, site::resid_pre}, {1, site::attn_out}, {1, site::mlp_out}, {2, site::resid_post}, {-1, site::final_norm}};

std::vector<float> row_of(dms::matrix_view<const float> m, std::int64_t r) {
  return {m.row(r), m.row(r) + m.cols};
}

// Error code of what `f` throws (fails the test if it throws nothing or something else).
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

} // namespace

TEST_CASE("activations: the last token of each prompt, at every requested hook point", "[steer][activations]") {
  toy_backend model;
  const auto ds = dms::collect_activations(model, prompts, points);
  REQUIRE(ds.n_points() == points.size());
  REQUIRE(ds.n_rows() == static_cast<std::int64_t>(prompts.size()));
  CHECK(ds.selector() == "last");
  for (std::size_t e = 0; e < prompts.size(); ++e) {
    const auto ref = toy_forward_reference(prompts[e]);
    const auto last = static_cast<std::int32_t>(prompts[e].size()) - 1;
    CHECK(ds.rows()[e] == dms::activation_row{static_cast<std::int32_t>(e), last, last + 1});
    CHECK(ds.prompt_lengths()[e] == static_cast<std::int32_t>(prompts[e].size()));
    for (const hook_point &p : points) {
      INFO("example " << e << " at " << dms::to_string(p));
      // The toy computes each row the same way alone or in a batch: equal to the bit.
      CHECK(row_of(ds.matrix(p), static_cast<std::int64_t>(e)) == ref.row(p.layer, p.where, static_cast<std::size_t>(last)));
    }
    // resid_pre of layer 0 is the embedding of the last token: a value written down by hand.
    for (std::int64_t i = 0; i < dms::test::toy_embd; ++i)
      CHECK(ds.matrix({0, site::resid_pre})(static_cast<std::int64_t>(e), i) ==
            dms::test::toy_embedding(prompts[e].back(), i));
  }
  CHECK(model.n_sequences_held() == 0); // cleared when collection ends
}

TEST_CASE("activations: every token, one row per token with its position", "[steer][activations]") {
  toy_backend model;
  dms::collect_options opt;
  opt.positions = dms::position_selector::every_token();
  const auto ds = dms::collect_activations(model, prompts, points, opt);
  std::int64_t r = 0;
  for (std::size_t e = 0; e < prompts.size(); ++e) {
    const auto ref = toy_forward_reference(prompts[e]);
    for (std::int32_t pos = 0; pos < static_cast<std::int32_t>(prompts[e].size()); ++pos, ++r) {
      REQUIRE(ds.rows()[static_cast<std::size_t>(r)] == dms::activation_row{static_cast<std::int32_t>(e), pos, pos + 1});
      for (const hook_point &p : points)
        CHECK(row_of(ds.matrix(p), r) == ref.row(p.layer, p.where, static_cast<std::size_t>(pos)));
    }
  }
  CHECK(ds.n_rows() == r);
  CHECK(ds.selector() == "every");
}

TEST_CASE("activations: the mean over a span, negative bounds from the end", "[steer][activations]") {
  toy_backend model;
  const std::vector<std::vector<token_id>> long_prompts = {{1, 2, 3, 4}, {5, 5, 1, 2, 0}};
  struct span_case {
    dms::position_selector sel;
    std::vector<std::pair<std::int32_t, std::int32_t>> expected; // per prompt
    std::string name;
  };
  const std::vector<span_case> cases = {
      {dms::position_selector::mean_over(0), {{0, 4}, {0, 5}}, "mean[0:]"},
      {dms::position_selector::mean_over(-2), {{2, 4}, {3, 5}}, "mean[-2:]"},
      {dms::position_selector::mean_over(1, -1), {{1, 3}, {1, 4}}, "mean[1:-1]"},
      {dms::position_selector::mean_over(1, 2), {{1, 2}, {1, 2}}, "mean[1:2]"},
  };
  for (const auto &c : cases) {
    INFO(c.name);
    dms::collect_options opt;
    opt.positions = c.sel;
    const auto ds = dms::collect_activations(model, long_prompts, points, opt);
    CHECK(ds.selector() == c.name);
    REQUIRE(ds.n_rows() == 2);
    for (std::size_t e = 0; e < long_prompts.size(); ++e) {
      const auto [b, en] = c.expected[e];
      CHECK(ds.rows()[e] == dms::activation_row{static_cast<std::int32_t>(e), b, en});
      const auto ref = toy_forward_reference(long_prompts[e]);
      for (const hook_point &p : points) {
        const auto got = row_of(ds.matrix(p), static_cast<std::int64_t>(e));
        for (std::size_t i = 0; i < got.size(); ++i) {
          double mean = 0;
          for (std::int32_t pos = b; pos < en; ++pos) mean += ref.row(p.layer, p.where, static_cast<std::size_t>(pos))[i];
          mean /= en - b;
          CHECK(got[i] == Approx(mean).margin(1e-6));
        }
      }
    }
  }
}

TEST_CASE("activations: explicit positions, in the order given", "[steer][activations]") {
  toy_backend model;
  dms::collect_options opt;
  opt.positions = dms::position_selector::at({-1, 0, 1});
  const std::vector<std::vector<token_id>> ps = {{1, 2, 3}, {4, 0, 2, 2}};
  const auto ds = dms::collect_activations(model, ps, points, opt);
  REQUIRE(ds.n_rows() == 6);
  CHECK(ds.selector() == "positions[-1,0,1]");
  const std::vector<dms::activation_row> expected = {{0, 2, 3}, {0, 0, 1}, {0, 1, 2}, {1, 3, 4}, {1, 0, 1}, {1, 1, 2}};
  for (std::size_t r = 0; r < expected.size(); ++r) {
    REQUIRE(ds.rows()[r] == expected[r]);
    const auto ref = toy_forward_reference(ps[static_cast<std::size_t>(expected[r].example)]);
    for (const hook_point &p : points)
      CHECK(row_of(ds.matrix(p), static_cast<std::int64_t>(r)) ==
            ref.row(p.layer, p.where, static_cast<std::size_t>(expected[r].begin)));
  }
}

TEST_CASE("activations: batched runs equal one-by-one runs", "[steer][activations]") {
  dms::collect_options opt;
  opt.positions = dms::position_selector::every_token();

  toy_backend batched(4);
  const auto a = dms::collect_activations(batched, prompts, points, opt);
  CHECK(batched.n_forwards == 1); // 4 prompts, 4 sequences: one forward
  CHECK(batched.max_sequences_seen == 4);

  dms::test::toy_backend_one_seq single; // no n_seq_max(): dms must assume one sequence
  const auto b = dms::collect_activations(single, prompts, points, opt);
  CHECK(single.n_forwards == prompts.size());
  CHECK(single.max_sequences_seen == 1);

  toy_backend budget(4); // a token budget of 5 packs the prompts of 3, 2, 4, 1 tokens as {3, 2}, {4, 1}
  opt.max_batch_tokens = 5;
  const auto c = dms::collect_activations(budget, prompts, points, opt);
  CHECK(budget.n_forwards == 2);

  toy_backend three(4);
  opt.max_batch_tokens = 0;
  opt.max_sequences = 3;
  const auto d = dms::collect_activations(three, prompts, points, opt);
  CHECK(three.n_forwards == 2);

  for (const auto *other : {&b, &c, &d}) {
    REQUIRE(other->n_rows() == a.n_rows());
    for (std::size_t r = 0; r < a.rows().size(); ++r) CHECK(other->rows()[r] == a.rows()[r]);
    for (std::size_t i = 0; i < a.n_points(); ++i)
      for (std::int64_t r = 0; r < a.n_rows(); ++r) CHECK(row_of(other->matrix(i), r) == row_of(a.matrix(i), r));
  }
}

TEST_CASE("activations: caller hooks run first, logits are n_vocab wide", "[steer][activations]") {
  toy_backend model;
  struct add_one {
    bool wants(hook_point p) const { return p == hook_point{0, site::resid_pre}; }
    void operator()(dms::activation_block &b) {
      for (std::int64_t r = 0; r < b.rows.rows; ++r)
        for (std::int64_t i = 0; i < b.rows.cols; ++i) b.rows(r, i) += 1.0f;
    }
  } extra;
  const std::vector<hook_point> pts = {{0, site::resid_pre}, {7, site::logits}}; // the layer of logits is ignored
  const auto ds = dms::collect_activations(model, prompts, pts, {}, extra);
  CHECK(ds.points()[1] == hook_point{-1, site::logits});
  CHECK(ds.width(1) == dms::test::toy_vocab);
  for (std::size_t e = 0; e < prompts.size(); ++e) {
    for (std::int64_t i = 0; i < dms::test::toy_embd; ++i)
      CHECK(ds.matrix(0)(static_cast<std::int64_t>(e), i) == dms::test::toy_embedding(prompts[e].back(), i) + 1.0f);
    // The logits come from the steered run, so they differ from the plain reference ones.
    const auto ref = toy_forward_reference(prompts[e]);
    CHECK(row_of(ds.matrix({-1, site::logits}), static_cast<std::int64_t>(e)) !=
          ref.row(-1, site::logits, prompts[e].size() - 1));
  }
}

TEST_CASE("activations: save and load round trip through safetensors", "[steer][activations]") {
  const auto dir = dms::test::scratch_dir("dms-activations", "roundtrip");
  toy_backend model;
  dms::collect_options opt;
  opt.positions = dms::position_selector::mean_over(-2);
  const std::vector<std::vector<token_id>> ps = {{1, 2, 3}, {4, 0}, {5, 5, 1, 2}};
  const auto ds = dms::collect_activations(model, ps, points, opt);
  const auto path = dir / "acts.safetensors";
  const auto bytes = ds.save(path);
  CHECK(bytes == std::filesystem::file_size(path));

  // Readable as plain safetensors: one F32 [n_rows, width] tensor per hook point, TL names.
  dms::safetensors_file f(path.string());
  CHECK(f.size() == points.size());
  const auto &t = f.at("blocks.2.hook_resid_post");
  CHECK(t.dtype_name == "F32");
  CHECK(t.shape == std::vector<std::int64_t>{3, dms::test::toy_embd});
  CHECK(f.contains("hook_final_norm"));
  REQUIRE(f.metadata("dms.activations").has_value());

  const auto back = dms::activation_dataset::load(path);
  CHECK(back.selector() == "mean[-2:]");
  REQUIRE(back.n_points() == ds.n_points());
  REQUIRE(back.n_rows() == ds.n_rows());
  CHECK(std::vector<std::int32_t>(back.prompt_lengths().begin(), back.prompt_lengths().end()) ==
        std::vector<std::int32_t>{3, 2, 4});
  for (std::size_t r = 0; r < ds.rows().size(); ++r) CHECK(back.rows()[r] == ds.rows()[r]);
  for (std::size_t i = 0; i < ds.n_points(); ++i) {
    CHECK(back.points()[i] == ds.points()[i]);
    CHECK(back.width(i) == ds.width(i));
    for (std::int64_t r = 0; r < ds.n_rows(); ++r) CHECK(row_of(back.matrix(i), r) == row_of(ds.matrix(i), r));
  }

  // A safetensors file that is not a dataset is refused with the file named.
  dms::safetensors_writer w;
  const std::vector<float> v(4, 1.0f);
  w.add("blocks.0.hook_resid_pre", dms::dtype::f32, {1, 4}, std::as_bytes(std::span(v)));
  const auto plain = dir / "plain.safetensors";
  w.write(plain);
  try {
    (void)dms::activation_dataset::load(plain);
    FAIL("loaded a file without dataset metadata");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::invalid_format);
    CHECK(std::string(e.what()).find("plain.safetensors") != std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("activations: progress reports one unit per prompt", "[steer][activations]") {
  toy_backend model(2);
  std::vector<dms::progress_state> seen;
  dms::collect_options opt;
  opt.report = dms::progress([&](const dms::progress_state &s) { seen.push_back(s); }, {std::chrono::nanoseconds(0), {}});
  (void)dms::collect_activations(model, prompts, points, opt);
  REQUIRE(seen.size() >= 2);
  CHECK(seen.front().done == 0);
  CHECK(seen.back().finished);
  CHECK(seen.back().done == prompts.size());
  CHECK(seen.back().total == prompts.size());
}

TEST_CASE("activations: errors", "[steer][activations]") {
  using dms::errc;
  toy_backend model;
  const std::vector<std::vector<token_id>> none;
  CHECK(error_code([&] { (void)dms::collect_activations(model, none, points); }) == errc::invalid_argument);
  const std::vector<std::vector<token_id>> with_empty = {{1, 2}, {}};
  CHECK(error_code([&] { (void)dms::collect_activations(model, with_empty, points); }) == errc::invalid_argument);
  const std::vector<std::vector<token_id>> bad_token = {{1, 6}};
  CHECK(error_code([&] { (void)dms::collect_activations(model, bad_token, points); }) == errc::invalid_argument);
  const std::vector<std::vector<token_id>> too_long(1, std::vector<token_id>(17, 1));
  CHECK(error_code([&] { (void)dms::collect_activations(model, too_long, points); }) == errc::invalid_argument);
  const std::vector<hook_point> no_points;
  CHECK(error_code([&] { (void)dms::collect_activations(model, prompts, no_points); }) == errc::invalid_argument);
  for (const hook_point &bad : {hook_point{3, site::resid_pre}, hook_point{-1, site::mlp_out}}) {
    const std::vector<hook_point> pts = {bad};
    CHECK(error_code([&] { (void)dms::collect_activations(model, prompts, pts); }) == errc::invalid_argument);
  }
  const std::vector<hook_point> twice = {{1, site::attn_out}, {1, site::attn_out}};
  CHECK(error_code([&] { (void)dms::collect_activations(model, prompts, twice); }) == errc::invalid_argument);

  // Selectors outside a prompt (prompts[3] has one token).
  for (const auto &sel : {dms::position_selector::at({1}), dms::position_selector::at({-2}),
                          dms::position_selector::at({}), dms::position_selector::mean_over(-2),
                          dms::position_selector::mean_over(1, 1), dms::position_selector::mean_over(0, 2)}) {
    INFO(sel.describe());
    dms::collect_options opt;
    opt.positions = sel;
    CHECK(error_code([&] { (void)dms::collect_activations(model, prompts, points, opt); }) == errc::invalid_argument);
  }
  CHECK(model.n_forwards == 0); // every error above is found before the first forward

  // A backend that never calls a requested site is caught, and its sequences are still cleared.
  model.silent_site = site::mlp_out;
  CHECK(error_code([&] { (void)dms::collect_activations(model, prompts, points); }) == errc::unsupported);
  CHECK(model.n_sequences_held() == 0);

  // More sequences than the backend holds.
  dms::collect_options opt;
  opt.max_sequences = 5;
  CHECK(error_code([&] { (void)dms::collect_activations(model, prompts, points, opt); }) == errc::invalid_argument);
}
