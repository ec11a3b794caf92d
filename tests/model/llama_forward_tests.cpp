// The Llama-family forward pass on tiny random models: against an independent double-precision
// reference, GGUF against safetensors, prefill against decode, batching, the KV cache, errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "support/scratch_dir.hpp"
#include "alloc_count.hpp"
#include "dms/model/llama.hpp"
#include "tiny_model.hpp"

namespace fs = std::filesystem;
using dms::test::tiny_config;
using dms::test::tiny_weights;

static_assert(dms::model_backend<dms::llama_model>);

namespace {

const std::vector<int> prompt = {1, 17, 42, 99, 3, 64, 17, 8, 0, 55, 23};

//! Runs `tokens` as one prefill of sequence `seq` (from its current length) wanting every row.
std::vector<std::vector<float>> prefill(dms::llama_model &m, const std::vector<int> &tokens, std::int32_t seq = 0) {
  std::vector<dms::token_slot> slots;
  const std::int32_t start = m.seq_length(seq);
  for (std::size_t i = 0; i < tokens.size(); ++i) slots.push_back({seq, start + static_cast<std::int32_t>(i), true});
  const auto out = m.forward({tokens, slots});
  REQUIRE(out.rows == static_cast<std::int64_t>(tokens.size()));
  REQUIRE(out.cols == m.n_vocab());
  std::vector<std::vector<float>> rows;
  for (std::int64_t r = 0; r < out.rows; ++r) rows.emplace_back(out.row(r), out.row(r) + out.cols);
  return rows;
}

double max_abs(const std::vector<std::vector<double>> &a) {
  double m = 0;
  for (auto &r : a)
    for (double v : r) m = std::max(m, std::abs(v));
  return m;
}
template <class A, class B> double max_diff(const std::vector<std::vector<A>> &a, const std::vector<std::vector<B>> &b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].size() == b[i].size());
    for (std::size_t j = 0; j < a[i].size(); ++j)
      m = std::max(m, std::abs(static_cast<double>(a[i][j]) - static_cast<double>(b[i][j])));
  }
  return m;
}

double max_diff(const std::vector<float> &a, const std::vector<float> &b) {
  return max_diff(std::vector<std::vector<float>>{a}, std::vector<std::vector<float>>{b});
}

struct tiny_files {
  fs::path dir;
  tiny_weights w;
};

//! A tiny model written as GGUF with matrices of `type`; `w` holds what the file stores.
tiny_files gguf_model(const std::string &name, tiny_config c, dms::ggml_type type) {
  tiny_files f{dms::test::scratch_dir("dms-forward", name), dms::test::make_tiny(c)};
  dms::test::write_gguf(f.w, f.dir / "model.gguf", type);
  if (type != dms::ggml_type::f32) dms::test::round_trip(f.w, type);
  return f;
}

} // namespace

TEST_CASE("tiny llama: logits match the double-precision reference", "[forward]") {
  // The reference runs in double precision on the weights the file stores (dequantized). At exact
  // precision the forward pass only rounds to f32, whatever the weight type. At fast precision the
  // quantized mat-mul rounds each activation block to 8 bits as llama.cpp does (f32/f16 weights
  // keep f32 activations); on this tiny random model that costs up to ~2.5% of the largest logit
  // (measured 0.081 of 3.22 for Q8_0), so its bound is 5%: far below what a wrong block layout or
  // scale gives (differences of the order of the logits themselves). Bounds are relative to the
  // largest |logit|.
  struct variant {
    dms::ggml_type type;
    double fast_rel_tol;
  };
  using dms::cpu::matmul_precision;
  for (auto [type, fast_rel_tol] : {variant{dms::ggml_type::f32, 1e-5}, variant{dms::ggml_type::f16, 1e-5},
                                    variant{dms::ggml_type::q8_0, 5e-2}, variant{dms::ggml_type::q4_1, 5e-2}}) {
    for (const std::string arch : {"llama", "qwen2"}) {
      tiny_config c;
      c.arch = arch;
      auto f = gguf_model(arch + "-" + std::to_string(static_cast<int>(type)), c, type);
      const auto ref = dms::test::reference_logits(f.w, prompt);
      const double scale = max_abs(ref);
      CHECK(scale > 1.0); // the model is not degenerate
      for (auto precision : {matmul_precision::exact, matmul_precision::fast}) {
        auto m = dms::llama_model::load(f.dir / "model.gguf",
                                        {.n_ctx = 64, .n_seq_max = 2, .n_threads = 2, .precision = precision});
        CHECK(m.hparams().arch == arch);
        CHECK(m.n_layers() == c.n_layers);
        CHECK(m.n_vocab() == c.n_vocab);
        CHECK(m.hparams().attn_bias == (arch == "qwen2"));
        const double diff = max_diff(prefill(m, prompt), ref);
        const bool exact = precision == matmul_precision::exact;
        INFO(arch << " type " << dms::traits_of(type).name << (exact ? " exact" : " fast") << ": max |logit| "
                  << scale << ", max |diff| " << diff);
        CHECK(diff <= (exact ? 1e-5 : fast_rel_tol) * scale);
      }
      fs::remove_all(f.dir);
    }
  }
}

