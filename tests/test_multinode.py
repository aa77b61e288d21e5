"""Two "nodes" on one host, started the way a cluster starts them, train like one node.

Each test runs the repo's own tools as a user would on two machines: two launcher invocations
that meet by rendezvous on 127.0.0.1 (node 0 serves it), each with its own output folder (as
two machines without a shared file system would have). The oracle is the same training run as
2 processes on one node, same data, seed, world size and per-rank batch:

* only node 0 (global rank 0) writes checkpoints; node 1's folder holds none;
* the final weights equal those of the single-node run. Both runs have the same two ranks doing
  the same computation on the same samples; the only thing that differs is which launcher set up
  the process group. A 2-rank gloo all-reduce sums two tensors, and a + b == b + a in floating
  point, so the results should be bit-identical: the tests assert tolerance 0 (``torch.equal``)
  and also check that training moved the weights (so "equal" is not two untouched copies).

mmengine: ``torchrun --nnodes 2 --nproc_per_node 1 --node_rank {0,1} --master_addr 127.0.0.1
--master_port P tools/mm_train.py CFG --launcher pytorch`` vs ``torchrun --standalone
--nproc_per_node 2 ...``. detectron2: ``tools/train_net.py --num-gpus 1 --num-machines 2
--machine-rank {0,1} --dist-url tcp://127.0.0.1:P`` vs ``--num-gpus 2``. On the CPU both use gloo.
"""
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MM_TRAIN = os.path.join(ROOT, "tools", "mm_train.py")
D2_TRAIN = os.path.join(ROOT, "tools", "train_net.py")
TIMEOUT = 600


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def _run_nodes(cmds, cwd):
    """Start the node commands together; every one must exit 0."""
    procs = [subprocess.Popen(c, cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in cmds]
    deadline = time.time() + TIMEOUT
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1, deadline - time.time()))
            logs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"node {i} exited {p.returncode}:\n{log[-4000:]}"
    return logs


def _checkpoints(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".pth"))


def _assert_equal_and_moved(a, b, start):
    """a == b bit for bit (the max |diff| is printed), and training changed the weights."""
    assert list(a) == list(b)
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a
               if a[k].is_floating_point())
    moved = max((a[k].double() - start[k].double()).abs().max().item() for k in a
                if a[k].is_floating_point())
    print(f"2 nodes x 1 process vs 1 node x 2 processes: max |weight diff| {diff:.3g}; "
          f"training moved the weights by up to {moved:.3g}")
    assert diff == 0.0 and all(torch.equal(a[k], b[k]) for k in a)
    assert moved > 1e-5


# ------------------------------------------------------------------------------------ mmengine
MM_CONFIG = """
_base_ = [{base!r}]
crop_size = (64, 64)
gn = dict(type='GN', num_groups=4, requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(variant=None, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                  kernel_size=3, dilations=[[2], [2], [1], [1]]),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=16, pool_scales=(1, 2),
                     norm_cfg=gn, dropout_ratio=0.0),
    auxiliary_head=dict(in_channels=64, channels=8, norm_cfg=gn, dropout_ratio=0.0))
train_dataloader = dict(
    batch_size=2, sampler=dict(type='InfiniteSampler', shuffle=True, seed=0),
    dataset=dict(data_root={data!r}, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs')]))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=3)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=2)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=1, max_keep_ckpts=-1))
randomness = dict(seed=0, deterministic=True)
"""


def _mm_load(path):
    from mmengine.runner.checkpoint import _load_checkpoint

    from dinat_backbone.mmengine import patch_checkpoint_loader

    patch_checkpoint_loader()  # the project's safe reader, as tools/mm_train.py reads them
    return _load_checkpoint(str(path), map_location="cpu")


def _torchrun(*launch, script_args):
    return [sys.executable, "-m", "torch.distributed.run", *launch, MM_TRAIN, *script_args,
            "--launcher", "pytorch"]


@pytest.fixture(scope="module")
def mm_one_node(tmp_path_factory):
    """The tiny config and its run as 1 node x 2 processes (torchrun --standalone)."""
    pytest.importorskip("mmengine", reason="needs mmengine (pip install -e .[mm])")
    pytest.importorskip("mmseg", reason="needs mmsegmentation (pip install -e .[mm])")
    pytest.importorskip("mmcv._ext", reason="needs mmcv with compiled ops (tools/install.sh)")
    from dinat_backbone.demo_data import make_ade_semantic

    d = tmp_path_factory.mktemp("mm")
    make_ade_semantic(str(d / "data"), n_train=4, n_val=1, size=64, seed=0)
    cfg = d / "tiny_upernet.py"
    cfg.write_text(MM_CONFIG.format(
        base=os.path.join(ROOT, "configs", "demo", "upernet_dinat-mini_demo.py"),
        data=str(d / "data")))
    one = d / "one_node"
    log = _run(_torchrun("--standalone", "--nproc_per_node", "2",
                         script_args=[cfg, "--work-dir", one]), ROOT)
    assert "DinatDistributedDataParallel" in log.stdout + log.stderr
    return cfg, one


