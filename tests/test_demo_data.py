"""The synthetic demo data: pycocotools reads it, masks agree with boxes and areas, labels follow
ADE20K's convention, and everything is deterministic by seed."""
import filecmp
import json
import os

import numpy as np
import pytest
from PIL import Image

from dinat_backbone import demo_data

pycocotools = pytest.importorskip("pycocotools",
                                  reason="pycocotools is a core dependency: pip install pycocotools")
from pycocotools import mask as mask_util  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402


@pytest.fixture(scope="module")
def coco_rle(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_rle")
    return demo_data.make_coco_instances(str(root), n_train=6, n_val=3, size=96, seed=3)


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade")
    return demo_data.make_ade_semantic(str(root), n_train=5, n_val=3, size=(80, 96), seed=1)


def test_coco_loads_and_masks_agree_with_boxes_and_areas(coco_rle):
    assert coco_rle["classes"] == demo_data.DEFAULT_CLASSES
    for split, n in (("train", 6), ("val", 3)):
        info = coco_rle[split]
        coco = COCO(info["ann_file"])
        assert len(coco.getImgIds()) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(demo_data.DEFAULT_CLASSES)
        assert len(coco.anns) == info["num_instances"] >= n  # at least one object per image
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(os.path.join(info["img_dir"], img["file_name"])) as im:
                assert im.size == (img["width"], img["height"]) == (96, 96)
                assert im.mode == "RGB"
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            masks = [coco.annToMask(a).astype(bool) for a in anns]
            for a, m in zip(anns, masks):
                assert a["iscrowd"] == 0 and 1 <= a["category_id"] <= 3
                assert a["area"] == m.sum() > 0
                ys, xs = np.nonzero(m)
                x0, y0 = xs.min(), ys.min()
                assert a["bbox"] == [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0]
                # pycocotools' own box of the RLE agrees with ours
                np.testing.assert_allclose(mask_util.toBbox(a["segmentation"]), a["bbox"])
            # the masks describe visible parts: no pixel belongs to two instances
            if masks:
                assert (np.sum(masks, axis=0) <= 1).all()


def test_instance_scene_occlusion_keeps_half_visible():
    rng = np.random.default_rng(0)
    n_overlapping = 0
    for _ in range(30):
        img, inst = demo_data.render_instance_scene(rng, 128, max_objects=6)
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        for obj in inst:
            full = np.asarray(_poly(obj["polygon"], 128, 128))
            vis = obj["mask"]
            assert not (vis & ~full).any()  # visible part lies inside the drawn shape
            assert vis.sum() >= 0.5 * full.sum()
            n_overlapping += int(vis.sum() < full.sum())
    assert n_overlapping > 0  # occlusion does happen


def _poly(pts, h, w):
    from PIL import ImageDraw

    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon(pts, fill=1)
    return np.asarray(im, dtype=bool)


def test_polygon_format_rasterises_like_the_image(tmp_path):
    info = demo_data.make_coco_instances(str(tmp_path), n_train=4, n_val=0, size=96, seed=5,
                                         classes=["star", "hexagon"], mask_format="polygon")
    coco = COCO(info["train"]["ann_file"])
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["star", "hexagon"]
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        assert (np.sum(masks, axis=0) <= 1).all()  # polygon mode: shapes do not overlap
        for a, m in zip(anns, masks):
            assert isinstance(a["segmentation"], list) and len(a["segmentation"][0]) >= 6
            assert a["area"] == m.sum() > 0
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    # the polygons outline what the image shows: the image differs inside and just outside a shape
    img = np.asarray(Image.open(os.path.join(info["train"]["img_dir"], "000000.jpg")), dtype=np.float32)
    m = coco.annToMask(coco.loadAnns(coco.getAnnIds(imgIds=1))[0]).astype(bool)
    ring = _grow(m, 4) & ~_grow(m, 2)
    assert np.abs(img[m].mean(0) - img[ring].mean(0)).max() > 20


def _grow(m, r):
    return demo_data._grow(m, r)


def test_determinism_by_seed(tmp_path):
    a = demo_data.make_coco_instances(str(tmp_path / "a"), n_train=3, n_val=2, size=64, seed=7)
    b = demo_data.make_coco_instances(str(tmp_path / "b"), n_train=5, n_val=2, size=64, seed=7)
    c = demo_data.make_coco_instances(str(tmp_path / "c"), n_train=3, n_val=2, size=64, seed=8)
    for name in ("000000.jpg", "000001.jpg"):
        for split in ("val", "train"):
            assert filecmp.cmp(os.path.join(a[split]["img_dir"], name),
                               os.path.join(b[split]["img_dir"], name), shallow=False)
    with open(a["val"]["ann_file"]) as fa, open(b["val"]["ann_file"]) as fb, open(c["val"]["ann_file"]) as fc:
        ja, jb, jc = json.load(fa), json.load(fb), json.load(fc)
    assert ja["annotations"] == jb["annotations"]  # val does not depend on n_train
    assert ja["annotations"] != jc["annotations"]  # another seed, other scenes
    img_a = np.asarray(Image.open(os.path.join(a["train"]["img_dir"], "000000.jpg")))
    img_c = np.asarray(Image.open(os.path.join(c["train"]["img_dir"], "000000.jpg")))
    assert np.abs(img_a.astype(int) - img_c).mean() > 5

    s1, l1 = demo_data.render_semantic_scene(np.random.default_rng(4), 64)
    s2, l2 = demo_data.render_semantic_scene(np.random.default_rng(4), 64)
    assert np.array_equal(s1, s2) and np.array_equal(l1, l2)


def test_reuse_and_regenerate(tmp_path):
    info = demo_data.make_ade_semantic(str(tmp_path), n_train=2, n_val=1, size=64, seed=0)
    png = os.path.join(info["training"]["ann_dir"], "ADE_train_00000000.png")
    before = os.stat(png).st_mtime_ns
    os.utime(png, ns=(before - 10**9, before - 10**9))
    demo_data.make_ade_semantic(str(tmp_path), n_train=2, n_val=1, size=64, seed=0)
    assert os.stat(png).st_mtime_ns == before - 10**9  # same arguments: files reused
    demo_data.make_ade_semantic(str(tmp_path), n_train=2, n_val=1, size=64, seed=1)
    assert os.stat(png).st_mtime_ns != before - 10**9  # other arguments: regenerated


def test_ade_layout_and_labels(ade):
    assert ade["classes"] == demo_data.SEMANTIC_CLASSES == ("sky", "ground", "circle", "square", "triangle")
    seen = np.zeros(256, dtype=np.int64)
    for split, stem, n in (("training", "ADE_train", 5), ("validation", "ADE_val", 3)):
        imgs = sorted(os.listdir(ade[split]["img_dir"]))
        anns = sorted(os.listdir(ade[split]["ann_dir"]))
        assert imgs == [f"{stem}_{i:08d}.jpg" for i in range(n)]
        assert anns == [f"{stem}_{i:08d}.png" for i in range(n)]
        for a in anns:
            with Image.open(os.path.join(ade[split]["ann_dir"], a)) as im:
                assert im.mode == "L" and im.size == (96, 80)
                lab = np.asarray(im)
            seen += np.bincount(lab.ravel(), minlength=256)
            # sky is above ground in every column where both appear
            sky_rows = np.where(lab == 1, np.arange(80)[:, None], -1).max(0)
            ground_rows = np.where(lab == 2, np.arange(80)[:, None], 10**6).min(0)
            both = (sky_rows >= 0) & (ground_rows < 10**6)
            assert (sky_rows[both] < ground_rows[both]).all()
    # label values: 0 (ignore, clutter) and 1..5, nothing else; sky and ground always present
    assert seen[6:].sum() == 0
    assert seen[1] > 0 and seen[2] > 0 and seen[3:6].sum() > 0 and seen[0] > 0


def test_majority_baseline_matches_hand_count(tmp_path):
    d = tmp_path / "ann"
    d.mkdir()
    a = np.array([[0, 1, 1], [2, 2, 2]], np.uint8)  # after reduce_zero_label: ign, 0, 0 / 1, 1, 1
    b = np.array([[2, 2, 3], [0, 0, 2]], np.uint8)  # ign ign / 1 1 2 1
    Image.fromarray(a, mode="L").save(d / "a.png")
    Image.fromarray(b, mode="L").save(d / "b.png")
    r = demo_data.semantic_majority_baseline(str(d), num_classes=5)
    # counts per train id: 0 -> 2, 1 -> 6, 2 -> 1; 9 labelled pixels; majority = 1
    assert r["class"] == 1 and r["pixels_per_class"] == [2, 6, 1, 0, 0]
    assert r["aAcc"] == pytest.approx(6 / 9)
    assert r["mIoU"] == pytest.approx((0 + 6 / 9 + 0) / 3)  # absent classes 3, 4 left out


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="classes"):
        demo_data.make_coco_instances(str(tmp_path), 1, 1, classes=["circle", "blob"])
    with pytest.raises(TypeError, match="classes"):
        demo_data.make_coco_instances(str(tmp_path), 1, 1, classes="circle")
    with pytest.raises(ValueError, match="size"):
        demo_data.make_ade_semantic(str(tmp_path), 1, 1, size=8)
    with pytest.raises(TypeError, match="size"):
        demo_data.make_ade_semantic(str(tmp_path), 1, 1, size="big")
    with pytest.raises(ValueError, match="n_train"):
        demo_data.make_coco_instances(str(tmp_path), -1, 1)
    with pytest.raises(ValueError, match="mask_format"):
        demo_data.make_coco_instances(str(tmp_path), 1, 1, mask_format="bitmap")
    with pytest.raises(ValueError, match="make_ade_semantic"):
        demo_data.semantic_majority_baseline(str(tmp_path / "missing"))


