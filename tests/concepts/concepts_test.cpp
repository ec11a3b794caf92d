// Compile-time checks of the four concepts and the tensor view: each archetype models its
// concept, each documented example type does, and near-misses do not. Most checks are
// static_asserts (a failure stops the build); the TEST_CASEs repeat the key ones at run time so
// ctest lists them.
#include <catch2/catch.hpp>

#include <span>
#include <string_view>
#include <vector>

#include "dms/dms.hpp"

namespace {

// --- tensor view ---------------------------------------------------------------------------------
struct user_tensor { // the documented example
  std::vector<float> storage;
  std::int64_t rows, cols;
  dms::tensor_view dms_view() { return dms::make_view(storage.data(), {rows, cols}); }
};
struct foreign_tensor { // a type the user cannot change: viewed through tensor_adapter
  double *p;
  std::int64_t n;
};
struct not_a_tensor {
  int x;
};
} // namespace

template <> struct dms::tensor_adapter<foreign_tensor> {
  static dms::tensor_view view(foreign_tensor &t) { return dms::make_view(t.p, {t.n}); }
};

static_assert(dms::viewable<dms::archetypes::tensor>);
static_assert(dms::viewable<user_tensor &>);
static_assert(dms::viewable<foreign_tensor &>);
static_assert(dms::viewable<std::vector<float> &>);
static_assert(dms::viewable<std::span<const dms::bf16_bits>>);
static_assert(!dms::viewable<not_a_tensor &>);
static_assert(!dms::viewable<std::vector<long double> &>); // not a dms element type

// --- model backend -------------------------------------------------------------------------------
namespace {
struct backend_without_clear {
  std::int32_t n_layers() const { return 1; }
  std::int64_t n_embd() const { return 1; }
  std::int64_t n_vocab() const { return 1; }
  std::int32_t n_ctx() const { return 1; }
  dms::memory_space space() const { return dms::memory_space::host; }
  template <class H> dms::matrix_view<const float> forward(const dms::token_batch &, H &) { return {}; }
};
struct backend_only_no_hooks { // forward() that only takes no_hooks: cannot host a probe
  std::int32_t n_layers() const { return 1; }
  std::int64_t n_embd() const { return 1; }
  std::int64_t n_vocab() const { return 1; }
  std::int32_t n_ctx() const { return 1; }
  dms::memory_space space() const { return dms::memory_space::host; }
  dms::matrix_view<const float> forward(const dms::token_batch &, dms::no_hooks &) { return {}; }
  void clear(std::int32_t) {}
};
struct recording_hooks {
  std::vector<dms::hook_point> seen;
  bool wants(dms::hook_point p) const { return p.where == dms::site::resid_post; }
  void operator()(dms::activation_block &b) { seen.push_back(b.at); }
};
struct hooks_without_wants {
  void operator()(dms::activation_block &) {}
};
} // namespace

static_assert(dms::model_backend<dms::archetypes::model_backend>);
static_assert(dms::diagnose_model_backend<dms::archetypes::model_backend>());
static_assert(!dms::model_backend<backend_without_clear>);
static_assert(!dms::model_backend<backend_only_no_hooks>);
static_assert(dms::hook_set<dms::no_hooks>);
static_assert(dms::hook_set<recording_hooks>);
static_assert(dms::hook_set<dms::archetypes::hook_set>);
static_assert(!dms::hook_set<hooks_without_wants>);
static_assert(!dms::no_hooks::wants({0, dms::site::resid_pre})); // constant: compiles away

// --- probe ---------------------------------------------------------------------------------------
namespace {
struct threshold_probe { // the documented example
  std::int64_t width, k;
  float t;
  std::int64_t n_features() const noexcept { return width; }
  float score(std::span<const float> h) const noexcept { return h[k] > t ? 1.0f : 0.0f; }
};
struct mutable_score_probe { // score() not const: cannot be shared between threads
  std::int64_t n_features() const { return 1; }
  float score(std::span<const float>) { return 0; }
};
struct batched_probe : threshold_probe {
  mutable int batched_calls = 0;
  void score_rows(dms::matrix_view<const float> rows, std::span<float> out) const {
    ++batched_calls;
    for (std::int64_t r = 0; r < rows.rows; ++r) out[r] = score(rows.row_span(r));
  }
};
} // namespace

static_assert(dms::probe<dms::archetypes::probe>);
static_assert(dms::diagnose_probe<threshold_probe>());
static_assert(!dms::probe<mutable_score_probe>);
static_assert(!dms::probe<not_a_tensor>);

// --- steering policy -----------------------------------------------------------------------------
namespace {
struct nudge { // the documented example
  struct state_type {};
  std::int32_t layer;
  std::vector<float> v;
  bool wants(dms::hook_point p) const noexcept { return p == dms::hook_point{layer, dms::site::resid_post}; }
  void apply(dms::activation_block &b, std::span<state_type>, std::span<float>) const {
    for (std::int64_t r = 0; r < b.rows.rows; ++r)
      for (std::int64_t c = 0; c < b.rows.cols; ++c) b.rows(r, c) += v[static_cast<std::size_t>(c)];
  }
};
struct policy_without_state {
  bool wants(dms::hook_point) const { return true; }
  void apply(dms::activation_block &, std::span<int>, std::span<float>) const {}
};
struct policy_with_wrong_apply {
  struct state_type {};
  bool wants(dms::hook_point) const { return true; }
  void apply(dms::activation_block &) const {}
};
} // namespace