TEST_CASE("tiny llama: tied output uses the token embedding", "[forward]") {
  tiny_config c;
  c.tied = true;
  auto f = gguf_model("tied", c, dms::ggml_type::f32);
  auto m = dms::llama_model::load(f.dir / "model.gguf", {.n_ctx = 32, .n_threads = 1});
  CHECK(m.hparams().tied_output);
  const auto ref = dms::test::reference_logits(f.w, prompt);
  CHECK(max_diff(prefill(m, prompt), ref) <= 1e-5 * max_abs(ref));
  fs::remove_all(f.dir);
}

TEST_CASE("tiny llama: GGUF (permuted Q/K) and safetensors (HF order) give the same logits", "[forward]") {
  for (const std::string arch : {"llama", "qwen2"}) {
    tiny_config c;
    c.arch = arch;
    auto f = gguf_model("st-" + arch, c, dms::ggml_type::f32);
    dms::test::write_hf(f.w, f.dir / "hf", dms::dtype::f32);
    // Shards of at most 20 kB: the tiny model is split over many files.
    dms::test::write_hf(f.w, f.dir / "hf-sharded", dms::dtype::f32, 20'000);
    REQUIRE(fs::exists(f.dir / "hf-sharded" / "model.safetensors.index.json"));
    auto g = dms::llama_model::load(f.dir / "model.gguf", {.n_ctx = 32, .n_threads = 1});
    auto h = dms::llama_model::load(f.dir / "hf", {.n_ctx = 32, .n_threads = 1});
    auto s = dms::llama_model::load(f.dir / "hf-sharded", {.n_ctx = 32, .n_threads = 1});
    CHECK(g.gguf() != nullptr);
    CHECK(h.gguf() == nullptr);
    CHECK(h.hparams().rope == dms::rope_style::half_split);
    const auto lg = prefill(g, prompt), lh = prefill(h, prompt), ls = prefill(s, prompt);
    const auto ref = dms::test::reference_logits(f.w, prompt);
    INFO(arch << ": gguf vs hf " << max_diff(lg, lh) << ", max |logit| " << max_abs(ref));
    // Same weights, same f32 arithmetic; only the order of the q.k sums differs (permuted dims).
    CHECK(max_diff(lg, lh) <= 1e-5 * max_abs(ref));
    CHECK(max_diff(lh, ls) == 0.0); // sharding changes nothing
    CHECK(max_diff(lh, ref) <= 1e-5 * max_abs(ref));
    fs::remove_all(f.dir);
  }
}

TEST_CASE("tiny llama: bf16 and f16 safetensors match the reference on the rounded weights", "[forward]") {
  for (auto [st, gt] : {std::pair{dms::dtype::bf16, dms::ggml_type::bf16}, std::pair{dms::dtype::f16, dms::ggml_type::f16}}) {
    tiny_config c;
    tiny_files f{dms::test::scratch_dir("dms-forward", "half-st"), dms::test::make_tiny(c)};
    dms::test::write_hf(f.w, f.dir / "hf", st);
    // The reference sees the rounded values; vectors (norms) are rounded too in an HF file.
    dms::test::round_trip(f.w, gt);
    auto round_vec = [&](std::vector<float> &v) {
      for (auto &x : v) x = st == dms::dtype::bf16 ? dms::to_f32(dms::to_bf16(x)) : dms::to_f32(dms::to_f16(x));
    };
    round_vec(f.w.output_norm);
    for (auto &L : f.w.layers) round_vec(L.attn_norm), round_vec(L.ffn_norm);
    auto m = dms::llama_model::load(f.dir / "hf", {.n_ctx = 32, .n_threads = 2});
    const auto ref = dms::test::reference_logits(f.w, prompt);
    const double diff = max_diff(prefill(m, prompt), ref);
    INFO(dms::name_of(st) << ": max |diff| " << diff << " of max |logit| " << max_abs(ref));
    CHECK(diff <= 1e-5 * max_abs(ref));
    fs::remove_all(f.dir);
  }
}

TEST_CASE("tiny llama: prefill of N tokens equals N decode steps", "[forward]") {
  auto f = gguf_model("decode", {}, dms::ggml_type::f32);
  auto m = dms::llama_model::load(f.dir / "model.gguf", {.n_ctx = 32, .n_seq_max = 2, .n_threads = 2});
  const auto all = prefill(m, prompt, 0);
  CHECK(m.seq_length(0) == static_cast<std::int32_t>(prompt.size()));
  std::vector<std::vector<float>> steps;
  for (int tok : prompt) steps.push_back(prefill(m, {tok}, 1).at(0));
  CHECK(m.seq_length(1) == static_cast<std::int32_t>(prompt.size()));
  CHECK(max_diff(all, steps) <= 1e-5 * 10);
  // A prefill split in two chunks continues the cache as well.
  m.clear(1);
  auto first = prefill(m, std::vector<int>(prompt.begin(), prompt.begin() + 4), 1);
  auto rest = prefill(m, std::vector<int>(prompt.begin() + 4, prompt.end()), 1);
  first.insert(first.end(), rest.begin(), rest.end());
  CHECK(max_diff(all, first) <= 1e-5 * 10);
  fs::remove_all(f.dir);
}

TEST_CASE("tiny llama: sequences mixed in one batch equal each run alone", "[forward]") {
  auto f = gguf_model("batch", {}, dms::ggml_type::q8_0);
  auto m = dms::llama_model::load(f.dir / "model.gguf", {.n_ctx = 32, .n_seq_max = 3, .n_threads = 2});
  const std::vector<int> a = {1, 5, 9, 13, 17, 21, 25}, b = {2, 4, 6};
  const auto alone_a = prefill(m, a, 0), alone_b = prefill(m, b, 1);
  m.clear(0);
  m.clear(1);
  // Interleaved: b's tokens between a's, a in sequence 2 this time; only some rows want logits.
  std::vector<int> toks;
  std::vector<dms::token_slot> slots;
  std::size_t ia = 0, ib = 0;
  while (ia < a.size() || ib < b.size()) {
    if (ia < a.size()) toks.push_back(a[ia]), slots.push_back({2, static_cast<int>(ia), ia % 2 == 0}), ++ia;
    if (ib < b.size()) toks.push_back(b[ib]), slots.push_back({1, static_cast<int>(ib), true}), ++ib;
  }
  const auto out = m.forward({toks, slots});
  std::int64_t r = 0;
  double diff = 0;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    if (!slots[i].want_logits) continue;
    const auto &want = slots[i].seq == 2 ? alone_a[static_cast<std::size_t>(slots[i].pos)]
                                         : alone_b[static_cast<std::size_t>(slots[i].pos)];
    for (std::int64_t v = 0; v < out.cols; ++v) diff = std::max(diff, double(std::abs(out(r, v) - want[v])));
    ++r;
  }
  CHECK(r == out.rows);
  CHECK(diff <= 1e-4);
  CHECK(m.seq_length(2) == 7);
  CHECK(m.seq_length(1) == 3);
  CHECK(m.seq_length(0) == 0);
  // Decode one token for both at once: equal to continuing each alone.
  const std::vector<int> next = {30, 31};
  const std::vector<dms::token_slot> dslots = {{1, 3, true}, {2, 7, true}};
  const auto d = m.forward({next, dslots});
  std::vector<float> d0(d.row(0), d.row(0) + d.cols), d1(d.row(1), d.row(1) + d.cols);
  m.clear(1);
  m.clear(2);
  auto b2 = b;
  b2.push_back(30);
  auto a2 = a;
  a2.push_back(31);
  CHECK(max_diff(d0, prefill(m, b2, 1).back()) <= 1e-4);
  CHECK(max_diff(d1, prefill(m, a2, 2).back()) <= 1e-4);
  fs::remove_all(f.dir);
}