def _edge_angles_deg(polygon):
    """Each edge's direction modulo 180 degrees, from the drawn outline's vertices."""
    pts = np.asarray(polygon, dtype=float)
    d = np.roll(pts, -1, axis=0) - pts
    return np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 180.0


@pytest.mark.parametrize("max_rotation", [0, 10, 25])  # < 30: the level side stays the one
def test_max_rotation_keeps_shapes_near_upright(max_rotation):
    """Squares' sides stay within max_rotation of level / plumb, triangles keep one side within it
    of level with the opposite vertex above it (image y points down); any angle by default."""
    seen = {"square": 0, "triangle": 0}
    for i in range(30):
        _, inst = demo_data.render_instance_scene(np.random.default_rng(i), 128,
                                                  max_rotation=max_rotation)
        for obj in inst:
            name = demo_data.DEFAULT_CLASSES[obj["category"]]
            if name == "circle":
                continue
            seen[name] += 1
            ang = _edge_angles_deg(obj["polygon"])
            off = np.minimum(ang % 90.0, 90.0 - ang % 90.0) if name == "square" else \
                np.minimum(ang, 180.0 - ang)
            if name == "square":
                assert off.max() <= max_rotation + 1e-6, (i, ang)
            else:  # the most level side, and the vertex not on it is above it
                k = int(off.argmin())
                assert off[k] <= max_rotation + 1e-6, (i, ang)
                pts = np.asarray(obj["polygon"])
                apex = pts[(k + 2) % 3]
                assert apex[1] < (pts[k][1] + pts[(k + 1) % 3][1]) / 2, (i, pts)
    assert min(seen.values()) >= 5, seen
    # the default draws any angle: some square side is far from level / plumb
    far = []
    for i in range(30):
        _, inst = demo_data.render_instance_scene(np.random.default_rng(i), 128)
        for obj in inst:
            if demo_data.DEFAULT_CLASSES[obj["category"]] == "square":
                ang = _edge_angles_deg(obj["polygon"])
                far.append(np.minimum(ang % 90.0, 90.0 - ang % 90.0).max())
    assert max(far) > 30


