// dms/backend/cpu/xtensor_adapter.hpp: xtensor containers as dms tensor views.
//
// The CPU backend and its users hold activations and weights in xtensor containers; with this
// header `dms::view_of(x)` works for `xt::xtensor<T, N>`, `xt::xarray<T>` and the adaptors
// `xt::adapt` returns (xtensor_adaptor, xarray_adaptor), without copying. xtensor's strides are
// in elements, as are dms's, and are taken as they are, except that xtensor stores 0 for an axis
// of extent 1 (for broadcasting): dms writes the dense stride there instead, so a 1 x n tensor
// gives a matrix_view whose row_stride is n.
//
// Rejected with dms::error: element types dms has no dtype for (at compile time), column-major
// containers of rank >= 2 (dms's convention is row-major, extents[0] slowest; transpose first),
// rank above dms::max_rank, and negative strides.
//
// @code
//   xt::xtensor<float, 2> acts = xt::zeros<float>({n_tokens, n_embd});
//   dms::matrix_view<float> m = dms::as_matrix<float>(dms::view_of(acts));
//   dms::cpu::add_scaled_rows(m, scales, v);                    // writes into `acts`
// @endcode
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

#include <xtensor/xarray.hpp>
#include <xtensor/xlayout.hpp>
#include <xtensor/xtensor.hpp>

#include "dms/concepts/tensor_view.hpp"
#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN
namespace detail {

//! The view of any xtensor strided container (xtensor/xarray containers and adaptors).
template <class X> auto xtensor_view_of(X &x) {
  using pointer = decltype(x.data());
  using element = std::remove_pointer_t<pointer>;
  static_assert(element_type<std::remove_const_t<element>>,
                "dms::view_of(xtensor): the element type has no dms dtype (use float, double, "
                "f16_bits, bf16_bits, std::int8_t ... std::int64_t, std::uint8_t or bool)");

  const std::size_t rank = x.dimension();
  require(rank <= max_rank, errc::unsupported, [&] {
    return "xtensor of rank " + std::to_string(rank) + " exceeds dms::max_rank (" + std::to_string(max_rank) +
           ")";
  });
  require(rank < 2 || x.layout() != xt::layout_type::column_major, errc::unsupported, [] {
    return std::string("column-major xtensor containers are not supported: dms views are "
                       "row-major (transpose or copy into a row-major container first)");
  });

  std::array<std::int64_t, max_rank> extents{};
  std::array<std::int64_t, max_rank> strides{};
  const auto &shape = x.shape();
  const auto &xstrides = x.strides();
  std::int64_t dense = 1; // stride of a dense row-major axis at position i
  for (std::size_t i = rank; i-- > 0;) {
    extents[i] = static_cast<std::int64_t>(shape[i]);
    const auto s = static_cast<std::int64_t>(xstrides[i]);
    strides[i] = extents[i] <= 1 ? dense : s;
    dense = extents[i] <= 1 ? dense : strides[i] * extents[i];
  }
  return make_view(x.data(), std::span<const std::int64_t>(extents.data(), rank),
                   std::span<const std::int64_t>(strides.data(), rank));
}

} // namespace detail

template <class EC, std::size_t N, xt::layout_type L, class Tag>
struct tensor_adapter<xt::xtensor_container<EC, N, L, Tag>> {
  template <class X> static auto view(X &x) { return detail::xtensor_view_of(x); }
};

template <class EC, xt::layout_type L, class SC, class Tag>
struct tensor_adapter<xt::xarray_container<EC, L, SC, Tag>> {
  template <class X> static auto view(X &x) { return detail::xtensor_view_of(x); }
};

template <class EC, std::size_t N, xt::layout_type L, class Tag>
struct tensor_adapter<xt::xtensor_adaptor<EC, N, L, Tag>> {
  template <class X> static auto view(X &x) { return detail::xtensor_view_of(x); }
};

template <class EC, xt::layout_type L, class SC, class Tag>
struct tensor_adapter<xt::xarray_adaptor<EC, L, SC, Tag>> {
  template <class X> static auto view(X &x) { return detail::xtensor_view_of(x); }
};

DMS_NAMESPACE_END
