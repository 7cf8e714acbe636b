"""`Mask`: which prunable weights a ticket keeps, as an immutable value object.

A mask maps parameter names (``"features.0.weight"``) to bool tensors of the weight's shape.
It never holds weights and never changes after construction: every operation returns a new
mask. Masks read the three conventions found in the wild (torch.nn.utils.prune ``*_mask``
buffers, Synaptic-Flow ``weight_mask`` buffers, open_lth ``mask_*`` buffers and ``mask.pth``
files) and write safetensors (or ``.pt`` state dicts) atomically; :meth:`Mask.export` writes the
other tools' layouts (:data:`FORMATS`) and :meth:`Mask.to_torch_prune` applies a mask with
``torch.nn.utils.prune``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from .errors import MaskError, OptionError
from .io import atomic_write

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_META_KEY = "pathnet"
_ORDER_KEY = "pathnet_order"


_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")

#: mask file formats :meth:`Mask.export` writes and :meth:`Mask.load` reads, with their layout
FORMATS = {
    "pathnet": "pathnet's own: safetensors of bool tensors with the metadata (or a .pt state dict of them)",
    "open_lth": "open_lth's mask.pth: torch.save of {weight name: int32 0/1 tensor} (no metadata)",
    "synflow": "Synaptic-Flow's buffers: torch.save of {'<module>.weight_mask': float32 0/1 tensor} (no metadata)",
    "torch-prune-state": "the mask buffers torch.nn.utils.prune registers, as a state dict: "
                         "{'<module>.<param>_mask': float32 0/1 tensor} (the same layout as synflow; no metadata)",
}


def _torch_bytes(state: Mapping[str, Any]) -> bytes:
    """torch.save of `state` to memory: the archive is named 'archive', not after a (temporary) file name,
    so the same state gives the same bytes."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    return buf.getvalue()


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name → trainable weight of every Linear/Conv layer and attention in-projection, in registration order.

    Names are the plain ``"<module>.weight"`` (``"<module>.in_proj_weight"`` for nn.MultiheadAttention, or
    its ``q/k/v_proj_weight`` when key and value sizes differ) even when torch.nn.utils.prune has renamed
    the parameter to ``…_orig``; the tensor returned is then the ``…_orig`` one (what trains).
    """
    out = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES):
            attrs: tuple[str, ...] = ("weight",)
        elif isinstance(module, nn.MultiheadAttention):
            attrs = _ATTENTION_WEIGHTS
        else:
            continue
        for attr in attrs:
            w = module._parameters.get(f"{attr}_orig", module._parameters.get(attr))
            if w is not None:
                out[f"{mod_name}.{attr}" if mod_name else attr] = w
    return out


def count(mask: torch.Tensor) -> int:
    """Number of True entries of a bool tensor (numpy's popcount: much faster than torch's bool sum)."""
    return int(np.count_nonzero(mask.numpy()))


def _as_bool(name: str, value: Any) -> torch.Tensor:
    """Convert one mask entry to a contiguous CPU bool tensor, rejecting non-binary values."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise MaskError(f"mask entry {name!r} is a {type(value).__name__}; give a torch tensor or numpy array")
    value = value.detach().to("cpu")
    if value.numel() == 0:
        raise MaskError(f"mask entry {name!r} is empty (shape {tuple(value.shape)}); an entry covers a weight of "
                        "at least one element")
    if value.dtype == torch.bool:
        return value.clone().contiguous()
    if value.is_complex():
        raise MaskError(f"mask entry {name!r} is complex; masks hold 0/1 values only")
    bad = (value != 0) & (value != 1)
    if bool(bad.any()):
        example = value[bad].flatten()[0].item()
        raise MaskError(
            f"mask entry {name!r} has {int(bad.sum())} non-binary values (e.g. {example!r}); "
            "a mask holds only 0 and 1 — to keep the top scores, pass scores to pathnet.pruning.threshold"
        )
    return (value == 1).contiguous()


