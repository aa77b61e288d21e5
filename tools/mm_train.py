#!/usr/bin/env python
"""Train an mmdet / mmseg model with a DiNAT backbone, using mmengine's Runner.

    python tools/mm_train.py configs/mmseg/upernet_dinat-mini_8xb2-160k_ade20k-512x512.py
    python tools/mm_train.py CONFIG --work-dir work_dirs/x --resume           # from last_checkpoint
    python tools/mm_train.py CONFIG --resume work_dirs/x/iter_4000.pth        # from that file
    python tools/mm_train.py CONFIG --cfg-options train_dataloader.batch_size=4 data_root=...
    torchrun --nproc_per_node 8 tools/mm_train.py CONFIG --launcher pytorch   # mmengine's DDP

--launcher pytorch uses NCCL on GPUs and gloo on a machine without CUDA. Checkpoints are written
atomically (temporary name, then rename), so a run killed while saving resumes from the last
complete checkpoint; they are read back (--resume, --load-from) without running code from them.
Evaluate with tools/mm_test.py.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_cfg_options(items):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser()
    parser.add_argument("--o", nargs="+", action=DictAction)
    return parser.parse_args(["--o", *items]).o if items else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="a config file (configs/mmdet/..., configs/mmseg/...)")
    p.add_argument("--work-dir", help="where logs and checkpoints go "
                   "(default ./work_dirs/<config name>)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="resume training: without a value from the work dir's last checkpoint, "
                   "or from the given checkpoint")
    p.add_argument("--load-from", help="start from these weights (schedule not resumed)")
    p.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config entries, e.g. train_cfg.max_iters=100")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                   help="'pytorch' under torchrun (mmengine's DDP; gloo without CUDA)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.local_rank is not None and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)

    from dinat_backbone.mmengine import build_runner, load_config, patch_checkpoint_loader

    patch_checkpoint_loader()  # --resume / --load-from through the safe reader
    cfg = load_config(args.config, work_dir=args.work_dir,
                      cfg_options=parse_cfg_options(args.cfg_options), launcher=args.launcher,
                      resume=args.resume, amp=args.amp, load_from=args.load_from)
    runner = build_runner(cfg)
    runner.train()
    return runner


def close_process_group():
    """Destroys torch.distributed's default process group where a launcher made one, once every
    process is done. Left to the interpreter's exit, a gloo group can abort a finished process
    ("terminate called without an active exception"), and torchrun then reports the run failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    close_process_group()
