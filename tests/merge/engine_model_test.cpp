// The merge engine on the real model: SmolLM2-135M (Q4_1 GGUF) interpolated with a second
// checkpoint of the same architecture, derived deterministically from it (SmolLM2 + a random LoRA
// adapter on q_proj and v_proj, merged and written as an F32 GGUF by the engine itself).
// lambda 0 and 1 must reproduce the two inputs bit for bit (f32 output), lambda 0.5 their mean;
// the output loads as a dms::llama_model, and in llama-cpp-python (peer).
#include <catch2/catch.hpp>

// Built with dms::merge only (yaml-cpp); the folder also builds without it.
#if defined(DMS_HAS_MERGE)

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <dms/backend/cpu/dequant.hpp>
#include <dms/formats/gguf.hpp>
#include <dms/merge/builtin_strategies.hpp>
#include <dms/merge/engine.hpp>
#include <dms/model/llama.hpp>

#include "engine_fixtures.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace dms;
using namespace dms::test;

namespace {

//! A rank-4 adapter on q_proj and v_proj of every SmolLM2 layer (n_embd 576, kv width 192).
void write_smol_lora(const fs::path &dir) {
  fs::create_directories(dir);
  safetensors_writer w;
  std::vector<std::vector<float>> keep;
  keep.reserve(4 * 30);
  for (int l = 0; l < 30; ++l)
    for (const char *m : {"q_proj", "v_proj"}) {
      const std::string mod = "base_model.model.model.layers." + std::to_string(l) + ".self_attn." + m;
      const std::int64_t out = std::string(m) == "q_proj" ? 576 : 192, r = 4;
      keep.push_back(tensor_values(7, mod + ".A", static_cast<std::size_t>(r * 576)));
      for (float &x : keep.back()) x *= 0.05f;
      w.add(mod + ".lora_A.weight", dtype::f32, {r, 576}, std::as_bytes(std::span<const float>(keep.back())));
      keep.push_back(tensor_values(8, mod + ".B", static_cast<std::size_t>(out * r)));
      for (float &x : keep.back()) x *= 0.05f;
      w.add(mod + ".lora_B.weight", dtype::f32, {out, r}, std::as_bytes(std::span<const float>(keep.back())));
    }
  w.write(dir / "adapter_model.safetensors");
  write_text_file(dir / "adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, "
                                               "\"target_modules\": [\"q_proj\", \"v_proj\"], \"bias\": \"none\"}\n");
}

std::vector<float> dequantized(const gguf_tensor &t) {
  std::vector<float> v(t.n_elements);
  cpu::dequantize(t.type, t.raw_bytes(), v);
  return v;
}

fs::path interpolate(const fs::path &dir, const fs::path &a, const fs::path &b, double lambda, const std::string &name) {
  const auto cfg = parse_merge_config("merge_method: linear\nbase_model: '" + a.string() + "'\nmodels:\n  - model: '" +
                                          a.string() + "'\n    parameters: {weight: " + std::to_string(1 - lambda) +
                                          "}\n  - model: '" + b.string() + "'\n    parameters: {weight: " +
                                          std::to_string(lambda) + "}\n",
                                      name + ".yaml");
  const fs::path out = dir / (name + ".gguf");
  merge_engine e(cfg, builtin_strategy("linear"),
                 {.output = out, .format = output_format::gguf, .out_type = output_type::f32, .threads = 2});
  e.run();
  return out;
}

} // namespace

