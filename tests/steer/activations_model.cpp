// Activation datasets on the real model (SmolLM2-135M-Instruct, scripts/fetch-model) with the real
// tokenizer: batched collection equals one prompt at a time, neighbouring hook sites agree, and a
// dataset survives a save/load. Hidden: [.model].
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <dms/model/llama.hpp>
#include <dms/steer/activations.hpp>
#include <dms/tokenizer/tokenizer.hpp>

#include "support/external.hpp"
#include "support/scratch_dir.hpp"

TEST_CASE("activations on SmolLM2: batched equals one by one, sites agree", "[.model][steer][activations]") {
  const auto dir = dms::test::scratch_dir("dms-activations", "model");
  dms::model_options opts;
  opts.n_ctx = 64;
  opts.n_seq_max = 4;
  opts.n_threads = 2; // small, shared machines
  auto model = dms::llama_model::load(dms::test::model_path(dir), opts);
  REQUIRE(model.gguf() != nullptr);
  const auto tok = dms::tokenizer::from_gguf(*model.gguf());

  std::vector<std::vector<dms::token_id>> prompts;
  for (const char *text : {"The capital of France is", "def fibonacci(n):", "Water boils at",
                           "Once upon a time, in a small village by the sea,", "2 + 2 ="})
    prompts.push_back(tok.encode(text, false));
  const std::vector<dms::hook_point> points = {
      {5, dms::site::resid_post}, {6, dms::site::resid_pre}, {20, dms::site::mlp_out}, {-1, dms::site::final_norm}};

  dms::collect_options opt;
  opt.positions = dms::position_selector::every_token();
  const auto t0 = std::chrono::steady_clock::now();
  const auto batched = dms::collect_activations(model, prompts, points, opt);
  const double batched_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  opt.max_sequences = 1;
  const auto t1 = std::chrono::steady_clock::now();
  const auto single = dms::collect_activations(model, prompts, points, opt);
  const double single_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  std::printf("%lld rows x %zu hook points: %.2f s batched (4 sequences), %.2f s one by one\n",
              static_cast<long long>(batched.n_rows()), points.size(), batched_s, single_s);

  REQUIRE(batched.n_rows() == single.n_rows());
  double worst = 0;
  for (std::size_t i = 0; i < points.size(); ++i) {
    const auto a = batched.matrix(i), b = single.matrix(i);
    for (std::int64_t r = 0; r < a.rows; ++r)
      for (std::int64_t c = 0; c < a.cols; ++c) {
        const double scale = std::max(1.0, std::abs(static_cast<double>(b(r, c))));
        worst = std::max(worst, std::abs(static_cast<double>(a(r, c)) - b(r, c)) / scale);
      }
  }
  std::printf("largest batched vs one-by-one difference: %.3g (relative)\n", worst);
  CHECK(worst < 1e-3);

  // resid_post of layer 5 is resid_pre of layer 6: the same tensor, seen twice.
  const auto post5 = batched.matrix({5, dms::site::resid_post}), pre6 = batched.matrix({6, dms::site::resid_pre});
  for (std::int64_t r = 0; r < post5.rows; ++r)
    for (std::int64_t c = 0; c < post5.cols; ++c) REQUIRE(post5(r, c) == pre6(r, c));

  // The last-token dataset is the every-token dataset's last row of each prompt.
  dms::collect_options last_opt;
  const auto last = dms::collect_activations(model, prompts, points, last_opt);
  std::int64_t row = -1;
  for (std::size_t e = 0; e < prompts.size(); ++e) {
    row += static_cast<std::int64_t>(prompts[e].size());
    for (std::size_t i = 0; i < points.size(); ++i)
      for (std::int64_t c = 0; c < last.width(i); ++c)
        CHECK(last.matrix(i)(static_cast<std::int64_t>(e), c) == Approx(batched.matrix(i)(row, c)).margin(1e-3));
  }

  const auto path = dir / "acts.safetensors";
  last.save(path);
  const auto back = dms::activation_dataset::load(path);
  for (std::size_t i = 0; i < points.size(); ++i)
    for (std::int64_t r = 0; r < last.n_rows(); ++r)
      for (std::int64_t c = 0; c < last.width(i); ++c) REQUIRE(back.matrix(i)(r, c) == last.matrix(i)(r, c));
  CHECK(model.seq_length(0) == 0);
  std::filesystem::remove_all(dir);
}
