#!/usr/bin/env python
"""Convert a released DiNAT checkpoint to the layout a framework loads.

    python tools/convert_weights.py SRC DST --to {dinat,transformers,detectron2,mmengine}

SRC is any supported checkpoint (the authors' classification / mmdet / mmseg / Mask2Former
files, transformers' weights or folder, detectron2 .pth / .pkl, this project's): the format and
the variant are recognised from the keys and shapes (see dinat_backbone/weights/). SRC may also
be the folder of a transformers composite model (UperNetForSemanticSegmentation,
Mask2FormerForUniversalSegmentation, OneFormerForUniversalSegmentation with a DiNAT backbone):
the backbone is found under its prefix and its config read from config.json's backbone_config.

--to dinat         this project's (= the authors' classification) names. DST ``*.pth`` /
                   ``*.safetensors``: the bare state dict; DST a folder: ``model.safetensors``
                   (or ``pytorch_model.bin``) + ``config.json``, loadable with from_pretrained.
--to transformers  a folder with transformers' ``config.json`` + ``model.safetensors``
                   (``DinatForImageClassification`` names; ``--kind model|backbone`` for others).
--to detectron2    ``{"model": {"backbone.bottom_up.<key>": ...}}`` as ``.pth`` (or ``.pkl``,
                   detectron2's pickle of numpy arrays): the prefix of an FPN-wrapped backbone;
                   ``--prefix backbone.`` for Mask2Former-style models. Head and final norm
                   dropped. Use it as MODEL.WEIGHTS.
--to mmengine      ``{"state_dict": {"backbone.<key>": ...}}`` (.pth) for mmdet / mmseg
                   ``load_from`` or ``init_cfg=dict(type='Pretrained', checkpoint=...,
                   prefix='backbone.')``. Head and final norm dropped.

The adapters also read every released format directly; converting once saves the work at each
start and gives a file the frameworks' own loaders read without this package.

SRC is read without running code: a pickle that needs code to load is refused. Only for a file
whose origin you trust, --trust-pickle reads it with torch.load(weights_only=False) (or plain
pickle.load for a .pkl), which RUNS whatever code the file contains; the converted DST then
holds tensors only and loads safely everywhere.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dinat_backbone import weights as ck  # noqa: E402
from dinat_backbone.config import DinatConfig  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("src", help="checkpoint file or folder (any supported DiNAT format)")
    p.add_argument("dst", help="output file (.pth, .safetensors, .pkl) or folder")
    p.add_argument("--to", required=True,
                   choices=["dinat", "transformers", "detectron2", "mmengine"])
    p.add_argument("--prefix", default=None,
                   help="key prefix to write (detectron2: default 'backbone.bottom_up.'; "
                        "mmengine: default 'backbone.')")
    p.add_argument("--src-prefix", default=None,
                   help="where the backbone sits in SRC when it holds several")
    p.add_argument("--use-ema", action="store_true", help="take the EMA weights of SRC")
    p.add_argument("--config", default=None,
                   help="config.json of SRC (dilations, labels); default: SRC folder's "
                        "config.json, else inferred from the weights")
    p.add_argument("--kernel-size", type=int, default=None,
                   help="resize the RPB tables to this kernel size (bicubic)")
    p.add_argument("--kind", default="classification",
                   choices=["classification", "model", "backbone"],
                   help="--to transformers: which transformers class the names are for")
    p.add_argument("--trust-pickle", action="store_true",
                   help="read SRC with torch.load(weights_only=False) / pickle.load, which RUNS "
                        "any code the file contains: only for a file whose origin you trust")
    return p.parse_args(argv)


def _load_trusting(path: str):
    """Read ``path`` with the unrestricted unpickler: runs the file's code (--trust-pickle)."""
    import pickle
    import zipfile

    import torch

    if os.path.isdir(path):
        path = ck.weights_file_in(path)
    print(f"warning: --trust-pickle: reading {path} with the unrestricted unpickler; any code "
          "it contains runs now", file=sys.stderr)
    if path.lower().endswith(".safetensors"):
        return ck.load_checkpoint_file(path)
    if path.lower().endswith((".pkl", ".pickle")) and not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    return torch.load(path, map_location="cpu", weights_only=False)


def _source_config(a, inferred: DinatConfig) -> DinatConfig:
    """--config, else SRC folder's config.json (also a composite model's), else inferred."""
    cfg_path = a.config
    if cfg_path is None and os.path.isdir(a.src) and os.path.exists(
            os.path.join(a.src, "config.json")):
        cfg_path = os.path.join(a.src, "config.json")
    if cfg_path:
        config, note = ck.config_from_json(cfg_path)
        print(f"note: {note}", file=sys.stderr)
        return config
    if a.to == "transformers" or (a.to == "dinat" and _is_dir_target(a.dst)):
        print("note: dilations are not stored in weights; config.json gets the "
              f"classification preset {inferred.dilations} (edit it, or pass --config)",
              file=sys.stderr)
    return inferred


def main(argv=None) -> int:
    a = parse_args(argv)
    src_obj = _load_trusting(a.src) if a.trust_pickle else ck.load_checkpoint_file(a.src)
    sd, inferred = ck.convert_state_dict(src_obj, prefix=a.src_prefix, use_ema=a.use_ema)
    config = _source_config(a, inferred)
    if a.kernel_size is not None and a.kernel_size != config.kernel_size:
        config = config.copy(kernel_size=a.kernel_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd, config = ck.convert_state_dict(sd, config)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    out = _write(a, sd, config)
    print(f"{a.src} ({ck.detect_format(src_obj, a.src_prefix)}, {_summary(config)}) -> {out} "
          f"({a.to})")
    return 0


def _write(a, sd, config: DinatConfig) -> str:
    """Write ``sd`` (this project's names) in the layout --to asks for; returns the file."""
    if a.to == "dinat":
        if _is_dir_target(a.dst):
            os.makedirs(a.dst, exist_ok=True)
            out = _weights_path(a.dst)
            ck.save_state_dict(sd, out)
            config.save_pretrained(a.dst)
        else:
            out = ck.save_state_dict(sd, a.dst)
    elif a.to == "transformers":
        os.makedirs(a.dst, exist_ok=True)
        out = _weights_path(a.dst)
        ck.save_state_dict(ck.to_transformers(sd, a.kind), out)
        with open(os.path.join(a.dst, "config.json"), "w", encoding="utf-8") as f:
            json.dump(ck.transformers_config_dict(config, a.kind), f, indent=2)
    elif a.to == "detectron2":
        prefix = ck.DEFAULT_DETECTRON2_PREFIX if a.prefix is None else a.prefix
        out = ck.save_state_dict(ck.to_detectron2(sd, prefix), a.dst)
    else:
        prefix = ck.FORMAT_PREFIXES["mmengine"] if a.prefix is None else a.prefix
        out = ck.save_state_dict(ck.to_mmengine(sd, prefix), a.dst)
    return out


def _is_dir_target(path: str) -> bool:
    return os.path.isdir(path) or not os.path.splitext(path)[1]


def _weights_path(folder: str) -> str:
    try:
        import safetensors  # noqa: F401

        return os.path.join(folder, "model.safetensors")
    except ImportError:
        return os.path.join(folder, "pytorch_model.bin")


def _summary(c: DinatConfig) -> str:
    v = getattr(c, "variant", None)
    return (f"{'variant ' + v + ', ' if v else ''}embed_dim {c.embed_dim}, depths {c.depths}, "
            f"heads {c.num_heads}, kernel {c.kernel_size}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
