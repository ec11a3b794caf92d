// mergekit YAML configs and parameter resolution: what parses, what each setting evaluates to for
// a tensor, and the errors (which must name the key and its line).
#include <catch2/catch.hpp>

// Built with dms::merge only (yaml-cpp); the folder also builds without it.
#if defined(DMS_HAS_MERGE)

#include <string>

#include <dms/merge/config.hpp>
#include <dms/merge/parameters.hpp>

using namespace dms;

namespace {
merge_config parse(const std::string &yaml) { return parse_merge_config(yaml, "cfg.yaml"); }
} // namespace

TEST_CASE("config: gradients interpolate piecewise-linearly (mergekit's evaluate_setting)", "[merge][config]") {
  const auto g = parameter_setting::gradient({0, 0.5, 1, 0.2});
  CHECK(*g.evaluate("x", 0) == 0);
  CHECK(*g.evaluate("x", 1) == Approx(0.2));
  CHECK(*g.evaluate("x", 1.0 / 3) == Approx(0.5));
  CHECK(*g.evaluate("x", 0.5) == Approx(0.75)); // halfway between 0.5 and 1
  CHECK(*g.evaluate("x", 5.0 / 6) == Approx(0.6));
  CHECK(*parameter_setting::gradient({0.3}).evaluate("x", 0.7) == Approx(0.3));
  CHECK(*parameter_setting::scalar(2).evaluate("x", 0.4) == 2);
  CHECK(slice_gradient_t(0, 5) == 0);
  CHECK(slice_gradient_t(4, 5) == 1);
  CHECK(slice_gradient_t(1, 5) == 0.25);
  CHECK(slice_gradient_t(0, 1) == 1); // a one-layer slice: mergekit uses t = 1
}

TEST_CASE("config: filters: first match wins, a filterless entry is the fallback", "[merge][config]") {
  const auto c = parse("merge_method: slerp\nmodels:\n  - model: a\nparameters:\n  t:\n"
                       "    - filter: self_attn\n      value: [0, 1]\n    - filter: mlp\n      value: 0.7\n"
                       "    - value: 0.5\n  density:\n    - filter: mlp\n      value: 0.1\n");
  const parameter_setting *t = c.parameters.find("t");
  REQUIRE(t);
  CHECK(*t->evaluate("model.layers.3.self_attn.q_proj.weight", 0.25) == 0.25);
  CHECK(*t->evaluate("model.layers.3.mlp.up_proj.weight", 0.25) == 0.7);
  CHECK(*t->evaluate("model.embed_tokens.weight", 0) == 0.5);
  // No match and no fallback: unset at this level.
  CHECK(!c.parameters.find("density")->evaluate("model.norm.weight", 1).has_value());
  CHECK(t->to_string() == "[{filter: self_attn, value: [0, 1]}, {filter: mlp, value: 0.7}, {filter: *, value: 0.5}]");
}

TEST_CASE("config: resolution order model > slice > global, per-model filters use the input's name", "[merge][config]") {
  parameter_map global, slice, own0, own1;
  global.set("weight", parameter_setting::scalar(1));
  global.set("density", parameter_setting::gradient({0, 1}));
  slice.set("density", parameter_setting::filtered({{std::string("mlp"), 0.3}}));
  own0.set("weight", parameter_setting::scalar(0.25));
  own1.set("weight", parameter_setting::filtered({{std::string("layers.7."), 4.0}}));
  const parameter_map *levels[] = {&slice, &global};
  const model_parameter_source models[] = {{&own0, "model.layers.2.mlp.up_proj.weight"},
                                           {&own1, "model.layers.7.mlp.up_proj.weight"}};
  const merge_parameters p = resolve_parameters("model.layers.2.mlp.up_proj.weight", 0.5, levels, models);
  CHECK(*p.find("weight", 0) == 0.25);
  CHECK(*p.find("weight", 1) == 4.0); // filter on model 1's own tensor name (layer 7)
  CHECK(*p.find("weight") == 1);
  CHECK(*p.find("density") == 0.3); // slice level wins for mlp
  const merge_parameters q = resolve_parameters("model.layers.2.self_attn.q_proj.weight", 0.5, levels, models);
  CHECK(*q.find("density") == 0.5); // slice filter does not match: global gradient at t = 0.5
}

