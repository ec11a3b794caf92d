// dms/backend/cpu/simd.hpp: the one place where dms spells xsimd names.
//
// Debian 12 ships xsimd 8.1; vcpkg and Conan ship xsimd 13. The two agree on the core
// (`batch<T, Arch>`, `batch::size`, `load_unaligned`, `store_unaligned`, `fma`, `default_arch`,
// `supported_architectures`, `arch_list`, `dispatch`) but not on everything dms needs: the
// horizontal sum is `hadd` in 8 and `reduce_add` from 9 on (13 no longer has `hadd`), and 8 has
// no horizontal max at all (`reduce_max` arrived in 9). Every such difference is resolved here
// behind `XSIMD_VERSION_MAJOR`, so the rest of dms uses only `dms::simd::` names and builds
// against either version. Compiled and tested against xsimd 8.1 (Debian), 13.0 and 14.1.
//
// What this layer does *not* do is run-time dispatch. xsimd defines a `batch<float, avx2>` only
// when the translation unit is compiled with `-mavx2` (both in 8 and 13), and dms is header-only
// and must not put `-m` flags into exported targets. The batch types here are therefore those of
// the architecture the including translation unit is compiled for (`default_arch`: SSE2 on a
// plain x86-64 build, the build machine's best under `dms::native`, NEON on AArch64). The AVX2
// and AVX-512 code paths that dms selects at run time are in dms/backend/cpu/vec.hpp, written
// with intrinsics in functions carrying a `target` attribute.
//
// @code
//   namespace simd = dms::simd;
//   float sum(const float *p, std::size_t n) {           // n a multiple of the width
//     simd::batch<float> acc(0.0f);
//     for (std::size_t i = 0; i < n; i += simd::width<float>) acc += simd::load(p + i);
//     return simd::reduce_add(acc);
//   }
// @endcode
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <string_view>

#include <xsimd/xsimd.hpp>

#include "dms/config.hpp"

#if !defined(XSIMD_VERSION_MAJOR)
#error "dms/backend/cpu/simd.hpp: XSIMD_VERSION_MAJOR is not defined; is this xsimd >= 8?"
#elif XSIMD_VERSION_MAJOR < 8
#error "dms needs xsimd 8 or newer (the batch<T, Arch> API)"
#endif

//! 1 when xsimd has a SIMD architecture for this translation unit's flags; 0 means the batch
//! types below are one-lane scalar stand-ins (e.g. an x86 target without SSE2, or RISC-V).
#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
#define DMS_SIMD_HAS_BATCH 0
#else
#define DMS_SIMD_HAS_BATCH 1
#endif

DMS_NAMESPACE_BEGIN
namespace simd {

//! The xsimd major version dms was compiled against (8 on Debian 12, 13 from vcpkg/Conan).
inline constexpr int xsimd_version_major = XSIMD_VERSION_MAJOR;

#if DMS_SIMD_HAS_BATCH

// --- architectures --------------------------------------------------------------------------------

//! Best architecture the including translation unit is compiled for.
using default_arch = xsimd::default_arch;
//! All architectures this translation unit's flags allow, best first (an xsimd::arch_list).
using compiled_archs = xsimd::supported_architectures;
template <class... Archs> using arch_list = xsimd::arch_list<Archs...>;

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
//! Tags of the x86 levels dms dispatches between (dms::cpu::isa_level). They exist in every
//! build; a batch of one of them can only be instantiated where the compiler flags enable it.
using sse2 = xsimd::sse2;
using avx2 = xsimd::avx2;
using fma3_avx2 = xsimd::fma3<xsimd::avx2>;
using avx512f = xsimd::avx512f;
//! The three x86 levels as an xsimd arch list, for users who compile one translation unit per
//! level with its own -m flags and pick with `xsimd::dispatch` (xsimd's own dispatch scheme).
using x86_levels = arch_list<avx512f, fma3_avx2, sse2>;
#endif

//! Printable name of an architecture tag ("sse2", "fma3+avx2", "avx512f", ...).
template <class Arch> constexpr std::string_view arch_name() noexcept { return Arch::name(); }

//! Required alignment of an aligned load for `Arch` (dms itself only uses unaligned loads).
template <class Arch = default_arch> inline constexpr std::size_t alignment = Arch::alignment();

// --- batches --------------------------------------------------------------------------------------

template <class T, class Arch = default_arch> using batch = xsimd::batch<T, Arch>;

//! Lanes of `batch<T, Arch>` (4 floats for SSE2, 8 for AVX2, 16 for AVX-512).
template <class T, class Arch = default_arch> inline constexpr std::size_t width = batch<T, Arch>::size;

//! Unaligned load of `width<T, Arch>` elements.
template <class Arch = default_arch, class T> DMS_ALWAYS_INLINE batch<T, Arch> load(const T *p) noexcept {
  return batch<T, Arch>::load_unaligned(p);
}
//! Unaligned store of a whole batch.
template <class T, class Arch> DMS_ALWAYS_INLINE void store(T *p, const batch<T, Arch> &b) noexcept {
  b.store_unaligned(p);
}
//! All lanes equal to `v`, through the batch constructor (arch first, like load, so that
//! `broadcast<Arch>(v)` deduces T).
template <class Arch = default_arch, class T> DMS_ALWAYS_INLINE batch<T, Arch> broadcast(T v) noexcept {
  return batch<T, Arch>(v);
}
//! x * y + z, fused where the architecture has FMA (emulated as mul + add on SSE2).
template <class T, class Arch>
DMS_ALWAYS_INLINE batch<T, Arch> fma(const batch<T, Arch> &x, const batch<T, Arch> &y,
                                     const batch<T, Arch> &z) noexcept {
  return xsimd::fma(x, y, z);
}

// GCC 12's AVX-512 intrinsics pass an `_mm*_undefined_*()` operand that -Wuninitialized flags
// once inlined; xsimd's AVX-512 reductions use those intrinsics, so a -march=skylake-avx512 build
// (dms::native on an AVX-512 machine) warned here. The warning is about GCC's own header.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

//! Sum of the lanes.
template <class T, class Arch> DMS_ALWAYS_INLINE T reduce_add(const batch<T, Arch> &b) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(b);
#else
  return xsimd::hadd(b);
#endif
}

