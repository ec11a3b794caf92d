// dms/merge/sources.hpp: the models a merge reads, whatever their format, as named f32 tensors.
//
// The engine asks a source for "elements [offset, offset + n) of tensor T, as f32" and nothing
// else, so a merge may mix
//  * Hugging Face directories of safetensors (single file or sharded; dms/formats/hf_checkpoint.hpp)
//    and single .safetensors files: F32/F16/BF16/F64 converted on the fly from the mapping;
//  * GGUF files, dequantized on the fly (dms::cpu::dequantize when the program links dms::cpu,
//    the scalar reference dms::dequantize otherwise: the same bits);
//  * a PEFT LoRA adapter on top of any of these: W + scale B A (scale alpha / r, or alpha / sqrt(r)
//    with rsLoRA), modules_to_save tensors replaced (dms/formats/peft.hpp).
// Nothing is loaded up front beyond the headers: memory is what the engine asks for. Pages of a
// mapping count in the process's resident set once touched, so the engine calls release() on each
// tensor it is done with: the pages leave the process (madvise MADV_DONTNEED; they stay in the
// page cache), and resident memory stays at a few tensors however large the model.
//
// Naming. GGUF and Hugging Face name the same weights differently, and convert_hf_to_gguf.py
// permutes the rows of Q and K (dms/formats/gguf_names.hpp). A source therefore serves one of two
// namings, chosen by the engine for the whole merge:
//  * tensor_naming::hf — GGUF names are mapped to HF names and Q/K rows un-permuted, so GGUF,
//    safetensors and LoRA adapters (which use HF names) can be merged together. Used whenever any
//    input is not a plain GGUF file, or the output is safetensors.
//  * tensor_naming::gguf — names kept as stored and no permutation, used when every input is a
//    plain GGUF file and the output is GGUF: no round trip, and architectures whose tensors the
//    Llama name table does not list (Qwen2 biases, rope_freqs, ...) still merge.
// Merging is equivariant under a row permutation applied to every input (each method works per
// element, per row or on whole-tensor sums), so both namings give the same model; the only
// difference is which element a DARE/DELLA random draw is keyed to.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dms/config.hpp"
#include "dms/core/dtype.hpp"
#include "dms/core/error.hpp"
#include "dms/formats/ggml_type.hpp"
#include "dms/formats/gguf.hpp"
#include "dms/formats/gguf_names.hpp"
#include "dms/formats/hf_checkpoint.hpp"
#include "dms/formats/peft.hpp"
#include "dms/formats/quant.hpp"
#include "dms/formats/safetensors.hpp"
#include "dms/merge/config.hpp"
#include <sys/mman.h>
#include <unistd.h>
#if defined(DMS_HAS_CPU_BACKEND)
#include "dms/backend/cpu/dequant.hpp"
#endif

DMS_NAMESPACE_BEGIN

//! Which naming scheme sources serve (see the header comment).
enum class tensor_naming : std::uint8_t { hf, gguf };

//! What the engine needs to know about one tensor of a source.
struct source_tensor {
  std::string name;                  //!< in the source's naming
  std::vector<std::int64_t> shape;   //!< row-major
  std::string stored_type;           //!< as stored: "BF16", "Q4_1", ... (for plans)
  std::optional<dtype> float_type;   //!< f32/f16/bf16/f64 when stored as such; nullopt when quantized
  std::uint64_t stored_bytes = 0;    //!< bytes read from disk for the whole tensor (progress)
  std::uint64_t numel() const noexcept {
    std::uint64_t n = 1;
    for (auto e : shape) n *= static_cast<std::uint64_t>(e);
    return n;
  }
};

