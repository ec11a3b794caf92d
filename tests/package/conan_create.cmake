# Package-test driver: `conan create` the recipe at the top of the tree, offline, and require its
# test_package to pass.
#
#   cmake -DDMS_SOURCE_DIR=<checkout> -DDMS_VERSION=<x.y.z> -DWORK_DIR=<dir>
#         -DWITH_IO=True|False -DWITH_CPU=True|False [-DPLATFORM_PROFILE=<profile>] [-DGENERATOR=... -DCXX_COMPILER=... -DCONFIG=...]
#         -P conan_create.cmake
#
# Conan is looked for in $DMS_TOOLS_VENV/bin (default ~/.cache/dms/tools-venv/bin), then on PATH;
# without a Conan 2 the test reports SKIPPED. Everything Conan writes stays under WORK_DIR: a
# private CONAN_HOME with a detected profile and no remotes (so nothing can be downloaded, and a
# requirement not satisfied locally fails instead of fetching), and a copy of test_package (Conan
# writes its build folder and CMakeUserPresets.json next to it, which must not land in the
# checkout). PLATFORM_PROFILE is a host profile whose [platform_requires] let the system's
# nlohmann_json, zlib, xtensor, xsimd and OpenBLAS satisfy with_io=True and with_cpu=True.
include(${CMAKE_CURRENT_LIST_DIR}/package_common.cmake)

if(DEFINED ENV{DMS_TOOLS_VENV} AND NOT "$ENV{DMS_TOOLS_VENV}" STREQUAL "")
  set(venv "$ENV{DMS_TOOLS_VENV}")
else()
  set(venv "$ENV{HOME}/.cache/dms/tools-venv")
endif()
find_program(conan NAMES conan HINTS "${venv}/bin" "${venv}/Scripts" NO_CACHE)
if(NOT conan)
  dms_pkg_skip("no conan executable in ${venv}/bin or on PATH (create the tools venv with "
               "`python3 -m venv ${venv} && ${venv}/bin/pip install conan`)")
  return()
endif()
execute_process(COMMAND "${conan}" --version OUTPUT_VARIABLE version_out ERROR_QUIET)
if(NOT version_out MATCHES "Conan version ([0-9]+)\\.[0-9]+" OR CMAKE_MATCH_1 LESS 2)
  dms_pkg_skip("${conan} is not Conan 2 (it says: ${version_out})")
  return()
endif()
message("-- using ${conan}: ${version_out}")

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(ENV{CONAN_HOME} "${WORK_DIR}/home")
file(COPY "${DMS_SOURCE_DIR}/test_package" DESTINATION "${WORK_DIR}")
if(CXX_COMPILER)
  set(ENV{CXX} "${CXX_COMPILER}")  # `conan profile detect` describes this compiler
endif()

dms_pkg_run("detect the default profile" COMMAND "${conan}" profile detect)
dms_pkg_run("remove every remote" COMMAND "${conan}" remote remove "*")
dms_pkg_run("list remotes" COMMAND "${conan}" remote list OUTPUT_VARIABLE remotes)
if(remotes MATCHES "https?://")
  dms_pkg_fail("a remote is still configured: ${remotes}")
endif()

set(create "${conan}" create "${DMS_SOURCE_DIR}" --no-remote -tf "${WORK_DIR}/test_package"
    -o "&:with_io=${WITH_IO}" -o "&:with_cpu=${WITH_CPU}" -s compiler.cppstd=20)
if(PLATFORM_PROFILE)
  list(APPEND create -pr:h "${PLATFORM_PROFILE}")
endif()
if(CONFIG MATCHES "^(Debug|Release|RelWithDebInfo|MinSizeRel)$")
  list(APPEND create -s "build_type=${CONFIG}")
endif()
if(GENERATOR MATCHES "Ninja|Makefiles")
  list(APPEND create -c "tools.cmake.cmaketoolchain:generator=${GENERATOR}")
endif()
if(CXX_COMPILER)
  list(APPEND create -c "tools.build:compiler_executables={'cpp': '${CXX_COMPILER}'}")
endif()
dms_pkg_run("conan create" WORKING_DIRECTORY "${WORK_DIR}" COMMAND ${create} OUTPUT_VARIABLE out)

if(NOT out MATCHES "dms/${DMS_VERSION}")
  dms_pkg_fail("conan create did not create dms/${DMS_VERSION}")
endif()
if(NOT out MATCHES "dms test_package: PASS")
  dms_pkg_fail("test_package did not report PASS")
endif()
if(WITH_IO AND NOT out MATCHES "io: nlohmann_json")
  dms_pkg_fail("with_io=${WITH_IO}, but test_package did not exercise dms::io")
endif()
if(WITH_CPU AND NOT out MATCHES "cpu backend: ")
  dms_pkg_fail("with_cpu=${WITH_CPU}, but test_package did not exercise dms::cpu")
endif()
message("dms-package-test: PASS")
