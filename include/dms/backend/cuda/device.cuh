// dms/backend/cuda/device.cuh: probing for a GPU, and the device memory dms allocates itself.
//
// Engines own their activations and weights; dms only reads and writes them through views.
// What dms allocates on its own (steering vectors, probe weights, scratch for a merge) lives in a
// `device_buffer<T>`: RAII, move-only, stream-ordered. Allocation, frees and copies are queued on
// the caller's stream (cudaMallocAsync / cudaFreeAsync / cudaMemcpyAsync), so they order with the
// kernels that use the buffer and never synchronize the device. Where the device has no
// stream-ordered allocator (cudaMallocAsync returns cudaErrorNotSupported) the buffer falls back
// to cudaMalloc / cudaFree.
//
// `gpu_available()` answers "can CUDA run here?" without throwing, whatever is missing: no GPU,
// no driver, a driver older than the runtime. Tests use `probe_gpu().reason` to say why they skip.
// Host code only; compiles with a plain C++ compiler.
//
// @code
//   dms::cuda::device_buffer<float> v(n_embd, stream);
//   v.copy_from_host(steering_vector);                 // std::span<const float>, async
//   dms::cuda::add_scaled_rows(acts, scales, v.span(), stream);
// @endcode
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include <cuda_runtime_api.h>

#include "dms/backend/cuda/error.cuh"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN
namespace cuda {

//! Result of probing the CUDA runtime: how many devices, or why there are none.
struct gpu_info {
  int device_count = 0;
  std::string reason; //!< empty when device_count > 0, else e.g. "cudaGetDeviceCount: ..."
  bool available() const noexcept { return device_count > 0; }
};

//! Probes the runtime (cudaGetDeviceCount). Never throws a CUDA error: a missing driver or
//! device is reported in `reason`.
inline gpu_info probe_gpu() {
  gpu_info info;
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError(); // not sticky; clear it for later callers
    info.reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorName(status) + " (" +
                  cudaGetErrorString(status) + ")";
    return info;
  }
  info.device_count = count;
  if (count == 0) info.reason = "cudaGetDeviceCount: 0 devices";
  return info;
}

//! True when at least one CUDA device is usable. noexcept: false on any failure.
inline bool gpu_available() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return count > 0;
}

//! Blocks until all work queued on `stream` has finished; throws on a failed kernel.
inline void synchronize(cudaStream_t stream) { DMS_CUDA_CHECK(cudaStreamSynchronize(stream)); }

//! `n` elements of `T` in device memory, allocated and freed in order on one stream.
//! The stream must outlive the buffer (the free is queued on it). Not thread-safe.
template <class T> class device_buffer {
  static_assert(std::is_trivially_copyable_v<T>, "device_buffer<T>: T is copied byte-wise");

public:
  device_buffer() noexcept = default;

  //! Uninitialized storage for `n` elements (no allocation when n == 0).
  device_buffer(std::size_t n, cudaStream_t stream) : stream_(stream) {
    if (n == 0) return;
    const std::size_t bytes = n * sizeof(T);
    require(bytes / sizeof(T) == n, errc::invalid_argument,
            [&] { return "device_buffer: " + std::to_string(n) + " elements overflow size_t"; });
    void *p = nullptr;
    const cudaError_t status = cudaMallocAsync(&p, bytes, stream);
    if (status == cudaErrorNotSupported) {
      (void)cudaGetLastError();
      DMS_CUDA_CHECK(cudaMalloc(&p, bytes));
      pooled_ = false;
    } else if (status != cudaSuccess) {
      detail::throw_cuda_error(status, "cudaMallocAsync of " + std::to_string(bytes) + " bytes", __FILE__,
                               __LINE__);
    }
    data_ = static_cast<T *>(p);
    size_ = n;
  }

  device_buffer(device_buffer &&other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)),
        stream_(other.stream_), pooled_(other.pooled_) {}

  device_buffer &operator=(device_buffer &&other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      stream_ = other.stream_;
      pooled_ = other.pooled_;
    }
    return *this;
  }

  device_buffer(const device_buffer &) = delete;
  device_buffer &operator=(const device_buffer &) = delete;

  ~device_buffer() { release(); }

  T *data() noexcept { return data_; }
  const T *data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  cudaStream_t stream() const noexcept { return stream_; }
  //! The device memory as a span (for passing to kernels; never dereference it on the host).
  std::span<T> span() noexcept { return {data_, size_}; }
  std::span<const T> span() const noexcept { return {data_, size_}; }

  //! Queues a copy of `src` into elements [offset, offset + src.size()). Pageable `src` may be
  //! reused when this returns; pinned `src` only after the stream reaches the copy.
  void copy_from_host(std::span<const T> src, std::size_t offset = 0) {
    check_range(src.size(), offset, "copy_from_host");
    if (src.empty()) return;
    DMS_CUDA_CHECK(
        cudaMemcpyAsync(data_ + offset, src.data(), src.size_bytes(), cudaMemcpyHostToDevice, stream_));
  }

  //! Queues a copy of elements [offset, offset + dst.size()) into `dst`; `dst` holds the data
  //! once the stream has been synchronized.
  void copy_to_host(std::span<T> dst, std::size_t offset = 0) const {
    check_range(dst.size(), offset, "copy_to_host");
    if (dst.empty()) return;
    DMS_CUDA_CHECK(
        cudaMemcpyAsync(dst.data(), data_ + offset, dst.size_bytes(), cudaMemcpyDeviceToHost, stream_));
  }

  //! Queues setting every byte to zero (0.0f for floats).
  void zero() {
    if (!empty()) DMS_CUDA_CHECK(cudaMemsetAsync(data_, 0, size_bytes(), stream_));
  }

private:
  void check_range(std::size_t n, std::size_t offset, const char *what) const {
    require(offset <= size_ && n <= size_ - offset, errc::invalid_argument, [&] {
      return std::string("device_buffer::") + what + ": " + std::to_string(n) + " elements at offset " +
             std::to_string(offset) + " exceed the buffer's " + std::to_string(size_);
    });
  }

  void release() noexcept {
    if (data_ == nullptr) return;
    // A destructor cannot throw; a failing free leaves nothing to recover, so its status is
    // dropped (and cleared, so it does not surface in an unrelated cudaGetLastError()).
    const cudaError_t status = pooled_ ? cudaFreeAsync(data_, stream_) : cudaFree(data_);
    if (status != cudaSuccess) (void)cudaGetLastError();
    data_ = nullptr;
    size_ = 0;
  }

  T *data_ = nullptr;
  std::size_t size_ = 0;
  cudaStream_t stream_ = nullptr;
  bool pooled_ = true;
};

} // namespace cuda
DMS_NAMESPACE_END
