"""DinatConfig: transformers' defaults, the authors' variants and dilation presets, the dilation
rule, JSON round trips, the field table, from_variant, and a ConfigError naming the field, the
value and the fix for every invalid value.

Expected values are written out from the sources (the documented defaults of transformers'
DinatConfig, the authors' classification model definitions and their detection / segmentation /
Mask2Former configs), not computed by the code under test.
"""
import inspect
import json
import pickle

import pytest

from dinat_backbone import ConfigError, DinatConfig, derive_dilations, dilation_preset
from dinat_backbone.config import FIELDS

# transformers.DinatConfig() defaults, as documented by transformers.
SEED_DEFAULTS = dict(
    patch_size=4, num_channels=3, embed_dim=64, depths=[3, 4, 6, 5], num_heads=[2, 4, 8, 16],
    kernel_size=7, dilations=[[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1]],
    mlp_ratio=3.0, qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    drop_path_rate=0.1, hidden_act="gelu", initializer_range=0.02, layer_norm_eps=1e-5,
    layer_scale_init_value=0.0,
)

D224_18 = [1, 2] * 9
# The authors' variants (their classification model definitions).
VARIANTS = {
    "mini": dict(embed_dim=64, depths=[3, 4, 6, 5], num_heads=[2, 4, 8, 16], mlp_ratio=3.0,
                 layer_scale_init_value=0.0, kernel_size=7),
    "tiny": dict(embed_dim=64, depths=[3, 4, 18, 5], num_heads=[2, 4, 8, 16], mlp_ratio=3.0,
                 layer_scale_init_value=0.0, kernel_size=7),
    "small": dict(embed_dim=96, depths=[3, 4, 18, 5], num_heads=[3, 6, 12, 24], mlp_ratio=2.0,
                  layer_scale_init_value=0.0, kernel_size=7),
    "base": dict(embed_dim=128, depths=[3, 4, 18, 5], num_heads=[4, 8, 16, 32], mlp_ratio=2.0,
                 layer_scale_init_value=1e-5, kernel_size=7),
    "large": dict(embed_dim=192, depths=[3, 4, 18, 5], num_heads=[6, 12, 24, 48], mlp_ratio=2.0,
                  layer_scale_init_value=0.0, kernel_size=7),
    "large_k11": dict(embed_dim=192, depths=[3, 4, 18, 5], num_heads=[6, 12, 24, 48],
                      mlp_ratio=2.0, layer_scale_init_value=0.0, kernel_size=11),
}


def test_defaults_equal_the_seed():
    cfg = DinatConfig()
    for name, want in SEED_DEFAULTS.items():
        got = getattr(cfg, name)
        assert (list(got) if isinstance(got, tuple) else got) == want, name
    assert cfg.out_features == ["stage1", "stage2", "stage3", "stage4"]
    assert cfg.out_indices == [1, 2, 3, 4]
    assert cfg.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert cfg.hidden_size == 512 and cfg.num_layers == 4


def test_seed_parameters_all_accepted_by_name():
    cfg = DinatConfig(**{k: (v if not isinstance(v, list) else list(v))
                         for k, v in SEED_DEFAULTS.items()})
    assert cfg == DinatConfig()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants(name):
    cfg = DinatConfig.from_variant(name)
    for field, want in VARIANTS[name].items():
        assert getattr(cfg, field) == want, (name, field)
    depths = VARIANTS[name]["depths"]
    # Every released classification model uses the 224 pattern (also large_k11 at 384).
    assert cfg.dilations[0] == [1, 8, 1] and cfg.dilations[1] == [1, 4, 1, 4]
    assert cfg.dilations[2] == ([1, 2, 1, 2, 1, 2] if depths[2] == 6 else D224_18)
    assert cfg.dilations[3] == [1] * 5


def test_variant_overrides_and_unknown_variant():
    cfg = DinatConfig.from_variant("tiny", dilations="coco", drop_path_rate=0.3,
                                   out_features=["stage2", "stage4"])
    assert cfg.dilations[0] == [1, 28, 1] and cfg.drop_path_rate == 0.3
    assert cfg.out_indices == [2, 4]
    with pytest.raises(ValueError, match="unknown DiNAT variant 'huge'.*mini"):
        DinatConfig.from_variant("huge")


