// Steering vectors: mean difference, sign-fixed PCA of paired differences, probe direction,
// safetensors and llama.cpp control-vector files; (hidden, [peer]) the exported control vector
// loads and acts in llama-cpp-python.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dms/formats/gguf.hpp"
#include "dms/formats/npy.hpp"
#include "dms/probe/logistic.hpp"
#include "dms/steer/vector_io.hpp"
#include "dms/steer/vectors.hpp"
#include "support/external.hpp"
#include "support/scratch_dir.hpp"
#include "synthetic.hpp"

namespace {
dms::matrix_view<const float> view(const std::vector<float> &v, std::int64_t rows, std::int64_t cols) {
  return {v.data(), rows, cols, cols};
}
double dot(std::span<const float> a, std::span<const float> b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}
double norm(std::span<const float> a) { return std::sqrt(dot(a, a)); }
} // namespace

TEST_CASE("mean_difference: exact on a hand case, unit option", "[steer][vectors]") {
  const std::vector<float> pos{1, 2, 3, 3, 4, 5};   // mean (2, 3, 4)
  const std::vector<float> neg{0, 0, 1, 2, 0, 1, 1, 0, 1}; // mean (1, 0, 1)
  const auto v = dms::mean_difference(view(pos, 2, 3), view(neg, 3, 3));
  REQUIRE(v.size() == 3);
  CHECK(v[0] == 1.0f);
  CHECK(v[1] == 3.0f);
  CHECK(v[2] == 3.0f);
  const auto u = dms::mean_difference(view(pos, 2, 3), view(neg, 3, 3), dms::vector_scale::unit);
  CHECK(norm(u) == Approx(1.0));
  CHECK(u[1] == Approx(3.0 / std::sqrt(19.0)));
  CHECK_THROWS_WITH(dms::mean_difference(view(pos, 2, 3), view(neg, 1, 2)), Catch::Contains("width 3, negatives 2"));
  const std::vector<float> same{1, 1};
  CHECK_THROWS_WITH(dms::mean_difference(view(same, 1, 2), view(same, 1, 2), dms::vector_scale::unit),
                    Catch::Contains("zero"));
}

TEST_CASE("pca_direction: the first component of paired differences, sign fixed to the positives",
          "[steer][vectors]") {
  // Differences spread mostly along a known axis a, with a positive mean along it.
  const std::int64_t n = 64, d = 10;
  dms::test::normal_stream g(31);
  std::vector<double> a(d);
  for (std::int64_t j = 0; j < d; ++j) a[std::size_t(j)] = (j % 3 == 0 ? 1.0 : -0.5) / std::sqrt(double(d) * 0.5);
  double an = 0;
  for (double x : a) an += x * x;
  for (double &x : a) x /= std::sqrt(an);
  std::vector<float> pos(n * d), neg(n * d);
  for (std::int64_t i = 0; i < n; ++i) {
    const double t = 0.5 + 3.0 * g(); // large spread along a, mean 0.5
    for (std::int64_t j = 0; j < d; ++j) {
      const double base = g();
      neg[std::size_t(i * d + j)] = float(base);
      pos[std::size_t(i * d + j)] = float(base + t * a[std::size_t(j)] + 0.05 * g());
    }
  }
  const auto r = dms::pca_direction(view(pos, n, d), view(neg, n, d));
  CHECK(r.converged);
  CHECK(r.explained > 0.95);
  CHECK(norm(r.direction) == Approx(1.0));
  double cos_a = 0;
  for (std::int64_t j = 0; j < d; ++j) cos_a += r.direction[std::size_t(j)] * a[std::size_t(j)];
  CHECK(cos_a > 0.999); // aligned with a AND pointing to the positives

  // Positives project higher on average.
  double gap = 0;
  for (std::int64_t i = 0; i < n; ++i)
    gap += dot(std::span(pos).subspan(std::size_t(i * d), d), r.direction) -
           dot(std::span(neg).subspan(std::size_t(i * d), d), r.direction);
  CHECK(gap > 0);

  // Flip the roles: the component is the same axis, the sign follows the new positives.
  const auto f = dms::pca_direction(view(neg, n, d), view(pos, n, d));
  CHECK(dot(f.direction, r.direction) == Approx(-1.0).margin(1e-6));
  // Any seed for the start vector gives the same sign-fixed answer.
  for (std::uint64_t seed : {1u, 2u, 3u, 4u, 5u}) {
    const auto s = dms::pca_direction(view(pos, n, d), view(neg, n, d), {.seed = seed});
    CHECK(dot(s.direction, r.direction) == Approx(1.0).margin(1e-6));
  }
  // raw: scaled by the mean projection of the differences
  const auto raw = dms::pca_direction(view(pos, n, d), view(neg, n, d), {.scale = dms::vector_scale::raw});
  CHECK(norm(raw.direction) == Approx(gap / double(n)).epsilon(1e-4));
  // uncentered (llama.cpp's variant) on a pure shift: the shift direction itself
  std::vector<float> shifted = neg;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) shifted[std::size_t(i * d + j)] += float((1.0 + 0.01 * g()) * a[std::size_t(j)]);
  const auto u = dms::pca_direction(view(shifted, n, d), view(neg, n, d), {.center = false});
  double cu = 0;
  for (std::int64_t j = 0; j < d; ++j) cu += u.direction[std::size_t(j)] * a[std::size_t(j)];
  CHECK(cu > 0.999);
  // centered, a pure constant shift has no variance: an error that says what to use instead
  std::vector<float> exact = neg;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) exact[std::size_t(i * d + j)] += 1.0f;
  CHECK_THROWS_WITH(dms::pca_direction(view(exact, n, d), view(neg, n, d)), Catch::Contains("mean_difference"));
  CHECK_THROWS_WITH(dms::pca_direction(view(pos, n, d), view(neg, n - 1, d)), Catch::Contains("equal shapes"));
}