static_assert(dms::steering_policy<dms::archetypes::steering_policy>);
static_assert(dms::diagnose_steering_policy<nudge>());
static_assert(dms::steering_policy<dms::constant_policy>);
static_assert(!dms::steering_policy<policy_without_state>);
static_assert(!dms::steering_policy<policy_with_wrong_apply>);
static_assert(dms::hook_set<dms::policy_hooks<nudge>>);

// --- merge strategy ------------------------------------------------------------------------------
namespace {
struct average { // the documented example
  static constexpr std::string_view name = "average";
  bool needs_base() const noexcept { return false; }
  void merge(const dms::merge_inputs &in, std::span<float> out) const {
    for (std::size_t i = 0; i < out.size(); ++i) {
      float s = 0;
      for (auto m : in.models) s += m[i];
      out[i] = s / float(in.models.size());
    }
  }
};
struct chunkable_average : average {
  static constexpr bool elementwise = true;
};
struct strategy_without_name {
  bool needs_base() const { return false; }
  void merge(const dms::merge_inputs &, std::span<float>) const {}
};
struct strategy_writing_to_const {
  static constexpr std::string_view name = "x";
  bool needs_base() const { return false; }
  void merge(const dms::merge_inputs &, std::span<const float>) const {}
};
} // namespace

static_assert(dms::merge_strategy<dms::archetypes::merge_strategy>);
static_assert(dms::diagnose_merge_strategy<average>());
static_assert(!dms::is_elementwise<average>);
static_assert(dms::is_elementwise<chunkable_average>);
static_assert(!dms::merge_strategy<strategy_without_name>);
static_assert(dms::merge_strategy<strategy_writing_to_const>); // span<float> converts to span<const float>

// --- run-time behaviour of the pieces the concepts come with -------------------------------------
TEST_CASE("score_rows uses the batched member when present, else loops", "[concepts][probe]") {
  std::vector<float> data{0.0f, 2.0f, 3.0f, 0.5f}; // 2 rows x 2
  dms::matrix_view<const float> rows{data.data(), 2, 2, 2};
  std::vector<float> out(2);
  threshold_probe p{2, 1, 1.0f};
  dms::score_rows(p, rows, std::span<float>(out));
  CHECK(out == std::vector<float>{1.0f, 0.0f});
  batched_probe bp{{2, 0, 1.0f}};
  dms::score_rows(bp, rows, std::span<float>(out));
  CHECK(bp.batched_calls == 1);
  CHECK(out == std::vector<float>{0.0f, 1.0f});
  threshold_probe wide{3, 0, 0.0f};
  CHECK_THROWS_WITH(dms::score_rows(wide, rows, std::span<float>(out)),
                    Catch::Contains("probe expects rows of width 3, got 2"));
}

TEST_CASE("merge_parameters: per-model values fall back to global ones", "[concepts][merge]") {
  dms::merge_parameters p;
  p.set("weight", 0.5).set("weight", 1, 0.25).set("density", 0.7);
  CHECK(p.get("weight", 0) == 0.5);
  CHECK(p.get("weight", 1) == 0.25);
  CHECK(p.get("density", 3) == 0.7);
  CHECK(p.get_or("lambda", 1.0) == 1.0);
  CHECK_THROWS_WITH(p.get("epsilon", 2), Catch::Contains("merge parameter 'epsilon' is not set for model 2"));
  p.set("weight", 1, 0.75);
  CHECK(p.get("weight", 1) == 0.75);
  CHECK(p.entries().size() == 3);
}

TEST_CASE("hook point names follow TransformerLens", "[concepts][backend]") {
  CHECK(dms::to_string(dms::hook_point{3, dms::site::resid_post}) == "blocks.3.hook_resid_post");
  CHECK(dms::to_string(dms::hook_point{-1, dms::site::final_norm}) == "hook_final_norm");
  for (auto s : dms::all_sites) CHECK(dms::name_of(s) != "?");
}

TEST_CASE("constant_policy adds c*v at its hook point and validates its shape", "[concepts][steer]") {
  dms::constant_policy pol({2, dms::site::resid_post}, {1.0f, -1.0f, 0.5f}, 2.0f);
  CHECK(pol.wants({2, dms::site::resid_post}));
  CHECK_FALSE(pol.wants({2, dms::site::resid_pre}));
  CHECK_NOTHROW(pol.validate(4, 3));
  CHECK_THROWS_WITH(pol.validate(2, 3), Catch::Contains("layer 2 is out of range [0, 2)"));
  CHECK_THROWS_WITH(pol.validate(4, 576), Catch::Contains("vector has width 3, model has n_embd 576"));
  CHECK_THROWS_WITH(dms::constant_policy({0, dms::site::resid_post}, {1.0f}, NAN), Catch::Contains("not finite"));

  std::vector<float> acts(2 * 3, 1.0f);
  std::vector<dms::token_slot> slots{{0, 0, false}, {1, 5, true}};
  dms::activation_block blk{{2, dms::site::resid_post}, {acts.data(), 2, 3, 3}, slots};
  std::vector<dms::constant_policy::state_type> states(2);
  std::vector<float> scratch(8);
  dms::policy_hooks hooks(pol, std::span(states), std::span(scratch));
  hooks(blk);
  CHECK(acts == std::vector<float>{3.0f, -1.0f, 2.0f, 3.0f, -1.0f, 2.0f});

  std::vector<dms::token_slot> bad_slots{{0, 0, false}, {7, 0, false}};
  blk.slots = bad_slots;
  CHECK_THROWS_WITH(hooks(blk), Catch::Contains("sequence 7 has no state (2 states given)"));
}
