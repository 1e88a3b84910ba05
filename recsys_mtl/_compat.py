"""Import-time check that the torch / fbgemm / torchrec stack fits together.

A torch and fbgemm-gpu(-cpu) of mismatched versions import "fine" and then fail deep inside the first
embedding lookup with a missing-operator error. Checking one fbgemm op at import turns that into one
clear message that names what is installed and what is needed.
"""

from __future__ import annotations

from importlib import metadata

# The tested set (requirements/torch-cpu.txt, requirements/torchrec.txt). GPU installs use fbgemm-gpu.
REQUIRED = {"torch": "2.13.0", "fbgemm-gpu-cpu or fbgemm-gpu": "1.8.0", "torchrec": "1.8.0"}


def _installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def installed_versions() -> dict[str, str]:
    """Versions of the torch stack found in this environment, by distribution name."""
    return {d: _installed(d) for d in ("torch", "fbgemm-gpu-cpu", "fbgemm-gpu", "torchrec")}


def _mismatch_message(cause: BaseException) -> str:
    found = ", ".join(f"{k} {v}" for k, v in installed_versions().items())
    needed = ", ".join(f"{k} {v}" for k, v in REQUIRED.items())
    return (
        f"recsys-mtl cannot load the fbgemm embedding operators ({type(cause).__name__}: {cause}).\n"
        f"  found:  {found}\n"
        f"  needed: {needed}\n"
        "torch, fbgemm-gpu(-cpu) and torchrec must be installed as a matched set: run `make setup` "
        "(CPU), or see README 'GPU install'. torchrec must be installed with --no-deps so that it does "
        "not pull the CUDA fbgemm-gpu over the CPU build."
    )


def check_torch_stack() -> None:
    """Raise ImportError with a version report unless fbgemm ops and torchrec load."""
    try:
        import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm.*)
        import torch

        torch.ops.fbgemm.asynchronous_complete_cumsum(torch.tensor([1], dtype=torch.int64))
        import torchrec  # noqa: F401
    except (ImportError, OSError, RuntimeError, AttributeError) as exc:
        raise ImportError(_mismatch_message(exc)) from exc
