# Package-test driver for the vcpkg overlay port (packaging/vcpkg/ports/dms). vcpkg itself cannot
# run offline here, so this checks what can drift silently and then builds what the port tells
# users to write:
#   1. vcpkg.json: name, version (= project(VERSION)), the host tool dependencies, and each
#      feature's dependencies;
#   2. portfile.cmake: vcpkg_check_features' FEATURES map exactly the features of vcpkg.json,
#      each to an option() that exists in the top-level CMakeLists.txt, and the default-features
#      are exactly those whose option defaults to ON; every DMS_BUILD_* option is turned OFF;
#      vcpkg_cmake_config_fixup's CONFIG_PATH is where the install puts dmsConfig.cmake;
#   3. usage: the canonical first line, then its indented CMake lines pasted into a fresh project
#      (after add_executable(main main.cpp), with the shared consumer program) that is built and
#      run against the install prefix.
#
#   cmake -DDMS_SOURCE_DIR=<checkout> -DPORT_DIR=<port> -DCONSUMER_MAIN=<main.cpp>
#         -DBINARY_DIR=<dir> -DPREFIX=<install prefix> -DDMS_VERSION=<x.y.z> -P check_vcpkg_port.cmake
include(${CMAKE_CURRENT_LIST_DIR}/package_common.cmake)

# --- 1. vcpkg.json -------------------------------------------------------------------------------
file(READ "${PORT_DIR}/vcpkg.json" manifest)
string(JSON name ERROR_VARIABLE err GET "${manifest}" name)
if(err)
  dms_pkg_fail("vcpkg.json does not parse: ${err}")
endif()
string(JSON version GET "${manifest}" version)
if(NOT name STREQUAL "dms" OR NOT version STREQUAL DMS_VERSION)
  dms_pkg_fail("vcpkg.json says ${name} ${version}; the project is dms ${DMS_VERSION}")
endif()

# Names of a manifest dependency array; entries are "name" or {"name": ..., "host": ...}.
function(manifest_dependency_names out array_json)
  set(names)
  string(JSON count LENGTH "${array_json}")
  if(count GREATER 0)
    math(EXPR last "${count} - 1")
    foreach(i RANGE ${last})
      string(JSON type TYPE "${array_json}" ${i})
      if(type STREQUAL "OBJECT")
        string(JSON dep GET "${array_json}" ${i} name)
        string(JSON host ERROR_VARIABLE no_host GET "${array_json}" ${i} host)
        if(NOT no_host AND host)
          set(dep "${dep}:host")
        endif()
      else()
        string(JSON dep GET "${array_json}" ${i})
      endif()
      list(APPEND names "${dep}")
    endforeach()
  endif()
  list(SORT names)
  set(${out} "${names}" PARENT_SCOPE)
endfunction()

string(JSON deps GET "${manifest}" dependencies)
manifest_dependency_names(deps "${deps}")
foreach(tool vcpkg-cmake vcpkg-cmake-config)
  if(NOT "${tool}:host" IN_LIST deps)
    dms_pkg_fail("vcpkg.json must depend on ${tool} as a host tool (\"host\": true)")
  endif()
endforeach()

string(JSON defaults GET "${manifest}" default-features)
manifest_dependency_names(defaults "${defaults}")

# What each feature must pull in: the port names of the packages its CMake option finds.
set(expected_deps_cpu "openblas;xsimd;xtensor")
set(expected_deps_cuda "cuda")
set(expected_deps_io "nlohmann-json;zlib")
string(JSON features GET "${manifest}" features)
string(JSON feature_count LENGTH "${features}")
set(manifest_features)
math(EXPR last "${feature_count} - 1")
foreach(i RANGE ${last})
  string(JSON feature MEMBER "${features}" ${i})
  list(APPEND manifest_features "${feature}")
  string(JSON feature_deps ERROR_VARIABLE no_deps GET "${features}" "${feature}" dependencies)
  set(names)
  if(NOT no_deps)
    manifest_dependency_names(names "${feature_deps}")
  endif()
  if(DEFINED expected_deps_${feature} AND NOT names STREQUAL expected_deps_${feature})
    dms_pkg_fail("vcpkg.json: feature ${feature} depends on '${names}', "
                 "expected '${expected_deps_${feature}}'")
  endif()
endforeach()
message("-- vcpkg.json features: ${manifest_features}")

# --- 2. portfile.cmake ---------------------------------------------------------------------------
file(READ "${PORT_DIR}/portfile.cmake" portfile)
string(REGEX REPLACE "#[^\n]*" "" portfile "${portfile}")  # comments may mention anything
if(NOT portfile MATCHES "vcpkg_check_features\\(([^)]*)\\)")
  dms_pkg_fail("portfile.cmake has no vcpkg_check_features(...)")
endif()
string(REGEX REPLACE "[ \t\r\n]+" ";" words "${CMAKE_MATCH_1}")
list(FILTER words EXCLUDE REGEX "^$")
set(port_features)
set(in_features FALSE)
set(pending_feature "")
foreach(word IN LISTS words)
  if(word MATCHES "^(OUT_FEATURE_OPTIONS|PREFIX|FEATURES|INVERTED_FEATURES)$")
    set(in_features FALSE)
    if(word STREQUAL "FEATURES")
      set(in_features TRUE)
    endif()
  elseif(in_features)
    if(pending_feature STREQUAL "")
      set(pending_feature "${word}")
    else()
      list(APPEND port_features "${pending_feature}")
      set(option_of_${pending_feature} "${word}")
      set(pending_feature "")
    endif()
  endif()
