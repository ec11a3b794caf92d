// Consumer program shared by the CMake package tests (find_package, add_subdirectory,
// FetchContent, the vcpkg usage snippet).
//
// It only uses what a user's first program would: include dms, wrap a std::vector in a view and
// read the version. Every check prints what it saw and the program exits non-zero on the first
// mismatch, so a package that resolves to the wrong headers (a stale install, another copy of
// dms on the include path) fails the test instead of passing silently.
#if __has_include(<dms/dms.hpp>)
#include <dms/dms.hpp>
#else
#include <dms/concepts/tensor_view.hpp>
#endif

#include <cstdio>
#include <cstring>
#include <vector>

#if defined(DMS_HAS_CPU_BACKEND)
// The cpu component must carry xtensor's and xsimd's include paths and BLAS's link line to the
// consumer. Their light configuration headers prove the former (all of xtensor would triple the
// build time and test nothing more about packaging); calling BLAS proves the latter.
#include <xsimd/config/xsimd_config.hpp>
#include <xtensor/xtensor_config.hpp>
extern "C" float sdot_(const int *n, const float *x, const int *incx, const float *y,
                       const int *incy);
#elif defined(DMS_CONSUMER_EXPECT_CPU)
#error "the consumer linked dms::cpu but DMS_HAS_CPU_BACKEND is not defined"
#endif

#if defined(DMS_HAS_IO)
// Likewise the io component must carry nlohmann_json's include path and zlib's library.
#include <nlohmann/json_fwd.hpp>
#include <zlib.h>
#elif defined(DMS_CONSUMER_EXPECT_IO)
#error "the consumer linked dms::io but DMS_HAS_IO is not defined"
#endif

#if defined(DMS_HAS_CUDA_BACKEND)
// And dms::cuda the CUDA runtime (its version query needs no GPU).
#include <cuda_runtime_api.h>
#elif defined(DMS_CONSUMER_EXPECT_CUDA)
#error "the consumer linked dms::cuda but DMS_HAS_CUDA_BACKEND is not defined"
#endif

namespace {
int failures = 0;

void check(bool ok, const char *what) {
  std::printf("%s: %s\n", ok ? "ok" : "MISMATCH", what);
  if (!ok) ++failures;
}
} // namespace

int main() {
  std::vector<float> storage(6, 1.0f);
  const auto view = dms::make_view(storage.data(), {2, 3});
  std::printf("dms %s, view numel=%lld rank=%d\n", dms::version.string,
              static_cast<long long>(view.numel()), static_cast<int>(view.rank));
  check(view.numel() == 6, "numel of a 2x3 view is 6");
  check(view.rank == 2 && view.is_contiguous(), "view is rank 2 and contiguous");
  check(view.data_as<float>() == storage.data(), "view points at the vector's storage");
  check(std::strcmp(dms::version.string, DMS_VERSION_STRING) == 0,
        "dms::version.string matches DMS_VERSION_STRING");
#if defined(DMS_EXPECTED_VERSION)
  // The build system's idea of the version (project() or dmsConfigVersion.cmake) must agree with
  // the headers that were actually compiled.
  check(std::strcmp(dms::version.string, DMS_EXPECTED_VERSION) == 0,
        "dms::version.string matches the version CMake resolved (" DMS_EXPECTED_VERSION ")");
#endif
#if defined(DMS_HAS_CPU_BACKEND)
  std::printf("xtensor %d.%d.%d, xsimd %d.%d.%d\n", XTENSOR_VERSION_MAJOR, XTENSOR_VERSION_MINOR,
              XTENSOR_VERSION_PATCH, XSIMD_VERSION_MAJOR, XSIMD_VERSION_MINOR,
              XSIMD_VERSION_PATCH);
  const int n = 3, inc = 1;
  const float a[3] = {1.0f, 2.0f, 3.0f}, b[3] = {4.0f, 5.0f, 6.0f};
  check(sdot_(&n, a, &inc, b, &inc) == 32.0f, "BLAS sdot reachable through dms::cpu");
#endif
#if defined(DMS_HAS_IO)
  std::printf("nlohmann_json %d.%d.%d, zlib %s\n", NLOHMANN_JSON_VERSION_MAJOR,
              NLOHMANN_JSON_VERSION_MINOR, NLOHMANN_JSON_VERSION_PATCH, zlibVersion());
  const unsigned char bytes[] = {'d', 'm', 's'};
  check(crc32(0L, bytes, 3) == 2847969154UL, "zlib crc32 reachable through dms::io");
#endif
#if defined(DMS_HAS_CUDA_BACKEND)
  int runtime_version = 0;
  check(cudaRuntimeGetVersion(&runtime_version) == cudaSuccess && runtime_version > 0,
        "CUDA runtime reachable through dms::cuda");
#endif
  if (failures != 0) {
    std::printf("dms consumer: FAIL (%d mismatches)\n", failures);
    return 1;
  }
  std::printf("dms consumer: PASS\n");
  return 0;
}
