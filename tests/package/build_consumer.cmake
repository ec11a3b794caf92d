# Package-test driver: configure, build and run one external consumer project.
#
#   cmake -DSOURCE_DIR=<project> -DBINARY_DIR=<dir> [-DCONFIGURE_ARGS=a|b|...]
#         [-DEXECUTABLES=main|...] [-DEXPECT_OUTPUT=<regex>] [-DEXPECT_CONFIGURE_ERROR=<regex>]
#         [-DSKIP_UNLESS_EXISTS=<path>] [-DARCHIVE_FROM=<dms checkout>]
#         [-DGENERATOR=... -DCXX_COMPILER=... -DCONFIG=...] -P build_consumer.cmake
#
# ARCHIVE_FROM packs the files a source release of dms ships (the same set as the Conan recipe's
# exports_sources) into a tarball and passes its file:// URL and SHA256 to the consumer, which is
# how FetchContent is used against a release without touching the network.
include(${CMAKE_CURRENT_LIST_DIR}/package_common.cmake)

if(SKIP_UNLESS_EXISTS AND NOT EXISTS "${SKIP_UNLESS_EXISTS}")
  dms_pkg_skip("${SKIP_UNLESS_EXISTS} does not exist (yet)")
  return()
endif()

dms_pkg_split(configure_args "${CONFIGURE_ARGS}")
dms_pkg_split(executables "${EXECUTABLES}")

if(ARCHIVE_FROM)
  set(archive "${BINARY_DIR}-src/dms-src.tar.gz")
  file(REMOVE_RECURSE "${BINARY_DIR}-src")
  file(MAKE_DIRECTORY "${BINARY_DIR}-src")
  set(members include cmake CMakeLists.txt)
  if(EXISTS "${ARCHIVE_FROM}/LICENSE")
    list(APPEND members LICENSE)
  endif()
  dms_pkg_run("pack a source release" WORKING_DIRECTORY "${ARCHIVE_FROM}"
              COMMAND ${CMAKE_COMMAND} -E tar czf "${archive}" ${members})
  file(SHA256 "${archive}" sha256)
  # file:// URLs need an absolute path that starts with a slash, also for C:/... on Windows.
  set(url_path "${archive}")
  if(NOT url_path MATCHES "^/")
    set(url_path "/${url_path}")
  endif()
  list(APPEND configure_args "-DDMS_ARCHIVE_URL=file://${url_path}" "-DDMS_ARCHIVE_SHA256=${sha256}")
endif()

set(extra)
if(DEFINED EXPECT_CONFIGURE_ERROR)
  list(APPEND extra EXPECT_CONFIGURE_ERROR "${EXPECT_CONFIGURE_ERROR}")
endif()
if(EXPECT_OUTPUT)
  list(APPEND extra EXPECT_OUTPUT "${EXPECT_OUTPUT}")
endif()
dms_pkg_build_and_run(SOURCE_DIR "${SOURCE_DIR}" BINARY_DIR "${BINARY_DIR}"
                      CONFIGURE_ARGS ${configure_args} EXECUTABLES ${executables} ${extra})
message("dms-package-test: PASS")