endforeach()
if(NOT pending_feature STREQUAL "")
  dms_pkg_fail("portfile.cmake: feature ${pending_feature} is not mapped to an option")
endif()
message("-- portfile.cmake FEATURES: ${port_features}")

file(READ "${DMS_SOURCE_DIR}/CMakeLists.txt" top_cmakelists)
foreach(feature IN LISTS port_features)
  if(NOT feature IN_LIST manifest_features)
    dms_pkg_fail("portfile.cmake maps feature '${feature}', which vcpkg.json does not declare")
  endif()
  if(NOT top_cmakelists MATCHES "option\\([ \t]*${option_of_${feature}}[ \t\r\n]+\"[^\"]*\"[ \t\r\n]+([^ \t\r\n)]+)")
    dms_pkg_fail("portfile.cmake maps feature '${feature}' to ${option_of_${feature}}, which is "
                 "not an option() of ${DMS_SOURCE_DIR}/CMakeLists.txt")
  endif()
  # A plain `vcpkg install dms` must give what a plain CMake build gives.
  set(default "${CMAKE_MATCH_1}")
  if(default AND NOT feature IN_LIST defaults)
    dms_pkg_fail("${option_of_${feature}} defaults to ${default}, so feature '${feature}' belongs "
                 "in vcpkg.json's default-features")
  elseif(NOT default AND feature IN_LIST defaults)
    dms_pkg_fail("${option_of_${feature}} defaults to ${default}, so feature '${feature}' must not "
                 "be in vcpkg.json's default-features")
  endif()
  message("-- feature ${feature} -> option ${option_of_${feature}} (default ${default}): ok")
endforeach()
foreach(feature IN LISTS manifest_features)
  if(NOT feature IN_LIST port_features)
    dms_pkg_fail("vcpkg.json declares feature '${feature}', but portfile.cmake's FEATURES does "
                 "not map it to an option")
  endif()
endforeach()

# Whatever DMS_BUILD_* options the project grows, the port must not build them.
string(REGEX MATCHALL "option\\([ \t]*DMS_BUILD_[A-Z_]+" build_options "${top_cmakelists}")
foreach(opt IN LISTS build_options)
  string(REGEX REPLACE "option\\([ \t]*" "" opt "${opt}")
  if(NOT portfile MATCHES "-D${opt}=OFF")
    dms_pkg_fail("portfile.cmake does not configure with -D${opt}=OFF")
  endif()
endforeach()

if(NOT portfile MATCHES "vcpkg_cmake_config_fixup\\([^)]*CONFIG_PATH[ \t\r\n]+([^ \t\r\n)]+)")
  dms_pkg_fail("portfile.cmake has no vcpkg_cmake_config_fixup(CONFIG_PATH ...)")
endif()
set(config_path "${CMAKE_MATCH_1}")
if(NOT EXISTS "${PREFIX}/${config_path}/dmsConfig.cmake")
  dms_pkg_fail("vcpkg_cmake_config_fixup(CONFIG_PATH ${config_path}), but the install puts "
               "dmsConfig.cmake elsewhere (no ${PREFIX}/${config_path}/dmsConfig.cmake)")
endif()

# --- 3. usage ------------------------------------------------------------------------------------
file(STRINGS "${PORT_DIR}/usage" usage_lines)
list(GET usage_lines 0 first_line)
if(NOT first_line STREQUAL "dms provides CMake targets:")
  dms_pkg_fail("usage must start with 'dms provides CMake targets:', not '${first_line}'")
endif()
set(snippet)
foreach(line IN LISTS usage_lines)
  if(line MATCHES "^  +([^ ].*)$")
    string(APPEND snippet "${CMAKE_MATCH_1}\n")
  endif()
endforeach()
if(NOT snippet MATCHES "find_package\\(dms" OR NOT snippet MATCHES "target_link_libraries\\(main")
  dms_pkg_fail("usage has no find_package(dms ...) and target_link_libraries(main ...) lines")
endif()
if(snippet MATCHES "COMPONENTS[^)]*cpu" AND NOT EXISTS "${PREFIX}/${config_path}/dmsCpuTargets.cmake")
  dms_pkg_skip("usage needs the cpu component, which this build did not install (DMS_WITH_CPU=OFF)")
  return()
endif()

set(project_dir "${BINARY_DIR}-project")
file(REMOVE_RECURSE "${project_dir}")
file(MAKE_DIRECTORY "${project_dir}")
configure_file("${CONSUMER_MAIN}" "${project_dir}/main.cpp" COPYONLY)
file(WRITE "${project_dir}/CMakeLists.txt"
"# Generated by tests/package/check_vcpkg_port.cmake from packaging/vcpkg/ports/dms/usage.
cmake_minimum_required(VERSION 3.21)
project(dms_vcpkg_usage LANGUAGES CXX)
add_executable(main main.cpp)
# --- usage, verbatim ---
${snippet}# --- end of usage ---
# Test-only: the program also checks the version it was built against.
target_compile_definitions(main PRIVATE DMS_EXPECTED_VERSION=\"${DMS_VERSION}\")
")
message("-- generated ${project_dir}/CMakeLists.txt with:\n${snippet}")
dms_pkg_build_and_run(SOURCE_DIR "${project_dir}" BINARY_DIR "${BINARY_DIR}"
  CONFIGURE_ARGS "-DCMAKE_PREFIX_PATH=${PREFIX}"
  EXECUTABLES main EXPECT_OUTPUT "dms consumer: PASS")
message("dms-package-test: PASS")
