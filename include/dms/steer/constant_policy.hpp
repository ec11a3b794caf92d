// dms/steer/constant_policy.hpp: ActAdd / contrastive activation addition, h <- h + c * v.
//
// The baseline every dynamic policy is measured against: the same vector, the same strength, on
// every token at one hook point, whatever the model is doing. Host memory only; device backends
// bring their own kernel for the same arithmetic.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dms/concepts/model_backend.hpp"
#include "dms/concepts/steering_policy.hpp"
#include "dms/config.hpp"
#include "dms/core/error.hpp"

DMS_NAMESPACE_BEGIN

class constant_policy {
public:
  struct state_type {};

  //! Adds `coefficient * vector` to every row at hook point `at`.
  constant_policy(hook_point at, std::vector<float> vector, float coefficient)
      : at_(at), vector_(std::move(vector)), coefficient_(coefficient) {
    require(std::isfinite(coefficient_), errc::numeric,
            [&] { return "constant_policy: coefficient is not finite"; });
    require(!vector_.empty(), errc::invalid_argument, [] { return std::string("constant_policy: empty vector"); });
    for (std::size_t i = 0; i < vector_.size(); ++i)
      require(std::isfinite(vector_[i]), errc::numeric,
              [&] { return "constant_policy: vector element " + std::to_string(i) + " is not finite"; });
  }

  bool wants(hook_point p) const noexcept { return p == at_; }

  void validate(std::int32_t n_layers, std::int64_t n_embd) const {
    require(is_model_level(at_.where) || (at_.layer >= 0 && at_.layer < n_layers), errc::invalid_argument, [&] {
      return "constant_policy: layer " + std::to_string(at_.layer) + " is out of range [0, " +
             std::to_string(n_layers) + ")";
    });
    require(static_cast<std::int64_t>(vector_.size()) == n_embd, errc::shape_mismatch, [&] {
      return "constant_policy: vector has width " + std::to_string(vector_.size()) + ", model has n_embd " +
             std::to_string(n_embd);
    });
  }

  void apply(activation_block &block, std::span<state_type>, std::span<float>) const {
    require(block.space == memory_space::host, errc::unsupported,
            [] { return std::string("constant_policy runs on host memory; use the device backend's policy"); });
    require(block.rows.cols == static_cast<std::int64_t>(vector_.size()), errc::shape_mismatch, [&] {
      return "constant_policy: rows have width " + std::to_string(block.rows.cols) + ", vector " +
             std::to_string(vector_.size());
    });
    const float *v = vector_.data();
    const float c = coefficient_;
    for (std::int64_t r = 0; r < block.rows.rows; ++r) {
      float *h = block.rows.row(r);
      for (std::int64_t i = 0; i < block.rows.cols; ++i) h[i] += c * v[i];
    }
  }

  hook_point at() const noexcept { return at_; }
  std::span<const float> vector() const noexcept { return vector_; }
  float coefficient() const noexcept { return coefficient_; }

private:
  hook_point at_;
  std::vector<float> vector_;
  float coefficient_;
};

static_assert(steering_policy<constant_policy>);

DMS_NAMESPACE_END
