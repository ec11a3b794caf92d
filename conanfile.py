"""Conan 2 recipe for dms, a header-only C++20 library.

The package holds only headers, so package() runs the project's own CMake install (which is what
every other route installs too) and package_info() describes the targets for CMakeDeps:

    dms::dms   core, no third-party dependency            (component "dms")
    dms::io    nlohmann_json, zlib; option with_io         (component "io")
    dms::cpu   xtensor, xsimd, OpenBLAS; option with_cpu   (component "cpu"; links dms::io too
               when with_io, as the CMake package does)
    dms::cuda  CUDA runtime and cuBLAS; option with_cuda   (component "cuda", system libraries)
    dms::merge yaml-cpp, links dms::io; option with_merge (component "merge"; only with with_io)
    dms::all   every enabled component (Conan's aggregate target; not in the CMake package)

The -march=native target dms::native of the CMake package is deliberately not offered: Conan's
aggregate target links every component, and a package must never impose -march=native.

Offline use, as in tests/package: `conan create . -o "&:with_cpu=False" -o "&:with_io=False"`
needs no remote; otherwise a profile whose [platform_requires] names the system's xtensor, xsimd,
openblas, nlohmann_json and zlib makes Conan use them instead of fetching them (see
tests/package/conan_create.cmake).
"""
import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load, rmdir

required_conan_version = ">=2.0"


class DmsConan(ConanFile):
    name = "dms"
    license = "MIT"
    description = "Dynamic Mode Steering and model surgery for LLM inference engines"
    homepage = "https://example.invalid/dms"
    topics = ("llm", "inference", "steering", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_io": [True, False], "with_cpu": [True, False], "with_cuda": [True, False],
               "with_merge": [True, False]}
    # The same defaults as the CMake options DMS_WITH_IO, DMS_WITH_CPU and DMS_WITH_CUDA.
    default_options = {"with_io": True, "with_cpu": True, "with_cuda": False, "with_merge": True}
    # The sources are only read (configure + install), never modified or built into objects.
    no_copy_source = True
    # What a source release of dms contains; tests/package's FetchContent URL test packs the same.
    exports_sources = "include/*", "cmake/*", "CMakeLists.txt", "LICENSE"

    def set_version(self):
        # One source of truth: project(dms VERSION x.y.z) in CMakeLists.txt.
        if self.version:
            return
        text = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
        match = re.search(r"project\(\s*dms\s+VERSION\s+([0-9.]+)", text)
        self.version = match.group(1)

    def layout(self):
        cmake_layout(self)

    def configure(self):
        # dms::merge reads checkpoints through dms::io: without io there is no merge component.
        if not self.options.with_io:
            self.options.rm_safe("with_merge")

    def requirements(self):
        if self.options.get_safe("with_merge"):
            self.requires("yaml-cpp/[>=0.7 <0.9]", transitive_headers=True)
        if self.options.with_io:
            self.requires("nlohmann_json/[>=3.10 <4]", transitive_headers=True)
            self.requires("zlib/[>=1.2.11 <2]", transitive_headers=True)
        if self.options.with_cpu:
            # Ranges rather than pins: ConanCenter has xtensor 0.24.3 and xsimd 8.1.0 but no
            # openblas 0.3.21 (Debian 12's), and a profile's [platform_requires] must fall inside
            # them for the system packages to stand in.
            self.requires("xtensor/[>=0.24.3 <0.25]", transitive_headers=True)
            self.requires("xsimd/[>=8.1.0 <9]", transitive_headers=True)
            self.requires("openblas/[>=0.3.20 <0.4]")

    def validate(self):
        if self.settings.compiler.get_safe("cppstd"):
            check_min_cppstd(self, 20)

    def package_id(self):
        # Headers only: the same package serves every compiler, architecture and build type.
        self.info.settings.clear()

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["DMS_WITH_IO"] = bool(self.options.with_io)
        tc.cache_variables["DMS_WITH_CPU"] = bool(self.options.with_cpu)
        tc.cache_variables["DMS_WITH_CUDA"] = bool(self.options.with_cuda)
        tc.cache_variables["DMS_WITH_MERGE"] = bool(self.options.get_safe("with_merge"))
        for what in ("TESTS", "EXAMPLES", "BENCHMARKS", "TOOLS"):
            tc.cache_variables[f"DMS_BUILD_{what}"] = False
        tc.cache_variables["DMS_INSTALL"] = True
        tc.generate()
        deps = CMakeDeps(self)
        if self.options.with_cpu:
            # dms calls find_package(BLAS) (any vendor); let Conan's openblas answer it.
            deps.set_property("openblas", "cmake_file_name", "BLAS")
            deps.set_property("openblas", "cmake_target_name", "BLAS::BLAS")
            deps.set_property("openblas", "cmake_find_mode", "both")
        deps.generate()

    def build(self):
        pass  # nothing to compile; package() configures and installs

    def package(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.install()
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        # Consumers get CMake files from CMakeDeps and package_info(); the project's own
        # dmsConfig.cmake would compete with them.
        rmdir(self, os.path.join(self.package_folder, "share"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "dms")
        # The aggregate target must not be dms::dms, which is the core component's name.
        self.cpp_info.set_property("cmake_target_name", "dms::all")

        core = self.cpp_info.components["dms"]
        core.set_property("cmake_target_name", "dms::dms")
        core.bindirs = []
        core.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread"]  # the CMake package links Threads::Threads

        # A requirement that a profile's [platform_requires] satisfies has no package and no
        # cpp_info (Conan hides it from self.dependencies), so CMakeDeps cannot link it. The
        # system provides it instead: headers on the default include path, and libraries linked
        # by name (system_libs).
        from_conan = {dep.ref.name for dep in self.dependencies.host.values()}

        def use(component, pkg, system_lib=None):
            if pkg in from_conan:
                component.requires.append(f"{pkg}::{pkg}")
            elif system_lib:
                component.system_libs.append(system_lib)

        if self.options.with_io:
            io = self.cpp_info.components["io"]
            io.set_property("cmake_target_name", "dms::io")
            io.requires = ["dms"]
            use(io, "nlohmann_json")
            use(io, "zlib", "z")
            io.defines = ["DMS_HAS_IO=1"]
            io.bindirs = []
            io.libdirs = []

        if self.options.get_safe("with_merge"):
            merge = self.cpp_info.components["merge"]
            merge.set_property("cmake_target_name", "dms::merge")
            merge.requires = ["dms", "io"]
            use(merge, "yaml-cpp", "yaml-cpp")
            merge.defines = ["DMS_HAS_MERGE=1"]
            merge.bindirs = []
            merge.libdirs = []

        if self.options.with_cpu:
            cpu = self.cpp_info.components["cpu"]
            cpu.set_property("cmake_target_name", "dms::cpu")
            cpu.requires = ["dms", "io"] if self.options.with_io else ["dms"]
            use(cpu, "xtensor")
            use(cpu, "xsimd")
            use(cpu, "openblas", "openblas")
            cpu.defines = ["DMS_HAS_CPU_BACKEND=1"]
            cpu.bindirs = []
            cpu.libdirs = []

        if self.options.with_cuda:
            # No CUDA toolkit package exists in ConanCenter: the system's is linked by name.
            cuda = self.cpp_info.components["cuda"]
            cuda.set_property("cmake_target_name", "dms::cuda")
            cuda.requires = ["dms"]
            cuda.system_libs = ["cudart", "cublas"]
            cuda.defines = ["DMS_HAS_CUDA_BACKEND=1"]
            cuda.bindirs = []
            cuda.libdirs = []
