// dms::view_of on xtensor containers and adaptors.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xtensor.hpp>

#include "dms/backend/cpu/kernels.hpp"
#include "dms/backend/cpu/xtensor_adapter.hpp"

static_assert(dms::viewable<xt::xtensor<float, 2> &>);
static_assert(dms::viewable<const xt::xtensor<float, 2> &>);
static_assert(dms::viewable<xt::xarray<double> &>);
static_assert(dms::viewable<xt::xtensor<dms::bf16_bits, 1> &>);

TEST_CASE("xtensor<T, N> gives a row-major view of its own memory", "[cpu][xtensor]") {
  xt::xtensor<float, 3> t = xt::zeros<float>({2, 3, 4});
  auto v = dms::view_of(t);
  STATIC_REQUIRE(std::is_same_v<decltype(v), dms::tensor_view>);
  CHECK(v.rank == 3);
  CHECK(v.type == dms::dtype::f32);
  CHECK(v.space == dms::memory_space::host);
  CHECK(v.extents[0] == 2);
  CHECK(v.extents[1] == 3);
  CHECK(v.extents[2] == 4);
  CHECK(v.strides[0] == 12);
  CHECK(v.strides[1] == 4);
  CHECK(v.strides[2] == 1);
  CHECK(v.is_contiguous());
  CHECK(v.data_as<float>() == t.data());

  const auto &ct = t;
  auto cv = dms::view_of(ct);
  STATIC_REQUIRE(std::is_same_v<decltype(cv), dms::const_tensor_view>);
  CHECK(cv.data_as<float>() == t.data());
}

TEST_CASE("xtensor views feed the kernels and write through", "[cpu][xtensor]") {
  xt::xtensor<float, 2> acts = xt::ones<float>({3, 4});
  const std::vector<float> v = {1, 2, 3, 4};
  const std::vector<float> s = {0, 1, -1};
  dms::cpu::add_scaled_rows(dms::as_matrix<float>(dms::view_of(acts)), s, v);
  CHECK(acts(0, 3) == 1.0f);
  CHECK(acts(1, 3) == 5.0f);
  CHECK(acts(2, 0) == 0.0f);
}

TEST_CASE("axes of extent 1 get dense strides, not xtensor's 0", "[cpu][xtensor]") {
  xt::xtensor<float, 2> row = xt::zeros<float>({1, 5});
  REQUIRE(row.strides()[0] == 0); // xtensor's broadcasting convention
  auto v = dms::view_of(row);
  CHECK(v.strides[0] == 5);
  CHECK(v.strides[1] == 1);
  auto m = dms::as_matrix<float>(v);
  CHECK(m.rows == 1);
  CHECK(m.row_stride == 5);
}

TEST_CASE("xarray of every rank up to max_rank, dtypes follow value_type", "[cpu][xtensor]") {
  xt::xarray<std::int32_t> a = xt::zeros<std::int32_t>({2, 2, 2, 2});
  auto v = dms::view_of(a);
  CHECK(v.rank == 4);
  CHECK(v.type == dms::dtype::i32);
  CHECK(v.strides[0] == 8);
  xt::xarray<double> scalar = 3.0;
  auto s = dms::view_of(scalar);
  CHECK(s.rank == 0);
  CHECK(s.numel() == 1);
  CHECK(s.type == dms::dtype::f64);
}

TEST_CASE("rank above max_rank and column-major layouts are rejected", "[cpu][xtensor]") {
  xt::xarray<float> big = xt::zeros<float>({1, 1, 1, 1, 2});
  CHECK_THROWS_WITH(dms::view_of(big), Catch::Contains("exceeds dms::max_rank"));
  xt::xtensor<float, 5> big5 = xt::zeros<float>({1, 1, 1, 1, 2});
  CHECK_THROWS_AS(dms::view_of(big5), dms::error);

  xt::xtensor<float, 2, xt::layout_type::column_major> cm = xt::zeros<float>({2, 3});
  try {
    (void)dms::view_of(cm);
    FAIL("column-major accepted");
  } catch (const dms::error &e) {
    CHECK(e.code() == dms::errc::unsupported);
    CHECK_THAT(e.what(), Catch::Contains("column-major"));
  }
  xt::xarray<float, xt::layout_type::column_major> cma = xt::zeros<float>({2, 3});
  CHECK_THROWS_AS(dms::view_of(cma), dms::error);
  // Rank 1 has no row/column distinction.
  xt::xtensor<float, 1, xt::layout_type::column_major> cm1 = xt::zeros<float>({3});
  CHECK(dms::view_of(cm1).rank == 1);
}

TEST_CASE("xt::adapt adaptors view the adapted buffer", "[cpu][xtensor]") {
  std::vector<float> buf(6, 2.0f);
  auto t = xt::adapt(buf.data(), 6, xt::no_ownership(), std::array<std::size_t, 2>{2, 3});
  auto v = dms::view_of(t);
  CHECK(v.data_as<float>() == buf.data());
  CHECK(v.extents[0] == 2);
  CHECK(v.strides[0] == 3);

  auto a = xt::adapt(buf, std::vector<std::size_t>{3, 2});
  auto va = dms::view_of(a);
  CHECK(va.rank == 2);
  CHECK(va.data_as<float>() == buf.data());
  CHECK(va.strides[0] == 2);
}
