// The forward pass on the real model (SmolLM2-135M-Instruct, Q4_1): hidden cases.
//   [.model]        loads, predicts sensibly, is deterministic across thread counts, stays within
//                   its memory budget; prints prefill and decode speed (2 threads).
//   [.peer][model]  logits and greedy generations against llama-cpp-python on the same token ids:
//                   exact arithmetic (the file dequantized to F32, f32 KV cache) and as shipped.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/external.hpp"
#include "support/f32_model.hpp"
#include "support/scratch_dir.hpp"
#include "dms/formats/gguf_writer.hpp"
#include "dms/formats/quant.hpp"
#include "dms/model/llama.hpp"

namespace fs = std::filesystem;

namespace {

std::vector<dms::token_slot> prompt_slots(std::size_t n, std::int32_t seq, std::int32_t start, bool all) {
  std::vector<dms::token_slot> s;
  for (std::size_t i = 0; i < n; ++i) s.push_back({seq, start + static_cast<std::int32_t>(i), all || i + 1 == n});
  return s;
}

dms::token_id argmax(const float *row, std::int64_t n) {
  return static_cast<dms::token_id>(std::max_element(row, row + n) - row);
}

//! Greedy decoding of `n` tokens after `prompt` in sequence `seq` (cleared first).
std::vector<dms::token_id> greedy(dms::llama_model &m, const std::vector<dms::token_id> &prompt, int n,
                                  std::int32_t seq = 0) {
  m.clear(seq);
  const auto slots = prompt_slots(prompt.size(), seq, 0, false);
  auto out = m.forward({prompt, slots});
  std::vector<dms::token_id> ids;
  for (int i = 0; i < n; ++i) {
    ids.push_back(argmax(out.row(0), out.cols));
    const dms::token_slot s{seq, m.seq_length(seq), true};
    out = m.forward({std::span(&ids.back(), 1), std::span(&s, 1)});
  }
  return ids;
}

//! A line of /proc/self/status in bytes: "VmRSS:" (resident now) or "VmHWM:" (peak).
std::size_t status_bytes(const std::string &key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(key.size())) * 1024;
  return 0;
}

// "The capital of France is" in SmolLM2's tokenizer, made once with llama-cpp-python 0.3.36:
//   Llama(path, vocab_only=True).tokenize(b"The capital of France is", add_bos=True)
// (the model's metadata says add_bos_token = false, so there is no BOS); 7042 is " Paris".
const std::vector<dms::token_id> france = {504, 3575, 282, 4649, 314};
constexpr dms::token_id paris = 7042;

} // namespace

TEST_CASE("SmolLM2: loads, predicts Paris, is deterministic across thread counts", "[.model][forward]") {
  const fs::path dir = dms::test::scratch_dir("dms-forward", "smollm2");
  const std::string path = dms::test::model_path(dir);
  std::ofstream("/proc/self/clear_refs") << "5"; // resets VmHWM to the current RSS (Linux >= 4.0)
  const std::size_t rss_before = status_bytes("VmRSS:");
  auto m = dms::llama_model::load(path, {.n_ctx = 512, .n_seq_max = 2, .n_threads = 2});
  const auto &hp = m.hparams();
  CHECK(hp.arch == "llama");
  CHECK(hp.n_layers == 30);
  CHECK(hp.n_embd == 576);
  CHECK(hp.n_head == 9);
  CHECK(hp.n_head_kv == 3);
  CHECK(hp.n_ff == 1536);
  CHECK(hp.n_vocab == 49152);
  CHECK(hp.head_dim == 64);
  CHECK(hp.rope_theta == 100000.0f);
  CHECK(hp.rms_eps == 1e-5f);
  CHECK(hp.tied_output);
  CHECK(m.weights().layers[0].wq.type == dms::ggml_type::q4_1);
  CHECK(m.weights().token_embd.type == dms::ggml_type::q8_0);

  const auto out = m.forward({france, prompt_slots(france.size(), 0, 0, false)});
  REQUIRE(out.rows == 1);
  CHECK(argmax(out.row(0), out.cols) == paris);
  const std::vector<float> two_threads(out.row(0), out.row(0) + out.cols);

  // Memory: weights are used in place from the mapping, so loading and running the model grows
  // the resident set by at most the file's pages, the KV cache and the step buffers.
  const auto file_bytes = static_cast<double>(fs::file_size(path));
  const std::size_t rss_after = status_bytes("VmHWM:");
  const double kv_bytes = 2.0 * 2 * 30 * 512 * 3 * 64 * 4; // K and V, 2 sequences, f32
  std::printf("SmolLM2: file %.1f MB, KV cache %.1f MB, peak RSS grew by %.1f MB (load + one forward)\n",
              file_bytes / 1e6, kv_bytes / 1e6, static_cast<double>(rss_after - rss_before) / 1e6);
  CHECK(static_cast<double>(rss_after - rss_before) <= 1.2 * file_bytes + kv_bytes);

  auto one = dms::llama_model::load(path, {.n_ctx = 512, .n_seq_max = 1, .n_threads = 1});
  const auto out1 = one.forward({france, prompt_slots(france.size(), 0, 0, false)});
  const std::vector<float> one_thread(out1.row(0), out1.row(0) + out1.cols);
  double diff = 0;
  for (std::size_t i = 0; i < one_thread.size(); ++i)
    diff = std::max(diff, static_cast<double>(std::abs(one_thread[i] - two_threads[i])));
  std::printf("SmolLM2: 1 vs 2 threads: max |logit diff| %g (%s)\n", diff,
              one_thread == two_threads ? "bit-identical" : "not bit-identical");
  CHECK(one_thread == two_threads);

  // "... Paris. The capital of Germany is" -> " Berlin" (11452), with a second sequence decoding
  // alongside to exercise the mixed batch on the real model.
  const std::vector<dms::token_id> germany = {504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314};
  const auto g = greedy(m, germany, 1, 1);
  CHECK(g[0] == 11452);

  fs::remove_all(dir);
}