TEST_CASE("tiny llama: clear(seq) restarts the sequence", "[forward]") {
  auto f = gguf_model("clear", {}, dms::ggml_type::q4_1);
  auto m = dms::llama_model::load(f.dir / "model.gguf", {.n_ctx = 32, .n_seq_max = 1, .n_threads = 1});
  const auto first = prefill(m, prompt);
  prefill(m, {3, 4, 5});
  m.clear(0);
  CHECK(m.seq_length(0) == 0);
  CHECK(max_diff(prefill(m, prompt), first) == 0.0);
  CHECK_THROWS_AS(m.clear(1), dms::error);
  CHECK_THROWS_AS(m.seq_length(-1), dms::error);
  fs::remove_all(f.dir);
}

TEST_CASE("tiny llama: bad batches are refused and change nothing", "[forward]") {
  auto f = gguf_model("errors", {}, dms::ggml_type::f32);
  auto m = dms::llama_model::load(f.dir / "model.gguf", {.n_ctx = 8, .n_seq_max = 2, .n_threads = 1});
  const auto expected = prefill(m, {1, 2, 3});
  m.clear(0);
  prefill(m, {1, 2});
  auto message = [&](std::vector<int> toks, std::vector<dms::token_slot> slots) -> std::string {
    try {
      m.forward({toks, slots});
    } catch (const dms::error &e) {
      CHECK(e.code() == dms::errc::invalid_argument);
      CHECK(std::string(e.what()).find("model.gguf") != std::string::npos);
      return e.what();
    }
    FAIL("no error");
    return {};
  };
  using Catch::Matchers::Contains;
  CHECK_THAT(message({3}, {{0, 3, true}}), Contains("position 3") && Contains("expected 2"));   // gap
  CHECK_THAT(message({3}, {{0, 1, true}}), Contains("position 1"));                            // rewind
  CHECK_THAT(message({3, 4}, {{0, 3, true}, {0, 2, true}}), Contains("expected 2"));           // order
  CHECK_THAT(message({3}, {{2, 0, true}}), Contains("sequence 2"));
  CHECK_THAT(message({100}, {{0, 2, true}}), Contains("id 100"));
  CHECK_THAT(message({3, 4}, {{0, 2, true}}), Contains("2 tokens and 1 slots"));
  CHECK_THAT(message({}, {}), Contains("non-zero"));
  // 2 cached + 7 > n_ctx = 8: both numbers in the message.
  std::vector<dms::token_slot> long_slots;
  for (int i = 0; i < 7; ++i) long_slots.push_back({0, 2 + i, false});
  CHECK_THAT(message(std::vector<int>(7, 5), long_slots), Contains("9 positions") && Contains("n_ctx = 8"));
  std::vector<dms::token_slot> fresh;
  for (int i = 0; i < 9; ++i) fresh.push_back({1, i, false});
  CHECK_THAT(message(std::vector<int>(9, 5), fresh), Contains("9 positions") && Contains("n_ctx = 8"));
  // Nothing changed: the sequence continues as if no bad batch had come.
  CHECK(m.seq_length(0) == 2);
  CHECK(m.seq_length(1) == 0);
  const auto third = prefill(m, {3});
  CHECK(max_diff(third[0], expected[2]) <= 1e-5);
  // Exactly n_ctx positions fit.
  std::vector<dms::token_slot> full;
  for (int i = 0; i < 8; ++i) full.push_back({1, i, i == 7});
  CHECK(m.forward({std::vector<int>(8, 5), full}).rows == 1);
  fs::remove_all(f.dir);
}

