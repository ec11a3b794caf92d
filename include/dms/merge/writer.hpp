// dms/merge/writer.hpp: writing a merged model, one tensor at a time, all or nothing.
//
// The engine hands the writer a plan and a provider that computes tensor i's f32 values on
// demand; the writer asks for each tensor exactly when it reaches it in the file, converts it to
// the output type in small blocks and streams it out, so a merge never holds the output model in
// memory. Two formats:
//  * safetensors: a Hugging Face directory as transformers' save_pretrained writes it
//    (`model.safetensors`, or `model-0000i-of-0000N.safetensors` shards of at most max_shard_bytes
//    plus `model.safetensors.index.json`), with the extra files the engine passes (config.json,
//    generation_config.json, tokenizer files). Tensors are written in the safetensors crate's
//    canonical order (dtype alignment, then name), which is also the order the provider is asked.
//  * GGUF (F32, F16, BF16, Q8_0 tensors; 1-D tensors stay F32 as llama.cpp writes them) with the
//    metadata of a GGUF input (tokenizer, hyper-parameters), block_count set to the output depth
//    and general.file_type to the output type. HF-named plans are renamed back to GGUF names and
//    their Q/K rows permuted as convert_hf_to_gguf.py does.
//
// Atomicity. Everything is written into a temporary sibling of the target (`.NAME.dms-tmp-PID-N`,
// dms/formats/atomic_file.hpp) and renamed into place at the end; an exception (including the
// engine's cancellation on SIGINT) removes it. A process killed outright (SIGKILL, power loss)
// cannot clean up: remove_stale_temporaries() deletes such leftovers of dead processes before
// the next write to the same target, and reports them.
#pragma once

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include "dms/config.hpp"
#include "dms/core/error.hpp"
#include "dms/core/progress.hpp"
#include "dms/core/thread_pool.hpp"
#include "dms/formats/gguf.hpp"
#include "dms/formats/gguf_names.hpp"
#include "dms/formats/gguf_writer.hpp"
#include "dms/formats/hf_checkpoint.hpp"
#include "dms/formats/quant.hpp"
#include "dms/formats/safetensors.hpp"
#include "dms/merge/plan.hpp"

DMS_NAMESPACE_BEGIN

constexpr ggml_type ggml_type_of(output_type t) noexcept {
  switch (t) {
  case output_type::f32: return ggml_type::f32;
  case output_type::f16: return ggml_type::f16;
  case output_type::bf16: return ggml_type::bf16;
  case output_type::q8_0: return ggml_type::q8_0;
  }
  return ggml_type::f32;
}
//! The safetensors dtype of a plain output type (q8_0 has none).
constexpr dtype storage_dtype_of(output_type t) noexcept {
  switch (t) {
  case output_type::f16: return dtype::f16;
  case output_type::bf16: return dtype::bf16;
  default: return dtype::f32;
  }
}
//! llama.cpp's general.file_type (LLAMA_FTYPE_ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7, MOSTLY_BF16 = 32).
constexpr std::uint32_t gguf_file_type_of(output_type t) noexcept {
  switch (t) {
  case output_type::f32: return 0;
  case output_type::f16: return 1;
  case output_type::q8_0: return 7;
  case output_type::bf16: return 32;
  }
  return 0;
}

//! Bytes tensor `t` takes in the output.
inline std::uint64_t output_bytes(const planned_tensor &t) {
  return *storage_bytes(ggml_type_of(t.type), t.numel());
}
//! Bytes of every tensor in the output.
inline std::uint64_t output_bytes(const merge_plan &p) {
  std::uint64_t n = 0;
  for (const auto &t : p.tensors) n += output_bytes(t);
  return n;
}

//! Receives consecutive pieces of one tensor's f32 values (each valid only during the call).
using tensor_chunk_sink = std::function<void(std::span<const float>)>;
//! Computes tensor i of the plan as f32 and hands it to `emit` in order: in one piece, or in
//! pieces whose lengths are multiples of 256 (whole blocks of every output type) but the last, so
//! an elementwise merge of a huge tensor never holds all of it.
using tensor_provider = std::function<void(std::size_t index, const tensor_chunk_sink &emit)>;

