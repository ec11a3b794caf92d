# Package-test fixture: install the dms build into a fresh prefix that the find_package, vcpkg
# usage and example tests consume.
#
#   cmake -DBUILD_DIR=<dms build> -DPREFIX=<prefix> [-DCONFIG=<config>] -P install_prefix.cmake
#
# The prefix is emptied first so that a file dropped from the install rules cannot linger from an
# earlier run and hide the regression.
include(${CMAKE_CURRENT_LIST_DIR}/package_common.cmake)

file(REMOVE_RECURSE "${PREFIX}")
set(install ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${PREFIX}")
if(CONFIG)
  list(APPEND install --config "${CONFIG}")
endif()
dms_pkg_run("install" COMMAND ${install})

if(NOT EXISTS "${PREFIX}/include/dms/config.hpp")
  dms_pkg_fail("the install has no include/dms/config.hpp")
endif()
# Wherever DMS_INSTALL_CMAKEDIR points, there must be exactly one package config, with its
# version file and the core's export file beside it (the consumers then check it is findable).
file(GLOB_RECURSE configs RELATIVE "${PREFIX}" "${PREFIX}/*/dmsConfig.cmake")
list(LENGTH configs count)
if(NOT count EQUAL 1)
  dms_pkg_fail("expected one dmsConfig.cmake in the install, found ${count}: ${configs}")
endif()
get_filename_component(cmakedir "${configs}" DIRECTORY)
foreach(required dmsConfigVersion.cmake dmsTargets.cmake)
  if(NOT EXISTS "${PREFIX}/${cmakedir}/${required}")
    dms_pkg_fail("the install has ${cmakedir}/dmsConfig.cmake but no ${required} beside it")
  endif()
endforeach()
message("-- package config in ${cmakedir}")
message("dms-package-test: PASS")
