// Tests of dms/core/half.hpp: the scalar conversions against references computed independently
// (double arithmetic, and _Float16 where the compiler has it), and every bulk kernel the CPU
// supports against the scalar conversions.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dms/core/half.hpp"

namespace {

using dms::bf16_bits;
using dms::f16_bits;
using dms::detail::half_isa;

std::uint32_t bits_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
float float_of(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// --- independent references ---------------------------------------------------------------------

//! The value of an f16 computed from its fields in double (exact), for non-NaN inputs.
double ref_f16_value(std::uint16_t h) {
  const int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  double v;
  if (e == 0) v = std::ldexp(m, -24);
  else if (e == 31) v = INFINITY;
  else v = std::ldexp(1024 + m, e - 25);
  return sign ? -v : v;
}

//! f32 -> f16 by double arithmetic: scale so the f16 ulp is 1, round with nearbyint (the default
//! rounding mode, to nearest even), rebuild the fields.
std::uint16_t ref_f16(float x) {
  const std::uint32_t u = bits_of(x);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  if (std::isnan(x)) return static_cast<std::uint16_t>(sign | 0x7e00u | ((u >> 13) & 0x3ffu));
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 65520.0) return static_cast<std::uint16_t>(sign | 0x7c00u); // halfway 65504 .. 2^16
  if (a < 0x1p-14) {
    const double m = std::nearbyint(a * 0x1p24); // <= 1024, which is the smallest normal: fine
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(m));
  }
  int e2;
  (void)std::frexp(a, &e2);
  int exp = e2 - 1; // a in [2^exp, 2^(exp+1))
  double m = std::nearbyint(std::ldexp(a, 10 - exp)); // in [1024, 2048]
  if (m == 2048) {
    m = 1024;
    ++exp;
  }
  return static_cast<std::uint16_t>(sign | ((exp + 15) << 10) | (static_cast<int>(m) - 1024));
}

//! f32 -> bf16 by comparing the distances to the two neighbours in double.
std::uint16_t ref_bf16(float x) {
  if (std::isnan(x)) return 0x7fc0;
  const std::uint32_t u = bits_of(x);
  const std::uint32_t lo = u & 0xffff0000u; // toward zero
  if (lo == u) return static_cast<std::uint16_t>(u >> 16);
  const std::uint32_t hi = lo + 0x10000u; // away from zero (may be the infinity pattern)
  const double dx = x, dlo = float_of(lo);
  const double dhi = (hi & 0x7f800000u) == 0x7f800000u ? std::copysign(std::ldexp(1.0, 128), dx)
                                                       : static_cast<double>(float_of(hi));
  const double dist_lo = std::fabs(dx - dlo), dist_hi = std::fabs(dhi - dx);
  std::uint32_t r;
  if (dist_lo < dist_hi) r = lo;
  else if (dist_hi < dist_lo) r = hi;
  else r = ((lo >> 16) & 1u) == 0 ? lo : hi;
  return static_cast<std::uint16_t>(r >> 16);
}

std::vector<half_isa> supported_isas() {
  std::vector<half_isa> out;
  for (half_isa isa : dms::detail::all_half_isas)
    if (dms::detail::half_isa_supported(isa)) out.push_back(isa);
  return out;
}

