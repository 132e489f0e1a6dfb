"""Collection rules shared by the test run and the doctest run over the package."""

import importlib.util

# The PyTorch bridge is optional and PyTorch is a large download: without torch, neither the
# bridge module (it imports torch at module level) nor its tests are collected.  .ci/run installs
# the torch extra in a separate step and runs tests/test_torch.py there explicitly.
collect_ignore = [] if importlib.util.find_spec("torch") else ["fastact/torch.py",
                                                               "tests/test_torch.py"]

# The CUDA kernel module needs numba-cuda (the cuda extra): without it, it is not imported for
# doctests (tests/cuda/ has its own collection rule, see tests/cuda/conftest.py).
if not importlib.util.find_spec("numba_cuda"):
    collect_ignore.append("fastact/kernels/numba_cuda.py")
