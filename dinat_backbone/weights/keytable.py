"""Two-way key tables: one table per naming, read in both directions.

A :class:`Rule` pairs templates of this project's names (``ours``) with templates of another
naming (``theirs``). ``{i}`` / ``{j}`` stand for integers (``{i+1}`` for the integer plus one,
e.g. transformers counts stages from 1), ``{rest}`` for the remainder of a key. A rule with
several templates on one side fuses tensors: ``join="cat"`` concatenates them along dim 0
(transformers' separate query / key / value = the fused ``qkv``), ``join="stack"`` stacks them
(``gamma1`` / ``gamma2`` = transformers' ``layer_scale_parameters`` rows). Reading a rule one
way or the other is the same code, so the two directions cannot drift apart.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Mapping, Optional, Pattern, Sequence, Tuple

import torch

__all__ = ["Rule", "KeyTable", "TRANSFORMERS", "TRANSFORMERS_KINDS"]

_FIELD = re.compile(r"\{(i|j|rest)(\+1)?\}")


@functools.lru_cache(maxsize=None)
def _compile(template: str) -> Pattern:
    out, pos = [], 0
    for m in _FIELD.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        name = m.group(1)
        out.append(f"(?P<{name}>.+)" if name == "rest" else f"(?P<{name}>\\d+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$")


@functools.lru_cache(maxsize=None)
def _offsets(template: str) -> Dict[str, int]:
    return {m.group(1): 1 if m.group(2) else 0 for m in _FIELD.finditer(template)}


def _parse(template: str, key: str) -> Optional[Dict[str, object]]:
    m = _compile(template).match(key)
    if m is None:
        return None
    off = _offsets(template)
    return {k: (v if k == "rest" else int(v) - off[k]) for k, v in m.groupdict().items()}


def _format(template: str, fields: Mapping[str, object]) -> str:
    def sub(m):
        v = fields[m.group(1)]
        return str(v + 1) if m.group(2) else str(v)
    return _FIELD.sub(sub, template)


@dataclass(frozen=True)
class Rule:
    ours: Tuple[str, ...]
    theirs: Tuple[str, ...]
    join: Optional[str] = None           # "cat" or "stack" when one side has several keys
    kinds: Optional[FrozenSet[str]] = None  # the models of the other naming that have it
    outer: bool = False                  # sits outside the model's prefix (a head)

    def side(self, to_theirs: bool) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        return (self.ours, self.theirs) if to_theirs else (self.theirs, self.ours)


def _split(t: torch.Tensor, n: int, join: str) -> List[torch.Tensor]:
    parts = t.chunk(n, 0) if join == "cat" else t.unbind(0)
    return [p.clone() for p in parts]


def _fuse(parts: Sequence[torch.Tensor], join: str) -> torch.Tensor:
    return torch.cat(list(parts), 0) if join == "cat" else torch.stack(list(parts), 0)


class KeyTable:
    """Renames a state dict from one naming to the other with one list of :class:`Rule`."""

    def __init__(self, name: str, rules: Sequence[Rule]):
        self.name = name
        self.rules = tuple(rules)

    def match(self, key: str, to_theirs: bool):
        """(rule, index of the template on the source side, fields) or None."""
        for rule in self.rules:
            for idx, template in enumerate(rule.side(to_theirs)[0]):
                fields = _parse(template, key)
                if fields is not None:
                    return rule, idx, fields
        return None

    def _fused(self, rule: Rule, fields: Mapping[str, object], parts: Mapping[int, torch.Tensor],
               to_theirs: bool) -> torch.Tensor:
        names = [_format(t, fields) for t in rule.side(to_theirs)[0]]
        if len(parts) != len(names):
            raise ValueError(
                f"{self.name} checkpoint: {' + '.join(names)} belong together, but only "
                f"{[names[i] for i in sorted(parts)]} are present; the file is incomplete")
        return _fuse([parts[i] for i in range(len(names))], rule.join)

    def convert(self, sd: Mapping[str, torch.Tensor], to_theirs: bool, kind: Optional[str] = None,
                prefix: str = "") -> Tuple[Dict[str, torch.Tensor], List[str]]:
        """(renamed dict, keys no rule knows). Keys of rules that ``kind`` lacks are dropped;
        ``prefix`` goes before every target key of a rule that is not ``outer``."""
        out: Dict[str, torch.Tensor] = {}
        groups: Dict[Tuple[Rule, str], Tuple[dict, Dict[int, torch.Tensor]]] = {}
        unknown: List[str] = []
        for key, v in sd.items():
            hit = self.match(key, to_theirs)
            if hit is None:
                unknown.append(key)
                continue
            rule, idx, fields = hit
            if kind is not None and rule.kinds is not None and kind not in rule.kinds:
                continue
            src, dst = rule.side(to_theirs)
            pre = "" if rule.outer else prefix
            if len(src) == 1:
                names = [pre + _format(t, fields) for t in dst]
                values = [v] if len(dst) == 1 else _split(v, len(dst), rule.join)
                out.update(zip(names, values))
            else:
                groups.setdefault((rule, pre + _format(dst[0], fields)), (fields, {}))[1][idx] = v
        for (rule, name), (fields, parts) in groups.items():
            out[name] = self._fused(rule, fields, parts, to_theirs)
        return out, unknown


def _layer(ours: str, theirs: str) -> Rule:
    return Rule((f"levels.{{i}}.blocks.{{j}}.{ours}",),
                (f"encoder.levels.{{i}}.layers.{{j}}.{theirs}",))


TRANSFORMERS_KINDS = ("classification", "model", "backbone")

#: This project's names <-> transformers' DinatModel / DinatForImageClassification /
#: DinatBackbone (modeling_dinat.py). ``kinds`` lists the transformers classes that hold a key.
TRANSFORMERS = KeyTable("transformers", [
    Rule(("patch_embed.proj.{rest}",), ("embeddings.patch_embeddings.projection.{rest}",)),
    Rule(("patch_embed.norm.{rest}",), ("embeddings.norm.{rest}",)),
    Rule(("levels.{i}.blocks.{j}.attn.qkv.{rest}",),
         tuple(f"encoder.levels.{{i}}.layers.{{j}}.attention.self.{p}.{{rest}}"
               for p in ("query", "key", "value")), join="cat"),
    Rule(("levels.{i}.blocks.{j}.gamma1", "levels.{i}.blocks.{j}.gamma2"),
         ("encoder.levels.{i}.layers.{j}.layer_scale_parameters",), join="stack"),
    _layer("norm1.{rest}", "layernorm_before.{rest}"),
    _layer("attn.rpb", "attention.self.rpb"),
    _layer("attn.proj.{rest}", "attention.output.dense.{rest}"),
    _layer("norm2.{rest}", "layernorm_after.{rest}"),
    _layer("mlp.fc1.{rest}", "intermediate.dense.{rest}"),
    _layer("mlp.fc2.{rest}", "output.dense.{rest}"),
    Rule(("levels.{i}.downsample.{rest}",), ("encoder.levels.{i}.downsample.{rest}",)),
    Rule(("norm.{rest}",), ("layernorm.{rest}",), kinds=frozenset({"classification", "model"})),
    Rule(("head.{rest}",), ("classifier.{rest}",), kinds=frozenset({"classification"}),
         outer=True),
    Rule(("norm_stem.{rest}",), ("hidden_states_norms.stem.{rest}",),
         kinds=frozenset({"backbone"})),
    Rule(("norm{i}.{rest}",), ("hidden_states_norms.stage{i+1}.{rest}",),
         kinds=frozenset({"backbone"})),
])
