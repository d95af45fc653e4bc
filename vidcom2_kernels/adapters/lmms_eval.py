"""Run lmms-eval with VidCom2, the upstream way: ``COMPRESSOR=vidcom2 R_RATIO=0.25``.

    COMPRESSOR=vidcom2 R_RATIO=0.25 python -m vidcom2_kernels.adapters.lmms_eval \\
        --model qwen2_vl --model_args pretrained=Qwen/Qwen2-VL-7B-Instruct --tasks videomme ...

Everything after the module name goes to lmms-eval's own command line. Before handing over, the
``from_pretrained`` of every supported transformers class is wrapped so that each model lmms-eval
loads gets :func:`vidcom2_kernels.adapters.apply_from_env` (nothing happens when ``COMPRESSOR`` is
unset or ``none``). lmms-eval itself is not a dependency of this package.
"""

from __future__ import annotations

import functools
import runpy
import sys

SUPPORTED_CLASSES = (
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration",
    "LlavaOnevisionForConditionalGeneration",
    "AutoModelForImageTextToText",
    "AutoModelForVision2Seq",
)


def install_load_hooks() -> list:
    """Wrap ``from_pretrained`` of the supported classes; returns an undo list."""
    import transformers

    from . import apply_from_env

    undo = []
    for name in SUPPORTED_CLASSES:
        cls = getattr(transformers, name, None)
        if cls is None:
            continue
        original = cls.__dict__.get("from_pretrained")
        loader = cls.from_pretrained

        @functools.wraps(loader)
        def from_pretrained(*args, _loader=loader, **kwargs):
            model = _loader(*args, **kwargs)
            model.vidcom2_handle = apply_from_env(model) if hasattr(model, "generate") else None
            return model

        cls.from_pretrained = from_pretrained
        undo.append((cls, original))
    return undo


def remove_load_hooks(undo: list) -> None:
    for cls, original in reversed(undo):
        if original is None:
            del cls.from_pretrained
        else:
            cls.from_pretrained = original


def main(argv=None) -> None:
    install_load_hooks()
    sys.argv = ["lmms_eval", *(sys.argv[1:] if argv is None else argv)]
    runpy.run_module("lmms_eval", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