//! Float inputs that stress f32 -> f16 and f32 -> bf16: special values, every f16 value and the
//! f32 values around every midpoint between consecutive f16 values, random bit patterns.
std::vector<float> stress_floats() {
  std::vector<float> v = {0.0f,       -0.0f,         1.0f,           -1.0f,        65504.0f,
                          65519.996f, 65520.0f,      65536.0f,       1e30f,        -1e30f,
                          INFINITY,   -INFINITY,     NAN,            -NAN,         0x1p-24f,
                          0x1p-25f,   0x1.8p-25f,    0x1.000002p-25f, 0x1p-26f,    0x1p-14f,
                          0x1.ffcp-15f, 0x1.ffep-15f, 0x1.fffp-15f,  1.0f + 0x1p-11f,
                          1.0f + 0x3p-11f, 3.4028235e38f, 1e-45f,    -1e-45f,      1.17549435e-38f};
  for (std::uint32_t h = 0; h < 0x7c00u; ++h) {
    const float a = dms::to_f32(f16_bits{static_cast<std::uint16_t>(h)});
    const float b = dms::to_f32(f16_bits{static_cast<std::uint16_t>(h + 1)}); // may be infinity
    const float mid = h + 1 == 0x7c00u ? 65520.0f : static_cast<float>((double(a) + double(b)) / 2);
    for (float x : {a, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  std::mt19937 rng(12345);
  for (int i = 0; i < 200000; ++i) v.push_back(float_of(static_cast<std::uint32_t>(rng())));
  std::uniform_real_distribution<float> in_range(-70000.0f, 70000.0f);
  for (int i = 0; i < 200000; ++i) v.push_back(in_range(rng));
  std::uniform_real_distribution<float> tiny(-1e-4f, 1e-4f);
  for (int i = 0; i < 100000; ++i) v.push_back(tiny(rng));
  return v;
}

} // namespace

// --- constexpr ------------------------------------------------------------------------------------

static_assert(dms::to_f16(1.0f).bits == 0x3c00);
static_assert(dms::to_f16(-2.0f).bits == 0xc000);
static_assert(dms::to_f16(65504.0f).bits == 0x7bff);
static_assert(dms::to_f16(65520.0f).bits == 0x7c00);
static_assert(dms::to_f16(0x1p-24f).bits == 0x0001);
static_assert(dms::to_f16(0x1p-25f).bits == 0x0000); // tie between 0 and 2^-24: even is 0
static_assert(dms::to_f32(f16_bits{0x3c00}) == 1.0f);
static_assert(dms::to_f32(f16_bits{0x0001}) == 0x1p-24f);
static_assert(dms::to_f32(f16_bits{0xfbff}) == -65504.0f);
static_assert(dms::to_bf16(1.0f).bits == 0x3f80);
static_assert(dms::to_bf16(1.0f + 0x1p-8f).bits == 0x3f80); // tie: even
static_assert(dms::to_bf16(1.0f + 0x3p-8f).bits == 0x3f82); // tie: even
static_assert(dms::to_f32(bf16_bits{0xc040}) == -3.0f);

// --- f16 scalar -----------------------------------------------------------------------------------

TEST_CASE("to_f32(f16) is exact for all 65536 patterns", "[half][f16]") {
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const auto hb = static_cast<std::uint16_t>(h);
    const float f = dms::to_f32(f16_bits{hb});
    const bool is_nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
    if (is_nan) {
      // Quiet NaN, same sign, payload shifted up, quiet bit set.
      const std::uint32_t want = ((h & 0x8000u) << 16) | 0x7fc00000u | ((h & 0x3ffu) << 13);
      REQUIRE(bits_of(f) == want);
    } else {
      REQUIRE(static_cast<double>(f) == ref_f16_value(hb));
      REQUIRE(std::signbit(f) == ((h & 0x8000u) != 0));
    }
  }
}

TEST_CASE("f16 -> f32 -> f16 round-trips every pattern (NaNs come back quiet)", "[half][f16]") {
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const auto hb = static_cast<std::uint16_t>(h);
    const bool is_nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
    // A signaling NaN (quiet bit 9 clear) comes back with bit 9 set; the rest of the payload and
    // the sign are kept.
    const std::uint16_t want = is_nan ? static_cast<std::uint16_t>(hb | 0x0200u) : hb;
    REQUIRE(dms::to_f16(dms::to_f32(f16_bits{hb})).bits == want);
  }
}