//! Largest lane (NaN handling as the architecture's max instruction).
template <class T, class Arch> DMS_ALWAYS_INLINE T reduce_max(const batch<T, Arch> &b) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_max(b);
#else
  // xsimd 8 has no horizontal max: spill the lanes and scan them.
  alignas(Arch::alignment()) std::array<T, batch<T, Arch>::size> lanes;
  b.store_aligned(lanes.data());
  T m = lanes[0];
  for (std::size_t i = 1; i < lanes.size(); ++i)
    m = lanes[i] > m ? lanes[i] : m;
  return m;
#endif
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#else // !DMS_SIMD_HAS_BATCH: a one-lane stand-in with the same spelling, so callers compile.

struct scalar_arch {
  static constexpr const char *name() noexcept { return "scalar"; }
  static constexpr std::size_t alignment() noexcept { return alignof(double); }
};
using default_arch = scalar_arch;
template <class Arch> constexpr std::string_view arch_name() noexcept { return Arch::name(); }
template <class Arch = default_arch> inline constexpr std::size_t alignment = Arch::alignment();

template <class T, class Arch = default_arch> struct batch {
  static constexpr std::size_t size = 1;
  T value{};
  batch() = default;
  batch(T v) noexcept : value(v) {}
  friend batch operator+(batch a, batch b) noexcept { return a.value + b.value; }
  friend batch operator*(batch a, batch b) noexcept { return a.value * b.value; }
  batch &operator+=(batch b) noexcept {
    value += b.value;
    return *this;
  }
};
template <class T, class Arch = default_arch> inline constexpr std::size_t width = 1;
template <class Arch = default_arch, class T> batch<T, Arch> load(const T *p) noexcept { return *p; }
template <class T, class Arch> void store(T *p, const batch<T, Arch> &b) noexcept { *p = b.value; }
template <class Arch = default_arch, class T> batch<T, Arch> broadcast(T v) noexcept { return v; }
template <class T, class Arch>
batch<T, Arch> fma(const batch<T, Arch> &x, const batch<T, Arch> &y, const batch<T, Arch> &z) noexcept {
  return x.value * y.value + z.value;
}
template <class T, class Arch> T reduce_add(const batch<T, Arch> &b) noexcept { return b.value; }
template <class T, class Arch> T reduce_max(const batch<T, Arch> &b) noexcept { return b.value; }

#endif // DMS_SIMD_HAS_BATCH

} // namespace simd
DMS_NAMESPACE_END

// A token naming the instruction set the including translation unit is compiled for. Code whose
// machine instructions depend on -m flags (the baseline kernels) lives in an inline namespace
// carrying it, so a program that mixes a `dms::native` (-march=native) translation unit with
// plain ones links two distinct copies instead of letting the linker keep whichever it sees first
// (an ODR violation that would run AVX-512 code on an AVX2 machine).
#if defined(__AVX512BW__)
#define DMS_SIMD_BASELINE_TAG isa_avx512bw
#elif defined(__AVX512F__)
#define DMS_SIMD_BASELINE_TAG isa_avx512f
#elif defined(__AVX2__) && defined(__FMA__)
#define DMS_SIMD_BASELINE_TAG isa_fma_avx2
#elif defined(__AVX2__)
#define DMS_SIMD_BASELINE_TAG isa_avx2
#elif defined(__AVX__)
#define DMS_SIMD_BASELINE_TAG isa_avx
#elif defined(__SSE4_2__)
#define DMS_SIMD_BASELINE_TAG isa_sse4_2
#elif defined(__SSE4_1__)
#define DMS_SIMD_BASELINE_TAG isa_sse4_1
#elif defined(__SSSE3__)
#define DMS_SIMD_BASELINE_TAG isa_ssse3
#elif defined(__SSE3__)
#define DMS_SIMD_BASELINE_TAG isa_sse3
#elif defined(__SSE2__) || defined(__x86_64__) || defined(_M_X64)
#define DMS_SIMD_BASELINE_TAG isa_sse2
#elif defined(__aarch64__) || defined(_M_ARM64)
#define DMS_SIMD_BASELINE_TAG isa_neon64
#elif defined(__ARM_NEON)
#define DMS_SIMD_BASELINE_TAG isa_neon
#else
#define DMS_SIMD_BASELINE_TAG isa_generic
#endif
