// dms/steer/hook_names.hpp: hook points by name (TransformerLens spelling) and by order.
//
// Probes and steering vectors are saved with the hook point they belong to, spelled the way
// dms::to_string(hook_point) and TransformerLens spell it ("blocks.12.hook_resid_post"), so the
// files read naturally next to TransformerLens caches. These parse the names back, strictly:
// a name that is almost right is an error, not a guess.
// hook_rank orders hook points as a forward pass visits them (layer by layer, and within a layer
// resid_pre, attn_out, resid_mid, mlp_out, resid_post; then final_norm, logits): a policy that
// reads at one point and writes at another checks with it that the read comes first.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "dms/concepts/model_backend.hpp"
#include "dms/config.hpp"

DMS_NAMESPACE_BEGIN

//! The site called `name` ("resid_post", ...), or nullopt.
constexpr std::optional<site> parse_site(std::string_view name) noexcept {
  for (site s : all_sites)
    if (name_of(s) == name) return s;
  return std::nullopt;
}

//! The hook point named like to_string(hook_point) does: "blocks.{l}.hook_{site}" for per-layer
//! sites, "hook_final_norm" / "hook_logits" for model-level ones; nullopt for anything else.
constexpr std::optional<hook_point> parse_hook_point(std::string_view name) noexcept {
  constexpr std::string_view hook = "hook_";
  if (name.starts_with(hook)) {
    const auto s = parse_site(name.substr(hook.size()));
    if (s && is_model_level(*s)) return hook_point{-1, *s};
    return std::nullopt;
  }
  constexpr std::string_view blocks = "blocks.";
  if (!name.starts_with(blocks)) return std::nullopt;
  name.remove_prefix(blocks.size());
  std::int64_t layer = 0;
  std::size_t i = 0;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && i < 9; ++i) layer = layer * 10 + (name[i] - '0');
  if (i == 0 || (i > 1 && name[0] == '0') || i >= name.size() || name[i] != '.') return std::nullopt;
  name.remove_prefix(i + 1);
  if (!name.starts_with(hook)) return std::nullopt;
  const auto s = parse_site(name.substr(hook.size()));
  if (!s || is_model_level(*s)) return std::nullopt;
  return hook_point{static_cast<std::int32_t>(layer), *s};
}

//! Position of `p` in the order a forward pass visits hook points (see above).
constexpr std::int64_t hook_rank(hook_point p) noexcept {
  constexpr std::int64_t per_layer = 5, model_level = std::int64_t{1} << 40;
  switch (p.where) {
  case site::final_norm: return model_level;
  case site::logits: return model_level + 1;
  default: return static_cast<std::int64_t>(p.layer) * per_layer + static_cast<std::int64_t>(p.where);
  }
}

DMS_NAMESPACE_END