TEST_CASE("config: a full mergekit config parses", "[merge][config]") {
  const auto c = parse(R"(
# a mergekit ties config
models:
  - model: /m/base
  - model: /m/a
    parameters:
      density: [1, 0.7, 0.1]
      weight: 1.0
  - model: /m/b+/m/lora
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1]
merge_method: ties
base_model: /m/base
parameters:
  normalize: true
  int8_mask: false
dtype: float32
out_dtype: bfloat16
tokenizer_source: base
)");
  CHECK(c.merge_method == "ties");
  REQUIRE(c.models.size() == 3);
  CHECK(c.models[2].model.path == "/m/b");
  CHECK(*c.models[2].model.lora == "/m/lora");
  CHECK(c.models[1].line == 5);
  CHECK(*c.parameters.find("normalize")->evaluate("", 0) == 1);
  CHECK(*c.parameters.find("int8_mask")->evaluate("", 0) == 0);
  CHECK(*c.dtype == "float32");
  CHECK(*c.out_dtype == "bfloat16");
  CHECK(c.base_model->path == "/m/base");
  CHECK(c.referenced_models().size() == 3);

  const auto s = parse(R"(
slices:
  - sources:
      - model: /m/a
        layer_range: [0, 16]
      - model: /m/b
        layer_range: [0, 16]
        parameters: {t: 0.3}
    parameters:
      t: [0, 1]
  - sources:
      - model: /m/a
        layer_range: [16, 32]
merge_method: slerp
base_model: /m/a
)");
  REQUIRE(s.slices.size() == 2);
  CHECK(s.slices[0].sources[1].layer_end == 16);
  CHECK(s.slices[1].sources[0].layer_begin == 16);
  CHECK(s.slices[0].parameters.find("t") != nullptr);
}

TEST_CASE("config: errors name the key and its line", "[merge][config]") {
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodels:\n  - model: a\nbase_modle: b\n"),
                    Catch::Contains("cfg.yaml: invalid format: line 4, column 1: unknown key 'base_modle' in the config"));
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodels:\n  - model: a\n    paramters: {weight: 1}\n"),
                    Catch::Contains("line 4") && Catch::Contains("unknown key 'paramters' in a 'models' entry"));
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodels:\n  - model: a\n    parameters:\n      weight:\n"
                          "        - filter: mlp\n          valeu: 1\n"),
                    Catch::Contains("line 7") && Catch::Contains("unknown key 'valeu'"));
  CHECK_THROWS_WITH(parse("merge_method: x\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 4]\n"
                          "        layers: 3\n"),
                    Catch::Contains("line 6") && Catch::Contains("unknown key 'layers' in a slice source"));
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodels:\n  - model: a\nmodels: []\n"),
                    Catch::Contains("duplicate key 'models'") || Catch::Contains("line 4"));
  CHECK_THROWS_WITH(parse("models:\n  - model: a\n"), Catch::Contains("missing key 'merge_method'"));
  CHECK_THROWS_WITH(parse("merge_method: ties\n"), Catch::Contains("exactly one of 'models' or 'slices'"));
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodels:\n  - model: a\nslices:\n  - sources: []\n"),
                    Catch::Contains("exactly one of 'models' or 'slices'"));
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodels:\n  - model: a\n    parameters: {weight: heavy}\n"),
                    Catch::Contains("line 4") && Catch::Contains("'heavy'"));
  CHECK_THROWS_WITH(parse("merge_method: x\nslices:\n  - sources:\n      - model: a\n        layer_range: [4, 2]\n"),
                    Catch::Contains("line 5") && Catch::Contains("layer_range [4, 2]"));
  CHECK_THROWS_WITH(parse("merge_method: x\nslices:\n  - sources:\n      - model: a\n"),
                    Catch::Contains("layer_range"));
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodels:\n  - model: a\ntokenizer_source: union\n"),
                    Catch::Contains("line 4") && Catch::Contains("unsupported") && Catch::Contains("'union'"));
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodules:\n  text: {}\n"), Catch::Contains("'modules' is a mergekit feature"));
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodels:\n  - model: a\n  bad indent\n"), Catch::Contains("YAML syntax error"));
  CHECK_THROWS_WITH(parse("- just\n- a list\n"), Catch::Contains("must be a YAML mapping"));
  CHECK_THROWS_WITH(parse("merge_method: ties\nmodels:\n  - model: a+\n"), Catch::Contains("base_path+adapter_path"));
  CHECK_THROWS_WITH(read_merge_config("/nonexistent/dms.yaml"), Catch::Contains("/nonexistent/dms.yaml") &&
                                                                    Catch::Contains("cannot open"));
}

#endif // DMS_HAS_MERGE
