// Merge kernels on 64 MiB tensors (16 Mi floats, the size of a 4096 x 4096 projection): linear,
// task_arithmetic and ties, serial and on a thread pool. Throughput counts every byte the merge
// must touch (each input once, the base once, the output once), so linear and task_arithmetic
// should sit at memory bandwidth; ties adds the trimming selection and the sign election.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "dms/core/thread_pool.hpp"
#include "dms/merge/strategies.hpp"
#include "support/random_floats.hpp"

namespace {

constexpr std::size_t tensor_elements = std::size_t{16} << 20; // 64 MiB of f32
constexpr std::size_t n_models = 2;

struct merge_data {
  std::vector<float> base = dms::test::random_floats(tensor_elements, 1);
  std::vector<std::vector<float>> models;
  std::vector<std::span<const float>> views;
  std::vector<float> out = std::vector<float>(tensor_elements);
  std::vector<std::int64_t> shape{4096, 4096};
  dms::merge_parameters params;

  merge_data() {
    for (std::size_t m = 0; m < n_models; ++m) {
      models.push_back(dms::test::random_floats(tensor_elements, static_cast<std::uint32_t>(2 + m)));
      views.emplace_back(models.back());
    }
    params.set("weight", 0.5).set("density", 0.2);
  }
  dms::merge_inputs inputs() const {
    dms::merge_inputs in;
    in.name = "model.layers.0.self_attn.q_proj.weight";
    in.shape = shape;
    in.models = views;
    in.base = base;
    in.params = &params;
    return in;
  }
};

merge_data &data() {
  static merge_data d; // built once: 256 MiB
  return d;
}

void bench_method(benchmark::State &state, std::string_view method) {
  auto &d = data();
  const auto threads = static_cast<std::size_t>(state.range(0));
  dms::thread_pool pool(threads);
  auto s = dms::make_merge_strategy(method);
  s->set_thread_pool(threads > 1 ? &pool : nullptr);
  const auto in = d.inputs();
  for (auto _ : state) {
    s->merge(in, d.out);
    benchmark::DoNotOptimize(d.out.data());
    benchmark::ClobberMemory();
  }
  const std::size_t streams = n_models + 1 + (s->needs_base() ? 1 : 0); // inputs, output, base
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(streams * tensor_elements * sizeof(float)));
}

void bm_linear(benchmark::State &state) { bench_method(state, "linear"); }
void bm_task_arithmetic(benchmark::State &state) { bench_method(state, "task_arithmetic"); }
void bm_ties(benchmark::State &state) { bench_method(state, "ties"); }

} // namespace

BENCHMARK(bm_linear)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_task_arithmetic)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_ties)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