# Authors' per-layer dilations for depth-18 models (their detection / segmentation / Mask2Former
# configs), and the mini (depth-6 stage 3) forms.
PRESETS_18 = {
    "coco": [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7] * 3, [1, 3, 1, 3, 1]],
    "ade20k512": [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4] * 3, [1, 2, 1, 2, 1]],
    "ade20k640": [[1, 20, 1], [1, 5, 1, 10], [1, 2, 1, 3, 1, 4, 1, 5] * 2 + [1, 5],
                  [1, 2, 1, 2, 1]],
    "mask2former": [[1, 14, 1], [1, 4, 1, 7], [1, 2, 1, 3] * 4 + [1, 3], [1] * 5],
    "imagenet224": [[1, 8, 1], [1, 4, 1, 4], D224_18, [1] * 5],
    "imagenet384": [[1, 13, 1], [1, 6, 1, 6], [1, 3] * 9, [1] * 5],
}
PRESETS_MINI = {
    "coco": [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]],
    "ade20k512": [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]],
    "imagenet224": SEED_DEFAULTS["dilations"],
}


@pytest.mark.parametrize("name", list(PRESETS_18))
def test_presets_fitted_to_depth_18(name):
    assert dilation_preset(name, (3, 4, 18, 5)) == PRESETS_18[name]
    cfg = DinatConfig.from_variant("small", dilations=name)
    assert cfg.dilations == PRESETS_18[name]


@pytest.mark.parametrize("name", list(PRESETS_MINI))
def test_presets_for_mini(name):
    assert dilation_preset(name) == PRESETS_MINI[name]
    assert DinatConfig(dilations=name).dilations == PRESETS_MINI[name]


def test_preset_aliases_and_errors():
    assert dilation_preset("224") == dilation_preset("imagenet224")
    assert dilation_preset("384") == dilation_preset("imagenet384")
    with pytest.raises(ValueError, match="unknown preset 'cityscapes'"):
        dilation_preset("cityscapes")
    with pytest.raises(ValueError, match="4 stages, depths has 3"):
        dilation_preset("coco", (2, 2, 2))


def test_derive_dilations_reproduces_224_and_384():
    assert derive_dilations(224) == SEED_DEFAULTS["dilations"]
    assert derive_dilations(224, (3, 4, 18, 5)) == PRESETS_18["imagenet224"]
    assert derive_dilations(384, (3, 4, 18, 5)) == PRESETS_18["imagenet384"]
    # The rule by hand: stage sides 512/4=128, 64, 32, 16 -> floor(side / 7) = 18, 9, 4, 2.
    assert derive_dilations(512) == [[1, 18, 1], [1, 9, 1, 9], [1, 4, 1, 4, 1, 4],
                                     [1, 2, 1, 2, 1]]
    # Non-square: the shorter side decides; kernel 11 at 384: 96 // 11 = 8, 48 // 11 = 4, ...
    assert derive_dilations((384, 640)) == derive_dilations(384)
    assert derive_dilations(384, (3, 4, 18, 5), kernel_size=11)[:2] == [[1, 8, 1], [1, 4, 1, 4]]
    # Tiny inputs never go below dilation 1.
    assert derive_dilations(32) == [[1, 1, 1], [1] * 4, [1] * 6, [1] * 5]
    with pytest.raises(ValueError, match="resolution must be positive"):
        derive_dilations(0)


def test_json_round_trip(tmp_path):
    cfg = DinatConfig.from_variant("base", dilations="ade20k512", out_features=["stem", "stage3"],
                                   num_labels=7, frozen_stages=2, problem_type="regression",
                                   attention_backend="gather")
    text = cfg.to_json_string()
    back = DinatConfig.from_dict(json.loads(text))
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()
    for f in ("embed_dim", "depths", "num_heads", "dilations", "layer_scale_init_value",
              "out_features", "out_indices", "frozen_stages", "problem_type",
              "attention_backend", "num_labels"):
        assert getattr(back, f) == getattr(cfg, f), f
    assert back.id2label == {i: f"LABEL_{i}" for i in range(7)}   # int keys again
    cfg.save_pretrained(tmp_path)
    assert DinatConfig.from_json_file(tmp_path / "config.json") == cfg


def test_transformers_style_dict_loads():
    # What transformers writes for a Dinat config.json (keys this project does not use kept).
    d = dict(SEED_DEFAULTS, model_type="dinat", architectures=["DinatForImageClassification"],
             id2label={"0": "cat", "1": "dog"}, label2id={"cat": 0, "dog": 1},
             path_norm=True, transformers_version="4.53.3", return_dict=True)
    cfg = DinatConfig.from_dict(d)
    assert cfg.num_labels == 2 and cfg.id2label == {0: "cat", 1: "dog"}
    assert cfg.to_dict()["architectures"] == ["DinatForImageClassification"]


