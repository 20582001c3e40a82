"""Builds effmetrics._C by driving CMakeLists.txt (the one list of C++ sources).

    pip install --no-build-isolation .        # needs torch >= 2.4 already installed

setuptools works in build-pip/ (EFFMETRICS_BUILD_BASE), not build/, which is `make build`'s
CMake tree; the CMake tree of this build is build-pip/cmake (EFFMETRICS_CMAKE_BUILD_DIR), kept
between installs so a reinstall compiles only what changed. Nothing is written into python/.
"""
import os
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        try:
            import torch  # noqa: F401
        except ImportError:
            sys.exit("effmetrics: install torch first (pip install torch), then "
                     "pip install --no-build-isolation .")
        out_dir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        build_dir = os.path.abspath(os.environ.get("EFFMETRICS_CMAKE_BUILD_DIR")
                                    or os.path.join(BUILD_BASE, "cmake"))
        os.makedirs(build_dir, exist_ok=True)
        config = [
            "cmake", "-S", os.path.dirname(os.path.abspath(__file__)), "-B", build_dir,
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DEFFMETRICS_PYTHON_OUT={out_dir}",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DEFFMETRICS_BUILD_TESTS=OFF",
        ]
        subprocess.check_call(config)
        jobs = os.environ.get("EFFMETRICS_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "_C", "-j", jobs])


BUILD_BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          os.environ.get("EFFMETRICS_BUILD_BASE", "build-pip"))
os.makedirs(BUILD_BASE, exist_ok=True)  # egg_info wants its egg_base to exist

setup(
    ext_modules=[CMakeExtension("effmetrics._C")],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": BUILD_BASE}, "egg_info": {"egg_base": BUILD_BASE}},
)