//! A model the merge reads. Immutable after construction: reads may run on many threads.
class model_source {
public:
  virtual ~model_source() = default;
  //! The path (and adapter) as the config names it, for messages.
  const std::string &label() const noexcept { return label_; }
  //! Every tensor, sorted by name.
  const std::vector<source_tensor> &tensors() const noexcept { return tensors_; }
  const source_tensor *find(std::string_view name) const {
    auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                               [](const source_tensor &t, std::string_view n) { return t.name < n; });
    return it != tensors_.end() && it->name == name ? &*it : nullptr;
  }
  const source_tensor &at(std::string_view name) const {
    const source_tensor *t = find(name);
    require(t != nullptr, errc::invalid_argument, [&] { return "no tensor named '" + std::string(name) + "'"; },
            {label_});
    return *t;
  }
  //! Number of blocks: 1 + the largest layer index among the tensor names (0 without blocks).
  std::int64_t n_layers() const noexcept { return n_layers_; }

  //! Elements [offset, offset + out.size()) of tensor `name` (row-major), as f32.
  virtual void read(const source_tensor &t, std::uint64_t offset, std::span<float> out) const = 0;
  //! Whether reading any range of `t` computes the whole tensor (un-permuted GGUF Q/K, LoRA
  //! deltas): the engine then reads it in one piece instead of repeating the work per piece.
  virtual bool reads_whole(const source_tensor &) const { return false; }
  //! The engine will not read elements [offset, offset + count) of `t` again soon: drop their
  //! mapped pages from the process (they stay in the page cache; a later read faults them back
  //! in). Only a hint: never changes what read() gives.
  virtual void release(const source_tensor &, std::uint64_t /*offset*/, std::uint64_t /*count*/) const {}
  //! Files the source reads (the engine refuses to write over any of them).
  virtual std::vector<std::filesystem::path> files() const = 0;
  //! The Hugging Face directory whose config.json and tokenizer files belong to this model, if any.
  virtual std::optional<std::filesystem::path> hf_directory() const { return std::nullopt; }
  //! The GGUF file whose metadata describes this model, if any.
  virtual const gguf_file *gguf() const { return nullptr; }

protected:
  explicit model_source(std::string label) : label_(std::move(label)) {}
  void finish_index() {
    std::sort(tensors_.begin(), tensors_.end(), [](const auto &a, const auto &b) { return a.name < b.name; });
    for (std::size_t i = 1; i < tensors_.size(); ++i)
      require(tensors_[i - 1].name != tensors_[i].name, errc::invalid_format,
              [&] { return "two tensors map to the same name (after GGUF -> HF renaming)"; },
              {label_, std::nullopt, tensors_[i].name});
    n_layers_ = 0;
    for (const auto &t : tensors_)
      if (auto l = layer_index(t.name)) n_layers_ = std::max<std::int64_t>(n_layers_, *l + 1);
  }
  static void check_range(const source_tensor &t, std::uint64_t offset, std::size_t n, const std::string &label) {
    require(offset + n <= t.numel(), errc::invalid_argument, [&] {
      return "read of elements [" + std::to_string(offset) + ", " + std::to_string(offset + n) + ") past the end (" +
             std::to_string(t.numel()) + " elements)";
    }, {label, std::nullopt, t.name});
  }

  std::string label_;
  std::vector<source_tensor> tensors_;
  std::int64_t n_layers_ = 0;
};

