// Throughput of the bulk f16/bf16 <-> f32 conversions (dms/core/half.hpp) on each kernel family,
// next to memcpy (and a plain AVX2 copy loop) of the f32 buffer as the bandwidth ceiling.
//
// Every benchmark reports traffic: bytes read plus bytes written per second, so memcpy of B bytes
// counts 2B and converting n f16 to f32 counts 2n + 4n. The first argument is the size of the
// f32 buffer in bytes (4 KiB sits in L1, 64 MiB in DRAM); the second is the kernel (0 portable,
// 1 avx2, 2 avx512), skipped where the CPU lacks it.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "dms/core/half.hpp"

namespace {

using dms::detail::half_isa;

std::vector<float> random_floats(std::size_t n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 2.0f); // weights-like values, all in f16 range
  std::vector<float> v(n);
  for (float &x : v) x = d(rng);
  return v;
}

bool select_isa(benchmark::State &state, half_isa &isa) {
  isa = static_cast<half_isa>(state.range(1));
  if (dms::detail::half_isa_supported(isa)) return true;
  state.SkipWithError("kernel not supported on this CPU");
  return false;
}

void set_traffic(benchmark::State &state, std::size_t bytes_per_iteration) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(bytes_per_iteration));
}

void bm_memcpy(benchmark::State &state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  std::vector<char> src(bytes, 1), dst(bytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_traffic(state, 2 * bytes);
}

#if defined(DMS_X86_DISPATCH)
// A plain AVX2 load/store copy: a second bandwidth ceiling, because glibc's memcpy picks
// `rep movsb` for mid sizes, which some CPUs (AMD Zen 3 under glibc < 2.39) run far below the
// cache bandwidth; this loop is what the conversions are really competing with.
DMS_TARGET("avx2") void copy_avx2(const char *src, char *dst, std::size_t bytes) {
  for (std::size_t i = 0; i + 32 <= bytes; i += 32)
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i)));
}

void bm_copy_avx2(benchmark::State &state) {
  if (!dms::detail::half_isa_supported(half_isa::avx2)) {
    state.SkipWithError("AVX2 not supported on this CPU");
    return;
  }
  const auto bytes = static_cast<std::size_t>(state.range(0));
  std::vector<char> src(bytes, 1), dst(bytes);
  for (auto _ : state) {
    copy_avx2(src.data(), dst.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_traffic(state, 2 * bytes);
}
#endif

void bm_f16_to_f32(benchmark::State &state) {
  half_isa isa;
  if (!select_isa(state, isa)) return;
  const std::size_t n = static_cast<std::size_t>(state.range(0)) / sizeof(float);
  const std::vector<float> f = random_floats(n);
  std::vector<dms::f16_bits> src(n);
  dms::convert(f, src);
  std::vector<float> dst(n);
  for (auto _ : state) {
    dms::detail::convert(std::span<const dms::f16_bits>(src), std::span<float>(dst), isa);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_traffic(state, n * (2 + 4));
}

void bm_bf16_to_f32(benchmark::State &state) {
  half_isa isa;
  if (!select_isa(state, isa)) return;
  const std::size_t n = static_cast<std::size_t>(state.range(0)) / sizeof(float);
  const std::vector<float> f = random_floats(n);
  std::vector<dms::bf16_bits> src(n);
  dms::convert(f, src);
  std::vector<float> dst(n);
  for (auto _ : state) {
    dms::detail::convert(std::span<const dms::bf16_bits>(src), std::span<float>(dst), isa);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_traffic(state, n * (2 + 4));
}

void bm_f32_to_f16(benchmark::State &state) {
  half_isa isa;
  if (!select_isa(state, isa)) return;
  const std::size_t n = static_cast<std::size_t>(state.range(0)) / sizeof(float);
  const std::vector<float> src = random_floats(n);
  std::vector<dms::f16_bits> dst(n);
  for (auto _ : state) {
    dms::detail::convert(std::span<const float>(src), std::span<dms::f16_bits>(dst), isa);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_traffic(state, n * (4 + 2));
}

void bm_f32_to_bf16(benchmark::State &state) {
  half_isa isa;
  if (!select_isa(state, isa)) return;
  const std::size_t n = static_cast<std::size_t>(state.range(0)) / sizeof(float);
  const std::vector<float> src = random_floats(n);
  std::vector<dms::bf16_bits> dst(n);
  for (auto _ : state) {
    dms::detail::convert(std::span<const float>(src), std::span<dms::bf16_bits>(dst), isa);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_traffic(state, n * (4 + 2));
}

// f32 buffer sizes: 4 KiB, 32 KiB, 256 KiB, 2 MiB, 16 MiB, 64 MiB (L1 to DRAM).
constexpr std::int64_t min_bytes = std::int64_t{4} << 10;
constexpr std::int64_t max_bytes = std::int64_t{64} << 20;
const std::vector<std::int64_t> sizes = {min_bytes,         std::int64_t{32} << 10,
                                         std::int64_t{256} << 10, std::int64_t{2} << 20,
                                         std::int64_t{16} << 20,  max_bytes};
const std::vector<std::int64_t> isas = {0, 1, 2};

} // namespace

BENCHMARK(bm_memcpy)->ArgName("bytes")->ArgsProduct({sizes});
#if defined(DMS_X86_DISPATCH)
BENCHMARK(bm_copy_avx2)->ArgName("bytes")->ArgsProduct({sizes});
#endif
BENCHMARK(bm_f16_to_f32)->ArgNames({"f32_bytes", "isa"})->ArgsProduct({sizes, isas});
BENCHMARK(bm_bf16_to_f32)->ArgNames({"f32_bytes", "isa"})->ArgsProduct({sizes, isas});
BENCHMARK(bm_f32_to_f16)->ArgNames({"f32_bytes", "isa"})->ArgsProduct({sizes, isas});
BENCHMARK(bm_f32_to_bf16)->ArgNames({"f32_bytes", "isa"})->ArgsProduct({sizes, isas});

BENCHMARK_MAIN();
