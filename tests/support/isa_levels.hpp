// Test support (Catch2): run a test body at every dms::cpu dispatch level this CPU supports.
#pragma once

#include <catch2/catch.hpp>

#include "dms/backend/cpu/dispatch.hpp"

namespace dms::test {

//! Runs `body(level)` once per level the CPU supports, with that level forced. Levels the CPU
//! lacks are reported with WARN and not run.
template <class Body> void for_each_level(Body &&body) {
  for (dms::cpu::isa_level level : dms::cpu::all_isa_levels) {
    if (!dms::cpu::cpu_supports(level)) {
      WARN("ISA level " << dms::cpu::name_of(level) << " not available on this CPU: not run");
      continue;
    }
    dms::cpu::scoped_isa_level force(level);
    REQUIRE(dms::cpu::active_isa_level() == level);
    body(level);
  }
}

} // namespace dms::test
