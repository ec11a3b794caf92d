// The reference CPU forward pass on the real model (SmolLM2-135M-Instruct Q4_1, or $DMS_MODEL):
//   BM_prefill/<threads>        one 512-token prompt, tokens/s
//   BM_decode/<threads>         one token per step after a 64-token prompt, tokens/s
//   BM_decode_hooked/<threads>  the same with one read-only hook at the middle layer's resid_post
// benchmarks/peers/forward_vs_llama_cpp.py runs these next to llama.cpp (llama-cpp-python) on the
// same file and thread counts and prints the ratios recorded in BENCHMARKS.md.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "dms/model/llama.hpp"

namespace {

std::string model_file() {
  if (const char *env = std::getenv("DMS_MODEL")) return env;
  const char *cache = std::getenv("DMS_CACHE");
  const char *home = std::getenv("HOME");
  const std::filesystem::path dir = cache ? cache : std::string(home ? home : "/root") + "/.cache/dms";
  return (dir / "SmolLM2-135M-Instruct.Q4_1.gguf").string();
}

//! One loaded model per thread count (loading maps the file; it is cheap, but keep runs clean).
dms::llama_model &model_for(int threads) {
  static std::unique_ptr<dms::llama_model> models[9];
  auto &m = models[threads];
  if (!m)
    m = std::make_unique<dms::llama_model>(
        dms::llama_model::load(model_file(), {.n_ctx = 1024, .n_seq_max = 1, .n_threads = threads}));
  return *m;
}

//! Token ids that are valid for any vocabulary of the default model's size: a fixed pseudo-random
//! sequence (the forward pass costs the same whatever the ids are).
std::vector<dms::token_id> tokens(std::size_t n, std::int64_t n_vocab) {
  std::vector<dms::token_id> ids(n);
  std::uint64_t x = 0x9E3779B97F4A7C15ull;
  for (auto &id : ids) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    id = static_cast<dms::token_id>(x % static_cast<std::uint64_t>(n_vocab));
  }
  return ids;
}

//! Reads one hook point (the sum of the rows: stands in for a probe) and changes nothing.
struct read_one_hook {
  dms::hook_point at;
  float sink = 0;
  bool wants(dms::hook_point p) const noexcept { return p == at; }
  void operator()(dms::activation_block &b) {
    for (std::int64_t c = 0; c < b.rows.cols; ++c) sink += b.rows(0, c);
  }
};

template <class Hooks> void run_prompt(dms::llama_model &m, const std::vector<dms::token_id> &ids, Hooks &hooks) {
  std::vector<dms::token_slot> slots(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) slots[i] = {0, static_cast<std::int32_t>(i), i + 1 == ids.size()};
  m.forward(dms::token_batch{ids, slots}, hooks);
}

bool model_missing(benchmark::State &state) {
  if (std::filesystem::exists(model_file())) return false;
  state.SkipWithError(("no model at " + model_file() + " (scripts/fetch-model, or set DMS_MODEL)").c_str());
  return true;
}

void BM_prefill(benchmark::State &state) {
  if (model_missing(state)) return;
  auto &m = model_for(static_cast<int>(state.range(0)));
  const auto ids = tokens(512, m.n_vocab());
  dms::no_hooks none;
  for (auto _ : state) {
    m.clear(0);
    run_prompt(m, ids, none);
  }
  state.counters["tokens/s"] = benchmark::Counter(512.0 * static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

template <class Hooks> void decode_loop(benchmark::State &state, Hooks &hooks) {
  auto &m = model_for(static_cast<int>(state.range(0)));
  const auto prompt = tokens(64, m.n_vocab());
  const auto next = tokens(512, m.n_vocab());
  m.clear(0);
  run_prompt(m, prompt, hooks);
  std::int32_t pos = 64;
  std::size_t i = 0;
  for (auto _ : state) {
    if (pos >= 64 + 448) { // stay at comparable context lengths: restart after 448 decoded tokens
      state.PauseTiming();
      m.clear(0);
      run_prompt(m, prompt, hooks);
      pos = 64;
      state.ResumeTiming();
    }
    const dms::token_id id = next[i++ % next.size()];
    const dms::token_slot slot{0, pos++, true};
    benchmark::DoNotOptimize(m.forward(dms::token_batch{{&id, 1}, {&slot, 1}}, hooks).data);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

void BM_decode(benchmark::State &state) {
  if (model_missing(state)) return;
  dms::no_hooks none;
  decode_loop(state, none);
}

void BM_decode_hooked(benchmark::State &state) {
  if (model_missing(state)) return;
  read_one_hook hook{{model_for(static_cast<int>(state.range(0))).n_layers() / 2, dms::site::resid_post}};
  decode_loop(state, hook);
  benchmark::DoNotOptimize(hook.sink);
}

} // namespace

BENCHMARK(BM_prefill)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode_hooked)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
