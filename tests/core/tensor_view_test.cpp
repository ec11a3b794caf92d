#include <catch2/catch.hpp>

#include <span>
#include <vector>

#include "dms/concepts/tensor_view.hpp"

TEST_CASE("make_view builds contiguous row-major views", "[tensor_view]") {
  std::vector<float> buf(24);
  auto v = dms::make_view(buf.data(), {2, 3, 4});
  CHECK(v.rank == 3);
  CHECK(v.numel() == 24);
  CHECK(v.strides[0] == 12);
  CHECK(v.strides[1] == 4);
  CHECK(v.strides[2] == 1);
  CHECK(v.is_contiguous());
  CHECK(v.size_bytes() == 96);
  CHECK(v.data_as<float>() == buf.data());
  CHECK_THROWS_WITH(v.data_as<dms::f16_bits>(), Catch::Contains("view holds f32, requested f16"));
}

TEST_CASE("make_view rejects overflow, negative extents and excess rank", "[tensor_view]") {
  float x = 0;
  CHECK_THROWS_WITH(dms::make_view(&x, {1LL << 40, 1LL << 40}),
                    Catch::Contains("element count overflows"));
  CHECK_THROWS_WITH(dms::make_view(&x, {2, -1}), Catch::Contains("negative extent -1"));
  CHECK_THROWS_WITH(dms::make_view(&x, {1, 1, 1, 1, 1}), Catch::Contains("exceeds dms::max_rank"));
}

TEST_CASE("strided views and transposition", "[tensor_view]") {
  std::vector<float> buf(6);
  const std::int64_t ext[] = {3, 2};
  const std::int64_t str[] = {1, 3}; // transposed 2x3
  auto t = dms::make_view(buf.data(), ext, str);
  CHECK_FALSE(t.is_contiguous());
  CHECK_THROWS_WITH(dms::as_matrix<float>(t), Catch::Contains("inner stride 1"));
}

TEST_CASE("view_of accepts spans, vectors and views", "[tensor_view]") {
  std::vector<float> v(5, 1.0f);
  auto a = dms::view_of(v);
  CHECK(a.rank == 1);
  CHECK(a.extents[0] == 5);
  const std::vector<dms::bf16_bits> w(3);
  auto b = dms::view_of(w);
  STATIC_REQUIRE(std::is_same_v<decltype(b), dms::const_tensor_view>);
  CHECK(b.type == dms::dtype::bf16);
  std::span<float> s(v);
  CHECK(dms::view_of(s).data_as<float>() == v.data());
  dms::const_tensor_view c = a; // mutable -> const
  CHECK(c.numel() == 5);
}

TEST_CASE("as_matrix checks rank and keeps the row stride", "[tensor_view]") {
  std::vector<float> buf(4 * 8);
  const std::int64_t ext[] = {4, 5};
  const std::int64_t str[] = {8, 1}; // padded rows
  auto m = dms::as_matrix<float>(dms::make_view(buf.data(), ext, str));
  CHECK(m.rows == 4);
  CHECK(m.cols == 5);
  CHECK(m.row_stride == 8);
  m(3, 4) = 7.0f;
  CHECK(buf[3 * 8 + 4] == 7.0f);
  std::vector<float> cube(8);
  CHECK_THROWS_WITH(dms::as_matrix<float>(dms::make_view(cube.data(), {2, 2, 2})),
                    Catch::Contains("got rank 3"));
}
