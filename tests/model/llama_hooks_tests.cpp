// Hook sites of the Llama forward pass: which sites are called, in what order, with which rows,
// and that what a hook writes is what the model uses.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "support/scratch_dir.hpp"
#include "dms/model/llama.hpp"
#include "tiny_model.hpp"

namespace fs = std::filesystem;

namespace {

struct recorded {
  dms::hook_point at;
  std::int64_t rows, cols, row_stride;
  std::vector<dms::token_slot> slots;
  const dms::token_slot *slots_data;
  std::vector<float> data; // rows * cols
};

//! Wants every site (or those `filter` accepts) and copies what it sees.
struct recorder {
  std::vector<recorded> seen;
  bool (*filter)(dms::hook_point) = nullptr;
  bool wants(dms::hook_point p) const { return filter == nullptr || filter(p); }
  void operator()(dms::activation_block &b) {
    recorded r{b.at, b.rows.rows, b.rows.cols, b.rows.row_stride, {b.slots.begin(), b.slots.end()}, b.slots.data(), {}};
    for (std::int64_t i = 0; i < b.rows.rows; ++i) r.data.insert(r.data.end(), b.rows.row(i), b.rows.row(i) + b.rows.cols);
    CHECK(b.space == dms::memory_space::host);
    seen.push_back(std::move(r));
  }
  const recorded &at(std::int32_t layer, dms::site s) const {
    for (const auto &r : seen)
      if (r.at == dms::hook_point{layer, s}) return r;
    FAIL("no record for " << dms::to_string({layer, s}));
    return seen.front();
  }
};

//! Wants everything, touches nothing.
struct idle_hooks {
  int calls = 0;
  bool wants(dms::hook_point) const { return true; }
  void operator()(dms::activation_block &) { ++calls; }
};

struct fixture {
  fs::path dir = dms::test::scratch_dir("dms-forward", "hooks");
  dms::test::tiny_weights w = dms::test::make_tiny({});
  fixture() { dms::test::write_gguf(w, dir / "model.gguf", dms::ggml_type::f32); }
  ~fixture() { fs::remove_all(dir); }
  dms::llama_model load() const {
    return dms::llama_model::load(dir / "model.gguf", {.n_ctx = 32, .n_seq_max = 2, .n_threads = 2});
  }
};

const std::vector<int> tokens = {1, 17, 42, 99, 3, 64};

std::vector<dms::token_slot> slots_for(std::size_t n, std::int32_t seq = 0, bool all_logits = false) {
  std::vector<dms::token_slot> s;
  for (std::size_t i = 0; i < n; ++i) s.push_back({seq, static_cast<std::int32_t>(i), all_logits || i + 1 == n});
  return s;
}

std::vector<float> copy(dms::matrix_view<const float> m) {
  std::vector<float> v;
  for (std::int64_t r = 0; r < m.rows; ++r) v.insert(v.end(), m.row(r), m.row(r) + m.cols);
  return v;
}

} // namespace

TEST_CASE("hooks: every site in order, with the step's rows and slots", "[forward]") {
  fixture f;
  auto m = f.load();
  recorder rec;
  // Rows 1 and 5 want logits: the logits site still shows all six rows.
  std::vector<dms::token_slot> slots = slots_for(tokens.size());
  slots[1].want_logits = true;
  const auto out = m.forward({tokens, slots}, rec);
  const int L = m.n_layers();
  REQUIRE(rec.seen.size() == static_cast<std::size_t>(5 * L + 2));
  const dms::site order[] = {dms::site::resid_pre, dms::site::attn_out, dms::site::resid_mid, dms::site::mlp_out,
                             dms::site::resid_post};
  std::size_t i = 0;
  for (int l = 0; l < L; ++l)
    for (dms::site s : order) CHECK(rec.seen[i++].at == dms::hook_point{l, s});
  CHECK(rec.seen[i++].at == dms::hook_point{-1, dms::site::final_norm});
  CHECK(rec.seen[i++].at == dms::hook_point{-1, dms::site::logits});
  for (const auto &r : rec.seen) {
    CHECK(r.rows == 6);
    CHECK(r.cols == (r.at.where == dms::site::logits ? m.n_vocab() : m.n_embd()));
    CHECK(r.row_stride >= r.cols);
    CHECK(r.slots_data == slots.data()); // the caller's slots, not a copy
  }
  // The residual stream's bookkeeping, bit for bit.
  for (int l = 0; l < L; ++l) {
    const auto &pre = rec.at(l, dms::site::resid_pre), &att = rec.at(l, dms::site::attn_out);
    const auto &mid = rec.at(l, dms::site::resid_mid), &mlp = rec.at(l, dms::site::mlp_out);
    const auto &post = rec.at(l, dms::site::resid_post);
    for (std::size_t k = 0; k < pre.data.size(); ++k) {
      REQUIRE(mid.data[k] == pre.data[k] + att.data[k]);
      REQUIRE(post.data[k] == mid.data[k] + mlp.data[k]);
    }
    if (l + 1 < L) CHECK(post.data == rec.at(l + 1, dms::site::resid_pre).data);
  }
  // resid_pre of layer 0 is the embedding.
  for (std::size_t t = 0; t < tokens.size(); ++t)
    for (std::int64_t c = 0; c < m.n_embd(); ++c)
      REQUIRE(rec.at(0, dms::site::resid_pre).data[t * 64 + static_cast<std::size_t>(c)] ==
              f.w.embd[static_cast<std::size_t>(tokens[t]) * 64 + static_cast<std::size_t>(c)]);
  // final_norm = rms_norm(last resid_post) * output_norm (checked in double).
  const auto &last = rec.at(L - 1, dms::site::resid_post), &fin = rec.at(-1, dms::site::final_norm);
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    double ss = 0;
    for (std::size_t c = 0; c < 64; ++c) ss += double(last.data[t * 64 + c]) * last.data[t * 64 + c];
    const double scale = 1.0 / std::sqrt(ss / 64 + 1e-5);
    for (std::size_t c = 0; c < 64; ++c)
      REQUIRE(std::abs(fin.data[t * 64 + c] - last.data[t * 64 + c] * scale * f.w.output_norm[c]) <= 1e-5);
  }
  // Returned logits: rows 1 and 5 of the logits site, in batch order.
  const auto &lg = rec.at(-1, dms::site::logits);
  REQUIRE(out.rows == 2);
  const auto V = static_cast<std::size_t>(m.n_vocab());
  CHECK(std::equal(out.row(0), out.row(0) + V, lg.data.begin() + 1 * V));
  CHECK(std::equal(out.row(1), out.row(1) + V, lg.data.begin() + 5 * V));
}

