from __future__ import annotations

import builtins

import pytest

from recsys_mtl import _compat


def test_a_broken_fbgemm_import_names_found_and_needed_versions(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "fbgemm_gpu":
            raise OSError("undefined symbol: _ZN2at4_ops10zeros_like4call")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError) as err:
        _compat.check_torch_stack()
    msg = str(err.value)
    assert "undefined symbol" in msg
    assert "found:  torch 2.13.0" in msg and "fbgemm-gpu-cpu 1.8.0" in msg and "torchrec 1.8.0" in msg
    assert "needed: torch 2.13.0, fbgemm-gpu-cpu or fbgemm-gpu 1.8.0, torchrec 1.8.0" in msg
    assert "make setup" in msg


def test_the_installed_stack_passes():
    _compat.check_torch_stack()