def test_max_rotation_in_the_manifest_and_checked(tmp_path):
    a = demo_data.make_ade_semantic(str(tmp_path / "a"), n_train=2, n_val=1, size=64, seed=0)
    b = demo_data.make_ade_semantic(str(tmp_path / "b"), n_train=2, n_val=1, size=64, seed=0,
                                    max_rotation=0)
    img = lambda info: np.asarray(Image.open(os.path.join(info["training"]["img_dir"],  # noqa: E731
                                                          "ADE_train_00000000.jpg")))
    assert not np.array_equal(img(a), img(b))
    with open(os.path.join(b["root"], "demo_data.json")) as f:
        assert json.load(f)["max_rotation"] == 0
    with open(os.path.join(a["root"], "demo_data.json")) as f:
        assert "max_rotation" not in json.load(f)
    c = demo_data.make_coco_instances(str(tmp_path / "c"), n_train=2, n_val=1, size=64, seed=0,
                                      max_rotation=5)
    stamp = os.path.getmtime(c["train"]["ann_file"])
    demo_data.make_coco_instances(str(tmp_path / "c"), n_train=2, n_val=1, size=64, seed=0,
                                  max_rotation=5)
    assert os.path.getmtime(c["train"]["ann_file"]) == stamp  # same arguments: reused
    for bad in (-1, 181, "15", True):
        with pytest.raises(ValueError, match="max_rotation"):
            demo_data.make_coco_instances(str(tmp_path / "d"), 1, 1, max_rotation=bad)