class Mask(Mapping[str, torch.Tensor]):
    """Immutable mapping ``param name → bool tensor`` (True = weight kept).

    ``meta`` carries JSON-serialisable provenance (method, density, seed, ...), saved with the
    mask. Treat the tensors as read-only; operations return new masks.
    """

    __slots__ = ("_masks", "_meta")

    def __init__(self, masks: Mapping[str, Any], meta: Mapping[str, Any] | None = None):
        if isinstance(masks, Mask):
            meta = dict(masks.meta) if meta is None else meta
            masks = masks._masks
        if not isinstance(masks, Mapping):
            raise MaskError(f"Mask expects a mapping name → tensor, got {type(masks).__name__}")
        if len(masks) == 0:
            raise MaskError("a Mask needs at least one entry; use Mask.ones(model) for a dense mask")
        self._masks = {str(k): _as_bool(str(k), v) for k, v in masks.items()}
        meta = dict(meta or {})
        try:
            json.dumps(meta)
        except TypeError as e:
            raise MaskError(f"mask metadata must be JSON-serialisable: {e}") from None
        self._meta = MappingProxyType(meta)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module, **meta: Any) -> Mask:
        """The dense mask: every Linear/Conv weight of `model` kept."""
        weights = prunable_weights(model)
        if not weights:
            raise MaskError(f"{type(model).__name__} has no Linear or Conv layers, so nothing to mask")
        return cls({k: torch.ones(w.shape, dtype=torch.bool) for k, w in weights.items()}, meta)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Mask:
        """Read mask entries from a state dict in any known convention.

        ``X.weight_mask`` (torch.nn.utils.prune, Synaptic-Flow) → ``X.weight``;
        ``[prefix.]mask_A___B___weight`` (open_lth) → ``[prefix.]A.B.weight``;
        any other binary tensor is taken under its own name (a saved Mask).
        """
        out = {}
        converted = False
        for key, value in state.items():
            head, _, last = key.rpartition(".")
            if last == "bias_mask":  # Synaptic-Flow masks biases too (all kept unless --prune-bias)
                if isinstance(value, torch.Tensor) and bool((value != 1).any()):
                    raise MaskError(f"{key!r} prunes a bias; pathnet masks weights only (biases are never pruned)")
                converted = True
                continue
            if last.endswith("_mask"):
                out[f"{head}.{last[:-5]}" if head else last[:-5]] = value
                converted = True
            elif last.startswith("mask_"):
                name = last[5:].replace("___", ".")
                out[f"{head}.{name}" if head else name] = value
                converted = True
        if not converted:
            out = dict(state)
        return cls(out, meta)

    @classmethod
    def from_model(cls, model: nn.Module) -> Mask:
        """Read the mask buffers a pruned model carries (torch prune, Synaptic-Flow, open_lth)."""
        buffers = {k: v for k, v in model.named_buffers()
                   if k.rpartition(".")[2].endswith("_mask") or k.rpartition(".")[2].startswith("mask_")}
        if not buffers:
            raise MaskError(
                f"{type(model).__name__} carries no mask buffers (*_mask or mask_*); "
                "use Mask.ones(model) for a dense mask or prune it first"
            )
        return cls.from_state_dict(buffers, {"source": "from_model"})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Mask:
        """Load a mask saved by :meth:`save` (safetensors) or a ``.pt``/``.pth`` state dict."""
        path = Path(path)
        if not path.is_file():
            raise MaskError(f"no mask file at {path}; check the path (masks are saved with Mask.save)")
        if path.suffix in (".pt", ".pth"):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # not a torch file, or one that would need unpickling arbitrary objects
                raise MaskError(f"{path} is not a readable torch state dict of masks ({type(e).__name__}); give a "
                                "mask saved by pathnet (.safetensors, or .pt/.pth)") from None
            if not isinstance(state, Mapping):
                raise MaskError(f"{path} holds a {type(state).__name__}, not a state dict of masks")
            meta = state.pop(f"__{_META_KEY}_meta__", None)
            return cls.from_state_dict(state, json.loads(meta) if isinstance(meta, str) else None)
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                order = json.loads(header.get(_ORDER_KEY, "[]")) or list(f.keys())  # safetensors sorts keys
                tensors = {k: f.get_tensor(k) for k in order}
                meta = header.get(_META_KEY)
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise MaskError(f"{path} is not a readable safetensors file ({e}); "
                            "masks in torch format need a .pt or .pth suffix") from None
        return cls.from_state_dict(tensors, json.loads(meta) if meta else None)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: safetensors by default, a torch state dict for ``.pt``/``.pth``. The same mask
        (entries and metadata) gives the same safetensors file, byte for byte."""
        path = Path(path)
        if path.suffix in (".pt", ".pth"):
            state: dict[str, Any] = {**self._masks, f"__{_META_KEY}_meta__": json.dumps(dict(self._meta),
                                                                                       sort_keys=True)}
            data = _torch_bytes(state)
            return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
        header = {_META_KEY: json.dumps(dict(self._meta), sort_keys=True), _ORDER_KEY: json.dumps(list(self._masks))}
        data = _safetensors_bytes(self._masks, header)
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))

    def to_state_dict(self, format: str = "pathnet") -> dict[str, torch.Tensor]:
        """The entries in another tool's layout (:data:`FORMATS`); :meth:`from_state_dict` reads each back."""
        if format not in FORMATS:
            raise OptionError(f"format {format!r} is not known; choose one of {', '.join(FORMATS)}")
        if format == "pathnet":
            return dict(self._masks)
        if format == "open_lth":
            return {k: m.to(torch.int32) for k, m in self._masks.items()}
        return {f"{k}_mask": m.to(torch.float32) for k, m in self._masks.items()}

    def export(self, path: str | os.PathLike, format: str = "pathnet") -> Path:
        """Write atomically in `format` (:data:`FORMATS`): "pathnet" is :meth:`save`; the others are torch
        state dicts (a .pt or .pth file) without metadata. :meth:`load` reads every format back, the same
        entries bit for bit, and the same mask gives the same file, byte for byte."""
        if format not in FORMATS:
            raise OptionError(f"format {format!r} is not known; choose one of {', '.join(FORMATS)}")
        path = Path(path)
        if format == "pathnet":
            return self.save(path)
        if path.suffix not in (".pt", ".pth"):
            raise MaskError(f"{format} masks are torch state dicts: give {path.name!r} a .pt or .pth suffix")
        data = _torch_bytes(self.to_state_dict(format))
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))

    def sha256(self) -> str:
        """SHA-256 of the entries (names in order, shapes, bits); metadata not included."""
        h = hashlib.sha256()
        for k, m in self._masks.items():
            h.update(json.dumps([k, list(m.shape)]).encode())
            h.update(np.packbits(m.numpy().reshape(-1)).tobytes())
        return h.hexdigest()

    # -- mapping ----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._masks[name]
        except KeyError:
            raise KeyError(f"{name!r} is not in this mask; it has {_preview(self._masks)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    @property
    def meta(self) -> Mapping[str, Any]:
        """Provenance (method, density, seed, ...): read-only."""
        return self._meta

    def with_meta(self, **meta: Any) -> Mask:
        """A copy whose metadata is updated with `meta`."""
        return Mask(self._masks, {**self._meta, **meta})

    # -- counts -----------------------------------------------------------------------------
    @property
    def num_kept(self) -> int:
        return sum(count(m) for m in self._masks.values())

    @property
    def num_total(self) -> int:
        return int(sum(m.numel() for m in self._masks.values()))

    @property
    def density(self) -> float:
        """Fraction of the masked weights that are kept."""
        return self.num_kept / self.num_total

    def layer_densities(self) -> dict[str, float]:
        return {k: count(m) / m.numel() for k, m in self._masks.items()}

    def numpy(self) -> dict[str, np.ndarray]:
        return {k: m.numpy() for k, m in self._masks.items()}

    # -- algebra ----------------------------------------------------------------------------
    def check_compatible(self, other: Mask) -> None:
        """Raise MaskError naming the first name or shape on which two masks differ."""
        if not isinstance(other, Mask):
            raise MaskError(f"expected a Mask, got {type(other).__name__}")
        if self._masks.keys() != other._masks.keys():
            only_a = [k for k in self._masks if k not in other._masks]
            only_b = [k for k in other._masks if k not in self._masks]
            first = f"{only_a[0]!r} only in the first" if only_a else f"{only_b[0]!r} only in the second"
            raise MaskError(f"masks cover different weights ({first}); they must come from the same architecture")
        for k, m in self._masks.items():
            if m.shape != other._masks[k].shape:
                raise MaskError(f"masks differ in the shape of {k!r}: {tuple(m.shape)} vs "
                                f"{tuple(other._masks[k].shape)}; they must come from the same architecture")

    def _combine(self, other: Mask, op) -> Mask:
        self.check_compatible(other)
        return Mask({k: op(m, other._masks[k]) for k, m in self._masks.items()})

    def __and__(self, other: Mask) -> Mask:
        return self._combine(other, torch.logical_and)

    def __or__(self, other: Mask) -> Mask:
        return self._combine(other, torch.logical_or)

    def __xor__(self, other: Mask) -> Mask:
        return self._combine(other, torch.logical_xor)

    def __invert__(self) -> Mask:
        return Mask({k: ~m for k, m in self._masks.items()})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        return self._masks.keys() == other._masks.keys() and all(
            m.shape == other._masks[k].shape and torch.equal(m, other._masks[k]) for k, m in self._masks.items())

    __hash__ = None  # equality is by value over tensors

    # -- models -----------------------------------------------------------------------------
    def check(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Validate names and shapes against `model`; return its matching weights.

        Weights of `model` that the mask does not name are left dense.
        """
        weights = prunable_weights(model)
        for k, m in self._masks.items():
            if k not in weights:
                raise MaskError(f"mask entry {k!r} names no Linear/Conv weight of {type(model).__name__} "
                                f"(it has {_preview(weights)}); was the mask made for another model?")
            if tuple(weights[k].shape) != tuple(m.shape):
                raise MaskError(f"mask entry {k!r} has shape {tuple(m.shape)} but the weight has "
                                f"{tuple(weights[k].shape)}; was the mask made for another model?")
        return {k: weights[k] for k in self._masks}

    def complete(self, model: nn.Module) -> Mask:
        """This mask with every prunable weight of `model` it does not name added as dense."""
        self.check(model)
        full = {k: self._masks.get(k, torch.ones(w.shape, dtype=torch.bool)) for k, w in prunable_weights(model).items()}
        return Mask(full, self._meta)

    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of `model` in place (all names checked before any write)."""
        weights = self.check(model)
        with torch.no_grad():
            for k, w in weights.items():
                w.mul_(self._masks[k].to(device=w.device, dtype=w.dtype))
        return model

    def to_torch_prune(self, model: nn.Module) -> nn.Module:
        """Apply the mask with ``torch.nn.utils.prune.custom_from_mask`` to every weight it names
        (attention in-projections included): each gets a ``<param>_orig`` parameter and a ``<param>_mask``
        buffer (the weight's dtype) that :meth:`from_model` reads back. All names are checked before any
        change; returns `model`, changed in place."""
        from torch.nn.utils import prune as torch_prune

        weights = self.check(model)
        modules = dict(model.named_modules())
        for k in weights:
            mod_name, _, attr = k.rpartition(".")
            module = modules[mod_name]
            w = weights[k]
            torch_prune.custom_from_mask(module, attr, self._masks[k].to(device=w.device, dtype=w.dtype))
        return model

    def __repr__(self) -> str:
        return (f"Mask({len(self)} tensors, density={self.density:.4f}, "
                f"{self.num_kept:,}/{self.num_total:,} kept)")


def _safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """A safetensors file of bool tensors with a canonical header (sorted keys, no spaces): the
    safetensors library writes its metadata in hash order, which differs from run to run."""
    entries: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset, blobs = 0, []
    for k in sorted(tensors):
        blob = tensors[k].numpy().astype(np.uint8, copy=False).tobytes()
        entries[k] = {"dtype": "BOOL", "shape": list(tensors[k].shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    head = json.dumps(entries, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def _preview(names: Mapping[str, Any], limit: int = 4) -> str:
    keys = list(names)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"{shown}, … ({len(keys)} in all)" if len(keys) > limit else (shown or "no entries")
