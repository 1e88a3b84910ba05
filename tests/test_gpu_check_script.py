"""bench/gpu/check.sh, as far as a machine without a GPU can check it: the shell parses, it stops at once
with a clear message where there is no CUDA device, and where a GPU is listed but torch cannot use it
it stops at the stack check instead of training on the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "bench/gpu/check.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="no bash")


def run(env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_script_parses():
    subprocess.run([BASH, "-n", SCRIPT], cwd=ROOT, check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-S", "warning", SCRIPT], cwd=ROOT, check=True)


def test_without_a_cuda_device_it_stops_at_once_saying_so(tmp_path):
    (tmp_path / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")  # a driver tool that finds no GPU
    (tmp_path / "nvidia-smi").chmod(0o755)
    result = run({**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert result.returncode == 1
    assert "error: no CUDA device on this machine" in result.stderr and result.stdout == ""


def test_with_a_gpu_torch_cannot_use_it_stops_at_the_stack_check(tmp_path):
    # nvidia-smi lists a GPU, the venv's torch (this CPU build) has no CUDA: no install (SKIP_INSTALL), no training
    (tmp_path / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    (tmp_path / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin", "VENV": str(Path(sys.executable).parent.parent), "SKIP_INSTALL": "1", "TMPDIR": str(tmp_path)}
    result = run(env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 GPU(s)" in result.stdout and "install: skipped" in result.stdout
    assert "error: the CUDA stack does not work" in result.stderr
    assert "train-1gpu" not in result.stdout