TEST_CASE("hooks: a hook that writes nothing changes nothing", "[forward]") {
  fixture f;
  auto a = f.load(), b = f.load();
  idle_hooks idle;
  const auto slots = slots_for(tokens.size(), 0, true);
  const auto plain = copy(a.forward({tokens, slots}));
  const auto hooked = copy(b.forward({tokens, slots}, idle));
  CHECK(idle.calls == 5 * a.n_layers() + 2);
  CHECK(plain == hooked); // bit-identical, logits of every row computed either way
  // And in decode, with two sequences.
  const std::vector<int> next = {5, 6};
  const std::vector<dms::token_slot> more = {{0, 6, true}, {1, 0, true}};
  CHECK(copy(a.forward({next, more})) == copy(b.forward({next, more}, idle)));
}

TEST_CASE("hooks: only the wanted sites are called", "[forward]") {
  fixture f;
  auto m = f.load();
  recorder rec;
  rec.filter = [](dms::hook_point p) { return p == dms::hook_point{1, dms::site::resid_post}; };
  m.forward({tokens, slots_for(tokens.size())}, rec);
  REQUIRE(rec.seen.size() == 1);
  CHECK(rec.seen[0].at == dms::hook_point{1, dms::site::resid_post});
  // A decode step: one row, at position 6.
  const std::vector<int> next = {7};
  const std::vector<dms::token_slot> s = {{0, 6, true}};
  m.forward({next, s}, rec);
  REQUIRE(rec.seen.size() == 2);
  CHECK(rec.seen[1].rows == 1);
  CHECK(rec.seen[1].slots[0].pos == 6);
}

TEST_CASE("hooks: overwriting resid_pre changes the output as the reference predicts", "[forward]") {
  fixture f;
  auto m = f.load();
  // Add a fixed vector to every token's input of layer 1 (a constant steering vector).
  std::vector<float> v(64);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.5f * std::sin(0.3f * static_cast<float>(i));
  struct steer {
    const std::vector<float> *v;
    bool wants(dms::hook_point p) const { return p == dms::hook_point{1, dms::site::resid_pre}; }
    void operator()(dms::activation_block &b) {
      for (std::int64_t r = 0; r < b.rows.rows; ++r)
        for (std::int64_t c = 0; c < b.rows.cols; ++c) b.rows(r, c) += (*v)[static_cast<std::size_t>(c)];
    }
  } hooks{&v};
  const auto slots = slots_for(tokens.size(), 0, true);
  const auto got = copy(m.forward({tokens, slots}, hooks));
  const auto ref = dms::test::reference_logits(f.w, tokens, [&](int layer, int, std::vector<double> &row) {
    if (layer == 1)
      for (std::size_t c = 0; c < row.size(); ++c) row[c] += v[c];
  });
  const auto plain = dms::test::reference_logits(f.w, tokens);
  double diff = 0, effect = 0, scale = 0;
  for (std::size_t t = 0; t < tokens.size(); ++t)
    for (std::size_t k = 0; k < 100; ++k) {
      diff = std::max(diff, std::abs(got[t * 100 + k] - ref[t][k]));
      effect = std::max(effect, std::abs(ref[t][k] - plain[t][k]));
      scale = std::max(scale, std::abs(ref[t][k]));
    }
  INFO("max |diff| " << diff << ", steering effect " << effect << ", max |logit| " << scale);
  CHECK(effect > 0.1);           // the edit matters...
  CHECK(diff <= 1e-5 * scale);   // ...and the model followed it exactly
  // Later steps attend to the steered keys: decode one more token with the hook, compare.
  const std::vector<int> next = {11};
  const std::vector<dms::token_slot> s = {{0, 6, true}};
  const auto step = copy(m.forward({next, s}, hooks));
  auto all = tokens;
  all.push_back(11);
  const auto ref2 = dms::test::reference_logits(f.w, all, [&](int layer, int, std::vector<double> &row) {
    if (layer == 1)
      for (std::size_t c = 0; c < row.size(); ++c) row[c] += v[c];
  });
  double diff2 = 0;
  for (std::size_t k = 0; k < 100; ++k) diff2 = std::max(diff2, std::abs(step[k] - ref2.back()[k]));
  CHECK(diff2 <= 1e-5 * scale);
}

