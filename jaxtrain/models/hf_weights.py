"""HuggingFace weights in both directions, driven by one declarative table per model family.

A family's table (jaxtrain/models/hf_families.py) lists, for every tensor, its HF name, its
param path in our model, both shapes in the family's size names and whether the matrix is
transposed (torch Linear stores [out, in], ours are [in, out]). The same table converts both
ways and checks every shape, so a mismatch names the tensor, both shapes and the config field
to change:

    from_hf(tensors, family, cfg, source)  HF {name: array} -> {our dot path: float32 array}
    to_hf(params, family, cfg)             our params (nnx.State or nested dict) -> {HF name:
                                           float32 array}

Both are pure (no files, no torch): reading and writing safetensors is read_safetensors /
write_hf_folder, with safetensors.numpy. Anything that rewrites params before export (merging
adapters into kernels) goes before to_hf.
"""

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from jaxtrain.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Rule:
    """One tensor: HF name and our dot path ("{i}" is the layer index in both), the HF shape in
    size names, our shape in size names, transposed ([out, in] <-> [in, out], then reshaped) or
    only reshaped, and whether the HF tensor may hold more rows than we use (position tables)."""

    hf: str
    ours: str
    hf_dims: tuple[str, ...]
    ours_dims: tuple[str, ...]
    transpose: bool = False
    extra_rows: bool = False

    def at(self, i: int) -> "Rule":
        return dataclasses.replace(self, hf=self.hf.format(i=i), ours=self.ours.format(i=i))


def rule(hf: str, ours: str, hf_dims, ours_dims=None, *, t: bool = False, rows: bool = False):
    """A Rule; ours_dims defaults to the HF dims (reversed when transposed)."""
    hf_dims = tuple(hf_dims)
    if ours_dims is None:
        ours_dims = hf_dims[::-1] if t else hf_dims
    return Rule(hf, ours, hf_dims, tuple(ours_dims), t, rows)


@dataclasses.dataclass(frozen=True)
class Family:
    """How one jaxtrain model family maps onto one HF architecture."""

    name: str  # jaxtrain model.name
    label: str  # the HF architecture's name in messages ("Llama", "GPT-2", "BERT")
    settings: type  # the family's settings dataclass
    rules: Callable[[Any], list[Rule]]  # cfg -> the expanded table
    sizes: Callable[[Any], dict[str, int]]  # cfg -> {size name: int}
    # size name -> (settings field, config.json key), named in shape errors
    size_fields: dict[str, tuple[str, str]]
    layers: str  # regex of an HF layer tensor's name, group 1 the index
    prefix: str = ""  # where the rules' paths live in the model the registry builds
    ignored: tuple[str, ...] = ()  # regexes of HF tensors that are not weights (buffers, heads)
    normalize: Callable[[dict], dict] = lambda t: t  # HF names as saved -> the table's names
    extra_params: tuple[str, ...] = ()  # our params with no HF tensor (a classifier head)


def expand(layer_rules: tuple[Rule, ...], num_layers: int) -> list[Rule]:
    return [r.at(i) for i in range(num_layers) for r in layer_rules]


