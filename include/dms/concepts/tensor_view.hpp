// dms/concepts/tensor_view.hpp: the non-owning view through which dms reads users' tensors.
//
// Engines own their memory and their tensor types; dms never copies or allocates them. Every
// dms interface therefore takes a view: a data pointer, a dtype, extents and strides (in
// elements, row-major convention: extents[0] is the slowest axis), and the memory space the
// pointer lives in. This is ggml's ne/nb and mdspan's layout_stride, with a runtime dtype so that
// f16/bf16 checkpoints and f32 activations travel through the same interfaces.
//
// A view is built from a raw pointer (`make_view`), a `std::span` or contiguous range of a dms
// element type, an xtensor container (dms/backend/cpu/xtensor_adapter.hpp), or any user type
// through one of two customization points, tried in this order:
//   1. a member function `dms_view()` returning a `dms::tensor_view` or `dms::const_tensor_view`;
//   2. a specialization of `dms::tensor_adapter<T>` with `static auto view(T&)` (for types the
//      user cannot change).
// `dms::view_of(x)` applies them; the concept `dms::viewable<T>` says whether it works.
//
// @code
//   struct my_tensor {                       // the user's own type
//     std::vector<float> storage; std::int64_t rows, cols;
//     dms::tensor_view dms_view() { return dms::make_view(storage.data(), {rows, cols}); }
//   };
//   static_assert(dms::viewable<my_tensor>);
//   my_tensor t{std::vector<float>(6), 2, 3};
//   dms::matrix_view<float> m = dms::as_matrix<float>(dms::view_of(t));   // 2 x 3, checked
// @endcode
//
// Thread safety: views are trivially copyable values; using one from several threads is as safe
// as the memory it points to. Nothing here allocates.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>

#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

//! GGUF and safetensors tensors of the models dms targets have at most four axes.
inline constexpr std::size_t max_rank = 4;

//! Where a view's pointer may be dereferenced.
enum class memory_space : std::uint8_t {
  host, //!< ordinary (or pinned) CPU memory
  cuda, //!< CUDA device memory of device `device`
};

//! A non-owning, strided view of a tensor of runtime dtype. `Byte` is `std::byte` (mutable) or
//! `const std::byte` (read-only); use the aliases `tensor_view` and `const_tensor_view`.
template <class Byte> struct basic_tensor_view {
  Byte *data = nullptr;                          //!< first element (not necessarily aligned)
  dtype type = dtype::f32;                       //!< element type
  std::uint8_t rank = 0;                         //!< number of axes in use (0 = scalar)
  memory_space space = memory_space::host;       //!< where `data` lives
  std::int32_t device = 0;                       //!< device ordinal when space != host
  std::array<std::int64_t, max_rank> extents{};  //!< size of each axis; unused axes are 1
  std::array<std::int64_t, max_rank> strides{};  //!< step between neighbours, in elements

  //! Number of elements (1 for a scalar).
  constexpr std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (std::size_t i = 0; i < rank; ++i) n *= extents[i];
    return n;
  }
  constexpr std::size_t element_size() const noexcept { return size_of(type); }
  //! True when the elements are dense and row-major (no gaps, no transposition).
  constexpr bool is_contiguous() const noexcept {
    std::int64_t expected = 1;
    for (std::size_t i = rank; i-- > 0;) {
      if (extents[i] != 1 && strides[i] != expected) return false;
      expected *= extents[i];
    }
    return true;
  }
  //! Bytes spanned by a contiguous view.
  constexpr std::size_t size_bytes() const noexcept {
    return static_cast<std::size_t>(numel()) * element_size();
  }
  //! Typed pointer; throws if `T` is not this view's dtype.
  template <element_type T>
  auto data_as() const -> std::conditional_t<std::is_const_v<Byte>, const T *, T *> {
    require(type == dtype_of<T>, errc::invalid_argument, [&] {
      return std::string("view holds ") + std::string(name_of(type)) + ", requested " +
             std::string(name_of(dtype_of<T>));
    });
    using P = std::conditional_t<std::is_const_v<Byte>, const T *, T *>;
    return reinterpret_cast<P>(data);
  }

  //! A mutable view converts to a read-only one. (A template on a dependent type rather than a
  //! requires-clause: nvcc and clang warn about a conversion to itself in the const instantiation.)
  template <class B = Byte, std::enable_if_t<!std::is_const_v<B>, int> = 0>
  constexpr operator basic_tensor_view<const B>() const noexcept {
    return {data, type, rank, space, device, extents, strides};
  }
};