def test_copy_with_overrides():
    cfg = DinatConfig()
    c2 = cfg.copy(out_features=["stage4"], num_labels=3)
    assert c2.out_features == ["stage4"] and c2.out_indices == [4] and c2.num_labels == 3
    assert cfg.out_features == ["stage1", "stage2", "stage3", "stage4"]   # original untouched


# Every field with a bad value -> ValueError whose message names the field.
INVALID = [
    ("patch_size", dict(patch_size=2)),
    ("patch_size", dict(patch_size=16)),
    ("num_channels", dict(num_channels=0)),
    ("num_channels", dict(num_channels=2.5)),
    ("embed_dim", dict(embed_dim=63)),
    ("embed_dim", dict(embed_dim=-64)),
    ("depths", dict(depths=[3, 0, 6, 5])),
    ("depths", dict(depths="3465")),
    ("depths", dict(depths=[])),
    ("num_heads", dict(num_heads=[2, 4, 8])),
    ("num_heads", dict(num_heads=[3, 4, 8, 16])),          # 64 channels, 3 heads
    ("num_heads", dict(num_heads=[2, 4, 0, 16])),
    ("kernel_size", dict(kernel_size=6)),
    ("kernel_size", dict(kernel_size=1)),
    ("kernel_size", dict(kernel_size=7.0)),
    ("dilations", dict(dilations=[[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2]])),
    ("dilations", dict(dilations=[[1, 8], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1] * 5])),
    ("dilations", dict(dilations=[[1, 0, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1] * 5])),
    ("dilations", dict(dilations="not-a-preset")),
    ("mlp_ratio", dict(mlp_ratio=0)),
    ("mlp_ratio", dict(mlp_ratio="3")),
    ("qkv_bias", dict(qkv_bias="yes")),
    ("hidden_dropout_prob", dict(hidden_dropout_prob=-0.1)),
    ("hidden_dropout_prob", dict(hidden_dropout_prob=1.0)),
    ("attention_probs_dropout_prob", dict(attention_probs_dropout_prob=-1e-3)),
    ("drop_path_rate", dict(drop_path_rate=-0.1)),
    ("drop_path_rate", dict(drop_path_rate=1.5)),
    ("hidden_act", dict(hidden_act="swishy")),
    ("initializer_range", dict(initializer_range=-0.02)),
    ("layer_norm_eps", dict(layer_norm_eps=0.0)),
    ("layer_scale_init_value", dict(layer_scale_init_value=-1e-5)),
    ("out_features", dict(out_features=["stage5"])),
    ("out_features", dict(out_features="stage1")),
    ("out_indices", dict(out_indices=[1, 7])),
    ("out_indices", dict(out_indices=[3, 1])),
    ("num_labels", dict(num_labels=-1)),
    ("id2label", dict(num_labels=3, id2label={0: "a", 1: "b"})),   # message names num_labels=3
    ("problem_type", dict(problem_type="ranking")),
    ("frozen_stages", dict(frozen_stages=5)),
    ("frozen_stages", dict(frozen_stages=-2)),
    ("attention_backend", dict(attention_backend="cuda")),
    ("gradient_checkpointing", dict(gradient_checkpointing="yes")),
    ("output_hidden_states", dict(output_hidden_states=1)),
    ("output_attentions", dict(output_attentions="no")),
]


@pytest.mark.parametrize("field,kwargs", INVALID,
                         ids=[f"{f}-{i}" for i, (f, _) in enumerate(INVALID)])
def test_invalid_field_raises_naming_it(field, kwargs):
    with pytest.raises(ConfigError) as e:
        DinatConfig(**kwargs)
    err = e.value
    assert isinstance(err, ValueError)
    assert err.field == field, str(err)
    # "<field>=<value!r>: <problem>. Fix: <fix>"
    assert str(err) == f"{field}={err.value!r}: {err.problem}. Fix: {err.fix}"
    assert err.problem and err.fix
    if field in kwargs:
        assert err.value == kwargs[field], (err.value, kwargs[field])


