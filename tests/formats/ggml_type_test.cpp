#include <catch2/catch.hpp>

#include "dms/formats/ggml_type.hpp"

TEST_CASE("ggml type traits match ggml's block layouts", "[formats][ggml_type]") {
  // Block sizes from ggml-common.h: e.g. block_q4_1 = 2 halves + 16 nibble bytes = 20 bytes per 32.
  CHECK(dms::traits_of(dms::ggml_type::q4_1).type_size == 20);
  CHECK(dms::traits_of(dms::ggml_type::q8_0).type_size == 34);
  CHECK(dms::traits_of(dms::ggml_type::q6_k).type_size == 210);
  CHECK(dms::traits_of(dms::ggml_type::q4_k).block_size == 256);
  CHECK(dms::traits_of(dms::ggml_type::bf16).name == "BF16");
  CHECK_FALSE(dms::traits_of(4u).has_value()); // removed Q4_2
  CHECK_FALSE(dms::traits_of(1000u).has_value());
  CHECK(dms::storage_bytes(dms::ggml_type::q4_1, 64) == 40u);
  CHECK_FALSE(dms::storage_bytes(dms::ggml_type::q4_1, 33).has_value());
}
