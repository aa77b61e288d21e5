"""Interrupted training: SIGKILL an mmengine Runner run, resume it, get the same weights.

Each run is ``tools/mm_train.py`` in its own process (as a user runs it) on a tiny UPerNet /
DiNAT segmentation model and a few synthetic ADE20K-layout images, with a fixed seed and
``randomness.deterministic=True`` on the CPU. The oracle is the same config trained without
interruption: after ``--resume`` the run must reach the same iteration count and bit-identical
weights (tolerance 0: every tensor of the final ``state_dict`` and of the optimizer state equal).
The heads use dropout, so this needs ``dinat_backbone.mmengine.TorchRNGStateHook`` (torch's RNG
state saved in checkpoints and restored on resume; without it the weights differ by ~1e-3 after
8 iterations).

Atomic checkpoints: a fault injected inside mmengine's file write (half the bytes written, then
SIGKILL) during the second checkpoint must leave ``last_checkpoint`` naming a complete file, from
which ``--resume`` again reaches the uninterrupted weights. The same fault with mmengine's plain
``CheckpointHook`` (``max_keep_ckpts=1``) is shown to lose the run (negative control).
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("mmengine", reason="needs mmengine (pip install -e .[mm])")
pytest.importorskip("mmseg", reason="needs mmsegmentation (pip install -e .[mm])")
try:
    import mmcv._ext  # noqa: F401  mmseg's models import compiled mmcv ops
except ImportError:  # pragma: no cover - environment dependent
    pytest.skip("needs mmcv with compiled ops (tools/install.sh builds it)",
                allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "mm_train.py")
MAX_ITERS = 8
INTERVAL = 2

CONFIG = """
_base_ = [{base!r}]
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(variant=None, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                  kernel_size=3, dilations=[[2], [2], [1], [1]]),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=16, pool_scales=(1, 2)),
    auxiliary_head=dict(in_channels=64, channels=8))
train_dataloader = dict(batch_size=2, dataset=dict(data_root={data!r}))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval={iters} + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=3, end={iters}),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={interval},
                    max_keep_ckpts=1))