def _shape(dims: tuple[str, ...], sizes: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(sizes[d] for d in dims)


def _fields(family: Family, dims, got, want) -> str:
    names = []
    for d, g, w in zip(dims, got, want, strict=False):
        if g != w and d in family.size_fields:
            field, key = family.size_fields[d]
            names.append(f"{family.settings.__name__}.{field} (config.json {key})")
    return " / ".join(dict.fromkeys(names)) or "the config"


def _check_hf_shape(source: str, family: Family, r: Rule, got, sizes) -> None:
    want = _shape(r.hf_dims, sizes)
    ok = len(got) == len(want) and all(
        g >= w if (r.extra_rows and k == 0) else g == w
        for k, (g, w) in enumerate(zip(got, want, strict=True))
    )
    if not ok:
        raise CheckpointError(
            f"{source}: tensor {r.hf} has shape {got} but the config expects {want} "
            f"(dims: {', '.join(r.hf_dims)}); change {_fields(family, r.hf_dims, got, want)} "
            "to match"
        )


def to_ours(w: np.ndarray, r: Rule, sizes: Mapping[str, int]) -> np.ndarray:
    if r.extra_rows:
        w = w[: sizes[r.hf_dims[0]]]
    if r.transpose:
        w = w.T
    return np.ascontiguousarray(w.reshape(_shape(r.ours_dims, sizes)), np.float32)


def to_theirs(w: np.ndarray, r: Rule, sizes: Mapping[str, int]) -> np.ndarray:
    hf_shape = _shape(r.hf_dims, sizes)
    w = np.asarray(w, np.float32)
    w = w.reshape(hf_shape[::-1]).T if r.transpose else w.reshape(hf_shape)
    return np.ascontiguousarray(w)


def count_layers(tensors: Mapping[str, Any], pattern: str) -> int | None:
    found = {int(m.group(1)) for k in tensors if (m := re.match(pattern, k))}
    return len(found) if found else None


def from_hf(
    tensors: Mapping[str, np.ndarray], family: Family, cfg: Any, source: str
) -> dict[str, np.ndarray]:
    """HF tensors -> {our dot path (relative to family.prefix): float32 array}, every shape
    checked against cfg. Tensors the table does not use and `ignored` does not name are listed in
    a warning."""
    tensors = family.normalize(dict(tensors))
    layers = count_layers(tensors, family.layers)
    if layers is not None and layers != cfg.num_layers:
        name = family.settings.__name__
        key = family.size_fields.get("num_layers", ("num_layers", "num_hidden_layers"))[1]
        raise CheckpointError(
            f"{source}: holds {layers} layers but {name}.num_layers={cfg.num_layers}; change "
            f"num_layers (config.json {key}) to match"
        )
    sizes = family.sizes(cfg)
    out, used = {}, set()
    for r in family.rules(cfg):
        if r.hf not in tensors:
            raise CheckpointError(
                f"{source}: tensor {r.hf} is missing (needed for {r.ours}); is this a "
                f"{family.label} checkpoint?"
            )
        w = tensors[r.hf]
        _check_hf_shape(source, family, r, tuple(w.shape), sizes)
        out[r.ours] = to_ours(w, r, sizes)
        used.add(r.hf)
    unused = sorted(
        k for k in set(tensors) - used if not any(re.fullmatch(p, k) for p in family.ignored)
    )
    if unused:
        warnings.warn(
            f"{source}: {len(unused)} tensors not imported: {', '.join(unused[:20])}",
            stacklevel=3,
        )
    return out


def flat_params(params: Any) -> dict[str, np.ndarray]:
    """nnx.State / nested dict of arrays or Variables -> {dot path: numpy array}."""
    if isinstance(params, nnx.State):
        items = [(p, v.get_value()) for p, v in nnx.to_flat_state(params)]
    else:
        items = []

        def walk(node, path):
            if isinstance(node, Mapping) or isinstance(node, nnx.State):
                for k, v in node.items():
                    walk(v, (*path, k))
            elif isinstance(node, list | tuple):
                for k, v in enumerate(node):
                    walk(v, (*path, k))
            else:
                items.append((path, node.get_value() if isinstance(node, nnx.Variable) else node))

        walk(params, ())
    return {".".join(str(p) for p in path): np.asarray(jax.device_get(v)) for path, v in items}


def to_hf(params: Any, family: Family, cfg: Any) -> dict[str, np.ndarray]:
    """Our params (the whole model's, as the registry builds it) -> {HF name: float32 array}.
    Every param must be in the table or family.extra_params: one that is not (an unmerged
    adapter, a field the HF architecture lacks) is an error naming it."""
    flat = flat_params(params)
    sizes = family.sizes(cfg)
    name = family.settings.__name__
    out, used = {}, set(family.extra_params)
    for r in family.rules(cfg):
        path = family.prefix + r.ours
        if path not in flat:
            raise CheckpointError(
                f"the params have no {path} (needed for {r.hf}): build them from this {name}"
            )
        w, want = flat[path], _shape(r.ours_dims, sizes)
        if tuple(w.shape) != want:
            raise CheckpointError(
                f"param {path} has shape {tuple(w.shape)} but {name} expects {want} (dims: "
                f"{', '.join(r.ours_dims)}): build the params from the same {name}"
            )
        out[r.hf] = to_theirs(w, r, sizes)
        used.add(path)
    left = sorted(set(flat) - used)
    if left:
        raise CheckpointError(
            f"params {', '.join(left[:10])} have no {family.label} counterpart; merge adapters "
            "into the base weights before exporting"
        )
    return out


def import_into(
    params: nnx.State, hf_params: dict[str, np.ndarray], *, prefix: tuple[str, ...] = ("encoder",)
) -> nnx.State:
    """A copy of `params` with every weight in `hf_params` (from from_hf) replaced; all other
    params (a classifier head) are kept. Arrays are placed with the sharding of the values they
    replace. prefix: where hf_params' paths live (("encoder",) for a BertClassifier, () for a
    bare BertEncoder, a GPT or a Llama)."""
    flat = nnx.to_flat_state(params)
    remaining = dict(hf_params)
    new = []
    for path, var in flat:
        key = ".".join(str(p) for p in path[len(prefix) :])
        if tuple(path[: len(prefix)]) != tuple(prefix) or key not in remaining:
            new.append((path, var))
            continue
        value, old = remaining.pop(key), var.get_value()
        if tuple(value.shape) != tuple(old.shape):
            raise CheckpointError(
                f"imported {key} has shape {tuple(value.shape)} but the model's "
                f"{'.'.join(map(str, path))} is {tuple(old.shape)}: build the model from the same "
                "BertConfig, GPTConfig or LlamaConfig that loaded the weights"
            )
        sharding = getattr(old, "sharding", None)
        placed = jax.device_put(np.asarray(value, dtype=old.dtype), sharding)
        new.append((path, var.replace(placed)))
    if remaining:
        raise CheckpointError(
            f"the model has no params for {', '.join(sorted(remaining)[:10])} under prefix "
            f"{'.'.join(prefix) or '(none)'}: pass prefix=() for a bare BertEncoder, a GPT or a "
            "Llama"
        )
    return nnx.from_flat_state(new)


# --- files -------------------------------------------------------------------------------------


def read_config_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file (the HF model's config.json)")
    try:
        with open(path) as f:
            hf = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path}: not an HF config (a JSON object)")
    return hf


def read_safetensors(path: str, missing_hint: str = "") -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file{missing_hint}")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def write_hf_folder(
    out_dir: str, config: dict, tensors: dict[str, np.ndarray], extra: dict | None = None
) -> dict[str, str]:
    """Writes out_dir/config.json and out_dir/model.safetensors (plus `extra` safetensors files:
    {file name: tensors}); creates out_dir. Returns {what: path}."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        paths = {"config": os.path.join(out_dir, "config.json")}
        with open(paths["config"], "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        for name, part in {"model.safetensors": tensors, **(extra or {})}.items():
            paths[name] = os.path.join(out_dir, name)
            # "format": "pt" is what transformers' loader asks of a safetensors file.
            save_file(part, paths[name], metadata={"format": "pt"})
    except OSError as e:
        raise CheckpointError(f"--out {out_dir}: cannot write the HF model ({e})") from e
    return paths
