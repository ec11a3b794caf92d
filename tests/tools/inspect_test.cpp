// `dms inspect` on every format it claims besides GGUF (tests/tools/cli_inspect.cmake covers the
// real GGUF model): a safetensors file, a sharded checkpoint directory and a PEFT adapter.
#include <catch2/catch.hpp>

#if defined(DMS_HAS_CPU_BACKEND) && defined(DMS_HAS_IO) // inspect needs dms::cpu and dms::io

#include <filesystem>
#include <fstream>
#include <vector>

#include <unistd.h>

#include "inspect.hpp"

namespace fs = std::filesystem;

namespace {
fs::path fresh_dir(const std::string &name) {
  auto d = fs::temp_directory_path() / ("dms-inspect-test-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
std::span<const std::byte> bytes_of(const std::vector<float> &v) { return std::as_bytes(std::span(v)); }
} // namespace

TEST_CASE("inspect lists a safetensors file and dumps a tensor as float32", "[tools][inspect]") {
  const auto dir = fresh_dir("st");
  const std::vector<float> w{1, 2, 3, 4, 5, 6};
  std::vector<dms::bf16_bits> h(4);
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = dms::to_bf16(0.5f * static_cast<float>(i));
  dms::safetensors_writer wr;
  wr.set_metadata("format", "pt");
  wr.add("embed.weight", dms::dtype::f32, {2, 3}, bytes_of(w));
  wr.add("norm.weight", dms::dtype::bf16, {4}, std::as_bytes(std::span(h)));
  wr.write(dir / "model.safetensors");

  const auto info = dms::cli::inspect_path(dir / "model.safetensors");
  CHECK(info.format == "safetensors");
  CHECK(info.metadata["format"] == "pt");
  REQUIRE(info.tensors.size() == 2);
  for (const auto &t : info.tensors) {
    if (t.name == "embed.weight") {
      CHECK(t.dtype == "F32");
      CHECK(t.shape == std::vector<std::int64_t>{2, 3});
      CHECK(t.bytes == 24);
    } else {
      CHECK(t.name == "norm.weight");
      CHECK(t.dtype == "BF16");
    }
  }
  std::vector<std::int64_t> shape;
  CHECK(dms::cli::read_tensor_f32(dir / "model.safetensors", "norm.weight", shape) ==
        std::vector<float>{0.0f, 0.5f, 1.0f, 1.5f});
  CHECK_THROWS_WITH(dms::cli::read_tensor_f32(dir / "model.safetensors", "nope", shape), Catch::Contains("nope"));
  fs::remove_all(dir);
}

TEST_CASE("inspect walks every shard of a sharded checkpoint", "[tools][inspect]") {
  const auto dir = fresh_dir("hf");
  const std::vector<float> a(64, 1.0f), b(64, 2.0f), c(64, 3.0f);
  dms::hf_writer_options opt;
  opt.max_shard_bytes = 300; // 256-byte tensors: one per shard
  dms::hf_checkpoint_writer wr(opt);
  wr.add("model.layers.0.mlp.up_proj.weight", dms::dtype::f32, {8, 8}, bytes_of(a));
  wr.add("model.layers.1.mlp.up_proj.weight", dms::dtype::f32, {8, 8}, bytes_of(b));
  wr.add("lm_head.weight", dms::dtype::f32, {8, 8}, bytes_of(c));
  wr.write(dir / "ckpt");

  const auto info = dms::cli::inspect_path(dir / "ckpt");
  CHECK(info.format == "hf-checkpoint");
  CHECK(info.summary["shards"] == 3);
  REQUIRE(info.tensors.size() == 3);
  for (const auto &t : info.tensors) CHECK_THAT(t.file, Catch::Matches("model-0000[123]-of-00003.safetensors"));
  std::vector<std::int64_t> shape;
  CHECK(dms::cli::read_tensor_f32(dir / "ckpt", "model.layers.1.mlp.up_proj.weight", shape)[0] == 2.0f);
  fs::remove_all(dir);
}

TEST_CASE("inspect reads a PEFT adapter directory, and names what is missing", "[tools][inspect]") {
  const auto dir = fresh_dir("peft");
  const std::vector<float> a(2 * 4, 0.25f), b(3 * 2, 0.5f);
  dms::safetensors_writer wr;
  wr.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", dms::dtype::f32, {2, 4}, bytes_of(a));
  wr.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", dms::dtype::f32, {3, 2}, bytes_of(b));
  wr.write(dir / "adapter_model.safetensors");
  std::ofstream(dir / "adapter_config.json") << R"({"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]})";

  const auto info = dms::cli::inspect_path(dir);
  CHECK(info.format == "peft-adapter");
  CHECK(info.summary["rank"] == 2);
  CHECK(info.summary["modules"] == 1);
  CHECK(info.tensors.size() == 2);

  fs::remove(dir / "adapter_model.safetensors");
  CHECK_THROWS_WITH(dms::cli::inspect_path(dir), Catch::Contains("adapter_model.safetensors"));
  CHECK_THROWS_WITH(dms::cli::inspect_path(dir / "absent"), Catch::Contains("no such file or directory"));
  fs::remove_all(dir);
}

#endif