TEST_CASE("to_f16 rounds to nearest even: hand-picked values", "[half][f16]") {
  struct tc {
    float x;
    std::uint16_t want;
  };
  const tc cases[] = {
      {0.0f, 0x0000},          {-0.0f, 0x8000},          {1.0f, 0x3c00},
      {65504.0f, 0x7bff},      {65519.996f, 0x7bff},     {65520.0f, 0x7c00},   // tie -> even: inf
      {-65520.0f, 0xfc00},     {1e10f, 0x7c00},          {INFINITY, 0x7c00},
      {-INFINITY, 0xfc00},     {0x1p-24f, 0x0001},       {0x1p-25f, 0x0000},   // tie -> 0
      {0x1.000002p-25f, 0x0001}, {0x1.8p-24f, 0x0002},   {0x1.4p-23f, 0x0002}, // 2.5 ulp -> 2
      {0x1.ff8p-15f, 0x03ff},  {0x1.ffcp-15f, 0x0400},   {0x1p-14f, 0x0400},   // tie -> normal
      {1.0f + 0x1p-11f, 0x3c00}, {1.0f + 0x3p-11f, 0x3c02}, {1.0f + 0x1p-10f, 0x3c01},
      {3.4028235e38f, 0x7c00}, {1e-45f, 0x0000},         {-1e-45f, 0x8000},
      {0.1f, 0x2e66},          {-3.14159265f, 0xc248},   {1.0f / 3.0f, 0x3555},
  };
  for (const tc &c : cases) {
    INFO("x = " << c.x);
    CHECK(dms::to_f16(c.x).bits == c.want);
    CHECK(ref_f16(c.x) == c.want);
  }
  // NaN: stays NaN, quiet, sign and top payload bits kept.
  CHECK(dms::to_f16(float_of(0x7fc00000u)).bits == 0x7e00);
  CHECK(dms::to_f16(float_of(0xffc00000u)).bits == 0xfe00);
  CHECK(dms::to_f16(float_of(0x7f800001u)).bits == 0x7e00); // signaling, payload below bit 13
  CHECK(dms::to_f16(float_of(0x7fa02000u)).bits == 0x7f01);
}

TEST_CASE("to_f16 matches the double-arithmetic reference on stress values", "[half][f16]") {
  const std::vector<float> xs = stress_floats();
  std::size_t mismatches = 0;
  for (float x : xs) {
    if (dms::to_f16(x).bits != ref_f16(x)) {
      if (++mismatches < 10) FAIL_CHECK("x bits " << bits_of(x) << ": " << dms::to_f16(x).bits
                                                  << " != reference " << ref_f16(x));
    }
  }
  CHECK(mismatches == 0);
}

#if defined(__FLT16_MANT_DIG__)
TEST_CASE("to_f16 and to_f32 match the compiler's _Float16", "[half][f16]") {
  for (float x : stress_floats()) {
    if (std::isnan(x)) continue; // NaN payload handling is not specified for _Float16
    const auto h = static_cast<_Float16>(x);
    std::uint16_t hb;
    std::memcpy(&hb, &h, sizeof hb);
    REQUIRE(dms::to_f16(x).bits == hb);
  }
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0) continue;
    const auto hb = static_cast<std::uint16_t>(h);
    _Float16 v;
    std::memcpy(&v, &hb, sizeof v);
    REQUIRE(bits_of(dms::to_f32(f16_bits{hb})) == bits_of(static_cast<float>(v)));
  }
}
#endif

// --- bf16 scalar ----------------------------------------------------------------------------------

TEST_CASE("bf16: exact widening, round-trip and PyTorch NaN", "[half][bf16]") {
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const auto hb = static_cast<std::uint16_t>(h);
    const float f = dms::to_f32(bf16_bits{hb});
    REQUIRE(bits_of(f) == h << 16);
    const bool is_nan = (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0;
    REQUIRE(dms::to_bf16(f).bits == (is_nan ? 0x7fc0u : h));
  }
  CHECK(dms::to_bf16(NAN).bits == 0x7fc0);
  CHECK(dms::to_bf16(-NAN).bits == 0x7fc0); // PyTorch drops the sign of a NaN
  CHECK(dms::to_bf16(3.4028235e38f).bits == 0x7f80); // rounds up to infinity
  CHECK(dms::to_bf16(-3.4028235e38f).bits == 0xff80);
  CHECK(dms::to_bf16(float_of(0x7f7f7fffu)).bits == 0x7f7f);
  CHECK(dms::to_bf16(float_of(0x00008000u)).bits == 0x0000); // subnormal tie -> even
  CHECK(dms::to_bf16(float_of(0x00018000u)).bits == 0x0002);
}

TEST_CASE("to_bf16 matches the nearest-neighbour reference on stress values", "[half][bf16]") {
  std::size_t mismatches = 0;
  for (float x : stress_floats()) {
    if (dms::to_bf16(x).bits != ref_bf16(x) && ++mismatches < 10)
      FAIL_CHECK("x bits " << bits_of(x) << ": " << dms::to_bf16(x).bits << " != reference "
                           << ref_bf16(x));
  }
  // Ties at every bf16 value: x = bf16 value + half an ulp, for all bf16 patterns.
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const float x = float_of((h << 16) | 0x8000u);
    if (dms::to_bf16(x).bits != ref_bf16(x) && ++mismatches < 10)
      FAIL_CHECK("tie x bits " << bits_of(x));
  }
  CHECK(mismatches == 0);
}

