# Install rules: headers, one export set per component, and a relocatable package config
# under share/cmake/dms so that find_package(dms CONFIG COMPONENTS cpu cuda) works from any prefix.
include(CMakePackageConfigHelpers)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/dms DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(DMS_INSTALL_CMAKEDIR ${CMAKE_INSTALL_DATADIR}/cmake/dms CACHE STRING
    "Where dmsConfig.cmake is installed, relative to the prefix")

install(TARGETS dms EXPORT dmsTargets)
install(EXPORT dmsTargets NAMESPACE dms:: DESTINATION ${DMS_INSTALL_CMAKEDIR})
set(DMS_INSTALLED_COMPONENTS "")
if(TARGET dms_io)
  install(TARGETS dms_io EXPORT dmsIoTargets)
  install(EXPORT dmsIoTargets NAMESPACE dms:: DESTINATION ${DMS_INSTALL_CMAKEDIR})
  list(APPEND DMS_INSTALLED_COMPONENTS io)
endif()
if(TARGET dms_merge)
  install(TARGETS dms_merge EXPORT dmsMergeTargets)
  install(EXPORT dmsMergeTargets NAMESPACE dms:: DESTINATION ${DMS_INSTALL_CMAKEDIR})
  list(APPEND DMS_INSTALLED_COMPONENTS merge)
endif()
if(TARGET dms_cpu)
  install(TARGETS dms_cpu dms_native EXPORT dmsCpuTargets)
  install(EXPORT dmsCpuTargets NAMESPACE dms:: DESTINATION ${DMS_INSTALL_CMAKEDIR})
  list(APPEND DMS_INSTALLED_COMPONENTS cpu)
endif()
if(TARGET dms_cuda)
  install(TARGETS dms_cuda EXPORT dmsCudaTargets)
  install(EXPORT dmsCudaTargets NAMESPACE dms:: DESTINATION ${DMS_INSTALL_CMAKEDIR})
  list(APPEND DMS_INSTALLED_COMPONENTS cuda)
endif()

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/dmsConfig.cmake.in
  ${PROJECT_BINARY_DIR}/dmsConfig.cmake INSTALL_DESTINATION ${DMS_INSTALL_CMAKEDIR})
# A header-only library has no ABI: any architecture may consume it.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/dmsConfigVersion.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${PROJECT_BINARY_DIR}/dmsConfig.cmake ${PROJECT_BINARY_DIR}/dmsConfigVersion.cmake
  DESTINATION ${DMS_INSTALL_CMAKEDIR})
