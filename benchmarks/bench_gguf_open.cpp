// Time to open and index the default model: map the file, parse every metadata value (49152
// vocabulary strings, 48900 merges) and every tensor info. This is what `dms inspect` and every
// model load pay before touching weights. Side by side with gguf-py: benchmarks/peers/gguf_open.py.
//   DMS_MODEL=$(scripts/fetch-model) build/release/benchmarks/dms_bench_gguf_open
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "dms/formats/gguf.hpp"

static void open_and_index(benchmark::State &state) {
  const char *path = std::getenv("DMS_MODEL");
  if (!path) {
    state.SkipWithError("set DMS_MODEL to a GGUF file (e.g. DMS_MODEL=$(scripts/fetch-model))");
    return;
  }
  std::size_t tensors = 0, keys = 0;
  for (auto _ : state) {
    dms::gguf_file f{std::string(path)};
    tensors = f.tensors().size();
    keys = f.metadata().size();
    benchmark::DoNotOptimize(f.find_tensor("output_norm.weight"));
  }
  state.counters["tensors"] = static_cast<double>(tensors);
  state.counters["keys"] = static_cast<double>(keys);
}
BENCHMARK(open_and_index)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
