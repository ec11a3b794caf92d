#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "dms/formats/npy.hpp"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {
//! A .npy file with a literal header dict (padded as numpy pads it) and raw data bytes.
std::vector<std::byte> npy_with(std::string dict, const void *data, std::size_t n, int major = 1) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  dict.append(64 - (prefix + dict.size() + 1) % 64, ' ');
  dict += '\n';
  std::vector<std::byte> out;
  auto put = [&](const void *p, std::size_t k) {
    const auto *b = static_cast<const std::byte *>(p);
    out.insert(out.end(), b, b + k);
  };
  put("\x93NUMPY", 6);
  const unsigned char v[2] = {static_cast<unsigned char>(major), 0};
  put(v, 2);
  const auto len = static_cast<std::uint32_t>(dict.size());
  put(&len, major == 1 ? 2 : 4);
  put(dict.data(), dict.size());
  put(data, n);
  return out;
}
std::string fails(const std::vector<std::byte> &b) {
  try {
    dms::parse_npy(b, "x.npy");
  } catch (const dms::error &e) {
    CHECK(e.where().file == "x.npy");
    return e.what();
  }
  FAIL("no error");
  return {};
}
} // namespace

TEST_CASE("npy writer matches np.save byte for byte", "[formats][npy]") {
  const std::vector<float> v{1, 2, 3, 4, 5, 6};
  const std::vector<std::int64_t> shape{2, 3};
  const auto b = dms::encode_npy(v, shape);
  // np.save(f, np.arange(1, 7, dtype=np.float32).reshape(2, 3)): a 118-byte header, data at 128.
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  REQUIRE(b.size() == 128 + 24);
  CHECK(std::memcmp(b.data(), "\x93NUMPY\x01\x00\x76\x00", 10) == 0);
  CHECK(std::string(reinterpret_cast<const char *>(b.data()) + 10, dict.size()) == dict);
  CHECK(static_cast<char>(b[127]) == '\n');
  CHECK(static_cast<char>(b[126]) == ' ');
  CHECK(std::memcmp(b.data() + 128, v.data(), 24) == 0);

  const std::vector<std::int64_t> one{6};
  const std::string d1 = "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }";
  CHECK(std::string(reinterpret_cast<const char *>(dms::encode_npy(v, one).data()) + 10, d1.size()) == d1);
  const std::vector<float> s{3.5f};
  const auto scalar = dms::encode_npy(s, {});
  const std::string d0 = "{'descr': '<f4', 'fortran_order': False, 'shape': (), }";
  CHECK(std::string(reinterpret_cast<const char *>(scalar.data()) + 10, d0.size()) == d0);
  CHECK(scalar.size() == 128 + 4);
  const std::vector<std::int64_t> five{5};
  CHECK_THROWS_WITH(dms::encode_npy(v, five), Contains("shape holds 5 elements, data has 6"));
}

TEST_CASE("npy round trip through a file, and a v2.0 header", "[formats][npy]") {
  const auto dir = fs::temp_directory_path() / ("dms-npy-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<float> v(24);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(i) - 3.5f;
  const std::vector<std::int64_t> shape{2, 3, 4};
  dms::write_npy(dir / "a.npy", v, shape);
  const auto a = dms::read_npy(dir / "a.npy");
  CHECK(a.shape == shape);
  CHECK(a.data == v);
  CHECK(a.descr == "<f4");
  CHECK(a.view().rank == 3);
  CHECK(a.view().extents[2] == 4);

  // Version 2.0 (4-byte header length) and 3.0 (UTF-8 header) files.
  const auto v2 = npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }", v.data(), 96, 2);
  CHECK(dms::parse_npy(v2, "v2.npy").data == v);
  const auto v3 = [&] {
    auto b = npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (24,), }", v.data(), 96, 2);
    b[6] = std::byte{3};
    return b;
  }();
  CHECK(dms::parse_npy(v3, "v3.npy").shape == std::vector<std::int64_t>{24});
  CHECK_THROWS_WITH(dms::read_npy(dir / "none.npy"), Contains("none.npy: I/O error"));
  fs::remove_all(dir);
}

