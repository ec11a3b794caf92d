// The reference CPU forward pass on the real model (SmolLM2-135M-Instruct Q4_1, or $DMS_MODEL):
//   BM_prefill/<threads>        one 512-token prompt, tokens/s
//   BM_decode/<threads>         one token per step after a 64-token prompt, tokens/s
//   BM_decode_hooked/<threads>  the same with one read-only hook at the middle layer's resid_post
//   BM_decode_batch/<sequences>/<threads>  one token for each of several sequences per step (64-token
//                               prompts), tokens/s over all sequences: what batched generation gets
// benchmarks/peers/forward_vs_llama_cpp.py runs these next to llama.cpp (llama-cpp-python) on the
// same file and thread counts and prints the ratios recorded in BENCHMARKS.md.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "dms/model/llama.hpp"
#include "real_model.hpp"

namespace {

using dms::bench::model_for;
using dms::bench::model_missing;
using dms::bench::read_one_hook;
using dms::bench::tokens;

template <class Hooks> void run_prompt(dms::llama_model &m, const std::vector<dms::token_id> &ids, Hooks &hooks) {
  dms::bench::run_prompt(m, 0, ids, hooks);
}

void BM_prefill(benchmark::State &state) {
  if (model_missing(state)) return;
  auto &m = model_for(static_cast<int>(state.range(0)));
  const auto ids = tokens(512, m.n_vocab());
  dms::no_hooks none;
  for (auto _ : state) {
    run_prompt(m, ids, none);
  }
  state.counters["tokens/s"] = benchmark::Counter(512.0 * static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

template <class Hooks> void decode_loop(benchmark::State &state, Hooks &hooks) {
  auto &m = model_for(static_cast<int>(state.range(0)));
  const auto prompt = tokens(64, m.n_vocab());
  const auto next = tokens(512, m.n_vocab());
  run_prompt(m, prompt, hooks);
  std::int32_t pos = 64;
  std::size_t i = 0;
  for (auto _ : state) {
    if (pos >= 64 + 448) { // stay at comparable context lengths: restart after 448 decoded tokens
      state.PauseTiming();
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

void BM_decode_batch(benchmark::State &state) {
  if (model_missing(state)) return;
  const auto n_seq = static_cast<std::int32_t>(state.range(0));
  // Its own copy with a cache for 8 sequences (model_for's per-thread-count copies have 1).
  static std::unique_ptr<dms::llama_model> models[3];
  const auto threads = static_cast<std::int32_t>(state.range(1));
  auto &slot = models[std::min<std::int32_t>(threads, 2)];
  if (!slot)
    slot = std::make_unique<dms::llama_model>(dms::llama_model::load(
        dms::bench::model_file(), {.n_ctx = 1024, .n_seq_max = 8, .n_threads = threads}));
  auto &m = *slot;
  const auto prompt = tokens(64, m.n_vocab());
  const auto next = tokens(512, m.n_vocab());
  dms::no_hooks none;
  auto restart = [&] {
    for (std::int32_t s = 0; s < n_seq; ++s) dms::bench::run_prompt(m, s, prompt, none);
  };
  restart();
  std::int32_t pos = 64;
  std::size_t i = 0;
  std::vector<dms::token_id> ids(static_cast<std::size_t>(n_seq));
  std::vector<dms::token_slot> slots(static_cast<std::size_t>(n_seq));
  for (auto _ : state) {
    if (pos >= 64 + 448) {
      state.PauseTiming();
      restart();
      pos = 64;
      state.ResumeTiming();
    }
    for (std::int32_t s = 0; s < n_seq; ++s) {
      ids[static_cast<std::size_t>(s)] = next[i++ % next.size()];
      slots[static_cast<std::size_t>(s)] = {s, pos, true};
    }
    ++pos;
    benchmark::DoNotOptimize(m.forward(dms::token_batch{ids, slots}, none).data);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * n_seq,
                                                  benchmark::Counter::kIsRate);
}

} // namespace

BENCHMARK(BM_prefill)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode_hooked)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode_batch)->ArgsProduct({{1, 2, 4, 8}, {2}})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
