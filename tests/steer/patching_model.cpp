// Activation patching on the real model (SmolLM2-135M-Instruct, scripts/fetch-model) with the
// real tokenizer: a factual-recall pair, the effect profile over layers (printed), and batched
// variants against sequential ones. Hidden: [.model].
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <dms/model/llama.hpp>
#include <dms/patch/activation_patching.hpp>
#include <dms/tokenizer/tokenizer.hpp>

#include "support/external.hpp"
#include "support/scratch_dir.hpp"

namespace {

struct loaded {
  dms::llama_model model;
  dms::tokenizer tok;
};

loaded load_smollm(std::int32_t n_seq) {
  const auto dir = dms::test::scratch_dir("dms-patching", "model");
  dms::model_options opts;
  opts.n_ctx = 64;
  opts.n_seq_max = n_seq;
  opts.n_threads = 2; // the machines that run these tests are small and shared
  auto model = dms::llama_model::load(dms::test::model_path(dir), opts);
  REQUIRE(model.gguf() != nullptr);
  auto tok = dms::tokenizer::from_gguf(*model.gguf());
  return {std::move(model), std::move(tok)};
}

dms::token_id single_token(const dms::tokenizer &tok, const std::string &text) {
  const auto ids = tok.encode(text, false);
  INFO("'" << text << "' encodes to " << ids.size() << " tokens");
  REQUIRE(ids.size() == 1);
  return ids[0];
}

dms::patching_pair eiffel_colosseum(const dms::tokenizer &tok) {
  dms::patching_pair p;
  p.clean = tok.encode("The Eiffel Tower is located in the city of", false);
  p.corrupt = tok.encode("The Colosseum is located in the city of", false);
  p.clean_target = single_token(tok, " Paris");
  p.corrupt_target = single_token(tok, " Rome");
  INFO("clean " << p.clean.size() << " tokens, corrupted " << p.corrupt.size());
  REQUIRE(p.clean.size() == p.corrupt.size()); // " Eiffel Tower" and " Colosseum" are both 3 tokens
  return p;
}

void print_profile(const dms::patching_result &r) {
  std::printf("layer  resid_pre  attn_out  mlp_out   (mean normalized effect, all positions)\n");
  for (std::int32_t l = r.layer_begin; l < r.layer_end; ++l)
    std::printf("%5d  %9.4f  %8.4f  %7.4f\n", l, r.mean(dms::site::resid_pre, l), r.mean(dms::site::attn_out, l),
                r.mean(dms::site::mlp_out, l));
}

} // namespace

TEST_CASE("patching on SmolLM2: Eiffel Tower / Colosseum", "[.model][steer][patching]") {
  auto [model, tok] = load_smollm(8);
  const auto pair = eiffel_colosseum(tok);

  // Sites resid_pre, attn_out, mlp_out at every layer, all positions at once.
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = dms::activation_patching(model, std::span(&pair, 1));
  const double all_pos_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("clean logit diff (Paris - Rome) %.4f, corrupted %.4f\n", r.clean_metric[0], r.corrupt_metric[0]);
  print_profile(r);
  std::printf("%zu runs in %zu forwards, %.2f s (%d layers x 3 sites, %zu tokens)\n", r.n_runs, r.n_forwards,
              all_pos_s, model.n_layers(), pair.clean.size());
  CHECK(r.clean_metric[0] > 0);
  CHECK(r.corrupt_metric[0] < 0);
  // resid_pre of layer l at every position is all that layers >= l read: the clean run comes
  // back whole. Every forward of the sweep has the same shape (uniform_batches), so the replay
  // goes through the same kernels: equal to rounding, not just close.
  for (std::int32_t l = 0; l < model.n_layers(); ++l) CHECK(r.mean(dms::site::resid_pre, l) == Approx(1.0).margin(1e-6));
  CHECK(dms::choose_steering_layer(r, dms::site::resid_pre) >= 0);
  std::printf("choose_steering_layer: attn_out -> %d, mlp_out -> %d\n",
              dms::choose_steering_layer(r, dms::site::attn_out), dms::choose_steering_layer(r, dms::site::mlp_out));

  // Per position, resid_pre only: where along the prompt and how deep the answer travels.
  dms::patching_options opt;
  opt.sites = {dms::site::resid_pre};
  opt.per_position = true;
  const auto p = dms::activation_patching(model, std::span(&pair, 1), opt);
  std::printf("resid_pre per position (%zu runs, %zu forwards, %.2f s); columns = tokens:\n      ", p.n_runs,
              p.n_forwards, p.seconds);
  for (std::size_t j = 0; j < pair.clean.size(); ++j) {
    std::string piece(tok.piece(pair.clean[j]));
    if (pair.clean[j] != pair.corrupt[j]) piece += "*";
    std::printf("%8.8s", piece.c_str());
  }
  std::printf("\n");
  for (std::int32_t l = 0; l < model.n_layers(); ++l) {
    std::printf("%5d ", l);
    for (std::int32_t j = 0; j < p.n_positions; ++j) std::printf("%8.3f", p.mean(dms::site::resid_pre, l, j));
    std::printf("\n");
  }
  // Positions before the first differing token hold the same activations in both runs, at every
  // layer; at layer 0 (the embeddings) so does every position whose token agrees.
  for (std::int32_t l = 0; l < model.n_layers(); ++l) CHECK(p.mean(dms::site::resid_pre, l, 0) == Approx(0.0).margin(1e-6));
  for (std::int32_t j = 0; j < p.n_positions; ++j)
    if (pair.clean[static_cast<std::size_t>(j)] == pair.corrupt[static_cast<std::size_t>(j)])
      CHECK(p.mean(dms::site::resid_pre, 0, j) == Approx(0.0).margin(1e-6));
  // Patching the differing tokens' embeddings restores most of the answer at layer 0 (all of it
  // when they are patched together: the all-positions run above).
  double at_layer0 = 0;
  for (std::int32_t j = 0; j < p.n_positions; ++j) at_layer0 = std::max(at_layer0, p.mean(dms::site::resid_pre, 0, j));
  CHECK(at_layer0 > 0.2);
  CHECK(model.seq_length(0) == 0); // the sweep leaves the cache empty
}

TEST_CASE("patching on SmolLM2: batched variants equal sequential ones", "[.model][steer][patching]") {
  auto [model, tok] = load_smollm(4);
  const auto pair = eiffel_colosseum(tok);
  dms::patching_options opt;
  opt.sites = {dms::site::attn_out, dms::site::mlp_out};
  opt.layer_begin = 10;
  opt.layer_end = 14;
  const auto batched = dms::activation_patching(model, std::span(&pair, 1), opt);
  opt.max_sequences = 1;
  const auto sequential = dms::activation_patching(model, std::span(&pair, 1), opt);
  CHECK(batched.n_forwards < sequential.n_forwards);
  std::printf("8 variants: %zu forwards batched (%.2f s), %zu sequential (%.2f s)\n", batched.n_forwards,
              batched.seconds, sequential.n_forwards, sequential.seconds);
  for (std::size_t j = 0; j < batched.effect.size(); ++j) {
    INFO("entry " << j);
    CHECK(batched.patched_metric[j] == Approx(sequential.patched_metric[j]).margin(1e-3));
  }
  CHECK(batched.clean_metric[0] == Approx(sequential.clean_metric[0]).margin(1e-3));
}
