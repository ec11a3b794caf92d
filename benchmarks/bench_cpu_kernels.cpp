// The CPU vector kernels at every dispatch level, against the scalar reference.
//
// Sizes: 576 is SmolLM2-135M's n_embd (one token's activation), 4096 a 7B model's; the row
// kernels use 64 tokens, a prompt chunk. Levels the CPU lacks are skipped with a message.
// Run from a Release build: ./dms_bench_cpu_kernels --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dms/backend/cpu/kernels.hpp"

namespace {

using dms::cpu::isa_level;

std::vector<float> random_floats(std::size_t n) {
  std::mt19937 gen(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto &x : v)
    x = dist(gen);
  return v;
}

// Argument 0: -1 for the scalar reference, else an isa_level. Returns false (and marks the run
// skipped) when the CPU cannot run that level.
bool enter_level(benchmark::State &state) {
  if (state.range(0) < 0) {
    state.SetLabel("reference");
    return true;
  }
  const auto level = static_cast<isa_level>(state.range(0));
  if (!dms::cpu::cpu_supports(level)) {
    state.SkipWithError(("level " + std::string(dms::cpu::name_of(level)) + " not supported").c_str());
    return false;
  }
  dms::cpu::force_isa_level(level);
  state.SetLabel(std::string(dms::cpu::name_of(level)));
  return true;
}

void bm_dot(benchmark::State &state) {
  if (!enter_level(state)) return;
  const auto n = static_cast<std::size_t>(state.range(1));
  const auto a = random_floats(n), b = random_floats(n);
  const bool ref = state.range(0) < 0;
  for (auto _ : state) {
    float s = ref ? dms::cpu::reference::dot(a.data(), b.data(), n) : dms::cpu::dot(a.data(), b.data(), n);
    benchmark::DoNotOptimize(s);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * n * sizeof(float)));
  dms::cpu::reset_isa_level();
}

void bm_axpy(benchmark::State &state) {
  if (!enter_level(state)) return;
  const auto n = static_cast<std::size_t>(state.range(1));
  const auto x = random_floats(n);
  auto y = random_floats(n);
  const bool ref = state.range(0) < 0;
  for (auto _ : state) {
    if (ref)
      dms::cpu::reference::axpy(1e-3f, x.data(), y.data(), n);
    else
      dms::cpu::axpy(1e-3f, x.data(), y.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 3 * n * sizeof(float)));
  dms::cpu::reset_isa_level();
}

void bm_add_scaled_rows(benchmark::State &state) {
  if (!enter_level(state)) return;
  const auto cols = state.range(1);
  constexpr std::int64_t rows = 64;
  auto acts = random_floats(static_cast<std::size_t>(rows * cols));
  const auto v = random_floats(static_cast<std::size_t>(cols));
  const auto scales = random_floats(rows);
  dms::matrix_view<float> m{acts.data(), rows, cols, cols};
  const bool ref = state.range(0) < 0;
  for (auto _ : state) {
    if (ref)
      dms::cpu::reference::add_scaled_rows(m, scales, v);
    else
      dms::cpu::add_scaled_rows(m, scales, v);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 2 * rows * cols * std::int64_t(sizeof(float)));
  dms::cpu::reset_isa_level();
}

void bm_dot_rows(benchmark::State &state) {
  if (!enter_level(state)) return;
  const auto cols = state.range(1);
  constexpr std::int64_t rows = 64;
  const auto acts = random_floats(static_cast<std::size_t>(rows * cols));
  const auto w = random_floats(static_cast<std::size_t>(cols));
  std::vector<float> out(rows);
  dms::matrix_view<const float> m{acts.data(), rows, cols, cols};
  const bool ref = state.range(0) < 0;
  for (auto _ : state) {
    if (ref)
      dms::cpu::reference::dot_rows(m, w, out);
    else
      dms::cpu::dot_rows(m, w, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * std::int64_t(sizeof(float)));
  dms::cpu::reset_isa_level();
}

void levels_and_sizes(benchmark::internal::Benchmark *b) {
  b->ArgNames({"level", "n"});
  for (std::int64_t level : {-1, 0, 1, 2})
    for (std::int64_t n : {576, 4096})
      b->Args({level, n});
}

} // namespace

BENCHMARK(bm_dot)->Apply(levels_and_sizes);
BENCHMARK(bm_axpy)->Apply(levels_and_sizes);
BENCHMARK(bm_add_scaled_rows)->Apply(levels_and_sizes);
BENCHMARK(bm_dot_rows)->Apply(levels_and_sizes);

BENCHMARK_MAIN();