TEST_CASE("hooks: rows written at attn_out, mlp_out, final_norm and logits are used", "[forward]") {
  fixture f;
  const auto slots = slots_for(tokens.size(), 0, true);
  SECTION("zeroing attn_out and mlp_out of every layer leaves the embedding") {
    auto m = f.load();
    struct zero {
      bool wants(dms::hook_point p) const { return p.where == dms::site::attn_out || p.where == dms::site::mlp_out; }
      void operator()(dms::activation_block &b) {
        for (std::int64_t r = 0; r < b.rows.rows; ++r) std::fill(b.rows.row(r), b.rows.row(r) + b.rows.cols, 0.0f);
      }
    } hooks;
    recorder rec;
    rec.filter = [](dms::hook_point p) { return p.where == dms::site::resid_post; };
    struct both {
      zero *z;
      recorder *r;
      bool wants(dms::hook_point p) const { return z->wants(p) || r->wants(p); }
      void operator()(dms::activation_block &b) {
        if (z->wants(b.at)) (*z)(b);
        if (r->wants(b.at)) (*r)(b);
      }
    } hk{&hooks, &rec};
    m.forward({tokens, slots}, hk);
    const auto &last = rec.at(m.n_layers() - 1, dms::site::resid_post);
    for (std::size_t t = 0; t < tokens.size(); ++t)
      for (std::size_t c = 0; c < 64; ++c)
        REQUIRE(last.data[t * 64 + c] == f.w.embd[static_cast<std::size_t>(tokens[t]) * 64 + c]);
  }
  SECTION("final_norm rows are what the output matrix reads") {
    auto m = f.load();
    struct one_hot {
      bool wants(dms::hook_point p) const { return p.where == dms::site::final_norm; }
      void operator()(dms::activation_block &b) {
        for (std::int64_t r = 0; r < b.rows.rows; ++r) {
          std::fill(b.rows.row(r), b.rows.row(r) + b.rows.cols, 0.0f);
          b.rows(r, r) = 1.0f; // row r of the step -> column r of the output matrix
        }
      }
    } hooks;
    const auto out = m.forward({tokens, slots}, hooks);
    for (std::int64_t r = 0; r < out.rows; ++r)
      for (std::int64_t k = 0; k < out.cols; ++k)
        REQUIRE(std::abs(out(r, k) - f.w.output[static_cast<std::size_t>(k * 64 + r)]) <= 1e-6);
  }
  SECTION("logits written by a hook are returned") {
    auto m = f.load();
    struct mark {
      bool wants(dms::hook_point p) const { return p.where == dms::site::logits; }
      void operator()(dms::activation_block &b) {
        for (std::int64_t r = 0; r < b.rows.rows; ++r) b.rows(r, 0) = 1000.0f + static_cast<float>(b.slots[static_cast<std::size_t>(r)].pos);
      }
    } hooks;
    auto s = slots;
    s[0].want_logits = s[2].want_logits = false;
    const auto out = m.forward({tokens, s}, hooks);
    REQUIRE(out.rows == 4);
    CHECK(out(0, 0) == 1001.0f);
    CHECK(out(1, 0) == 1003.0f);
    CHECK(out(3, 0) == 1005.0f);
  }
}

TEST_CASE("hooks: no_hooks compiles the sites away", "[forward]") {
  STATIC_REQUIRE(!dms::detail::hooks_active<dms::no_hooks>);
  STATIC_REQUIRE(dms::detail::hooks_active<idle_hooks>);
  STATIC_REQUIRE(!dms::no_hooks::wants({0, dms::site::resid_pre}));
}