TEST_CASE("npy reads f16, f64, big-endian and Fortran-ordered arrays as f32 C order", "[formats][npy]") {
  const std::vector<double> d{1.5, -2.25, 1e-3};
  auto a = dms::parse_npy(npy_with("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", d.data(), 24),
                          "d");
  CHECK(a.data == std::vector<float>{1.5f, -2.25f, static_cast<float>(1e-3)});
  CHECK(a.descr == "<f8");

  std::vector<dms::f16_bits> h{dms::to_f16(0.5f), dms::to_f16(-65504.0f)};
  a = dms::parse_npy(npy_with("{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2), }", h.data(), 4),
                     "h");
  CHECK(a.data == std::vector<float>{0.5f, -65504.0f});

  const unsigned char be[] = {0x3f, 0xc0, 0x00, 0x00, 0xc0, 0x20, 0x00, 0x00}; // 1.5, -2.5 big-endian
  a = dms::parse_npy(npy_with("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", be, 8), "be");
  CHECK(a.data == std::vector<float>{1.5f, -2.5f});
  const unsigned char be16[] = {0x3c, 0x00}; // 1.0 as big-endian f16
  CHECK(dms::parse_npy(npy_with("{'descr': '>f2', 'fortran_order': False, 'shape': (), }", be16, 2), "b")
            .data == std::vector<float>{1.0f});

  // np.asfortranarray(np.arange(6).reshape(2, 3)) stores 0 3 1 4 2 5.
  const std::vector<float> f{0, 3, 1, 4, 2, 5};
  a = dms::parse_npy(npy_with("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", f.data(), 24),
                     "f");
  CHECK(a.fortran_order);
  CHECK(a.data == std::vector<float>{0, 1, 2, 3, 4, 5});
  // Rank 3: element (i, j, k) of shape (2, 3, 4) is stored at i + 2 j + 6 k.
  std::vector<float> f3(24);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k)
        f3[static_cast<std::size_t>(i + 2 * j + 6 * k)] = static_cast<float>(i * 12 + j * 4 + k);
  a = dms::parse_npy(npy_with("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", f3.data(), 96),
                     "f3");
  for (std::size_t i = 0; i < 24; ++i)
    CHECK(a.data[i] == static_cast<float>(i));

  // Key order, double quotes, no trailing comma and Python 2 longs are all accepted.
  a = dms::parse_npy(
      npy_with("{\"shape\": (2L,), \"fortran_order\": False, \"descr\": \"<f4\"}", f.data(), 8), "p2");
  CHECK(a.shape == std::vector<std::int64_t>{2});
  // Empty arrays.
  a = dms::parse_npy(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", nullptr, 0),
                     "e");
  CHECK(a.data.empty());
}

TEST_CASE("npy rejects malformed files with file, offset and expectation", "[formats][npy]") {
  const std::vector<float> v{1, 2};
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  CHECK_THAT(fails({}), Contains("x.npy: offset 0: invalid format: truncated: expected the magic"));
  auto b = npy_with(ok, v.data(), 8);
  b[1] = std::byte{'X'};
  CHECK_THAT(fails(b), Contains("offset 0") && Contains("bad magic (expected \\x93NUMPY"));
  b = npy_with(ok, v.data(), 8);
  b[6] = std::byte{4};
  CHECK_THAT(fails(b), Contains("offset 6: unsupported: format version 4.0 (expected 1.0, 2.0 or 3.0)"));
  b = npy_with(ok, v.data(), 8);
  b.resize(40);
  CHECK_THAT(fails(b),
             Contains("offset 10: invalid format: truncated: expected the header dict (118 bytes), 30 left"));
  CHECK_THAT(fails(npy_with(ok, v.data(), 4)),
             Contains("offset 128: invalid format: data holds 4 bytes, expected 8 (2 elements of <f4)"));
  auto trailing = npy_with(ok, v.data(), 8);
  trailing.push_back(std::byte{0});
  CHECK_THAT(fails(trailing), Contains("data holds 9 bytes, expected 8"));
  CHECK_THAT(fails(npy_with("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", v.data(), 8)),
             Contains("offset 8: unsupported: dtype '<i8': dms reads floating arrays"));
  CHECK_THAT(
      fails(npy_with("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", v.data(), 4)),
      Contains("structured dtypes"));
  CHECK_THAT(fails(npy_with("{'descr': '<f4', 'shape': (2,), }", v.data(), 8)),
             Contains("offset 10: invalid format: header dict lacks 'fortran_order'"));
  CHECK_THAT(fails(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", v.data(), 8)),
             Contains("offset 66: invalid format: unexpected header key 'x' (expected 'descr', "
                      "'fortran_order', 'shape')"));
  CHECK_THAT(
      fails(npy_with("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", v.data(), 8)),
      Contains("duplicate key 'descr'"));
  CHECK_THAT(fails(npy_with("{'descr': '<f4', 'fortran_order': false, 'shape': (2,), }", v.data(), 8)),
             Contains("offset 44: invalid format: expected True or False"));
  CHECK_THAT(fails(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", v.data(), 8)),
             Contains("expected a non-negative integer"));
  CHECK_THAT(fails(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", v.data(), 8)),
             Contains("expected ',' or ')' in the shape tuple"));
  CHECK_THAT(fails(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                            v.data(), 8)),
             Contains("shape extent overflows 64 bits"));
  CHECK_THAT(fails(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
                            v.data(), 8)),
             Contains("shape overflows 64 bits"));
  CHECK_THAT(fails(npy_with("{'descr': '<f4, 'fortran_order': False}", v.data(), 8)),
             Contains("offset 27: invalid format: expected ',' or '}' in the header dict"));
  CHECK_THAT(fails(npy_with("{'descr' '<f4'}", v.data(), 8)),
             Contains("offset 19: invalid format: expected ':' after a dict key"));
  CHECK_THAT(fails(npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk", v.data(), 8)),
             Contains("unexpected text after the header dict"));
  CHECK_THAT(fails(npy_with("{'descr': '<f\\4', 'fortran_order': False, 'shape': (2,), }", v.data(), 8)),
             Contains("escape sequences"));
  CHECK_THAT(fails(npy_with("{'descr", v.data(), 8)), Contains("unterminated string"));
  CHECK_THAT(fails(npy_with("'descr'", v.data(), 8)), Contains("expected '{' opening the header dict"));
}