namespace detail {
//! Converts f32 values to the output type and streams them, `block` elements at a time:
//! 1 Mi elements (a multiple of every block size) keeps the staging buffer at 4 MiB. With a
//! pool, each block is converted in parts of at least 32 Ki elements (multiples of 256: whole
//! blocks of every type) on it: on one thread the BF16 encoding was a tenth of a linear merge,
//! with the other threads waiting.
template <class Sink>
void stream_encoded(output_type type, std::span<const float> values, Sink &&write, thread_pool *pool = nullptr) {
  constexpr std::size_t block = std::size_t{1} << 20, min_part = std::size_t{1} << 15;
  const ggml_type g = ggml_type_of(type);
  // Reused across calls (the engine emits one chunk at a time): a fresh vector per call was
  // zero-filled, and above malloc's mmap threshold page-faulted, for every chunk.
  thread_local std::vector<std::byte> staging;
  std::vector<std::byte> &buf = staging; // this thread's, also inside the pool's lambdas
  for (std::size_t i = 0; i < values.size(); i += block) {
    const std::size_t n = std::min(block, values.size() - i);
    buf.resize(static_cast<std::size_t>(*storage_bytes(g, n)));
    const std::size_t threads = pool ? pool->size() : 1;
    if (threads < 2 || n < 2 * min_part) {
      quantize(g, values.subspan(i, n), buf);
    } else {
      const std::size_t part = std::max(min_part, (n / threads + 255) / 256 * 256);
      pool->parallel_for(n, part, [&](std::size_t lo, std::size_t hi) {
        const auto at = static_cast<std::size_t>(*storage_bytes(g, lo));
        const auto bytes = static_cast<std::size_t>(*storage_bytes(g, hi - lo));
        quantize(g, values.subspan(i + lo, hi - lo), std::span<std::byte>(buf).subspan(at, bytes));
      });
    }
    write(std::span<const std::byte>(buf));
  }
}

//! The pid in a temporary name `.NAME.dms-tmp-PID-N`, if `entry` is one for `target_name`.
inline std::optional<long> temporary_owner(std::string_view entry, std::string_view target_name) {
  const std::string prefix = "." + std::string(target_name) + ".dms-tmp-";
  if (!entry.starts_with(prefix)) return std::nullopt;
  std::string_view rest = entry.substr(prefix.size());
  const auto dash = rest.find('-');
  if (dash == std::string_view::npos || dash == 0) return std::nullopt;
  long pid = 0;
  for (char c : rest.substr(0, dash)) {
    if (c < '0' || c > '9') return std::nullopt;
    pid = pid * 10 + (c - '0');
  }
  return pid;
}
} // namespace detail

//! Removes temporaries of `target` left by processes that no longer run (a merge killed with
//! SIGKILL); returns what it removed. Temporaries of live processes are left alone.
inline std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path &target) {
  namespace fs = std::filesystem;
  std::vector<fs::path> removed;
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return removed;
  for (const auto &e : fs::directory_iterator(dir, ec)) {
    const auto pid = detail::temporary_owner(e.path().filename().string(), target.filename().string());
    if (!pid) continue;
    const bool alive = ::kill(static_cast<pid_t>(*pid), 0) == 0 || errno == EPERM;
    if (alive) continue;
    fs::remove_all(e.path(), ec);
    if (!ec) removed.push_back(e.path());
  }
  return removed;
}

//! Refuses to start a write that cannot fit: `need` bytes against the free space where `target`
//! will be created.
inline void check_free_space(const std::filesystem::path &target, std::uint64_t need) {
  namespace fs = std::filesystem;
  fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  std::error_code ec;
  const fs::space_info s = fs::space(dir, ec);
  require(!ec, errc::io, [&] { return "cannot query free space in " + dir.string() + ": " + ec.message(); },
          {target.string()});
  require(s.available >= need, errc::io, [&] {
    return "not enough free space: the merged model needs " + format_bytes(need) + ", " + dir.string() + " has " +
           format_bytes(s.available) + " available";
  }, {target.string()});
}

//! The order write_safetensors_output asks the provider for tensors: the crate's canonical order.
inline std::vector<std::size_t> safetensors_write_order(const merge_plan &plan) {
  std::vector<std::size_t> order(plan.tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto oa = safetensors_dtype_of(storage_dtype_of(plan.tensors[a].type)).order;
    const auto ob = safetensors_dtype_of(storage_dtype_of(plan.tensors[b].type)).order;
    if (oa != ob) return oa > ob;
    return plan.tensors[a].name < plan.tensors[b].name;
  });
  return order;
}

