// dms/config.hpp: the one place for version, namespace and host/device macros.
//
// Vendoring dms next to another copy of it (say, a different version inside a dependency) is
// safe: everything lives in `dms::v0` (an inline namespace, so users still write `dms::`), and a
// vendor may rename the inline namespace by defining DMS_ABI_NAMESPACE before the first include.
#pragma once

#define DMS_VERSION_MAJOR 0
#define DMS_VERSION_MINOR 1
#define DMS_VERSION_PATCH 0
#define DMS_VERSION_STRING "0.1.0"

#ifndef DMS_ABI_NAMESPACE
#define DMS_ABI_NAMESPACE v0
#endif

#define DMS_NAMESPACE_BEGIN                                                                        \
  namespace dms {                                                                                  \
  inline namespace DMS_ABI_NAMESPACE {
#define DMS_NAMESPACE_END                                                                          \
  }                                                                                                \
  }

// Functions that the CUDA backend shares with the CPU (dtype conversion, the counter-based RNG)
// are marked DMS_HOST_DEVICE so one definition serves both and both produce the same bits.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define DMS_HOST_DEVICE __host__ __device__
#define DMS_DEVICE_COMPILE 1
#else
#define DMS_HOST_DEVICE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define DMS_ALWAYS_INLINE inline __attribute__((always_inline))
#define DMS_LIKELY(x) __builtin_expect(!!(x), 1)
#define DMS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define DMS_ALWAYS_INLINE inline
#define DMS_LIKELY(x) (x)
#define DMS_UNLIKELY(x) (x)
#endif

// x86 function multi-versioning: kernels compiled for AVX2/AVX-512 are selected at run time, so a
// binary built without -march flags still uses the wide units and never executes an illegal
// instruction on an older CPU.
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) &&      \
    !defined(DMS_DEVICE_COMPILE)
#define DMS_X86_DISPATCH 1
#define DMS_TARGET(features) __attribute__((target(features)))
#else
#define DMS_TARGET(features)
#endif

DMS_NAMESPACE_BEGIN
struct version_info {
  int major, minor, patch;
  const char *string;
};
inline constexpr version_info version{DMS_VERSION_MAJOR, DMS_VERSION_MINOR, DMS_VERSION_PATCH,
                                      DMS_VERSION_STRING};
DMS_NAMESPACE_END