randomness = dict(seed=0, deterministic=True)
custom_imports = dict(imports=['dinat_backbone.mmengine'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='TorchRNGStateHook')]
"""

# Runs tools/mm_train.py with a fault inside mmengine's local file write: at the Nth checkpoint
# write, half the bytes reach the file, then the process SIGKILLs itself. With --plain-hook the
# run uses mmengine's own CheckpointHook instead of dinat_backbone's AtomicCheckpointHook.
FAULTY = r'''
import os, signal, sys
sys.path.insert(0, {root!r})
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook

n_fail = int(sys.argv[1]); calls = [0]
_put = LocalBackend.put

def put(self, obj, filepath):
    if ".pth" in os.path.basename(str(filepath)):
        calls[0] += 1
        if calls[0] == n_fail:
            with open(filepath, "wb") as f:
                f.write(obj[: len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    return _put(self, obj, filepath)

LocalBackend.put = put
argv = sys.argv[2:]
if argv and argv[0] == "--plain-hook":
    import dinat_backbone.mmengine as dm
    dm.AtomicCheckpointHook._save_checkpoint_with_step = CheckpointHook._save_checkpoint_with_step
    argv = argv[1:]
sys.argv = [{train!r}] + argv
import runpy
runpy.run_path({train!r}, run_name="__main__")
'''


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from dinat_backbone.demo_data import make_ade_semantic

    d = tmp_path_factory.mktemp("resume")
    make_ade_semantic(str(d / "data"), n_train=6, n_val=1, size=64, seed=0)
    cfg = d / "tiny_upernet.py"
    cfg.write_text(CONFIG.format(base=os.path.join(ROOT, "configs", "demo",
                                                   "upernet_dinat-mini_demo.py"),
                                 data=str(d / "data"), iters=MAX_ITERS, interval=INTERVAL))
    faulty = d / "faulty_train.py"
    faulty.write_text(FAULTY.format(root=ROOT, train=TRAIN))
    return d, cfg, faulty


def _train(cfg, work_dir, *extra, faulty=None, fail_at=None, plain=False):
    cmd = [sys.executable]
    if faulty is not None:
        cmd += [str(faulty), str(fail_at)] + (["--plain-hook"] if plain else [])
    else:
        cmd += [TRAIN]
    cmd += [str(cfg), "--work-dir", str(work_dir), *extra]
    return subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def _load(path):
    """Read a checkpoint the way Runner.resume does (weights_only, with the adapter's scoped
    allow-list for mmengine's own types)."""
    import dinat_backbone.mmengine  # noqa: F401  (registers the weights_only loaders)
    from mmengine.runner.checkpoint import _load_checkpoint

    return _load_checkpoint(str(path), map_location="cpu")


def _last(work_dir):
    with open(os.path.join(work_dir, "last_checkpoint")) as f:
        return f.read().strip()


def _final(work_dir):
    ck = _load(os.path.join(work_dir, f"iter_{MAX_ITERS}.pth"))
    assert ck["meta"]["iter"] == MAX_ITERS
    return ck


def _assert_same_training_state(a, b):
    assert a["meta"]["iter"] == b["meta"]["iter"] == MAX_ITERS
    sa, sb = a["state_dict"], b["state_dict"]
    assert list(sa) == list(sb) and any(k.startswith("backbone.levels") for k in sa)
    diff = {k: (sa[k].float() - sb[k].float()).abs().max().item() for k in sa
            if not torch.equal(sa[k], sb[k])}
    assert not diff, f"weights differ after resume (tolerance 0): {diff}"
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(oa[i][name], ob[i][name]), (i, name)


@pytest.fixture(scope="module")
def uninterrupted(setup):
    d, cfg, _ = setup
    wd = d / "uninterrupted"
    r = _train(cfg, wd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ck = _final(wd)
    # the initial weights were really trained (the run is not a no-op)
    assert ck["meta"]["iter"] == MAX_ITERS
    return ck


def test_sigkill_mid_run_then_resume_matches_uninterrupted(setup, uninterrupted):
    d, cfg, _ = setup
    wd = d / "killed"
    p = subprocess.Popen([sys.executable, TRAIN, str(cfg), "--work-dir", str(wd)], env=_env(),
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill as soon as the first checkpoint exists: the run is then mid-way (iteration 2..7).
    deadline = time.time() + 300
    try:
        while time.time() < deadline and p.poll() is None:
            if (wd / "last_checkpoint").exists():
                break
            time.sleep(0.05)
        assert p.poll() is None, "the run ended before it could be killed"
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (wd / f"iter_{MAX_ITERS}.pth").exists()
    killed_at = _load(_last(wd))["meta"]["iter"]
    assert 0 < killed_at < MAX_ITERS

    r = _train(cfg, wd, "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resumed" in (r.stdout + r.stderr).lower()
    _assert_same_training_state(_final(wd), uninterrupted)


def test_kill_while_saving_keeps_latest_checkpoint_complete(setup, uninterrupted):
    d, cfg, faulty = setup
    wd = d / "killed_while_saving"
    r = _train(cfg, wd, faulty=faulty, fail_at=2)
    assert r.returncode == -signal.SIGKILL, r.stdout[-2000:] + r.stderr[-2000:]
    # the torn write went to a temporary name; "latest" is the complete first checkpoint
    last = _last(wd)
    assert os.path.basename(last) == f"iter_{INTERVAL}.pth"
    assert _load(last)["meta"]["iter"] == INTERVAL
    torn = [f for f in os.listdir(wd) if f.endswith(".tmp")]
    assert torn == [f".iter_{2 * INTERVAL}.pth.tmp"]
    assert not (wd / f"iter_{2 * INTERVAL}.pth").exists()

    r = _train(cfg, wd, "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _assert_same_training_state(_final(wd), uninterrupted)


def test_plain_checkpoint_hook_loses_the_run_negative_control(setup):
    """Without the atomic hook the same fault leaves "latest" unusable: the old checkpoint was
    deleted before the new one was written (max_keep_ckpts=1), and the new one is torn."""
    d, cfg, faulty = setup
    wd = d / "plain_hook"
    r = _train(cfg, wd, faulty=faulty, fail_at=2, plain=True)
    assert r.returncode == -signal.SIGKILL, r.stdout[-2000:] + r.stderr[-2000:]
    last = _last(wd)
    assert os.path.basename(last) == f"iter_{INTERVAL}.pth" and not os.path.exists(last)
    assert _unreadable(wd / f"iter_{2 * INTERVAL}.pth")   # the torn file under its final name


def _unreadable(path):
    try:
        _load(path)
    except Exception:
        return True
    return False


# ------------------------------------------------------------------------------ detectron2
D2_MAX_ITER = 6
D2_OPTS = ["DATASETS.DINAT_DEMO.NUM_TRAIN", "6", "DATASETS.DINAT_DEMO.NUM_VAL", "2",
           "DATASETS.DINAT_DEMO.IMAGE_SIZE", "128", "DATASETS.DINAT_DEMO.MAX_OBJECTS", "3",
           "DATASETS.TEST", "()", "MODEL.DINAT.DILATIONS", "128",
           "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
           "INPUT.RANDOM_FLIP", "none", "SOLVER.IMS_PER_BATCH", "2",
           "SOLVER.MAX_ITER", str(D2_MAX_ITER), "SOLVER.WARMUP_ITERS", "0",
           "SOLVER.CHECKPOINT_PERIOD", "2", "SEED", "0"]


def test_detectron2_sigkill_then_resume_reaches_max_iter(tmp_path):
    """tools/train_net.py killed with SIGKILL after its first checkpoint, then ``--resume``:
    training restarts after the last complete checkpoint (not from 0) and ends at MAX_ITER.

    Weights are not compared with an uninterrupted run: detectron2's trainer neither replays
    its data loader nor stores RNG state on resume, so the resumed run sees other batches (a
    property of detectron2's DefaultTrainer, not of the backbone). Runs where detectron2 is
    installed (not in CI)."""
    pytest.importorskip("detectron2", reason="detectron2 is not installed")
    train_net = os.path.join(ROOT, "tools", "train_net.py")
    out = tmp_path / "out"
    cmd = [sys.executable, train_net, "--config-file",
           os.path.join(ROOT, "configs", "demo", "d2_mask_rcnn_dinat_mini_demo.yaml"),
           "OUTPUT_DIR", str(out), "DATASETS.DINAT_DEMO.ROOT", str(tmp_path / "data"), *D2_OPTS]
    p = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    try:
        while time.time() < deadline and p.poll() is None and not (out / "last_checkpoint").exists():
            time.sleep(0.05)
        assert p.poll() is None, "the run ended before it could be killed"
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (out / "model_final.pth").exists()
    last = (out / "last_checkpoint").read_text().strip()
    saved = torch.load(out / last, map_location="cpu", weights_only=False)
    assert 0 < saved["iteration"] + 1 < D2_MAX_ITER

    r = subprocess.run(cmd[:2] + ["--resume"] + cmd[2:], env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert f"Starting training from iteration {saved['iteration'] + 1}" in log, log[-3000:]
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == D2_MAX_ITER - 1
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
