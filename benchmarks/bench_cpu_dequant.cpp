// Dequantization throughput (dms/backend/cpu/dequant.hpp), single thread, against a memcpy of the
// same output bytes measured in the same run.
//
//   dms_bench_cpu_dequant [--benchmark_filter=...] [--benchmark_format=json --benchmark_out=dms.json]
//
// Rows:
//   memcpy/<n>                       memcpy of n floats (4 n bytes) between two buffers
//   dequant/<TYPE>/<path>/<n>        n elements of TYPE to f32; path = reference (the scalar code of
//                                    dms/formats/quant.hpp) or cpu/<level> (forced isa_level)
// bytes_per_second is *input* bytes (a Q4_1 element is 5/8 of a byte); the counters out_GBps and
// in_GBps give output and input rates in 10^9 bytes/s. The dms/memcpy ratio of BENCHMARKS.md is
// out_GBps of a dequant row over that of memcpy at the same n (both write 4 n bytes).
// Sizes: 2^20 elements (4 MiB out: in the last-level cache of most servers) and 2^24 (64 MiB out:
// main memory). benchmarks/peers/dequant_gguf.py times gguf's numpy code on the same sizes and
// prints the side-by-side table from this program's JSON output.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dms/backend/cpu/dequant.hpp"
#include "dms/backend/cpu/dispatch.hpp"
#include "dms/formats/quant.hpp"
#include "support/quant_blocks.hpp"

namespace {

using dms::ggml_type;

const ggml_type bench_types[] = {ggml_type::f16,  ggml_type::bf16, ggml_type::q8_0, ggml_type::q4_0,
                                 ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1, ggml_type::q2_k,
                                 ggml_type::q3_k, ggml_type::q4_k, ggml_type::q5_k, ggml_type::q6_k};
const std::size_t bench_sizes[] = {std::size_t{1} << 20, std::size_t{1} << 24};

// Random bytes with every f16 scale field (dms::test::scale_offsets) set to a normal value, so
// that no path meets subnormal arithmetic.
std::vector<std::byte> random_tensor(ggml_type t, std::size_t n) {
  const auto tr = dms::traits_of(t);
  std::vector<std::byte> raw(n / tr.block_size * tr.type_size);
  std::mt19937 gen(1234);
  for (auto &b : raw) b = std::byte(gen() & 0xFF);
  const std::uint16_t scale = dms::to_f16(0.01f).bits;
  if (t == ggml_type::f16 || t == ggml_type::bf16) {
    // Finite values only (the conversions are branch-free anyway).
    for (std::size_t i = 0; i < raw.size(); i += 2) raw[i + 1] &= std::byte{0x3F};
  }
  for (std::size_t b = 0; b < raw.size(); b += tr.type_size)
    for (std::size_t off : dms::test::scale_offsets(t)) std::memcpy(&raw[b + off], &scale, 2);
  return raw;
}

void set_rates(benchmark::State &state, std::size_t in_bytes, std::size_t out_bytes) {
  const auto iters = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(in_bytes));
  state.counters["in_GBps"] = benchmark::Counter(iters * double(in_bytes) / 1e9, benchmark::Counter::kIsRate);
  state.counters["out_GBps"] = benchmark::Counter(iters * double(out_bytes) / 1e9, benchmark::Counter::kIsRate);
}

void bench_memcpy(benchmark::State &state, std::size_t n) {
  std::vector<float> src(n, 1.0f), dst(n, 0.0f);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_rates(state, n * sizeof(float), n * sizeof(float));
}

// level < 0: the scalar reference.
void bench_dequant(benchmark::State &state, ggml_type t, int level, std::size_t n) {
  const auto raw = random_tensor(t, n);
  std::vector<float> dst(n, 0.0f);
  if (level >= 0) dms::cpu::force_isa_level(static_cast<dms::cpu::isa_level>(level));
  for (auto _ : state) {
    if (level >= 0) dms::cpu::dequantize(t, raw, dst);
    else dms::dequantize(t, raw, dst);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  dms::cpu::reset_isa_level();
  set_rates(state, raw.size(), n * sizeof(float));
}

} // namespace

int main(int argc, char **argv) {
  for (std::size_t n : bench_sizes) {
    benchmark::RegisterBenchmark(("memcpy/" + std::to_string(n)).c_str(), bench_memcpy, n)
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(0.3);
    for (ggml_type t : bench_types) {
      const std::string name(dms::traits_of(t).name);
      benchmark::RegisterBenchmark(("dequant/" + name + "/reference/" + std::to_string(n)).c_str(),
                                   bench_dequant, t, -1, n)
          ->Unit(benchmark::kMicrosecond)
          ->MinTime(0.3);
      for (auto level : dms::cpu::all_isa_levels) {
        if (!dms::cpu::cpu_supports(level) || level == dms::cpu::isa_level::baseline) continue;
        benchmark::RegisterBenchmark(("dequant/" + name + "/cpu/" + std::string(dms::cpu::name_of(level)) + "/" +
                                      std::to_string(n))
                                         .c_str(),
                                     bench_dequant, t, static_cast<int>(level), n)
            ->Unit(benchmark::kMicrosecond)
            ->MinTime(0.3);
      }
    }
  }
  benchmark::AddCustomContext("dms_detected_isa", std::string(dms::cpu::name_of(dms::cpu::detected_isa_level())));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