using tensor_view = basic_tensor_view<std::byte>;
using const_tensor_view = basic_tensor_view<const std::byte>;

namespace detail {
template <class T> struct is_tensor_view : std::false_type {};
template <class B> struct is_tensor_view<basic_tensor_view<B>> : std::true_type {};

template <class Byte>
constexpr basic_tensor_view<Byte> build_view(Byte *data, dtype type,
                                             std::span<const std::int64_t> extents,
                                             std::span<const std::int64_t> strides,
                                             memory_space space, std::int32_t device) {
  require(extents.size() <= max_rank, errc::invalid_argument, [&] {
    return "rank " + std::to_string(extents.size()) + " exceeds dms::max_rank (" +
           std::to_string(max_rank) + ")";
  });
  require(strides.empty() || strides.size() == extents.size(), errc::invalid_argument, [&] {
    return std::to_string(strides.size()) + " strides given for " +
           std::to_string(extents.size()) + " extents";
  });
  basic_tensor_view<Byte> v;
  v.data = data;
  v.type = type;
  v.rank = static_cast<std::uint8_t>(extents.size());
  v.space = space;
  v.device = device;
  v.extents.fill(1);
  v.strides.fill(0);
  // Overflow guard: a corrupt header must not yield a view whose byte size wraps around.
  const std::int64_t limit = std::numeric_limits<std::int64_t>::max() /
                             static_cast<std::int64_t>(size_of(type));
  // Zero extents count as 1 here: the strides of the other axes are still computed, and must
  // not overflow even when the tensor holds no element.
  std::int64_t n = 1;
  for (std::size_t i = 0; i < extents.size(); ++i) {
    require(extents[i] >= 0, errc::invalid_argument,
            [&] { return "negative extent " + std::to_string(extents[i]); });
    const std::int64_t e = extents[i] == 0 ? 1 : extents[i];
    require(n <= limit / e, errc::invalid_argument,
            [&] { return std::string("element count overflows 64 bits"); });
    n *= e;
    v.extents[i] = extents[i];
  }
  std::int64_t step = 1;
  for (std::size_t i = extents.size(); i-- > 0;) {
    v.strides[i] = strides.empty() ? step : strides[i];
    step *= v.extents[i] == 0 ? 1 : v.extents[i];
  }
  return v;
}
} // namespace detail

//! Contiguous row-major view of `extents` elements at `data`.
template <element_type T>
constexpr auto make_view(T *data, std::initializer_list<std::int64_t> extents,
                         memory_space space = memory_space::host, std::int32_t device = 0) {
  using B = std::conditional_t<std::is_const_v<T>, const std::byte, std::byte>;
  return detail::build_view<B>(reinterpret_cast<B *>(data), dtype_of<T>,
                               std::span(extents.begin(), extents.size()), {}, space, device);
}

//! Strided view; `strides` are in elements and may be zero (broadcast) but not negative.
template <element_type T>
constexpr auto make_view(T *data, std::span<const std::int64_t> extents,
                         std::span<const std::int64_t> strides,
                         memory_space space = memory_space::host, std::int32_t device = 0) {
  using B = std::conditional_t<std::is_const_v<T>, const std::byte, std::byte>;
  for (auto s : strides)
    require(s >= 0, errc::invalid_argument, [] { return std::string("negative stride"); });
  return detail::build_view<B>(reinterpret_cast<B *>(data), dtype_of<T>, extents, strides, space,
                               device);
}

//! Untyped contiguous view, for storage whose dtype is only known at run time (file readers).
template <class Byte>
  requires std::is_same_v<std::remove_const_t<Byte>, std::byte>
constexpr basic_tensor_view<Byte> make_view(Byte *data, dtype type,
                                            std::span<const std::int64_t> extents) {
  return detail::build_view<Byte>(data, type, extents, {}, memory_space::host, 0);
}