TEST_CASE("tiny llama: load errors name the file and the tensor", "[forward]") {
  const fs::path dir = dms::test::scratch_dir("dms-forward", "load-errors");
  const auto w = dms::test::make_tiny({});
  auto error_of = [&](const fs::path &p) -> dms::error {
    try {
      dms::llama_model::load(p);
    } catch (const dms::error &e) {
      return e;
    }
    FAIL("no error for " << p);
    return dms::error(dms::errc::io, "");
  };
  using Catch::Matchers::Contains;
  SECTION("unknown architecture") {
    auto c = w.c;
    c.arch = "gpt2";
    auto w2 = w;
    w2.c = c;
    dms::test::write_gguf(w2, dir / "gpt2.gguf", dms::ggml_type::f32);
    const auto e = error_of(dir / "gpt2.gguf");
    CHECK(e.code() == dms::errc::unsupported);
    CHECK_THAT(std::string(e.what()), Contains("gpt2.gguf") && Contains("'gpt2'") && Contains("llama, qwen2"));
  }
  SECTION("missing tensor") {
    dms::test::write_gguf(w, dir / "full.gguf", dms::ggml_type::f32);
    dms::gguf_file full((dir / "full.gguf").string());
    dms::gguf_writer g;
    g.copy_metadata(full);
    for (const auto &t : full.tensors())
      if (t.name != "blk.1.ffn_up.weight") g.add_tensor(t.name, t.type, t.shape(), t.raw_bytes());
    g.write(dir / "missing.gguf");
    const auto e = error_of(dir / "missing.gguf");
    CHECK_THAT(std::string(e.what()), Contains("missing.gguf") && Contains("blk.1.ffn_up.weight") && Contains("missing"));
  }
  SECTION("wrong shape") {
    dms::test::write_gguf(w, dir / "shape.gguf", dms::ggml_type::f32, [](dms::gguf_writer &g) {
      g.set("llama.feed_forward_length", std::uint32_t{64}); // the tensors say 96
    });
    const auto e = error_of(dir / "shape.gguf");
    CHECK(e.code() == dms::errc::shape_mismatch);
    CHECK_THAT(std::string(e.what()), Contains("shape.gguf") && Contains("blk.0.ffn_gate.weight") &&
                                          Contains("[96, 64]") && Contains("expected [64, 64]"));
  }
  SECTION("missing metadata") {
    dms::test::write_gguf(w, dir / "meta.gguf", dms::ggml_type::f32,
                          [](dms::gguf_writer &g) { g.erase("llama.block_count"); });
    CHECK_THAT(std::string(error_of(dir / "meta.gguf").what()), Contains("meta.gguf") && Contains("llama.block_count"));
  }
  SECTION("HF checkpoint with an unsupported model type or a missing tensor") {
    dms::test::write_hf(w, dir / "hf", dms::dtype::f32);
    {
      auto text = dms::test::slurp_text(dir / "hf" / "config.json");
      text.replace(text.find("\"llama\""), 7, "\"mamba\"");
      dms::test::write_text(dir / "hf" / "config.json", text);
    }
    CHECK_THAT(std::string(error_of(dir / "hf").what()), Contains("config.json") && Contains("'mamba'"));
    fs::remove_all(dir / "hf");
    auto w2 = w;
    w2.c.tied = true; // no lm_head written...
    dms::test::write_hf(w2, dir / "hf", dms::dtype::f32);
    auto text = dms::test::slurp_text(dir / "hf" / "config.json");
    text.replace(text.find("\"tie_word_embeddings\": true"), 27, "\"tie_word_embeddings\": false");
    dms::test::write_text(dir / "hf" / "config.json", text); // ...but the config says untied
    CHECK_THAT(std::string(error_of(dir / "hf").what()), Contains("lm_head.weight"));
  }
  SECTION("options") {
    dms::test::write_gguf(w, dir / "ok.gguf", dms::ggml_type::f32);
    CHECK_THROWS_AS(dms::llama_model::load(dir / "ok.gguf", {.n_seq_max = 0}), dms::error);
    CHECK_THROWS_AS(dms::llama_model::load(dir / "no-such-file.gguf"), dms::error);
    auto m = dms::llama_model::load(dir / "ok.gguf");
    CHECK(m.n_ctx() == 256); // the model's context_length, below the 4096 default cap
    CHECK(m.n_threads() >= 1);
  }
  fs::remove_all(dir);
}

