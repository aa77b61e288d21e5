"""Packaging for dinat-backbone.

Ranges, not pins, except where a framework forces one (mmcv < 2.2 for mmdet 3.3 / mmseg 1.2).
detectron2 is not served by the package registries: install it the way its own documentation
says (see README.md); the ``detectron2`` extra installs only what it needs beside itself.
"""
from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

extras = {
    # Everything the default test run needs (CI installs it with ``mm``).
    "test": [
        "pytest>=7",
        "ruff>=0.4",  # the lint .ci/run runs (ruff.toml)
        # transformers' DiNAT models, run through dinat_backbone.transformers.patch_transformers()
        # (its supported range). The 4.53.3 oracle lives beside it in .venv/transformers-4.53
        # (tools/install.sh; see tests/test_transformers_oracle.py).
        "transformers>=5.0,<5.25",
        "safetensors>=0.4",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "onnxscript>=0.1",
        "pillow>=9",
        "matplotlib>=3.5",
    ],
    # Optional fused kernels. NATTEN >= 0.20 is used only where it computes the same thing (no
    # RPB, no attention weights); install with ``pip install --no-build-isolation natten``.
    "natten": ["natten>=0.17"],
    # OpenMMLab. mmcv needs its compiled ops; tools/install.sh builds it from source first.
    "mm": [
        "mmengine>=0.10.4,<0.11",
        "mmcv>=2.0.0rc4,<2.2.0",
        "mmdet>=3.3,<3.4",
        "mmsegmentation>=1.2,<1.3",
        "ftfy",  # imported by mmseg without being declared
        "regex",  # likewise
        "opencv-python-headless>=4.5",
        "pillow>=9",
        "matplotlib>=3.5",
    ],
    # detectron2's own requirements; detectron2 itself comes from its official source.
    "detectron2": [
        "iopath>=0.1.7,<0.1.10",
        "omegaconf>=2.1,<2.4",
        "hydra-core>=1.1",
        "yacs>=0.1.8",
        "termcolor>=1.1",
        "tabulate",
        "cloudpickle",
        "tqdm>4.29.0",
        "tensorboard",
        "matplotlib",
        "opencv-python-headless>=4.5",
        "setuptools<81",  # detectron2.model_zoo imports pkg_resources
    ],
    # Mask2Former's own requirements (its requirements.txt), beside the detectron2 ones: the
    # official Mask2Former source is a project folder, not a package (see docs/detectron2.md).
    "mask2former": [
        "cython",
        "scipy",
        "shapely",
        "timm>=0.9",
        "h5py",
        "submitit",
        "scikit-image",
    ],
    "hub": ["huggingface_hub>=0.20", "safetensors>=0.4"],
}
extras["mask2former"] = extras["detectron2"] + extras["mask2former"]
extras["all"] = sorted({r for k, v in extras.items() if k != "natten" for r in v})

setup(
    name="dinat-backbone",
    version="0.1.0",
    description="DiNAT (Dilated Neighborhood Attention Transformer) backbone for detectron2, "
    "mmdet and mmseg, in pure PyTorch",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["dinat_backbone", "dinat_backbone.*"]),
    # the C++ source of the "cpp" attention backend, compiled on first use (ops/cpp_backend.py)
    package_data={"dinat_backbone.ops": ["csrc/*.cpp", "csrc/*.h"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.6",  # the tests and the safe loader rely on torch.load(weights_only=True)
        "fvcore>=0.1.5",
        "pycocotools>=2.0.6",
        "numpy>=1.22",
    ],
    extras_require=extras,
    entry_points={"console_scripts": []},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
