# Helpers shared by the package-test drivers (run with `cmake -P`).
#
# The drivers configure, build and run small external projects. They must use the same generator
# and compiler as the dms build that registered them, so that a Visual Studio or clang build tests
# what it would ship; the registering CMakeLists passes those through as -D variables, and
# dms_pkg_generator_args() turns them back into configure options.
#
# Every failure goes through dms_pkg_fail(), which prints one recognisable line: the tests match
# it with FAIL_REGULAR_EXPRESSION, which matters where a PASS_REGULAR_EXPRESSION would otherwise
# make ctest ignore the exit code. A test that cannot run here prints DMS_PKG_SKIP_LINE instead and
# is reported as skipped, not passed.
cmake_minimum_required(VERSION 3.21)

set(DMS_PKG_SKIP_LINE "dms-package-test: SKIP")

function(dms_pkg_fail)
  string(JOIN "" text ${ARGN})
  message(FATAL_ERROR "dms-package-test: FAIL: ${text}")
endfunction()

function(dms_pkg_skip)
  string(JOIN "" text ${ARGN})
  message("${DMS_PKG_SKIP_LINE}: ${text}")
endfunction()

# Lists cannot cross an add_test() command line intact, so the registering side joins them with
# '|' and the drivers split them here.
function(dms_pkg_split out value)
  string(REPLACE "|" ";" value "${value}")
  set(${out} "${value}" PARENT_SCOPE)
endfunction()

# Configure options reproducing the parent build's toolchain.
function(dms_pkg_generator_args out)
  set(args --no-warn-unused-cli)
  if(GENERATOR)
    list(APPEND args -G "${GENERATOR}")
  endif()
  if(GENERATOR_PLATFORM)
    list(APPEND args -A "${GENERATOR_PLATFORM}")
  endif()
  if(GENERATOR_TOOLSET)
    list(APPEND args -T "${GENERATOR_TOOLSET}")
  endif()
  if(MAKE_PROGRAM)
    list(APPEND args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
  endif()
  if(CXX_COMPILER)
    list(APPEND args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
  endif()
  if(CONFIG)
    list(APPEND args "-DCMAKE_BUILD_TYPE=${CONFIG}")
  endif()
  set(${out} "${args}" PARENT_SCOPE)
endfunction()

# Runs a command, echoing it and its output; fails the test when it exits non-zero.
function(dms_pkg_run what)
  cmake_parse_arguments(ARG "" "WORKING_DIRECTORY;OUTPUT_VARIABLE;RESULT_VARIABLE" "COMMAND" ${ARGN})
  string(JOIN " " shown ${ARG_COMMAND})
  message("-- ${what}: ${shown}")
  if(NOT ARG_WORKING_DIRECTORY)
    set(ARG_WORKING_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}")
  endif()
  execute_process(COMMAND ${ARG_COMMAND} WORKING_DIRECTORY "${ARG_WORKING_DIRECTORY}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(ARG_OUTPUT_VARIABLE)
    set(${ARG_OUTPUT_VARIABLE} "${out}" PARENT_SCOPE)
  endif()
  if(ARG_RESULT_VARIABLE)
    set(${ARG_RESULT_VARIABLE} "${rc}" PARENT_SCOPE)
  elseif(NOT rc EQUAL 0)
    dms_pkg_fail("${what} failed (exit ${rc})")
  endif()
endfunction()

# Path of executable `name` built in `binary_dir`, wherever a single- or multi-config generator
# put it.
function(dms_pkg_find_executable out binary_dir name)
  foreach(dir "${binary_dir}" "${binary_dir}/${CONFIG}" "${binary_dir}/bin"
              "${binary_dir}/bin/${CONFIG}")
    foreach(suffix "" ".exe")
      if(EXISTS "${dir}/${name}${suffix}" AND NOT IS_DIRECTORY "${dir}/${name}${suffix}")
        set(${out} "${dir}/${name}${suffix}" PARENT_SCOPE)
        return()
      endif()
    endforeach()
  endforeach()
  set(${out} "" PARENT_SCOPE)
endfunction()

# Configures, builds and runs an external project from scratch.
#   SOURCE_DIR/BINARY_DIR   the project and a build directory (wiped first: no stale cache)
#   CONFIGURE_ARGS          extra configure options
#   EXPECT_CONFIGURE_ERROR  configure must fail with output matching this regex; nothing is built
#   EXECUTABLES             candidate names of the program to run (the first that exists)
#   EXPECT_OUTPUT           regex the program's output must match (its exit code must be 0 too)
function(dms_pkg_build_and_run)
  cmake_parse_arguments(ARG "" "SOURCE_DIR;BINARY_DIR;EXPECT_CONFIGURE_ERROR;EXPECT_OUTPUT"
                        "CONFIGURE_ARGS;EXECUTABLES" ${ARGN})
  file(REMOVE_RECURSE "${ARG_BINARY_DIR}")
  file(MAKE_DIRECTORY "${ARG_BINARY_DIR}")
  dms_pkg_generator_args(gen_args)
  set(configure ${CMAKE_COMMAND} -S "${ARG_SOURCE_DIR}" -B "${ARG_BINARY_DIR}" ${gen_args}
                ${ARG_CONFIGURE_ARGS})
  if(DEFINED ARG_EXPECT_CONFIGURE_ERROR)
    dms_pkg_run("configure (expected to fail)" COMMAND ${configure} OUTPUT_VARIABLE out
                RESULT_VARIABLE rc)
    if(rc EQUAL 0)
      dms_pkg_fail("configure succeeded; expected it to fail with: ${ARG_EXPECT_CONFIGURE_ERROR}")
    endif()
    # CMake indents and may re-flow message text; compare with whitespace runs collapsed.
    string(REGEX REPLACE "[ \t\r\n]+" " " flat "${out}")
    if(NOT flat MATCHES "${ARG_EXPECT_CONFIGURE_ERROR}")
      dms_pkg_fail("configure failed, but not with: ${ARG_EXPECT_CONFIGURE_ERROR}")
    endif()
    message("-- configure failed as expected")
    return()
  endif()
  dms_pkg_run("configure" COMMAND ${configure})
  set(build ${CMAKE_COMMAND} --build "${ARG_BINARY_DIR}")
  if(CONFIG)
    list(APPEND build --config "${CONFIG}")
  endif()
  dms_pkg_run("build" COMMAND ${build})
  if(NOT ARG_EXECUTABLES)
    return()
  endif()
  foreach(name IN LISTS ARG_EXECUTABLES)
    dms_pkg_find_executable(exe "${ARG_BINARY_DIR}" "${name}")
    if(exe)
      break()
    endif()
  endforeach()
  if(NOT exe)
    dms_pkg_fail("none of the programs '${ARG_EXECUTABLES}' was built in ${ARG_BINARY_DIR}")
  endif()
  dms_pkg_run("run" COMMAND "${exe}" OUTPUT_VARIABLE out RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    dms_pkg_fail("${exe} exited with ${rc}")
  endif()
  if(ARG_EXPECT_OUTPUT AND NOT out MATCHES "${ARG_EXPECT_OUTPUT}")
    dms_pkg_fail("the output of ${exe} does not match '${ARG_EXPECT_OUTPUT}'")
  endif()
endfunction()
