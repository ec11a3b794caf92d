// Mat-vec and prefill throughput of dms::cpu::matmul (dms/backend/cpu/matmul.hpp) on the weight
// shapes of SmolLM2-135M (n_embd 576, 3 KV heads of 64, ffn 1536, vocab 49152), at the active
// isa_level (DMS_CPU_ISA=baseline|avx2 to force one), with 1 and 2 threads.
//
//   dms_bench_cpu_matmul [--benchmark_filter=...] [--benchmark_format=json --benchmark_out=mm.json]
//
// Rows:
//   memcpy/<rows>x<cols>/<TYPE>               memcpy of the same weight bytes (the bandwidth line)
//   matvec/<rows>x<cols>/<TYPE>/threads:<n>   one token (decode); GBps = weight bytes / time
//   prefill/<rows>x<cols>/<TYPE>/512/threads:<n>  512 tokens; GFLOPs = 2 rows cols 512 / time
// A decode step streams ~100 MB of weights, which no cache holds, so the mat-vec and memcpy rows
// rotate over enough copies of the matrix (>= 64 MiB in all) that each call reads from memory,
// as in the forward pass. Prefill reuses one copy: it is compute-bound.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dms/backend/cpu/matmul.hpp"
#include "dms/core/thread_pool.hpp"
#include "support/quant_blocks.hpp"
#include "support/random_floats.hpp"

namespace {

using dms::ggml_type;

struct shape {
  std::int64_t rows, cols;
  ggml_type type;
};
// attn_q / attn_output, attn_k / attn_v, ffn_gate / ffn_up, ffn_down, output (tied token_embd).
const shape shapes[] = {{576, 576, ggml_type::q4_1},
                        {192, 576, ggml_type::q4_1},
                        {1536, 576, ggml_type::q4_1},
                        {576, 1536, ggml_type::q4_1},
                        {49152, 576, ggml_type::q8_0}};

constexpr std::size_t cold_bytes = std::size_t{64} << 20;

std::string name_of(const shape &s) {
  return std::to_string(s.rows) + "x" + std::to_string(s.cols) + "/" + std::string(dms::traits_of(s.type).name);
}

std::size_t weight_bytes(const shape &s) {
  return static_cast<std::size_t>(s.rows) * *dms::storage_bytes(s.type, static_cast<std::uint64_t>(s.cols));
}

//! `copies` back-to-back copies of one random matrix with moderate scales.
std::vector<std::byte> make_weights(const shape &s, std::size_t copies) {
  const std::size_t n_blocks = static_cast<std::size_t>(s.rows * s.cols) / dms::traits_of(s.type).block_size;
  auto raw = dms::test::random_blocks(s.type, n_blocks, 42u);
  const auto tr = dms::traits_of(s.type);
  for (std::size_t b = 0; b < n_blocks; ++b)
    for (std::size_t off : dms::test::scale_offsets(s.type)) dms::test::put_f16(&raw[b * tr.type_size + off], 0.01f);
  std::vector<std::byte> out(raw.size() * copies);
  for (std::size_t c = 0; c < copies; ++c) std::memcpy(out.data() + c * raw.size(), raw.data(), raw.size());
  return out;
}

std::size_t cold_copies(const shape &s) { return std::max<std::size_t>(1, cold_bytes / weight_bytes(s) + 1); }

void bench_memcpy(benchmark::State &state, shape s) {
  const std::size_t bytes = weight_bytes(s), copies = cold_copies(s);
  const auto src = make_weights(s, copies);
  std::vector<std::byte> dst(bytes);
  std::size_t c = 0;
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data() + c * bytes, bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
    c = c + 1 == copies ? 0 : c + 1;
  }
  state.counters["GBps"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * double(bytes) / 1e9, benchmark::Counter::kIsRate);
}

void bench_matvec(benchmark::State &state, shape s, std::size_t threads) {
  const std::size_t bytes = weight_bytes(s), copies = cold_copies(s);
  const auto w = make_weights(s, copies);
  const auto x = dms::test::random_floats(static_cast<std::size_t>(s.cols), 1u);
  std::vector<float> y(static_cast<std::size_t>(s.rows));
  dms::thread_pool pool(threads);
  dms::cpu::matmul_workspace ws;
  std::size_t c = 0;
  for (auto _ : state) {
    const dms::cpu::weight_matrix wm{s.type, w.data() + c * bytes, s.rows, s.cols};
    dms::cpu::matmul(wm, x.data(), s.cols, 1, y.data(), s.rows, ws, &pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    c = c + 1 == copies ? 0 : c + 1;
  }
  state.counters["GBps"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * double(bytes) / 1e9, benchmark::Counter::kIsRate);
}

void bench_prefill(benchmark::State &state, shape s, std::int64_t n_tokens, std::size_t threads) {
  const auto w = make_weights(s, 1);
  const auto x = dms::test::random_floats(static_cast<std::size_t>(s.cols * n_tokens), 1u);
  std::vector<float> y(static_cast<std::size_t>(s.rows * n_tokens));
  dms::thread_pool pool(threads);
  dms::cpu::matmul_workspace ws;
  const dms::cpu::weight_matrix wm{s.type, w.data(), s.rows, s.cols};
  for (auto _ : state) {
    dms::cpu::matmul(wm, x.data(), s.cols, n_tokens, y.data(), s.rows, ws, &pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * double(s.rows) * double(s.cols) * double(n_tokens);
  state.counters["GFLOPs"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * flops / 1e9, benchmark::Counter::kIsRate);
}

const bool registered = [] {
  for (const shape &s : shapes) {
    benchmark::RegisterBenchmark(("memcpy/" + name_of(s)).c_str(), bench_memcpy, s)->UseRealTime();
    for (std::size_t threads : {1u, 2u})
      benchmark::RegisterBenchmark(("matvec/" + name_of(s) + "/threads:" + std::to_string(threads)).c_str(),
                                   bench_matvec, s, threads)
          ->UseRealTime();
  }
  for (const shape &s : shapes) {
    if (s.rows > 4096) continue; // the output matrix is applied to the last token only
    for (std::size_t threads : {1u, 2u})
      benchmark::RegisterBenchmark(("prefill/" + name_of(s) + "/512/threads:" + std::to_string(threads)).c_str(),
                                   bench_prefill, s, std::int64_t{512}, threads)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

} // namespace

BENCHMARK_MAIN();