def test_config_error_message_rename_and_pickle():
    err = ConfigError("depths", [3, 0], "must be positive", "e.g. [3, 4, 6, 5]")
    assert str(err) == "depths=[3, 0]: must be positive. Fix: e.g. [3, 4, 6, 5]"
    ren = err.renamed({"depths": "MODEL.DINAT.DEPTHS", "kernel_size": "MODEL.DINAT.KERNEL_SIZE"})
    assert str(ren) == "MODEL.DINAT.DEPTHS=[3, 0]: must be positive. Fix: e.g. [3, 4, 6, 5]"
    assert (ren.field, ren.value, ren.problem, ren.fix) == ("depths", [3, 0], "must be positive",
                                                           "e.g. [3, 4, 6, 5]")
    assert str(err).startswith("depths=")                       # the original is untouched
    assert str(err.renamed({"embed_dim": "EMBED_DIM"})) == str(err)   # not in the map: kept
    back = pickle.loads(pickle.dumps(ren))                       # crosses process boundaries
    assert type(back) is ConfigError and str(back) == str(ren) and back.field == "depths"


def test_a_real_error_renamed_for_an_adapter():
    with pytest.raises(ConfigError) as e:
        DinatConfig(kernel_size=4)
    msg = str(e.value.renamed({"kernel_size": "MODEL.DINAT.KERNEL_SIZE"}))
    assert msg.startswith("MODEL.DINAT.KERNEL_SIZE=4: must be an odd integer >= 3. Fix: ")


def test_preset_and_resolution_errors_are_config_errors():
    with pytest.raises(ConfigError) as e:
        dilation_preset("cityscapes")
    assert e.value.field == "dilations" and "coco" in e.value.fix
    with pytest.raises(ConfigError) as e:
        derive_dilations(0)
    assert e.value.field == "image_size"


# ----------------------------------------------------------------------- the field table
TRANSFORMERS_FIELDS = list(SEED_DEFAULTS)
BACKBONE_FIELDS = ["out_features", "out_indices", "num_labels", "id2label", "label2id",
                   "problem_type", "frozen_stages", "attention_backend", "gradient_checkpointing",
                   "output_hidden_states", "output_attentions", "use_return_dict"]


def test_the_field_table_drives_the_signature():
    params = inspect.signature(DinatConfig).parameters
    assert list(params) == list(FIELDS) + ["kwargs"]
    assert set(FIELDS) == set(TRANSFORMERS_FIELDS) | set(BACKBONE_FIELDS)
    for name, f in FIELDS.items():
        assert params[name].default == f.default, name
        assert f.doc, name
    # one default per field, equal to transformers' (dilations: a preset that resolves to it)
    for name, want in SEED_DEFAULTS.items():
        got = FIELDS[name].default
        if name == "dilations":
            assert dilation_preset(got) == want
        else:
            assert (list(got) if isinstance(got, tuple) else got) == want, name
    assert FIELDS["drop_path_rate"].default == 0.1
    assert DinatConfig.FIELDS is FIELDS


def test_positional_arguments_follow_the_table():
    cfg = DinatConfig(4, 1, 32)
    assert (cfg.patch_size, cfg.num_channels, cfg.embed_dim) == (4, 1, 32)
    with pytest.raises(TypeError):
        DinatConfig(*range(len(FIELDS) + 1))


def test_the_field_table_drives_to_dict():
    d = DinatConfig().to_dict()
    saved = [n for n, f in FIELDS.items() if f.saved]
    assert list(d) == ["model_type"] + saved
    assert "num_labels" not in d and len(d["id2label"]) == 1000       # saved as id2label
    assert all(isinstance(k, str) for k in d["id2label"])             # JSON keys
    json.dumps(d)                                                     # plain JSON types


def test_default_dilations_follow_the_depths():
    # None / the default: the ImageNet-224 pattern fitted to the depths (not mini's lists).
    cfg = DinatConfig(depths=[2, 2, 2, 2])
    assert cfg.dilations == [[1, 8], [1, 4], [1, 2], [1, 1]]
    assert DinatConfig(dilations=None) == DinatConfig()


def test_a_changed_field_is_checked_again():
    cfg = DinatConfig()
    cfg.dilations = "coco"
    cfg.validate()
    assert cfg.dilations == PRESETS_MINI["coco"]
    cfg.num_heads = [2, 4, 8]
    with pytest.raises(ConfigError, match=r"^num_heads=\[2, 4, 8\]: needs one entry per stage"):
        cfg.validate()


