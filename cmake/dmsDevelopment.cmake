# Flags for dms's own tests, tools, examples and benchmarks only. Nothing here reaches the
# exported targets: a project that vendors dms keeps its own flags.
add_library(dms_dev_flags INTERFACE)
target_compile_options(dms_dev_flags INTERFACE
  $<$<COMPILE_LANG_AND_ID:CXX,GNU,Clang>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion>)
if(DMS_NATIVE)
  target_compile_options(dms_dev_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
endif()
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE RelWithDebInfo CACHE STRING "Build type" FORCE)
endif()