TEST_CASE("SmolLM2: prefill and decode speed on 2 threads (figures only)", "[.model][forward]") {
  const fs::path dir = dms::test::scratch_dir("dms-forward", "smollm2-speed");
  const std::string path = dms::test::model_path(dir);
  auto m = dms::llama_model::load(path, {.n_ctx = 1024, .n_seq_max = 1, .n_threads = 2});
  using clock = std::chrono::steady_clock;
  // A 128-token prompt of ordinary ids (the repeated France prompt).
  std::vector<dms::token_id> prompt;
  while (prompt.size() < 128) prompt.insert(prompt.end(), france.begin(), france.end());
  prompt.resize(128);
  m.forward({prompt, prompt_slots(prompt.size(), 0, 0, false)}); // warm up: page in the weights
  double prefill_s = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    m.clear(0);
    const auto t0 = clock::now();
    m.forward({prompt, prompt_slots(prompt.size(), 0, 0, false)});
    prefill_s = std::min(prefill_s, std::chrono::duration<double>(clock::now() - t0).count());
  }
  dms::token_id next = paris;
  const int steps = 64;
  const auto t0 = clock::now();
  for (int i = 0; i < steps; ++i) {
    const dms::token_slot s{0, m.seq_length(0), true};
    const auto out = m.forward({std::span(&next, 1), std::span(&s, 1)});
    next = argmax(out.row(0), out.cols);
  }
  const double decode_s = std::chrono::duration<double>(clock::now() - t0).count();
  std::printf("SmolLM2 Q4_1, 2 threads (shared machine): prefill %.1f tokens/s (128 tokens), decode %.2f ms/token "
              "(64 tokens after position 128)\n",
              128.0 / prefill_s, 1e3 * decode_s / steps);
  CHECK(m.seq_length(0) == 128 + steps);
  fs::remove_all(dir);
}

namespace {
struct peer_prompt {
  std::vector<dms::token_id> tokens;
  std::int32_t n_vocab = 0;
  std::vector<float> logits;
};
peer_prompt read_prompt(const fs::path &file) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE(in);
  std::int32_t head[2];
  in.read(reinterpret_cast<char *>(head), sizeof head);
  peer_prompt p;
  p.tokens.resize(static_cast<std::size_t>(head[0]));
  p.n_vocab = head[1];
  p.logits.resize(static_cast<std::size_t>(head[0]) * static_cast<std::size_t>(head[1]));
  in.read(reinterpret_cast<char *>(p.tokens.data()), static_cast<std::streamsize>(p.tokens.size() * 4));
  in.read(reinterpret_cast<char *>(p.logits.data()), static_cast<std::streamsize>(p.logits.size() * 4));
  REQUIRE(in);
  return p;
}
std::vector<dms::token_id> read_ids(const fs::path &file) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE(in);
  std::int32_t n = 0;
  in.read(reinterpret_cast<char *>(&n), 4);
  std::vector<dms::token_id> ids(static_cast<std::size_t>(n));
  in.read(reinterpret_cast<char *>(ids.data()), static_cast<std::streamsize>(ids.size() * 4));
  REQUIRE(in);
  return ids;
}

struct peer_result {
  double agreement = 0, max_diff = 0;
  int identical = 0;
};