def test_backend_and_activation_names_have_one_source():
    from dinat_backbone import _constants, config, modeling, ops

    assert ops.BACKENDS is config.ATTENTION_BACKENDS is _constants.ATTENTION_BACKENDS
    assert config.ACTIVATIONS is _constants.ACTIVATIONS is modeling.ACTIVATIONS
    for name in config.ATTENTION_BACKENDS:
        DinatConfig(attention_backend=name)


# ----------------------------------------------------------------------- from_variant
DIL_512_DEPTH_18 = [[1, 18, 1], [1, 9, 1, 9], [1, 4] * 9, [1, 2, 1, 2, 1]]


def test_from_variant_image_size_derives_dilations():
    # By hand: 512 / 4 = 128, 64, 32, 16 per stage; // 7 = 18, 9, 4, 2.
    assert DinatConfig.from_variant("tiny", image_size=512).dilations == DIL_512_DEPTH_18
    assert DinatConfig.from_variant("tiny", image_size=(512, 1024)).dilations == DIL_512_DEPTH_18
    # kernel 11 at 384: 96 // 11 = 8, 48 // 11 = 4, 24 // 11 = 2, 12 // 11 = 1
    cfg = DinatConfig.from_variant("large_k11", image_size=384)
    assert cfg.dilations == [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5]
    # an override of depths / kernel_size is what the rule uses
    cfg = DinatConfig.from_variant("mini", image_size=256, depths=[1, 1, 2, 1], kernel_size=5)
    assert cfg.dilations == [[1], [1], [1, 3], [1]]      # 64//5, 32//5, 16//5 = 3, 8//5 = 1


@pytest.mark.parametrize("kw,field,phrase", [
    (dict(image_size=16), "image_size", "smaller than the stride of the last stage (32 pixels)"),
    (dict(image_size="512"), "image_size", "integer or (height, width)"),
    (dict(image_size=512, dilations="coco"), "image_size", "together with dilations"),
    (dict(out_indices=(0, 4)), "out_indices", "in 0..3"),
    (dict(out_indices=(2, 1)), "out_indices", "increasing and without repeats"),
    (dict(out_indices=()), "out_indices", "in 0..3"),
    (dict(out_indices=(0,), out_features=["stage1"]), "out_indices", "together with out_features"),
])
def test_from_variant_errors(kw, field, phrase):
    with pytest.raises(ConfigError) as e:
        DinatConfig.from_variant("mini", **kw)
    assert e.value.field == field and phrase in str(e.value), str(e.value)


def test_from_variant_out_indices_count_stages_from_zero():
    cfg = DinatConfig.from_variant("mini", out_indices=(0, 2))      # mmdet / mmseg / timm
    assert cfg.out_features == ["stage1", "stage3"] and cfg.out_indices == [1, 3]
    assert DinatConfig.from_variant("mini", out_indices=3).out_features == ["stage4"]
    cfg = DinatConfig.from_variant("mini", out_indices=(0, 1, 2), depths=[1, 1, 1],
                                   num_heads=[1, 2, 4], dilations=[[1], [1], [1]])
    assert cfg.out_features == ["stage1", "stage2", "stage3"]


def test_from_variant_none_overrides_and_no_variant():
    cfg = DinatConfig.from_variant("base", kernel_size=None, layer_scale_init_value=None)
    assert cfg.kernel_size == 7 and cfg.layer_scale_init_value == 1e-5 and cfg.variant == "base"
    cfg = DinatConfig.from_variant(None, embed_dim=32)
    assert cfg.embed_dim == 32 and cfg.depths == [3, 4, 6, 5] and cfg.variant is None
    with pytest.raises(ConfigError) as e:
        DinatConfig.from_variant(3)
    assert e.value.field == "variant" and "mini" in e.value.fix


def test_invalid_messages_say_the_fix():
    with pytest.raises(ValueError, match=r"odd integer >= 3"):
        DinatConfig(kernel_size=4)
    with pytest.raises(ValueError, match=r"stage 3 has depth 6 but 5 dilations"):
        DinatConfig(dilations=[[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1], [1] * 5])
    with pytest.raises(ValueError, match=r"stage 1 has 64 channels, which 3 heads do not divide"):
        DinatConfig(num_heads=[3, 4, 8, 16])
    with pytest.raises(ValueError, match=r"only patch size 4 is supported"):
        DinatConfig(patch_size=8)
    with pytest.raises(ValueError, match=r"probability in \[0, 1\)"):
        DinatConfig(drop_path_rate=-0.5)