@pytest.mark.slow
@pytest.mark.parametrize("rendezvous", ["static", "c10d"])
def test_mmengine_two_torchrun_nodes_equal_one_node_with_two_processes(mm_one_node, rendezvous,
                                                                         tmp_path):
    """static: --master_addr/--master_port and --node_rank; c10d: --rdzv_backend c10d
    --rdzv_endpoint (torchrun assigns the node ranks)."""
    cfg, one = mm_one_node
    port = str(_free_port())
    if rendezvous == "static":
        launch = [["--master_addr", "127.0.0.1", "--master_port", port, "--node_rank", str(r)]
                  for r in (0, 1)]
    else:
        launch = [["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                   "--rdzv_id", "multinode-test"]] * 2
    work = [tmp_path / f"work{i}" for i in (0, 1)]
    logs = _run_nodes([_torchrun("--nnodes", "2", "--nproc_per_node", "1", *launch[i],
                                 script_args=[cfg, "--work-dir", work[i]]) for i in (0, 1)], ROOT)
    # only global rank 0 writes checkpoints (with c10d, either invocation may become node 0)
    has = [bool(os.path.isdir(w) and _checkpoints(w)) for w in work]
    assert sum(has) == 1, has
    node0 = work[has.index(True)]
    assert "DinatDistributedDataParallel" in logs[has.index(True)]
    assert _checkpoints(node0) == _checkpoints(one) == ["iter_1.pth", "iter_2.pth"]
    node1 = work[1 - has.index(True)]
    assert not (node1 / "last_checkpoint").exists()

    two_nodes = _mm_load(node0 / "iter_2.pth")
    one_node = _mm_load(one / "iter_2.pth")
    first = _mm_load(one / "iter_1.pth")
    assert two_nodes["meta"]["iter"] == one_node["meta"]["iter"] == 2
    _assert_equal_and_moved(two_nodes["state_dict"], one_node["state_dict"],
                            first["state_dict"])


# ---------------------------------------------------------------------------------- detectron2
D2_OPTS = ["DATASETS.DINAT_DEMO.NUM_TRAIN", "4", "DATASETS.DINAT_DEMO.NUM_VAL", "1",
           "DATASETS.DINAT_DEMO.IMAGE_SIZE", "128", "DATASETS.DINAT_DEMO.MAX_OBJECTS", "3",
           "DATASETS.TEST", "()", "MODEL.DINAT.DILATIONS", "128",
           "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
           "INPUT.RANDOM_FLIP", "none", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
           "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1",
           "DATALOADER.NUM_WORKERS", "0", "SEED", "0"]


def _d2_cmd(tmp_path, out, *flags):
    return [sys.executable, D2_TRAIN, *flags, "--config-file",
            os.path.join(ROOT, "configs", "demo", "d2_mask_rcnn_dinat_mini_demo.yaml"),
            "DATASETS.DINAT_DEMO.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(out), *D2_OPTS]


def _d2_weights(path):
    from dinat_backbone.weights import load_checkpoint_file

    return load_checkpoint_file(str(path))["model"]


@pytest.mark.slow
def test_detectron2_two_machines_equal_one_machine_with_two_processes(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 is not installed (build it from source)")
    one = tmp_path / "one_machine"
    # first: it also generates the demo data, which the two "machines" then share
    _run(_d2_cmd(tmp_path, one, "--num-gpus", "2"), ROOT)

    url = f"tcp://127.0.0.1:{_free_port()}"
    nodes = [tmp_path / f"machine{r}" for r in (0, 1)]
    _run_nodes([_d2_cmd(tmp_path, nodes[r], "--num-gpus", "1", "--num-machines", "2",
                        "--machine-rank", str(r), "--dist-url", url) for r in (0, 1)], ROOT)
    # only machine 0 (global rank 0) writes checkpoints
    assert _checkpoints(nodes[0]) == _checkpoints(one) == ["model_0000000.pth",
                                                           "model_0000001.pth", "model_final.pth"]
    assert not os.path.exists(nodes[1]) or not _checkpoints(nodes[1])

    _assert_equal_and_moved(_d2_weights(nodes[0] / "model_final.pth"),
                            _d2_weights(one / "model_final.pth"),
                            _d2_weights(one / "model_0000000.pth"))