TEST_CASE("probe_direction: w / scale in raw activation space", "[steer][vectors]") {
  const dms::logistic_probe p({2.0f, -1.0f, 0.5f}, 0.1f, {1.0f, 0.0f, -1.0f}, {2.0f, 4.0f, 0.5f});
  const auto raw = dms::probe_direction(p);
  CHECK(raw == std::vector<float>{1.0f, -0.25f, 1.0f});
  const auto away = dms::probe_direction(p, dms::vector_scale::unit, 0);
  CHECK(norm(away) == Approx(1.0));
  CHECK(away[0] == Approx(-1.0 / std::sqrt(2.0625)));
  // Moving along the raw direction raises the logit by t * |w_raw|^2.
  std::vector<float> h{0.3f, 0.7f, -0.2f}, moved = h;
  for (std::size_t j = 0; j < 3; ++j) moved[j] += 0.5f * raw[j];
  CHECK(p.logit(moved) - p.logit(h) == Approx(0.5 * dot(raw, raw)).epsilon(1e-5));
}

TEST_CASE("steering vectors: safetensors round trip", "[steer][vectors]") {
  const auto dir = dms::test::scratch_dir("dms-steer", "vec-io");
  const std::vector<dms::steering_vector> vs{{16, dms::site::resid_post, {1.0f, -2.0f, 0.5f}},
                                             {3, dms::site::mlp_out, {0.0f, 1e-8f, 3.0f}}};
  dms::save_steering_vectors(dir / "v.safetensors", vs);
  const auto back = dms::load_steering_vectors(dir / "v.safetensors");
  REQUIRE(back.size() == 2);
  CHECK(back[0].at() == dms::hook_point{3, dms::site::mlp_out}); // layer order
  CHECK(back[0].values == vs[1].values);
  CHECK(back[1].at() == dms::hook_point{16, dms::site::resid_post});
  CHECK(back[1].values == vs[0].values);
  const dms::safetensors_file f((dir / "v.safetensors").string());
  CHECK(f.contains("blocks.16.hook_resid_post"));
  const std::vector<dms::steering_vector> dup{{1, dms::site::resid_post, {1.0f}}, {1, dms::site::resid_post, {2.0f}}};
  CHECK_THROWS_WITH(dms::save_steering_vectors(dir / "d.safetensors", dup), Catch::Contains("two vectors"));
  const std::vector<dms::steering_vector> ragged{{1, dms::site::resid_post, {1.0f}}, {2, dms::site::resid_post, {2.0f, 3.0f}}};
  CHECK_THROWS_WITH(dms::save_steering_vectors(dir / "r.safetensors", ragged), Catch::Contains("width 2"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("steering vectors: llama.cpp control-vector round trip and layer mapping", "[steer][vectors]") {
  const auto dir = dms::test::scratch_dir("dms-steer", "cvec");
  const std::vector<dms::steering_vector> vs{{5, dms::site::resid_post, {1.0f, 2.0f}},
                                             {6, dms::site::resid_pre, {0.5f, 0.5f}}, // = resid_post of 5
                                             {2, dms::site::resid_post, {-1.0f, 0.0f}}};
  dms::export_control_vector(dir / "c.gguf", vs, "llama", 2.0f);
  const dms::gguf_file g((dir / "c.gguf").string());
  CHECK(g.find("general.architecture")->string("general.architecture") == "controlvector");
  const auto cv = dms::read_control_vector(g);
  REQUIRE(cv.directions.size() == 2);
  CHECK(cv.directions.at(5) == std::vector<float>{3.0f, 5.0f}); // (v5 + v6pre) * 2
  CHECK(cv.directions.at(2) == std::vector<float>{-2.0f, 0.0f});
  const auto back = dms::import_control_vector(dir / "c.gguf");
  REQUIRE(back.size() == 2);
  CHECK(back[0].at() == dms::hook_point{2, dms::site::resid_post});
  CHECK(back[1].at() == dms::hook_point{5, dms::site::resid_post});
  CHECK(back[1].values == cv.directions.at(5));
  CHECK(dms::control_vector_layer({7, dms::site::resid_post}) == 7);
  CHECK(dms::control_vector_layer({7, dms::site::resid_pre}) == 6);
  CHECK_THROWS_WITH(dms::control_vector_layer({0, dms::site::resid_post}), Catch::Contains("start at block 1"));
  CHECK_THROWS_WITH(dms::control_vector_layer({1, dms::site::resid_pre}), Catch::Contains("start at block 1"));
  CHECK_THROWS_WITH(dms::control_vector_layer({3, dms::site::attn_out}), Catch::Contains("block outputs"));
  const std::vector<dms::steering_vector> last{{30, dms::site::resid_post, {1.0f, 2.0f}}};
  CHECK_THROWS_WITH(dms::export_control_vector(dir / "x.gguf", last, "llama", 1.0f, 30), Catch::Contains("directions 1..29"));
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// llama-cpp-python: the exported file, read back by the gguf package and applied through
// llama.cpp's own control-vector entry point, steers the real model.
namespace {
constexpr const char *cvec_script = R"PY(
import sys, json, ctypes
import numpy as np
import gguf, llama_cpp
model_path, cvec_path = sys.argv[1], sys.argv[2]
r = gguf.GGUFReader(cvec_path)
arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
dirs = {}
for t in r.tensors:
    dirs[int(t.name.split(".")[1])] = np.array(t.data, dtype=np.float32)
llm = llama_cpp.Llama(model_path=model_path, n_ctx=64, n_threads=2, logits_all=False, verbose=False)
n_embd, n_layer = llm.n_embd(), llama_cpp.llama_model_n_layer(llm.model) if hasattr(llama_cpp, "llama_model_n_layer") else llama_cpp.llama_n_layer(llm.model)
apply = None
for name in ("llama_set_adapter_cvec", "llama_apply_adapter_cvec", "llama_control_vector_apply"):
    apply = apply or getattr(llama_cpp, name, None)
if apply is None:
    print(json.dumps({"skip": "llama_cpp exposes no control-vector binding"})); sys.exit(0)
ctx = llm._ctx.ctx
def clear_cache():
    if hasattr(llama_cpp, "llama_memory_clear"):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    elif hasattr(llama_cpp, "llama_kv_self_clear"):
        llama_cpp.llama_kv_self_clear(ctx)
    else:
        llama_cpp.llama_kv_cache_clear(ctx)
def logits():
    llm.reset(); clear_cache()
    llm.eval(llm.tokenize(b"The quick brown fox"))
    # straight from the context: Llama.scores is not refreshed for the last token here
    p = llama_cpp.llama_get_logits_ith(ctx, -1)
    return np.ctypeslib.as_array(p, shape=(llm.n_vocab(),)).astype(np.float64)
def set_cvec(scale):
    buf = np.zeros((n_layer - 1) * n_embd, dtype=np.float32)  # layer 1 first, as llama.cpp's loader lays it out
    for N, v in dirs.items():
        buf[(N - 1) * n_embd:N * n_embd] += scale * v
    ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    rc = apply(ctx, ptr, buf.size, n_embd, 1, n_layer - 1)
    return rc, buf
base = logits()
rc, keep = set_cvec(1.0)
steered = logits()
rc0, keep0 = set_cvec(0.0)
zero = logits()
print(json.dumps({"arch": arch, "n_embd": n_embd, "n_layer": n_layer, "rc": int(rc), "rc0": int(rc0),
                  "changed": float(np.abs(steered - base).max()), "zero_diff": float(np.abs(zero - base).max()),
                  "layers": sorted(dirs)}))
)PY";
}

TEST_CASE("peer: an exported control vector loads and steers in llama-cpp-python", "[.peer][steer][vectors]") {
  const auto dir = dms::test::scratch_dir("dms-steer", "cvec-peer");
  const std::string python = dms::test::peer_python(dir, "numpy, gguf, llama_cpp");
  const std::string model = dms::test::model_path(dir);
  dms::test::normal_stream g(77);
  std::vector<dms::steering_vector> vs;
  for (std::int32_t layer : {10, 15}) {
    std::vector<float> v(576);
    for (float &x : v) x = float(4.0 * g());
    vs.push_back({layer, dms::site::resid_post, v});
  }
  dms::export_control_vector(dir / "c.gguf", vs, "llama", 1.0f, 30);
  const std::string out = dms::test::run_python(python, cvec_script, {model, (dir / "c.gguf").string()}, dir);
  const auto j = nlohmann::json::parse(out);
  if (j.contains("skip")) dms::test::skip(j["skip"].get<std::string>());
  INFO(out);
  CHECK(j["arch"] == "controlvector");
  CHECK(j["n_embd"] == 576);
  CHECK(j["layers"] == nlohmann::json::array({10, 15}));
  CHECK(j["rc"] == 0);
  CHECK(j["changed"].get<double>() > 1e-2); // the vector acts on the logits
  CHECK(j["zero_diff"].get<double>() < 1e-4); // and a zero vector gives the unsteered logits back
  std::filesystem::remove_all(dir);
}