//! Customization point for types the user cannot change: specialize with
//! `static dms::tensor_view view(T&)` (or returning const_tensor_view).
template <class T> struct tensor_adapter;

namespace detail {
template <class T>
concept has_member_view = requires(T &t) {
  { t.dms_view() } -> std::convertible_to<const_tensor_view>;
};
template <class T>
concept has_adapter = requires(T &t) {
  { tensor_adapter<std::remove_cvref_t<T>>::view(t) } -> std::convertible_to<const_tensor_view>;
};
template <class T>
concept element_range = std::ranges::contiguous_range<T> && std::ranges::sized_range<T> &&
                        element_type<std::remove_reference_t<std::ranges::range_reference_t<T>>>;
} // namespace detail

//! The view of `x`, by the first applicable rule listed at the top of this header.
template <class T> constexpr auto view_of(T &&x) {
  using U = std::remove_cvref_t<T>;
  if constexpr (detail::is_tensor_view<U>::value) {
    return x;
  } else if constexpr (detail::has_member_view<T>) {
    return x.dms_view();
  } else if constexpr (detail::has_adapter<T>) {
    return tensor_adapter<U>::view(x);
  } else if constexpr (detail::element_range<T>) {
    return make_view(std::ranges::data(x), {static_cast<std::int64_t>(std::ranges::size(x))});
  } else {
    static_assert(detail::element_range<T>,
                  "dms::view_of: this type is not viewable. Give it a member `dms_view()` "
                  "returning dms::tensor_view, specialize dms::tensor_adapter<T>, or pass a "
                  "contiguous range of a dms element type (float, f16_bits, ...).");
  }
}

//! T can be handed to any dms interface that takes a tensor.
//! (Spelled out rather than `requires { view_of(t); }`: view_of's static_assert for the
//! unviewable case would be a hard error, not a false.)
template <class T>
concept viewable = detail::is_tensor_view<std::remove_cvref_t<T>>::value || detail::has_member_view<T> ||
                   detail::has_adapter<T> || detail::element_range<T>;

namespace archetypes {
//! The least a user tensor type provides to be viewable: a member dms_view().
struct tensor {
  float storage[1] = {0.0f};
  tensor_view dms_view() { return make_view(storage, {1}); }
  const_tensor_view dms_view() const { return make_view(storage, {1}); }
};
} // namespace archetypes

//! A typed 2-D view: `rows` rows of `cols` elements, `row_stride` elements apart. The shape of
//! activations at a hook site (one row per token) and of weight matrices; the hot paths use this
//! rather than the runtime-typed view.
template <class T> struct matrix_view {
  T *data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t row_stride = 0; //!< elements between the starts of consecutive rows (>= cols)

  constexpr T *row(std::int64_t r) const noexcept { return data + r * row_stride; }
  constexpr std::span<T> row_span(std::int64_t r) const noexcept {
    return {row(r), static_cast<std::size_t>(cols)};
  }
  constexpr T &operator()(std::int64_t r, std::int64_t c) const noexcept {
    return data[r * row_stride + c];
  }
  template <class U = T, std::enable_if_t<!std::is_const_v<U>, int> = 0>
  constexpr operator matrix_view<const U>() const noexcept {
    return {data, rows, cols, row_stride};
  }
};

//! Checked conversion of a rank-2 (or rank-1, as one row) view with unit inner stride.
template <class T, class Byte> matrix_view<T> as_matrix(const basic_tensor_view<Byte> &v) {
  static_assert(std::is_const_v<T> || !std::is_const_v<Byte>,
                "dms::as_matrix: a const_tensor_view gives only matrix_view<const T>");
  require(v.rank == 1 || v.rank == 2, errc::shape_mismatch,
          [&] { return "expected a matrix (rank 1 or 2), got rank " + std::to_string(v.rank); });
  const std::size_t inner = v.rank - 1u;
  require(v.extents[inner] <= 1 || v.strides[inner] == 1, errc::invalid_argument,
          [] { return std::string("matrix rows must be contiguous (inner stride 1)"); });
  T *p = v.template data_as<std::remove_const_t<T>>();
  if (v.rank == 1) return {p, 1, v.extents[0], v.extents[0]};
  return {p, v.extents[0], v.extents[1], v.strides[0]};
}

DMS_NAMESPACE_END
