// Conan test_package program: build a view with dms and check what the package reports.
// Prints "dms test_package: PASS" and exits 0, or names the mismatch and exits 1.
#if __has_include(<dms/dms.hpp>)
#include <dms/dms.hpp>
#else
#include <dms/concepts/tensor_view.hpp>
#endif

#include <cstdio>
#include <cstring>
#include <vector>

#if defined(DMS_HAS_CPU_BACKEND)
// dms::cpu must bring xtensor's headers and BLAS's link line to its consumers; the light
// configuration header shows the former, a BLAS call the latter.
#include <xtensor/xtensor_config.hpp>
extern "C" float sdot_(const int *n, const float *x, const int *incx, const float *y,
                       const int *incy);
#elif defined(DMS_TEST_EXPECT_CPU)
#error "dms::cpu was linked but DMS_HAS_CPU_BACKEND is not defined"
#endif

#if defined(DMS_HAS_IO)
// dms::io must bring nlohmann_json's headers and zlib's library.
#include <nlohmann/json_fwd.hpp>
#include <zlib.h>
#elif defined(DMS_TEST_EXPECT_IO)
#error "dms::io was linked but DMS_HAS_IO is not defined"
#endif

int main() {
  std::vector<float> storage(6, 1.0f);
  const auto view = dms::make_view(storage.data(), {2, 3});
  std::printf("dms %s, view numel=%lld\n", dms::version.string,
              static_cast<long long>(view.numel()));
  bool ok = view.numel() == 6 && std::strcmp(dms::version.string, DMS_TEST_EXPECTED_VERSION) == 0;
#if defined(DMS_HAS_CPU_BACKEND)
  const int n = 3, inc = 1;
  const float a[3] = {1.0f, 2.0f, 3.0f}, b[3] = {4.0f, 5.0f, 6.0f};
  const float dot = sdot_(&n, a, &inc, b, &inc);
  std::printf("cpu backend: xtensor %d.%d, BLAS sdot=%g\n", XTENSOR_VERSION_MAJOR,
              XTENSOR_VERSION_MINOR, static_cast<double>(dot));
  ok = ok && dot == 32.0f;
#endif
#if defined(DMS_HAS_IO)
  const unsigned char bytes[] = {'d', 'm', 's'};
  const unsigned long crc = crc32(0L, bytes, 3);
  std::printf("io: nlohmann_json %d.%d, zlib %s crc32=%lu\n", NLOHMANN_JSON_VERSION_MAJOR,
              NLOHMANN_JSON_VERSION_MINOR, zlibVersion(), crc);
  ok = ok && crc == 2847969154UL;
#endif
  std::printf("dms test_package: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