//! Writes the directory `target` (which must not exist). `files` are extra files (name -> contents).
inline void write_safetensors_output(const merge_plan &plan, const std::filesystem::path &target,
                                     const tensor_provider &provide, std::uint64_t max_shard_bytes,
                                     const std::map<std::string, std::string> &files, thread_pool *pool = nullptr) {
  hf_checkpoint_writer w({.max_shard_bytes = max_shard_bytes});
  w.set_metadata("format", "pt");
  for (std::size_t i : safetensors_write_order(plan)) {
    const planned_tensor &t = plan.tensors[i];
    w.add(t.name, storage_dtype_of(t.type), t.shape, [&provide, &t, i, pool](tensor_sink &sink) {
      provide(i, [&](std::span<const float> v) {
        detail::stream_encoded(t.type, v, [&](std::span<const std::byte> b) { sink.write(b); }, pool);
      });
    });
  }
  for (const auto &[name, contents] : files) w.add_file(name, contents);
  w.write(target);
}

//! The GGUF name of an output tensor and the head count its rows are permuted with (0: none).
struct gguf_output_name {
  std::string name;
  std::int64_t permute_heads = 0;
};

inline gguf_output_name gguf_name_of(const merge_plan &plan, const planned_tensor &t, const gguf_file &meta) {
  if (plan.naming == tensor_naming::gguf) return {t.name, 0};
  auto g = hf_to_gguf_name(t.name);
  require(g.has_value(), errc::unsupported,
          [] { return std::string("has no GGUF name in the Llama table: write safetensors instead"); },
          {{}, std::nullopt, t.name});
  const std::string arch(meta.architecture());
  std::int64_t n_head = 0, n_head_kv = 0;
  if (const auto *v = meta.find(arch + ".attention.head_count")) n_head = v->to_integer<std::int64_t>();
  n_head_kv = n_head;
  if (const auto *v = meta.find(arch + ".attention.head_count_kv")) n_head_kv = v->to_integer<std::int64_t>();
  return {*g, llama_qk_permute_heads(t.name, n_head, n_head_kv).value_or(0)};
}

//! Writes the GGUF file `target` (which must not exist) with the metadata of `meta`.
inline void write_gguf_output(const merge_plan &plan, const std::filesystem::path &target,
                              const tensor_provider &provide, const gguf_file &meta, thread_pool *pool = nullptr) {
  require(!std::filesystem::exists(target), errc::io, [] { return std::string("already exists; refusing to overwrite"); },
          {target.string()});
  gguf_writer w(static_cast<std::uint32_t>(meta.alignment()));
  w.copy_metadata(meta);
  const std::string arch(meta.architecture());
  if (meta.find(arch + ".block_count")) w.set(arch + ".block_count", static_cast<std::uint32_t>(plan.n_layers));
  output_type main_type = output_type::f32;
  for (const auto &t : plan.tensors)
    if (t.shape.size() >= 2) main_type = t.type;
  w.set("general.file_type", gguf_file_type_of(main_type));
  for (std::size_t i = 0; i < plan.tensors.size(); ++i) {
    const planned_tensor &t = plan.tensors[i];
    const gguf_output_name g = gguf_name_of(plan, t, meta);
    w.add_tensor(g.name, ggml_type_of(t.type), t.shape, [&provide, &t, i, g, pool](gguf_tensor_sink &sink) {
      if (g.permute_heads == 0) {
        provide(i, [&](std::span<const float> v) {
          detail::stream_encoded(t.type, v, [&](std::span<const std::byte> b) { sink.write(b); }, pool);
        });
        return;
      }
      // Q and K rows move between pieces: gather the (small) tensor first.
      std::vector<float> whole;
      whole.reserve(static_cast<std::size_t>(t.numel()));
      provide(i, [&](std::span<const float> v) { whole.insert(whole.end(), v.begin(), v.end()); });
      std::span<const float> v = whole;
      std::vector<float> permuted;
      {
        permuted.resize(v.size());
        const std::int64_t rows = t.shape[0];
        const std::int64_t cols = t.shape.size() >= 2 ? static_cast<std::int64_t>(v.size()) / rows : 1;
        permute_qk<float>(v, permuted, rows, cols, g.permute_heads);
        v = permuted;
      }
      detail::stream_encoded(t.type, v, [&](std::span<const std::byte> b) { sink.write(b); }, pool);
    });
  }
  w.write(target);
}

DMS_NAMESPACE_END