TEST_CASE("tiny llama: steady-state decoding allocates nothing", "[forward]") {
  for (auto type : {dms::ggml_type::f32, dms::ggml_type::q4_1}) {
    auto f = gguf_model("alloc", {}, type);
    auto m = dms::llama_model::load(f.dir / "model.gguf", {.n_ctx = 64, .n_seq_max = 2, .n_threads = 2});
    prefill(m, prompt, 0);
    prefill(m, prompt, 1);
    std::vector<int> next = {5, 6};
    std::vector<dms::token_slot> slots = {{0, m.seq_length(0), true}, {1, m.seq_length(1), true}};
    m.forward({next, slots}); // the first two-row step grows the buffers
    std::size_t allocations = 0;
    {
      dms::test::allocation_scope scope;
      for (int step = 0; step < 20; ++step) {
        slots[0].pos = m.seq_length(0);
        slots[1].pos = m.seq_length(1);
        const auto out = m.forward({next, slots});
        next[0] = static_cast<int>(std::max_element(out.row(0), out.row(0) + out.cols) - out.row(0));
        next[1] = static_cast<int>(std::max_element(out.row(1), out.row(1) + out.cols) - out.row(1));
      }
      allocations = scope.count();
    }
    INFO(dms::traits_of(type).name);
    CHECK(allocations == 0);
    CHECK(m.seq_length(0) == static_cast<std::int32_t>(prompt.size()) + 21);
    fs::remove_all(f.dir);
  }
}