//! Runs llama_cpp_peer.py on `model` (llama.cpp with a `kv` cache: f16 or f32) and the same token
//! ids through dms; prints and returns argmax agreement, max |logit diff| and identical greedy runs.
peer_result compare_with_llama_cpp(const std::string &python, const std::string &model, const std::string &kv,
                                   int n_greedy, const fs::path &dir) {
  const fs::path script = fs::path(__FILE__).parent_path() / "llama_cpp_peer.py";
  const std::string printed = dms::test::run_python(
      python, dms::test::slurp(script), {model, dir.string(), "512", std::to_string(n_greedy), kv}, dir);
  const int n_prompts = std::stoi(printed);
  REQUIRE(n_prompts >= 20);
  auto m = dms::llama_model::load(model, {.n_ctx = 512, .n_seq_max = 1, .n_threads = 2});
  std::size_t positions = 0, agree = 0, n_values = 0;
  double sum_diff = 0;
  peer_result res;
  for (int i = 0; i < n_prompts; ++i) {
    const auto p = read_prompt(dir / ("prompt_" + std::to_string(i) + ".bin"));
    REQUIRE(p.n_vocab == m.n_vocab());
    m.clear(0);
    const auto out = m.forward({p.tokens, prompt_slots(p.tokens.size(), 0, 0, true)});
    REQUIRE(out.rows == static_cast<std::int64_t>(p.tokens.size()));
    for (std::int64_t r = 0; r < out.rows; ++r) {
      const float *ref = p.logits.data() + r * p.n_vocab;
      agree += argmax(out.row(r), out.cols) == argmax(ref, p.n_vocab);
      ++positions;
      for (std::int64_t v = 0; v < out.cols; ++v) {
        const double d = std::abs(static_cast<double>(out(r, v)) - ref[v]);
        res.max_diff = std::max(res.max_diff, d);
        sum_diff += d;
      }
      n_values += static_cast<std::size_t>(out.cols);
    }
  }
  res.agreement = static_cast<double>(agree) / static_cast<double>(positions);
  std::printf("%s vs llama-cpp-python (%s KV cache): %d prompts, %zu positions, argmax agreement %.2f%%, "
              "max |logit diff| %.4f, mean |logit diff| %.5f\n",
              fs::path(model).filename().c_str(), kv.c_str(), n_prompts, positions, 100 * res.agreement, res.max_diff,
              sum_diff / static_cast<double>(n_values));
  for (int i = 0; i < n_greedy; ++i) {
    const auto p = read_prompt(dir / ("prompt_" + std::to_string(i) + ".bin"));
    const auto want = read_ids(dir / ("greedy_" + std::to_string(i) + ".bin"));
    const auto got = greedy(m, p.tokens, static_cast<int>(want.size()));
    const auto first_diff = std::mismatch(got.begin(), got.end(), want.begin()).first - got.begin();
    res.identical += got == want;
    if (got != want) std::printf("  greedy prompt %d: first difference at token %td of %zu\n", i, first_diff, want.size());
  }
  std::printf("  greedy 64 tokens: %d of %d prompts identical\n", res.identical, n_greedy);
  return res;
}

} // namespace

// Against the exact arithmetic: the Q4_1 file dequantized to F32 (by dms, into a scratch file),
// llama.cpp with an f32 KV cache. Both then compute in f32 with the same weights, so only
// summation order differs (measured: max |logit diff| < 1e-4 on "The capital of France is").
TEST_CASE("SmolLM2 F32: logits and greedy tokens agree with llama-cpp-python", "[.peer][model][forward]") {
  const fs::path dir = dms::test::scratch_dir("dms-forward", "smollm2-peer-f32");
  const std::string python = dms::test::peer_python(dir, "llama_cpp, numpy");
  dms::test::write_f32_copy(dms::test::model_path(dir), dir / "smollm2-f32.gguf");
  const auto r = compare_with_llama_cpp(python, (dir / "smollm2-f32.gguf").string(), "f32", 12, dir);
  CHECK(r.agreement >= 0.99);
  CHECK(r.max_diff <= 0.1);
  CHECK(r.identical >= 10);
  fs::remove_all(dir);
}

// Against llama.cpp as users run it: Q4_1 weights, f16 KV cache. Both round activations to 8-bit
// blocks with f16 scales (dms since it copies ggml's scale rounding), but the f32 operations
// around them run in different orders, a quant rounds the other way now and then, and SmolLM2 at
// Q4_1 amplifies that: llama.cpp against itself with an f32 instead of an f16 cache moves logits by
// up to 1.4 on "The capital of France is". dms's cache is f32. Measured on 24 prompts (312
// positions): argmax agreement 97.4% (98.7% with llama.cpp's cache at f32), mean |diff| 0.19,
// greedy 64 tokens identical on 3 of 12. This case bounds that loosely and prints the figures;
// issue #4's 99% target is not met on the quantized file (it is on the F32 one above).
TEST_CASE("SmolLM2 Q4_1: logits and greedy tokens close to llama-cpp-python", "[.peer][model][forward]") {
  const fs::path dir = dms::test::scratch_dir("dms-forward", "smollm2-peer-q41");
  const std::string python = dms::test::peer_python(dir, "llama_cpp, numpy");
  const auto r = compare_with_llama_cpp(python, dms::test::model_path(dir), "f16", 12, dir);
  CHECK(r.agreement >= 0.95);
  CHECK(r.max_diff <= 4.0);
  fs::remove_all(dir);
}
