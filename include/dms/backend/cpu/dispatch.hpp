// dms/backend/cpu/dispatch.hpp: which instruction-set level the CPU kernels run at.
//
// dms is header-only and its exported targets carry no -m flags, so one binary must run on any
// x86-64 CPU and still use AVX2 or AVX-512 where present. Each kernel is compiled three times
// (baseline = the flags of the including translation unit, AVX2+FMA, AVX-512F) and the level is
// picked once per process from the CPU's features; the AVX levels exist only where the compiler
// supports `__attribute__((target))` on x86-64 (GCC, Clang; DMS_X86_DISPATCH). Detection uses
// `__builtin_cpu_supports`, which (unlike xsimd 8's cpuid probe) also checks that the operating
// system saves the AVX/AVX-512 registers (XCR0), so a level it reports is safe to execute.
//
// Overrides, in order of precedence:
//   - `force_isa_level(l)` / `scoped_isa_level` (tests and benchmarks; process-wide, not meant to
//     be changed while kernels run on other threads);
//   - the environment variable DMS_CPU_ISA=baseline|avx2|avx512, read once, which caps the
//     detected level (a request above what the CPU has is ignored: it can only lower the level).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "dms/backend/cpu/simd.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

// Region macros: every function defined between DMS_CPU_TARGET_PUSH_AVX2 (or _AVX512) and
// DMS_CPU_TARGET_POP, templates included, is compiled for that level. A region rather than a
// per-function attribute because kernel bodies are written once (detail/kernel_bodies.inl) and
// instantiated in one region per level; lambdas inside a region need the attribute spelled out on
// Clang, so kernel bodies avoid them.
#if defined(DMS_X86_DISPATCH)
#define DMS_CPU_AVX2_FEATURES "avx2,fma"
#define DMS_CPU_AVX512_FEATURES "avx512f,avx2,fma"
#if defined(__clang__)
#define DMS_CPU_TARGET_PUSH_AVX2                                                                             \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define DMS_CPU_TARGET_PUSH_AVX512                                                                           \
  _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx2,fma\"))), apply_to = function)")
#define DMS_CPU_TARGET_POP _Pragma("clang attribute pop")
#else
#define DMS_CPU_TARGET_PUSH_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define DMS_CPU_TARGET_PUSH_AVX512 _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx2,fma\")")
#define DMS_CPU_TARGET_POP _Pragma("GCC pop_options")
#endif
#define DMS_CPU_DISPATCH_TAG_SUFFIX dispatch
#else
#define DMS_CPU_DISPATCH_TAG_SUFFIX nodispatch
#endif

// The inline namespace that holds everything whose code depends on this translation unit's
// flags (see DMS_SIMD_BASELINE_TAG in simd.hpp): e.g. `cpu_isa_sse2_dispatch`.
#define DMS_CPU_CONCAT_IMPL(a, b, c) a##b##_##c
#define DMS_CPU_CONCAT(a, b, c) DMS_CPU_CONCAT_IMPL(a, b, c)
#define DMS_CPU_ABI_TAG DMS_CPU_CONCAT(cpu_, DMS_SIMD_BASELINE_TAG, DMS_CPU_DISPATCH_TAG_SUFFIX)

DMS_NAMESPACE_BEGIN
namespace cpu {

//! Instruction-set levels the CPU kernels are compiled for, weakest first.
enum class isa_level : std::uint8_t {
  baseline, //!< the including translation unit's own flags (SSE2 on a plain x86-64 build)
  avx2,     //!< AVX2 + FMA3 (Haswell, Zen 1 and later)
  avx512,   //!< AVX-512F (Skylake-SP, Ice Lake, Zen 4 and later)
};

inline constexpr isa_level all_isa_levels[] = {isa_level::baseline, isa_level::avx2, isa_level::avx512};

constexpr std::string_view name_of(isa_level l) noexcept {
  switch (l) {
  case isa_level::baseline: return "baseline";
  case isa_level::avx2: return "avx2";
  case isa_level::avx512: return "avx512";
  }
  return "?";
}

//! Inverse of name_of; nullopt for anything else.
constexpr std::optional<isa_level> parse_isa_level(std::string_view s) noexcept {
  for (isa_level l : all_isa_levels)
    if (name_of(l) == s) return l;
  return std::nullopt;
}

namespace detail {
//! -1: no override; otherwise the forced isa_level. One per program (shared by every
//! translation unit whatever its flags), hence outside the ABI-tagged namespace.
inline std::atomic<int> forced_isa_level{-1};
} // namespace detail

inline namespace DMS_CPU_ABI_TAG {

//! Whether this CPU (and OS) can run kernels of level `l` *and* this build contains them.
inline bool cpu_supports(isa_level l) noexcept {
  switch (l) {
  case isa_level::baseline: return true;
#if defined(DMS_X86_DISPATCH)
  case isa_level::avx2:
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  case isa_level::avx512:
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
#else
  case isa_level::avx2:
  case isa_level::avx512: return false;
#endif
  }
  return false;
}

//! Best level this CPU supports, ignoring every override.
inline isa_level detected_isa_level() noexcept {
  static const isa_level best = [] {
    isa_level b = isa_level::baseline;
    for (isa_level l : all_isa_levels)
      if (cpu_supports(l)) b = l;
    return b;
  }();
  return best;
}

//! The level kernels use when nothing is forced: the detected one, capped by DMS_CPU_ISA.
inline isa_level default_isa_level() noexcept {
  static const isa_level level = [] {
    isa_level l = detected_isa_level();
    if (const char *env = std::getenv("DMS_CPU_ISA")) {
      if (auto requested = parse_isa_level(env); requested && *requested < l) l = *requested;
    }
    return l;
  }();
  return level;
}

//! The level the next kernel call will run at.
inline isa_level active_isa_level() noexcept {
  const int forced = detail::forced_isa_level.load(std::memory_order_relaxed);
  return forced < 0 ? default_isa_level() : static_cast<isa_level>(forced);
}

//! Runs every following kernel call at level `l`; throws errc::unsupported if this CPU or build
//! cannot (so a test asking for AVX-512 on an AVX2 machine learns it instead of crashing).
inline void force_isa_level(isa_level l) {
  require(cpu_supports(l), errc::unsupported, [&] {
    return "CPU kernels cannot run at level " + std::string(name_of(l)) +
           " here (detected: " + std::string(name_of(detected_isa_level())) + ")";
  });
  detail::forced_isa_level.store(static_cast<int>(l), std::memory_order_relaxed);
}

//! Back to default_isa_level().
inline void reset_isa_level() noexcept { detail::forced_isa_level.store(-1, std::memory_order_relaxed); }

//! Forces a level for the lifetime of the object and restores the previous setting after.
class scoped_isa_level {
public:
  explicit scoped_isa_level(isa_level l)
      : previous_(detail::forced_isa_level.load(std::memory_order_relaxed)) {
    force_isa_level(l);
  }
  ~scoped_isa_level() { detail::forced_isa_level.store(previous_, std::memory_order_relaxed); }
  scoped_isa_level(const scoped_isa_level &) = delete;
  scoped_isa_level &operator=(const scoped_isa_level &) = delete;

private:
  int previous_;
};

} // namespace DMS_CPU_ABI_TAG
} // namespace cpu
DMS_NAMESPACE_END