TEST_CASE("engine: SmolLM2 interpolated with a derived checkpoint, lambda 0 and 1 reproduce the inputs",
          "[.model][merge][engine]") {
  const auto dir = scratch_dir("dms-engine-model", "smol");
  const fs::path smol = model_path(dir);
  write_smol_lora(dir / "lora");

  // The derived model: SmolLM2 + LoRA, through the engine (HF naming: LoRA needs it), as F32 GGUF.
  const auto derive = parse_merge_config("merge_method: passthrough\nmodels:\n  - model: '" + smol.string() + "+" +
                                             (dir / "lora").string() + "'\n",
                                         "derive.yaml");
  {
    merge_engine e(derive, builtin_strategy("passthrough"),
                   {.output = dir / "derived.gguf", .format = output_format::gguf, .out_type = output_type::f32, .threads = 2});
    CHECK(e.naming() == tensor_naming::hf);
    e.run();
  }
  gguf_file base(smol.string()), derived((dir / "derived.gguf").string());
  REQUIRE(derived.tensors().size() == base.tensors().size());
  {
    // The derived q_proj differs from the base exactly by the adapter's delta (permuted as GGUF).
    const auto &bq = base.tensor("blk.5.attn_q.weight"), &dq = derived.tensor("blk.5.attn_q.weight");
    const auto vb = dequantized(bq), vd = dequantized(dq);
    lora_adapter lora(dir / "lora");
    const auto delta = lora.delta(*lora.find("model.layers.5.self_attn.q_proj.weight"));
    std::vector<float> delta_gguf(delta.size());
    permute_qk<float>(delta, delta_gguf, 576, 576, 9);
    float worst = 0;
    for (std::size_t i = 0; i < vb.size(); ++i) worst = std::max(worst, std::abs(vd[i] - (vb[i] + delta_gguf[i])));
    CHECK(worst <= 1e-6f);
    CHECK(dequantized(derived.tensor("blk.5.ffn_up.weight")) == dequantized(base.tensor("blk.5.ffn_up.weight")));
  }

  const fs::path l0 = interpolate(dir, smol, dir / "derived.gguf", 0.0, "lambda0");
  const fs::path l1 = interpolate(dir, smol, dir / "derived.gguf", 1.0, "lambda1");
  const fs::path lh = interpolate(dir, smol, dir / "derived.gguf", 0.5, "lambda_half");
  gguf_file o0(l0.string()), o1(l1.string()), oh(lh.string());
  for (const auto &t : base.tensors()) {
    INFO(t.name);
    const auto vb = dequantized(t), vd = dequantized(derived.tensor(t.name));
    REQUIRE(o0.tensor(t.name).type == ggml_type::f32);
    CHECK(dequantized(o0.tensor(t.name)) == vb); // bit for bit
    CHECK(dequantized(o1.tensor(t.name)) == vd);
    const auto vh = dequantized(oh.tensor(t.name));
    for (std::size_t i = 0; i < vh.size(); ++i) REQUIRE(vh[i] == static_cast<float>(0.5 * vb[i] + 0.5 * vd[i]));
  }
  // Metadata: the base's (tokenizer included), file type F32.
  for (const auto &kv : base.metadata()) {
    INFO(kv.key);
    if (kv.key == "general.file_type") CHECK(o0.get<std::uint32_t>(kv.key) == 0u);
    else CHECK(o0.at(kv.key) == kv.value);
  }
  // It loads as a model.
  const llama_model m = llama_model::load(lh);
  CHECK(m.n_layers() == 30);
  CHECK(m.n_embd() == 576);
}

TEST_CASE("engine: a merged SmolLM2 GGUF loads and runs in llama-cpp-python", "[.peer][.model][merge][engine]") {
  const auto dir = scratch_dir("dms-engine-model", "llamacpp");
  const std::string python = peer_python(dir, "llama_cpp");
  const fs::path smol = model_path(dir);
  write_smol_lora(dir / "lora");
  const auto derive = parse_merge_config("merge_method: passthrough\nmodels:\n  - model: '" + smol.string() + "+" +
                                             (dir / "lora").string() + "'\n",
                                         "derive.yaml");
  merge_engine(derive, builtin_strategy("passthrough"),
               {.output = dir / "derived.gguf", .format = output_format::gguf, .out_type = output_type::f16, .threads = 2})
      .run();
  const fs::path mid = interpolate(dir, smol, dir / "derived.gguf", 0.5, "mid");
  const std::string out = run_python(python, R"PY(
import sys, math
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], n_ctx=64, logits_all=False, verbose=False)
toks = m.tokenize(b"The capital of France is")
m.eval(toks)
logits = m.scores[len(toks) - 1]
assert all(math.isfinite(x) for x in logits), "non-finite logits"
print("ok", len(toks), int(max(range(len(logits)), key=lambda i: logits[i])))
)PY", {mid.string()}, dir);
  CHECK_THAT(out, Catch::StartsWith("ok "));
}

#endif // DMS_HAS_MERGE
