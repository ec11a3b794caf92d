// The xsimd compatibility layer (dms::simd) on the translation unit's own architecture.
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <vector>

#include "dms/backend/cpu/simd.hpp"
#include "dms/backend/cpu/vec.hpp"

namespace simd = dms::simd;

TEST_CASE("dms::simd width, load, store, broadcast, fma", "[cpu][simd]") {
  constexpr std::size_t w = simd::width<float>;
  STATIC_REQUIRE(w >= 1);
  STATIC_REQUIRE(simd::batch<float>::size == w);
  INFO("xsimd " << simd::xsimd_version_major << ", default arch " << simd::arch_name<simd::default_arch>());
  std::vector<float> buf(2 * w + 1);
  std::iota(buf.begin(), buf.end(), 1.0f);
  // Unaligned on purpose: +1 float.
  const auto x = simd::load(buf.data() + 1);
  const auto y = simd::broadcast(2.0f);
  const auto z = simd::broadcast(0.5f);
  std::vector<float> out(w + 1, -1.0f);
  simd::store(out.data() + 1, simd::fma(x, y, z));
  CHECK(out[0] == -1.0f);
  for (std::size_t i = 0; i < w; ++i)
    CHECK(out[i + 1] == buf[i + 1] * 2.0f + 0.5f);
}

TEST_CASE("dms::simd reductions", "[cpu][simd]") {
  constexpr std::size_t w = simd::width<float>;
  std::vector<float> buf(w);
  for (std::size_t i = 0; i < w; ++i)
    buf[i] = static_cast<float>((i * 5) % w) - 1.5f;
  const auto b = simd::load(buf.data());
  CHECK(simd::reduce_add(b) == std::accumulate(buf.begin(), buf.end(), 0.0f));
  CHECK(simd::reduce_max(b) == *std::max_element(buf.begin(), buf.end()));
  std::vector<double> d(simd::width<double>, 3.0);
  CHECK(simd::reduce_add(simd::load(d.data())) == 3.0 * static_cast<double>(d.size()));
}

TEST_CASE("dms::simd arch names", "[cpu][simd]") {
  CHECK_FALSE(simd::arch_name<simd::default_arch>().empty());
#if defined(__x86_64__) && DMS_SIMD_HAS_BATCH
  CHECK(simd::arch_name<simd::sse2>() == "sse2");
  CHECK(simd::arch_name<simd::avx512f>() == "avx512f");
  STATIC_REQUIRE(simd::x86_levels::contains<simd::fma3_avx2>());
  STATIC_REQUIRE(simd::compiled_archs::contains<simd::default_arch>());
#endif
}

TEST_CASE("baseline float_vec agrees with dms::simd", "[cpu][simd]") {
  using vec = simd::float_vec<dms::cpu::isa_level::baseline>;
  STATIC_REQUIRE(vec::width == simd::width<float>);
  std::vector<float> a(vec::width, 1.5f);
  CHECK(vec::reduce_add(vec::fmadd(vec::load(a.data()), vec::set1(2.0f), vec::zero())) ==
        3.0f * static_cast<float>(vec::width));
}
