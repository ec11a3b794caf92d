// tests/merge/strategy_test_support.hpp: building merge_inputs for strategy tests.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dms/merge/strategies.hpp"

namespace dms::test {

//! Owns the tensors and parameters of one merge, and runs strategies on it.
struct merge_case {
  std::vector<std::vector<float>> models;
  std::vector<float> base;
  std::vector<std::int64_t> shape; //!< empty: 1-D of the models' size
  dms::merge_parameters params;
  std::string name = "model.layers.0.mlp.up_proj.weight";
  std::uint64_t seed = 42;

  std::size_t size() const { return models.empty() ? base.size() : models[0].size(); }

  //! The inputs for elements [begin, end) (the whole tensor by default).
  dms::merge_inputs inputs(std::size_t begin = 0, std::size_t end = SIZE_MAX) {
    end = std::min(end, size());
    if (shape.empty()) shape = {static_cast<std::int64_t>(size())};
    views_.clear();
    // A whole-tensor call passes each model whole, so that size mismatches reach the strategy.
    const bool whole = begin == 0 && end == size();
    for (auto &m : models) views_.emplace_back(m.data() + begin, whole ? m.size() : end - begin);
    dms::merge_inputs in;
    in.name = name;
    in.shape = shape;
    in.models = views_;
    if (!base.empty()) in.base = std::span<const float>(base.data() + begin, end - begin);
    in.params = &params;
    in.seed = seed;
    in.element_offset = static_cast<std::int64_t>(begin);
    return in;
  }

  template <dms::merge_strategy S> std::vector<float> run(const S &s) {
    std::vector<float> out(size());
    s.merge(inputs(), out);
    return out;
  }
  std::vector<float> run(std::string_view method, dms::thread_pool *pool = nullptr) {
    auto s = dms::make_merge_strategy(method);
    s->set_thread_pool(pool);
    std::vector<float> out(size());
    s->merge(inputs(), out);
    return out;
  }
  //! The same merge in chunks of `chunk` elements (element_offset set for each).
  std::vector<float> run_chunked(std::string_view method, std::size_t chunk) {
    auto s = dms::make_merge_strategy(method);
    std::vector<float> out(size());
    for (std::size_t b = 0; b < size(); b += chunk) {
      const std::size_t e = std::min(size(), b + chunk);
      s->merge(inputs(b, e), std::span<float>(out.data() + b, e - b));
    }
    return out;
  }

private:
  std::vector<std::span<const float>> views_;
};

} // namespace dms::test