// --- bulk kernels ---------------------------------------------------------------------------------

TEST_CASE("bulk kernels: this machine", "[half][bulk]") {
  std::string found;
  for (half_isa isa : supported_isas()) found += std::string(dms::detail::name_of(isa)) + " ";
  WARN("half kernels supported here: " << found << "(best: "
                                        << dms::detail::name_of(dms::detail::best_half_isa())
                                        << ")");
  CHECK(dms::detail::half_isa_supported(half_isa::portable));
}

TEST_CASE("bulk f16 -> f32 equals the scalar conversion on every kernel", "[half][bulk][f16]") {
  std::vector<f16_bits> all(65536);
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) all[h] = f16_bits{static_cast<std::uint16_t>(h)};
  for (half_isa isa : supported_isas()) {
    INFO("kernel " << dms::detail::name_of(isa));
    std::vector<float> out(all.size());
    dms::detail::convert(std::span<const f16_bits>(all), std::span<float>(out), isa);
    for (std::uint32_t h = 0; h <= 0xffffu; ++h)
      REQUIRE(bits_of(out[h]) == bits_of(dms::to_f32(all[h])));
    // Back again: the bulk f32 -> f16 of all 65536 values.
    std::vector<f16_bits> back(all.size());
    dms::detail::convert(std::span<const float>(out), std::span<f16_bits>(back), isa);
    for (std::uint32_t h = 0; h <= 0xffffu; ++h) REQUIRE(back[h] == dms::to_f16(out[h]));
  }
}

TEST_CASE("bulk f32 -> f16 / bf16 equal the scalar conversions on every kernel",
          "[half][bulk]") {
  const std::vector<float> xs = stress_floats();
  for (half_isa isa : supported_isas()) {
    INFO("kernel " << dms::detail::name_of(isa));
    std::vector<f16_bits> h(xs.size());
    std::vector<bf16_bits> b(xs.size());
    dms::detail::convert(std::span<const float>(xs), std::span<f16_bits>(h), isa);
    dms::detail::convert(std::span<const float>(xs), std::span<bf16_bits>(b), isa);
    std::size_t bad_h = 0, bad_b = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      bad_h += h[i] != dms::to_f16(xs[i]);
      bad_b += b[i] != dms::to_bf16(xs[i]);
    }
    CHECK(bad_h == 0);
    CHECK(bad_b == 0);
  }
}

TEST_CASE("bulk bf16 -> f32 equals the scalar conversion on every kernel", "[half][bulk][bf16]") {
  std::vector<bf16_bits> all(65536);
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) all[h] = bf16_bits{static_cast<std::uint16_t>(h)};
  for (half_isa isa : supported_isas()) {
    INFO("kernel " << dms::detail::name_of(isa));
    std::vector<float> out(all.size());
    dms::detail::convert(std::span<const bf16_bits>(all), std::span<float>(out), isa);
    for (std::uint32_t h = 0; h <= 0xffffu; ++h) REQUIRE(bits_of(out[h]) == h << 16);
  }
}