namespace detail {
//! madvise(MADV_DONTNEED) over the pages of `bytes`, widened by 2 MiB on each side (clamped to
//! `file`, the whole mapping). The widening is needed: a page fault may map a whole large folio
//! of the page cache (up to 2 MiB with transparent huge pages), including pages of a neighbouring
//! chunk or tensor that was already released; without it ~7% of every input stayed resident.
inline void drop_mapped_pages(std::span<const std::byte> bytes, std::span<const std::byte> file) noexcept {
  if (bytes.empty() || file.empty()) return;
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  constexpr std::uintptr_t widen = std::uintptr_t{2} << 20;
  const auto lo = reinterpret_cast<std::uintptr_t>(file.data());
  const auto hi = lo + file.size();
  auto first = reinterpret_cast<std::uintptr_t>(bytes.data());
  auto last = first + bytes.size();
  first = first - lo > widen ? first - widen : lo;
  last = hi - last > widen ? last + widen : hi;
  const std::uintptr_t begin = first / page * page, end = (last + page - 1) / page * page;
  ::madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

inline bool file_starts_with_gguf_magic(const std::filesystem::path &p) {
  std::ifstream in(p, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::string_view(magic, 4) == "GGUF";
}

inline void dequantize_any(ggml_type type, std::span<const std::byte> src, std::span<float> dst) {
#if defined(DMS_HAS_CPU_BACKEND)
  cpu::dequantize(type, src, dst);
#else
  dequantize(type, src, dst);
#endif
}
} // namespace detail

//! safetensors: a Hugging Face directory (single or sharded) or one .safetensors file.
class safetensors_source final : public model_source {
public:
  explicit safetensors_source(const std::filesystem::path &path) : model_source(path.string()) {
    if (std::filesystem::is_directory(path)) {
      ckpt_ = std::make_unique<hf_checkpoint>(path);
      dir_ = path;
      for (const auto &name : ckpt_->tensor_names()) add(ckpt_->file_of(name), ckpt_->at(name));
    } else {
      file_ = std::make_unique<safetensors_file>(path.string());
      for (const auto &t : file_->tensors()) add(*file_, t);
    }
    finish_index();
  }
  void read(const source_tensor &t, std::uint64_t offset, std::span<float> out) const override {
    check_range(t, offset, out.size(), label_);
    const safetensors_file &f = ckpt_ ? ckpt_->file_of(t.name) : *file_;
    const safetensors_tensor &st = f.at(t.name);
    require(t.float_type.has_value(), errc::unsupported,
            [&] { return "dtype " + st.dtype_name + " cannot be merged (expected F32, F16, BF16 or F64)"; },
            {f.path(), st.header_offset, t.name});
    const std::size_t es = size_of(*t.float_type);
    safetensors_file::convert_to_f32(f.raw(st).subspan(static_cast<std::size_t>(offset) * es, out.size() * es),
                                     *t.float_type, out);
  }
  void release(const source_tensor &t, std::uint64_t offset, std::uint64_t count) const override {
    if (!t.float_type || offset >= t.numel()) return;
    const safetensors_file &f = ckpt_ ? ckpt_->file_of(t.name) : *file_;
    const std::size_t es = size_of(*t.float_type);
    count = std::min(count, t.numel() - offset);
    detail::drop_mapped_pages(f.raw(f.at(t.name)).subspan(static_cast<std::size_t>(offset) * es,
                                                          static_cast<std::size_t>(count) * es),
                              f.bytes());
  }
  std::vector<std::filesystem::path> files() const override {
    std::vector<std::filesystem::path> out;
    if (ckpt_)
      for (std::size_t i = 0; i < ckpt_->shard_count(); ++i) out.emplace_back(ckpt_->shard(i).path());
    else
      out.emplace_back(file_->path());
    return out;
  }
  std::optional<std::filesystem::path> hf_directory() const override {
    if (dir_) return dir_;
    return std::nullopt;
  }

private:
  void add(const safetensors_file &, const safetensors_tensor &st) {
    source_tensor t;
    t.name = st.name;
    t.shape = st.shape;
    t.stored_type = st.dtype_name;
    if (st.type && is_floating(*st.type)) t.float_type = st.type;
    t.stored_bytes = st.size_bytes();
    tensors_.push_back(std::move(t));
  }
  std::unique_ptr<hf_checkpoint> ckpt_;
  std::unique_ptr<safetensors_file> file_;
  std::optional<std::filesystem::path> dir_;
};

//! A GGUF file, in either naming.
class gguf_source final : public model_source {
public:
  gguf_source(const std::filesystem::path &path, tensor_naming naming)
      : model_source(path.string()), file_(path.string()) {
    std::int64_t n_head = 0, n_head_kv = 0;
    if (naming == tensor_naming::hf) {
      const std::string arch(file_.architecture());
      if (const auto *v = file_.find(arch + ".attention.head_count")) n_head = v->to_integer<std::int64_t>();
      n_head_kv = n_head;
      if (const auto *v = file_.find(arch + ".attention.head_count_kv")) n_head_kv = v->to_integer<std::int64_t>();
    }
    for (const auto &gt : file_.tensors()) {
      require(can_dequantize(gt.type), errc::unsupported, [&] {
        return "tensor type " + std::string(gt.traits().name) + " cannot be dequantized for merging";
      }, {label_, gt.info_offset, gt.name});
      source_tensor t;
      t.name = gt.name;
      entry e{&gt, 0};
      if (naming == tensor_naming::hf) {
        if (auto hf = gguf_to_hf_name(gt.name)) t.name = *hf;
        if (auto heads = llama_qk_permute_heads(gt.name, n_head, n_head_kv); heads && gt.n_dims >= 1) {
          require(*heads > 0, errc::invalid_format,
                  [] { return std::string("attention.head_count is missing: cannot undo the Q/K permutation"); },
                  {label_, gt.info_offset, gt.name});
          e.unpermute_heads = *heads;
        }
      }
      t.shape = gt.shape();
      t.stored_type = std::string(gt.traits().name);
      if (auto d = gt.element_dtype(); d && is_floating(*d)) t.float_type = d;
      t.stored_bytes = gt.n_bytes;
      where_.emplace(t.name, e);
      tensors_.push_back(std::move(t));
    }
    finish_index();
  }
  void read(const source_tensor &t, std::uint64_t offset, std::span<float> out) const override {
    check_range(t, offset, out.size(), label_);
    const entry &e = where_.at(t.name);
    const gguf_tensor &gt = *e.tensor;
    const std::uint64_t n = gt.n_elements;
    if (e.unpermute_heads != 0) {
      // Whole rows move: dequantize everything, then un-permute (Q and K are small matrices).
      std::vector<float> all(static_cast<std::size_t>(n)), hf(static_cast<std::size_t>(n));
      detail::dequantize_any(gt.type, gt.raw_bytes(), all);
      const auto rows = static_cast<std::int64_t>(gt.n_dims >= 2 ? gt.ne[1] : gt.ne[0]);
      const auto cols = static_cast<std::int64_t>(gt.n_dims >= 2 ? gt.ne[0] : 1);
      unpermute_qk<float>(all, hf, rows, cols, e.unpermute_heads);
      std::copy_n(hf.begin() + static_cast<std::ptrdiff_t>(offset), out.size(), out.begin());
      return;
    }
    const auto tr = gt.traits();
    const std::uint64_t bs = tr.block_size;
    // The engine reads chunks at multiples of 256 elements, which start whole blocks of every
    // type (32 or 256 elements); any other offset goes through the block that contains it.
    const std::uint64_t first_block = offset / bs;
    const std::uint64_t last = offset + out.size();
    const std::uint64_t end_block = (last + bs - 1) / bs;
    const auto bytes = gt.raw_bytes().subspan(static_cast<std::size_t>(first_block * tr.type_size),
                                              static_cast<std::size_t>((end_block - first_block) * tr.type_size));
    if (offset % bs == 0 && last % bs == 0) {
      detail::dequantize_any(gt.type, bytes, out);
      return;
    }
    std::vector<float> tmp(static_cast<std::size_t>((end_block - first_block) * bs));
    detail::dequantize_any(gt.type, bytes, tmp);
    std::copy_n(tmp.begin() + static_cast<std::ptrdiff_t>(offset - first_block * bs), out.size(), out.begin());
  }
  bool reads_whole(const source_tensor &t) const override { return where_.at(t.name).unpermute_heads != 0; }
  void release(const source_tensor &t, std::uint64_t offset, std::uint64_t count) const override {
    const gguf_tensor &gt = *where_.at(t.name).tensor;
    if (offset >= gt.n_elements) return;
    const auto tr = gt.traits();
    const std::uint64_t first = offset / tr.block_size;
    const std::uint64_t end = (std::min(gt.n_elements, offset + count) + tr.block_size - 1) / tr.block_size;
    detail::drop_mapped_pages(gt.raw_bytes().subspan(static_cast<std::size_t>(first * tr.type_size),
                                                     static_cast<std::size_t>((end - first) * tr.type_size)),
                              file_.bytes());
  }
  std::vector<std::filesystem::path> files() const override { return {file_.path()}; }
  const gguf_file *gguf() const override { return &file_; }
  //! The stored (GGUF) name of a tensor served under `name`.
  const std::string &stored_name(std::string_view name) const { return where_.at(std::string(name)).tensor->name; }

private:
  struct entry {
    const gguf_tensor *tensor;
    std::int64_t unpermute_heads; //!< 0: not permuted
  };
  gguf_file file_;
  std::map<std::string, entry, std::less<>> where_;
};

//! A PEFT LoRA adapter applied to another source (which must serve HF names).
class lora_source final : public model_source {
public:
  lora_source(std::unique_ptr<model_source> base, const std::filesystem::path &adapter_dir)
      : model_source(base->label() + "+" + adapter_dir.string()), base_(std::move(base)), adapter_(adapter_dir),
        adapter_dir_(adapter_dir) {
    tensors_ = base_->tensors();
    for (const auto &m : adapter_.modules()) {
      const source_tensor *bt = base_->find(m.base_tensor);
      require(bt != nullptr, errc::shape_mismatch, [&] {
        return "the adapter updates '" + m.base_tensor + "', which the base model " + base_->label() + " does not have";
      }, {adapter_.weights().path(), std::nullopt, m.base_tensor});
      require(bt->shape.size() == 2 && bt->shape[0] == m.rows && bt->shape[1] == m.cols, errc::shape_mismatch, [&] {
        return "the adapter's delta is [" + std::to_string(m.rows) + ", " + std::to_string(m.cols) +
               "], the base tensor in " + base_->label() + " is " + detail::shape_string(bt->shape);
      }, {adapter_.weights().path(), std::nullopt, m.base_tensor});
    }
    for (const auto &r : adapter_.replacements()) {
      const source_tensor *bt = base_->find(r.base_tensor);
      const safetensors_tensor &at = adapter_.weights().at(r.adapter_tensor);
      require(bt != nullptr && bt->shape == at.shape, errc::shape_mismatch, [&] {
        return "modules_to_save tensor " + detail::shape_string(at.shape) + " does not replace a base tensor of " +
               "the same shape in " + base_->label();
      }, {adapter_.weights().path(), at.header_offset, r.base_tensor});
    }
    finish_index();
  }
  void read(const source_tensor &t, std::uint64_t offset, std::span<float> out) const override {
    check_range(t, offset, out.size(), label_);
    for (const auto &r : adapter_.replacements())
      if (r.base_tensor == t.name) {
        const auto w = adapter_.weights().to_f32(r.adapter_tensor);
        std::copy_n(w.begin() + static_cast<std::ptrdiff_t>(offset), out.size(), out.begin());
        return;
      }
    const lora_module *m = adapter_.find(t.name);
    if (!m) {
      base_->read(base_->at(t.name), offset, out);
      return;
    }
    // The delta is a product of two factors: computed whole, for the whole tensor.
    std::vector<float> w(static_cast<std::size_t>(t.numel()));
    base_->read(base_->at(t.name), 0, w);
    adapter_.apply(*m, w);
    std::copy_n(w.begin() + static_cast<std::ptrdiff_t>(offset), out.size(), out.begin());
  }
  bool reads_whole(const source_tensor &t) const override {
    if (adapter_.find(t.name)) return true;
    for (const auto &r : adapter_.replacements())
      if (r.base_tensor == t.name) return true;
    return base_->reads_whole(t);
  }
  void release(const source_tensor &t, std::uint64_t offset, std::uint64_t count) const override {
    base_->release(base_->at(t.name), offset, count);
  }
  std::vector<std::filesystem::path> files() const override {
    auto f = base_->files();
    f.push_back(adapter_dir_ / lora_adapter::weights_file_name);
    f.push_back(adapter_dir_ / lora_adapter::config_file_name);
    return f;
  }
  std::optional<std::filesystem::path> hf_directory() const override { return base_->hf_directory(); }
  const gguf_file *gguf() const override { return base_->gguf(); }
  const lora_adapter &adapter() const noexcept { return adapter_; }

private:
  std::unique_ptr<model_source> base_;
  lora_adapter adapter_;
  std::filesystem::path adapter_dir_;
};

//! Whether a reference names a plain GGUF file (no adapter).
inline bool is_plain_gguf(const model_reference &r) {
  return !r.lora && std::filesystem::is_regular_file(r.path) && detail::file_starts_with_gguf_magic(r.path);
}

//! Opens what `ref` names, serving `naming`.
inline std::unique_ptr<model_source> open_model_source(const model_reference &ref, tensor_naming naming) {
  namespace fs = std::filesystem;
  const fs::path &p = ref.path;
  require(fs::exists(p), errc::io, [] { return std::string("no such file or directory"); }, {p.string()});
  std::unique_ptr<model_source> src;
  if (fs::is_directory(p)) {
    require(!fs::exists(p / lora_adapter::config_file_name), errc::invalid_argument, [&] {
      return "this is a LoRA adapter, not a model: name it as 'base_model_path+" + p.string() + "'";
    }, {p.string()});
    src = std::make_unique<safetensors_source>(p);
  } else if (detail::file_starts_with_gguf_magic(p)) {
    src = std::make_unique<gguf_source>(p, ref.lora ? tensor_naming::hf : naming);
  } else {
    src = std::make_unique<safetensors_source>(p);
  }
  if (ref.lora) {
    require(fs::is_directory(*ref.lora), errc::io,
            [] { return std::string("no such adapter directory (expected adapter_config.json and adapter_model.safetensors)"); },
            {ref.lora->string()});
    src = std::make_unique<lora_source>(std::move(src), *ref.lora);
  }
  return src;
}

DMS_NAMESPACE_END
