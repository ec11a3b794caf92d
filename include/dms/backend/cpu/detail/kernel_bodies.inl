// dms/backend/cpu/detail/kernel_bodies.inl: the CPU kernels, written once for every level.
//
// No include guard on purpose: dms/backend/cpu/kernels.hpp includes this file once per dispatch
// level, inside a namespace that defines `vec` (a dms::simd::float_vec) and, for the AVX levels,
// inside a target region, so each copy is compiled for its own instruction set. Do not include it
// anywhere else. Bodies use no lambdas (Clang does not apply region attributes to them) and only
// unaligned vector loads and stores. Shapes are checked by the public wrappers, not here.

//! sum_i a[i] * b[i]. Four independent accumulators hide the FMA latency (4 cycles, two ports on
//! current x86 cores); the < 4*width remainder runs one vector at a time, then scalar.
inline float dot(const float *a, const float *b, std::size_t n) noexcept {
  constexpr std::size_t w = vec::width;
  typename vec::reg s0 = vec::zero(), s1 = vec::zero(), s2 = vec::zero(), s3 = vec::zero();
  std::size_t i = 0;
  for (; i + 4 * w <= n; i += 4 * w) {
    s0 = vec::fmadd(vec::load(a + i), vec::load(b + i), s0);
    s1 = vec::fmadd(vec::load(a + i + w), vec::load(b + i + w), s1);
    s2 = vec::fmadd(vec::load(a + i + 2 * w), vec::load(b + i + 2 * w), s2);
    s3 = vec::fmadd(vec::load(a + i + 3 * w), vec::load(b + i + 3 * w), s3);
  }
  for (; i + w <= n; i += w)
    s0 = vec::fmadd(vec::load(a + i), vec::load(b + i), s0);
  float s = vec::reduce_add(vec::add(vec::add(s0, s1), vec::add(s2, s3)));
  for (; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

//! y[i] += a * x[i]. Memory-bound; two vectors per iteration are enough to keep loads in flight.
inline void axpy(float a, const float *x, float *y, std::size_t n) noexcept {
  constexpr std::size_t w = vec::width;
  const typename vec::reg va = vec::set1(a);
  std::size_t i = 0;
  for (; i + 2 * w <= n; i += 2 * w) {
    vec::store(y + i, vec::fmadd(va, vec::load(x + i), vec::load(y + i)));
    vec::store(y + i + w, vec::fmadd(va, vec::load(x + i + w), vec::load(y + i + w)));
  }
  for (; i + w <= n; i += w)
    vec::store(y + i, vec::fmadd(va, vec::load(x + i), vec::load(y + i)));
  for (; i < n; ++i)
    y[i] += a * x[i];
}

inline void add_scaled_rows(matrix_view<float> rows, const float *row_scales, const float *v) noexcept {
  const auto cols = static_cast<std::size_t>(rows.cols);
  for (std::int64_t r = 0; r < rows.rows; ++r)
    axpy(row_scales[r], v, rows.row(r), cols);
}

inline void dot_rows(matrix_view<const float> rows, const float *w, float *out) noexcept {
  const auto cols = static_cast<std::size_t>(rows.cols);
  for (std::int64_t r = 0; r < rows.rows; ++r)
    out[r] = dot(rows.row(r), w, cols);
}
