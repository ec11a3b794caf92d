# vcpkg overlay port for dms (header-only): configure the project's own CMake with the selected
# features, install it, and move the package files where vcpkg expects them (share/dms).
#
# Source: there is no public git host for dms yet, so the port builds the checkout it sits in
# (packaging/vcpkg/ports/dms -> four levels up). To build another tree, set DMS_SOURCE_PATH in a
# custom triplet, or export it and list it in the triplet's VCPKG_ENV_PASSTHROUGH:
#   vcpkg install dms[cpu] --overlay-ports=<checkout>/packaging/vcpkg/ports
# Once dms is published, replace this block with vcpkg_from_github/vcpkg_from_git and a REF.
if(DEFINED DMS_SOURCE_PATH)
  set(SOURCE_PATH "${DMS_SOURCE_PATH}")
elseif(DEFINED ENV{DMS_SOURCE_PATH})
  set(SOURCE_PATH "$ENV{DMS_SOURCE_PATH}")
else()
  set(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../../..")
endif()
get_filename_component(SOURCE_PATH "${SOURCE_PATH}" ABSOLUTE)
if(NOT EXISTS "${SOURCE_PATH}/include/dms/config.hpp")
  message(FATAL_ERROR "dms: no dms checkout at ${SOURCE_PATH} (set DMS_SOURCE_PATH)")
endif()

# Headers only: one (release) configuration is all there is to install.
set(VCPKG_BUILD_TYPE release)

vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    cpu  DMS_WITH_CPU
    cuda DMS_WITH_CUDA
    io   DMS_WITH_IO
    merge DMS_WITH_MERGE
)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DDMS_BUILD_TESTS=OFF
    -DDMS_BUILD_EXAMPLES=OFF
    -DDMS_BUILD_BENCHMARKS=OFF
    -DDMS_BUILD_TOOLS=OFF
    -DDMS_INSTALL=ON
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/dms)

# Nothing is compiled, so there are no libraries and no debug tree; the original config folder
# is empty once the fixup has moved its files to share/dms.
file(REMOVE_RECURSE
  "${CURRENT_PACKAGES_DIR}/debug"
  "${CURRENT_PACKAGES_DIR}/lib"
  "${CURRENT_PACKAGES_DIR}/share/cmake"
)

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