TEST_CASE("bulk kernels handle every length and alignment (tails, no overrun)", "[half][bulk]") {
  std::mt19937 rng(7);
  const std::size_t pad = 40; // guard elements after the destination that must stay untouched
  for (half_isa isa : supported_isas()) {
    INFO("kernel " << dms::detail::name_of(isa));
    for (std::size_t n = 0; n <= 100; ++n) {
      for (std::size_t offset = 0; offset < 3; ++offset) {
        INFO("n " << n << " offset " << offset);
        std::vector<float> f(n + offset);
        for (float &x : f) x = float_of(static_cast<std::uint32_t>(rng()));
        std::vector<f16_bits> h(n + offset + pad, f16_bits{0xabcd});
        std::vector<bf16_bits> b(n + offset + pad, bf16_bits{0xabcd});
        std::vector<float> g(n + offset + pad, 42.0f);
        const std::span<const float> fs(f.data() + offset, n);
        dms::detail::convert(fs, std::span<f16_bits>(h.data() + offset, n), isa);
        dms::detail::convert(fs, std::span<bf16_bits>(b.data() + offset, n), isa);
        for (std::size_t i = 0; i < n; ++i) {
          REQUIRE(h[offset + i] == dms::to_f16(fs[i]));
          REQUIRE(b[offset + i] == dms::to_bf16(fs[i]));
        }
        for (std::size_t i = offset + n; i < h.size(); ++i) {
          REQUIRE(h[i] == f16_bits{0xabcd});
          REQUIRE(b[i] == bf16_bits{0xabcd});
        }
        dms::detail::convert(std::span<const f16_bits>(h.data() + offset, n),
                             std::span<float>(g.data() + offset, n), isa);
        for (std::size_t i = 0; i < n; ++i)
          REQUIRE(bits_of(g[offset + i]) == bits_of(dms::to_f32(h[offset + i])));
        for (std::size_t i = offset + n; i < g.size(); ++i) REQUIRE(g[i] == 42.0f);
        dms::detail::convert(std::span<const bf16_bits>(b.data() + offset, n),
                             std::span<float>(g.data() + offset, n), isa);
        for (std::size_t i = 0; i < n; ++i)
          REQUIRE(bits_of(g[offset + i]) == bits_of(dms::to_f32(b[offset + i])));
        for (std::size_t i = offset + n; i < g.size(); ++i) REQUIRE(g[i] == 42.0f);
      }
    }
  }
}

TEST_CASE("public convert dispatches and checks sizes", "[half][bulk]") {
  const std::vector<float> f = {1.0f, -2.0f, 0.5f};
  std::vector<f16_bits> h(3);
  std::vector<bf16_bits> b(3);
  dms::convert(f, h);
  dms::convert(f, b);
  CHECK(h == std::vector<f16_bits>{{0x3c00}, {0xc000}, {0x3800}});
  CHECK(b == std::vector<bf16_bits>{{0x3f80}, {0xc000}, {0x3f00}});
  std::vector<float> g(3);
  dms::convert(h, g);
  CHECK(g == f);
  dms::convert(b, g);
  CHECK(g == f);

  std::vector<float> short_out(2);
  try {
    dms::convert(h, short_out);
    FAIL("no exception");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("source has 3 elements, destination has 2"));
  }
  CHECK_THROWS_AS(dms::convert(f, std::span<bf16_bits>(b.data(), 2)), dms::error);
  for (half_isa isa : dms::detail::all_half_isas) {
    if (dms::detail::half_isa_supported(isa)) continue;
    try {
      dms::detail::convert(std::span<const float>(f), std::span<f16_bits>(h), isa);
      FAIL("no exception");
    } catch (const dms::error &e) {
      CHECK(e.code() == dms::errc::unsupported);
    }
  }
}

// Every one of the 2^32 f32 inputs through every kernel against the scalar function, and the
// scalar function against the double reference on a stride. Takes about a minute; run with
// `dms_core_tests "[.exhaustive]"`.
TEST_CASE("exhaustive f32 -> f16 / bf16 over all 2^32 inputs", "[.exhaustive][half]") {
  const std::size_t block = std::size_t{1} << 20;
  std::vector<float> x(block);
  std::vector<f16_bits> h(block), h_scalar(block);
  std::vector<bf16_bits> b(block), b_scalar(block);
  const std::vector<half_isa> isas = supported_isas();
  std::uint64_t bad = 0;
  for (std::uint64_t start = 0; start < (std::uint64_t{1} << 32); start += block) {
    for (std::size_t i = 0; i < block; ++i) {
      x[i] = float_of(static_cast<std::uint32_t>(start + i));
      h_scalar[i] = dms::to_f16(x[i]);
      b_scalar[i] = dms::to_bf16(x[i]);
    }
    for (std::size_t i = 0; i < block; i += 61) {
      bad += h_scalar[i].bits != ref_f16(x[i]);
      bad += b_scalar[i].bits != ref_bf16(x[i]);
    }
    for (half_isa isa : isas) {
      dms::detail::convert(std::span<const float>(x), std::span<f16_bits>(h), isa);
      dms::detail::convert(std::span<const float>(x), std::span<bf16_bits>(b), isa);
      bad += static_cast<std::uint64_t>(h != h_scalar) + static_cast<std::uint64_t>(b != b_scalar);
    }
  }
  CHECK(bad == 0);
}