def _dominant_ok(mean_rgb, shape):
    """The shape's family channels are all brighter than every other channel."""
    fam = list(demo_data.CLASS_COLOUR_CHANNELS[shape])
    rest = [c for c in range(3) if c not in fam]
    return min(mean_rgb[fam]) > max(mean_rgb[rest])


@pytest.mark.parametrize("classes", [demo_data.DEFAULT_CLASSES, ("star", "hexagon", "square")])
def test_class_colours_paint_each_shape_in_its_family(classes):
    """colours='class': the mean colour of every visible shape, read from the rendered pixels, has
    its class's family channels on top; with the default 'random' colours the dominant channel of a
    class varies (the option, not the shapes, makes the families)."""
    dominant = {c: set() for c in classes}
    n = 0
    for i in range(40):
        img, inst = demo_data.render_instance_scene(np.random.default_rng(i), 96, classes,
                                                    colours="class")
        img = img.astype(np.float64)
        for obj in inst:
            if obj["mask"].sum() < 30:
                continue
            mean = img[obj["mask"]].mean(0)
            assert _dominant_ok(mean, classes[obj["category"]]), (i, classes[obj["category"]], mean)
            n += 1
        img_r, inst_r = demo_data.render_instance_scene(np.random.default_rng(i), 96, classes)
        for obj in inst_r:
            if obj["mask"].sum() >= 30:
                dominant[classes[obj["category"]]].add(int(img_r[obj["mask"]].mean(0).argmax()))
    assert n > 60
    assert all(len(d) >= 2 for d in dominant.values()), dominant


def test_class_colours_in_semantic_scenes():
    """Each shape class's labelled pixels in a semantic scene carry its family's colour."""
    for i in range(30):
        img, label = demo_data.render_semantic_scene(np.random.default_rng(i), 96, colours="class")
        img = img.astype(np.float64)
        for k, shape in enumerate(demo_data.DEFAULT_CLASSES):
            m = label == 3 + k
            if m.sum() >= 30:
                assert _dominant_ok(img[m].mean(0), shape), (i, shape, img[m].mean(0))


def test_colours_in_the_manifest_and_checked(tmp_path):
    a = demo_data.make_coco_instances(str(tmp_path / "a"), n_train=2, n_val=1, size=64, seed=0)
    b = demo_data.make_coco_instances(str(tmp_path / "b"), n_train=2, n_val=1, size=64, seed=0,
                                      colours="class")
    with open(os.path.join(a["root"], "demo_data.json")) as f:
        assert "colours" not in json.load(f)  # random: manifests as before the option existed
    with open(os.path.join(b["root"], "demo_data.json")) as f:
        assert json.load(f)["colours"] == "class"
    # the same annotations (colour draws come after the geometry of a scene), other pixels
    with open(a["train"]["ann_file"]) as f, open(b["train"]["ann_file"]) as g:
        ann_a, ann_b = json.load(f)["annotations"], json.load(g)["annotations"]
    assert [x["bbox"] for x in ann_a] == [x["bbox"] for x in ann_b]
    img = lambda info: np.asarray(Image.open(os.path.join(info["train"]["img_dir"], "000000.jpg")))  # noqa: E731
    assert not np.array_equal(img(a), img(b))
    # asking for the other mode regenerates in place
    demo_data.make_coco_instances(str(tmp_path / "a"), n_train=2, n_val=1, size=64, seed=0,
                                  colours="class")
    assert np.array_equal(img(a), img(b))
    s = demo_data.make_ade_semantic(str(tmp_path / "s"), n_train=2, n_val=1, size=64, colours="class")
    with open(os.path.join(s["root"], "demo_data.json")) as f:
        assert json.load(f)["colours"] == "class"
    for bad in ("Class", "per-class", None):
        with pytest.raises(ValueError, match="colours must be one of"):
            demo_data.make_coco_instances(str(tmp_path / "d"), 1, 1, colours=bad)
        with pytest.raises(ValueError, match="colours must be one of"):
            demo_data.make_ade_semantic(str(tmp_path / "e"), 1, 1, colours=bad)
