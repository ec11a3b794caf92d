"""Conan test_package for dms: consume the created package through CMakeDeps and run a program.

It links dms::dms, plus dms::io and dms::cpu when the package was created with them, then runs
the program, which exits non-zero on any mismatch.
"""
import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout


class DmsTestPackageConan(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "CMakeDeps", "VirtualRunEnv"
    test_type = "explicit"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def generate(self):
        dms = self.dependencies["dms"]
        tc = CMakeToolchain(self)
        tc.cache_variables["DMS_TEST_WITH_IO"] = bool(dms.options.with_io)
        tc.cache_variables["DMS_TEST_WITH_CPU"] = bool(dms.options.with_cpu)
        tc.cache_variables["DMS_TEST_EXPECTED_VERSION"] = str(dms.ref.version)
        tc.generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def test(self):
        if can_run(self):
            self.run(os.path.join(self.cpp.build.bindir, "test_package"), env="conanrun")
