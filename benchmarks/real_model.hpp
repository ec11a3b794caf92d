// Shared by the benchmarks that run the real model (SmolLM2-135M-Instruct Q4_1 from
// scripts/fetch-model, or $DMS_MODEL): where it is, one loaded copy per thread count, token ids,
// a prompt runner and a read-only hook.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "dms/model/llama.hpp"

namespace dms::bench {

inline std::string model_file() {
  if (const char *env = std::getenv("DMS_MODEL")) return env;
  const char *cache = std::getenv("DMS_CACHE");
  const char *home = std::getenv("HOME");
  const std::filesystem::path dir = cache ? cache : std::string(home ? home : "/root") + "/.cache/dms";
  return (dir / "SmolLM2-135M-Instruct.Q4_1.gguf").string();
}

//! Skips the benchmark (with the reason) when the model file is missing.
inline bool model_missing(benchmark::State &state) {
  if (std::filesystem::exists(model_file())) return false;
  state.SkipWithError(("no model at " + model_file() + " (scripts/fetch-model, or set DMS_MODEL)").c_str());
  return true;
}

//! One loaded model per thread count (loading maps the file; it is cheap, but keep runs clean),
//! with a 1024-position cache for `n_seq` sequences (the first call's count sticks).
inline llama_model &model_for(int threads, std::int32_t n_seq = 1) {
  static std::unique_ptr<llama_model> models[9];
  auto &m = models[threads];
  if (!m) m = std::make_unique<llama_model>(llama_model::load(model_file(), {.n_ctx = 1024, .n_seq_max = n_seq, .n_threads = threads}));
  return *m;
}

//! Token ids valid for any vocabulary of the default model's size: a fixed pseudo-random sequence
//! (the forward pass costs the same whatever the ids are).
inline std::vector<token_id> tokens(std::size_t n, std::int64_t n_vocab, std::uint64_t x = 0x9E3779B97F4A7C15ull) {
  std::vector<token_id> ids(n);
  for (auto &id : ids) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    id = static_cast<token_id>(x % static_cast<std::uint64_t>(n_vocab));
  }
  return ids;
}

//! Clears sequence `seq` and runs `ids` as its prompt (logits for the last token only).
template <class Hooks> void run_prompt(llama_model &m, std::int32_t seq, const std::vector<token_id> &ids, Hooks &hooks) {
  std::vector<token_slot> slots(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) slots[i] = {seq, static_cast<std::int32_t>(i), i + 1 == ids.size()};
  m.clear(seq);
  m.forward(token_batch{ids, slots}, hooks);
}

//! Reads one hook point (the sum of the rows: stands in for a probe) and changes nothing.
struct read_one_hook {
  hook_point at;
  float sink = 0;
  bool wants(hook_point p) const noexcept { return p == at; }
  void operator()(activation_block &b) {
    for (std::int64_t c = 0; c < b.rows.cols; ++c) sink += b.rows(0, c);
  }
};

} // namespace dms::bench
