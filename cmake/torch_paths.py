"""Writes a CMake snippet with the include dirs, libraries, ABI, version and C++ standard of the
installed torch."""
import os
import re
import sys

import torch
import torch.utils.cpp_extension as ce

lib = ce.library_paths()[0]
names = [n for n in ("c10", "torch", "torch_cpu", "c10_cuda", "torch_cuda")
         if os.path.exists(os.path.join(lib, f"lib{n}.so"))]
with open(sys.argv[1], "w") as f:
    f.write(f'set(TORCH_INCLUDE_DIRS "{";".join(ce.include_paths())}")\n')
    f.write(f'set(TORCH_LIB_DIR "{lib}")\n')
    f.write(f'set(TORCH_LIBRARIES "{";".join(os.path.join(lib, f"lib{n}.so") for n in names)}")\n')
    f.write(f"set(TORCH_CXX11_ABI {int(torch._C._GLIBCXX_USE_CXX11_ABI)})\n")
    f.write(f'set(TORCH_VERSION "{torch.__version__}")\n')


def _cxx_standard():
    """The C++ standard torch asks of code built against its headers: the CXX_STANDARD that
    torch's own build writes on the torch target in TorchConfig.cmake (what find_package(Torch)
    gives its users; 17 in torch 2.4, 20 in 2.13 and 2.14, the same standard cpp_extension passes).
    Without that file: 20 from 2.14 (the first release whose headers need it), 17 before."""
    config = os.path.join(os.path.dirname(torch.__file__), "share", "cmake", "Torch",
                          "TorchConfig.cmake")
    try:
        with open(config) as f:
            m = re.search(r"\bCXX_STANDARD\s+(\d+)", f.read())
        if m:
            return int(m.group(1))
    except OSError:
        pass
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())
    return 20 if (major, minor) >= (2, 14) else 17


def _nvtx_include():
    """NVTX3 is header-only: the CUDA toolkit's include/nvtx3, or the nvidia-nvtx wheel's."""
    import glob
    import site

    roots = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"] + sorted(
        glob.glob("/usr/local/cuda-*"), reverse=True)
    candidates = [os.path.join(r, "include") for r in roots if r]
    for sp in site.getsitepackages() + [site.getusersitepackages()]:
        candidates += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "include")))
    for c in candidates:
        if os.path.exists(os.path.join(c, "nvtx3", "nvToolsExt.h")):
            return c
    return ""


with open(sys.argv[1], "a") as f:
    f.write(f"set(TORCH_CXX_STANDARD {_cxx_standard()})\n")
    f.write(f'set(NVTX_INCLUDE_DIR "{_nvtx_include()}")\n')
