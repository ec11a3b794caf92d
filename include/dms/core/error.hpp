// dms/core/error.hpp: the exception every dms failure is reported with.
//
// A bad checkpoint must be diagnosable from the message alone, so an error carries where it
// happened (file, byte offset, tensor name) next to what was wrong and what was expected. The
// fields stay available separately for programs that want to react rather than print.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

//! Broad class of a failure, for callers that branch on it (a CLI maps them to exit codes).
enum class errc : std::uint8_t {
  invalid_argument, //!< a caller passed a value outside the documented domain
  invalid_format,   //!< a file or buffer is malformed (bad magic, truncated, inconsistent)
  shape_mismatch,   //!< tensors that must agree in shape or width do not
  unsupported,      //!< well-formed, but a feature dms does not implement (dtype, architecture)
  io,               //!< the operating system refused (open, read, write, rename, mmap)
  numeric,          //!< NaN or infinity where a finite value is required
  device,           //!< a CUDA or other accelerator call failed
};

constexpr std::string_view to_string(errc c) noexcept {
  switch (c) {
  case errc::invalid_argument: return "invalid argument";
  case errc::invalid_format: return "invalid format";
  case errc::shape_mismatch: return "shape mismatch";
  case errc::unsupported: return "unsupported";
  case errc::io: return "I/O error";
  case errc::numeric: return "numeric error";
  case errc::device: return "device error";
  }
  return "error";
}

//! Where an error happened. Every field is optional; what is known is printed.
struct error_context {
  error_context() = default;
  error_context(std::string file_path, std::optional<std::uint64_t> byte_offset = std::nullopt,
                std::string tensor_name = {})
      : file(std::move(file_path)), offset(byte_offset), tensor(std::move(tensor_name)) {}

  std::string file;                    //!< path of the file being read or written
  std::optional<std::uint64_t> offset; //!< byte offset inside `file`
  std::string tensor;                  //!< tensor (or metadata key) being processed
};

//! The exception dms throws. what() reads like
//! "model.gguf: offset 4096: tensor 'blk.0.attn_q.weight': invalid format: data runs past the
//!  end of the file (expected <= 1048576 bytes, got 2097152)".
class error : public std::runtime_error {
public:
  error(errc code, std::string_view message, error_context where = {})
      : std::runtime_error(format(code, message, where)), code_(code), where_(std::move(where)),
        message_(message) {}

  errc code() const noexcept { return code_; }
  const error_context &where() const noexcept { return where_; }
  //! The bare message, without location and class.
  const std::string &message() const noexcept { return message_; }

private:
  static std::string format(errc code, std::string_view message, const error_context &where) {
    std::string s;
    if (!where.file.empty()) s += where.file + ": ";
    if (where.offset) s += "offset " + std::to_string(*where.offset) + ": ";
    if (!where.tensor.empty()) s += "tensor '" + where.tensor + "': ";
    s += to_string(code);
    s += ": ";
    s += message;
    return s;
  }

  errc code_;
  error_context where_;
  std::string message_;
};

//! Throws `error(code, message, where)` unless `condition` holds. Builds the message only on
//! failure, so it costs a branch on the success path.
template <class MessageFn>
void require(bool condition, errc code, MessageFn &&message, const error_context &where = {}) {
  if (DMS_UNLIKELY(!condition)) throw error(code, std::forward<MessageFn>(message)(), where);
}

DMS_NAMESPACE_END
