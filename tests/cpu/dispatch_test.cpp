// Run-time ISA selection: detection, forcing, and what the binary actually runs at.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <iostream>

#include "dms/backend/cpu/dispatch.hpp"
#include "dms/backend/cpu/simd.hpp"

using dms::cpu::isa_level;

TEST_CASE("the detected level is supported and reported", "[cpu][dispatch]") {
  const isa_level detected = dms::cpu::detected_isa_level();
  CHECK(dms::cpu::cpu_supports(detected));
  CHECK(dms::cpu::cpu_supports(isa_level::baseline));
  // Print once per run so logs say which levels were exercised (e.g. under qemu -cpu Haswell).
  std::cout << "dms cpu: detected " << dms::cpu::name_of(detected) << ", default "
            << dms::cpu::name_of(dms::cpu::default_isa_level()) << ", baseline xsimd arch "
            << dms::simd::arch_name<dms::simd::default_arch>() << ", xsimd " << dms::simd::xsimd_version_major
            << "\n";
  // Levels are ordered: supporting one implies supporting all weaker ones.
  bool seen_unsupported = false;
  for (isa_level l : dms::cpu::all_isa_levels) {
    if (!dms::cpu::cpu_supports(l))
      seen_unsupported = true;
    else
      CHECK_FALSE(seen_unsupported);
  }
  // DMS_CPU_ISA can only lower the level.
  CHECK(dms::cpu::default_isa_level() <= detected);
  // Set by the qemu runs in CMakeLists.txt: the level the emulated CPU model must yield.
  if (const char *expected = std::getenv("DMS_EXPECT_ISA")) CHECK(dms::cpu::name_of(detected) == expected);
  if (const char *expected = std::getenv("DMS_EXPECT_DEFAULT_ISA"))
    CHECK(dms::cpu::name_of(dms::cpu::default_isa_level()) == expected);
}

TEST_CASE("forcing a level works, and forcing an unsupported one throws", "[cpu][dispatch]") {
  dms::cpu::reset_isa_level();
  const isa_level before = dms::cpu::active_isa_level();
  {
    dms::cpu::scoped_isa_level force(isa_level::baseline);
    CHECK(dms::cpu::active_isa_level() == isa_level::baseline);
  }
  CHECK(dms::cpu::active_isa_level() == before);
  for (isa_level l : dms::cpu::all_isa_levels) {
    if (dms::cpu::cpu_supports(l)) {
      dms::cpu::force_isa_level(l);
      CHECK(dms::cpu::active_isa_level() == l);
    } else {
      try {
        dms::cpu::force_isa_level(l);
        FAIL("forcing " << dms::cpu::name_of(l) << " should throw");
      } catch (const dms::error &e) {
        CHECK(e.code() == dms::errc::unsupported);
        CHECK_THAT(e.what(), Catch::Contains(std::string(dms::cpu::name_of(l))));
      }
    }
  }
  dms::cpu::reset_isa_level();
  CHECK(dms::cpu::active_isa_level() == dms::cpu::default_isa_level());
}

TEST_CASE("ISA level names round-trip", "[cpu][dispatch]") {
  for (isa_level l : dms::cpu::all_isa_levels)
    CHECK(dms::cpu::parse_isa_level(dms::cpu::name_of(l)) == l);
  CHECK_FALSE(dms::cpu::parse_isa_level("avx512f").has_value());
  CHECK_FALSE(dms::cpu::parse_isa_level("").has_value());
}

#if defined(DMS_X86_DISPATCH) && defined(__x86_64__)
TEST_CASE("the build carries all three levels on x86-64 GCC/Clang", "[cpu][dispatch]") {
  // Independent of the kernels' own probe: what the compiler runtime says about this CPU.
  __builtin_cpu_init();
  CHECK(dms::cpu::cpu_supports(isa_level::avx2) ==
        (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")));
  CHECK(dms::cpu::cpu_supports(isa_level::avx512) ==
        (__builtin_cpu_supports("avx512f") != 0 && dms::cpu::cpu_supports(isa_level::avx2)));
}
#endif
