"""Forward hooks on named modules, pooled inside the hook so big activations are never kept.

A tap is ``<dotted module name>`` (its output) or ``<name>:in`` (its input, e.g. the
pooled vector a classifier receives). Several taps share one forward pass, which
stops as soon as the last tap has fired: a module that runs more than once in a
forward contributes its first call.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from featcache.common.errors import BadInput

POOLS = ("avg", "max", "avgmax", "gem", "cls", "flatten")
GEM_P = 3.0


class LayerError(BadInput):
    """An unknown layer or an impossible pooling; the message lists valid choices."""


@dataclass(frozen=True)
class Tap:
    layer: str  # dotted module name
    side: str  # "output" | "input"

    @classmethod
    def parse(cls, text: str) -> Tap:
        name, _, side = text.partition(":")
        side = {"": "output", "out": "output", "output": "output", "in": "input", "input": "input"}.get(side)
        if side is None or not name:
            raise LayerError(f"--layers {text!r}: expected NAME or NAME:in (e.g. layer4, fc:in)")
        return cls(name, side)

    @property
    def name(self) -> str:
        return self.layer + (":in" if self.side == "input" else "")


def pool(x: Tensor, mode: str, p: float = GEM_P) -> Tensor:
    """Reduce one activation to (B, D). 2-D inputs are already vectors and pass through.

    4-D (B, C, H, W) pools over space; 3-D (B, T, C) token sequences pool over tokens
    (``cls`` takes token 0, as ViT's own head does).
    """
    if x.dim() == 2:
        return x
    if mode == "flatten":
        return x.flatten(1)
    if x.dim() == 4:
        dims: tuple[int, ...] = (2, 3)
    elif x.dim() == 3:
        dims = (1,)
        if mode == "cls":
            return x[:, 0]
    else:
        raise LayerError(f"cannot pool a {x.dim()}-D activation of shape {tuple(x.shape)}; use flatten")
    if mode == "avg":
        return x.mean(dims)
    if mode == "max":
        return x.amax(dims)
    if mode == "avgmax":
        return torch.cat([x.mean(dims), x.amax(dims)], dim=1)
    if mode == "gem":
        # Generalized mean (Radenovic et al.); clamped because GeM is defined on non-negative maps.
        return x.float().clamp(min=1e-6).pow(p).mean(dims).pow(1.0 / p).to(x.dtype)
    if mode == "cls":
        raise LayerError("pool 'cls' needs a token sequence (B, T, C), e.g. a ViT encoder layer")
    raise LayerError(f"unknown pool {mode!r}; valid: {', '.join(POOLS)}")


def pool_name(x_dim: int, mode: str) -> str:
    """The pool a key records: vectors are stored as they are ('none')."""
    return "none" if x_dim == 2 else mode


def find_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.4)
    if not close:  # fall back to names that share a prefix, then to the top-level children
        close = [n for n in names if n.startswith(name.split(".")[0])][:6] or [n for n, _ in model.named_children()]
    raise LayerError(f"--layers: no module named {name!r}; closest: {', '.join(close)} "
                     "(`pipeline.py layers --backbone NAME` lists all)")


class FeatureHead(nn.Module):
    """A family's standard evaluation feature computed from other modules' activations.

    ``parts`` are modules whose outputs it reads, ``uses`` modules it applies to them (e.g. a
    ViT's final ``norm``, found by name in the hooked model, so a copied model uses its own). It has
    no parameters and is never run by the model itself: :class:`FeatureHooks` calls it as
    soon as its parts have run, so it is hooked, pooled and converted to OpenVINO like any
    layer, and a store records it under its module name (``preset.cls``).
    """

    def __init__(self, parts: Sequence[str], uses: Sequence[str], fn: Callable[..., Tensor], doc: str = ""):
        super().__init__()
        self.parts, self.uses, self.fn, self.doc = tuple(parts), tuple(uses), fn, doc

    def forward(self, acts: list[Tensor], modules: list[Callable[[Tensor], Tensor]]) -> Tensor:
        return self.fn(acts, modules)

    def extra_repr(self) -> str:
        return f"parts={list(self.parts)}, uses={list(self.uses)}"


class _StopForward(Exception):
    """Raised from the last hook to skip the rest of the network."""


def _first_tensor(value: object) -> Tensor:
    while isinstance(value, (tuple, list)):
        value = value[0]
    if isinstance(value, dict):
        value = next(iter(value.values()))
    if not isinstance(value, Tensor):
        raise LayerError(f"hooked value is a {type(value).__name__}, not a tensor")
    return value


class FeatureHooks:
    """Context manager: hooks registered on enter, always removed on exit.

    >>> with FeatureHooks(model, [Tap.parse("layer4"), Tap.parse("fc:in")], ["avg"]) as hooks:
    ...     feats = hooks(images)  # {"layer4/avg": (B, 2048), "fc:in/none": (B, 2048)}
    """

    def __init__(self, model: nn.Module, taps: Sequence[Tap], pools: Sequence[str], stop_early: bool = True):
        for p in pools:
            if p not in POOLS:
                raise LayerError(f"--pools {p!r} is unknown; valid: {', '.join(POOLS)}")
        if not taps:
            raise LayerError("no layers to hook")
        self.model, self.taps, self.pools, self.stop_early = model, list(taps), list(pools), stop_early
        self.modules = {t: find_module(model, t.layer) for t in self.taps}
        self._handles: list = []
        self._out: dict[str, Tensor] = {}
        self._fired: set[Tap] = set()
        self._shared: dict[str, Tensor] = {}  # key -> the activation (view) its kept copy was taken from
        self.raw_shapes: dict[Tap, tuple[int, ...]] = {}
        self.changed_in_place: set[str] = set()  # keys a later in-place op would have changed (see _capture)
        self._heads = {t: m for t, m in self.modules.items() if isinstance(m, FeatureHead)}
        # ``uses`` run through ``forward``, not ``__call__``: no hook (another head's part) sees them
        self._head_uses = {t: [find_module(model, u).forward for u in h.uses] for t, h in self._heads.items()}
        self._head_acts: dict[Tap, dict[int, Tensor]] = {}

    def _part(self, tap: Tap, i: int, value: object) -> None:
        """A head's ``i``-th part ran: once all have, the head runs (and its own hook fires)."""
        acts = self._head_acts.setdefault(tap, {})
        if i in acts or tap in self._fired:
            return
        acts[i] = _first_tensor(value)
        head = self._heads[tap]
        if len(acts) == len(head.parts):
            head([acts[j] for j in range(len(head.parts))], self._head_uses[tap])

    def _capture(self, tap: Tap, value: object) -> None:
        if tap in self._fired:
            return
        x = _first_tensor(value)
        self.raw_shapes[tap] = tuple(x.shape[1:])
        for mode in self.pools:
            key = f"{tap.name}/{pool_name(x.dim(), mode)}"
            if key not in self._out:
                v = pool(x, mode)
                if v.data_ptr() == x.data_ptr():
                    # The activation itself or a view of it (a vector, flatten, cls): an in-place op later
                    # in the forward (ReLU(inplace=True), ``out += identity``) would change what we keep.
                    self._shared[key] = v
                    v = v.clone()
                self._out[key] = v
        self._fired.add(tap)
        if self.stop_early and len(self._fired) == len(self.taps):
            raise _StopForward

    def __enter__(self) -> FeatureHooks:
        try:
            for tap, module in self.modules.items():
                if tap.side == "input":
                    h = module.register_forward_pre_hook(lambda m, args, tap=tap: self._capture(tap, args))
                else:
                    h = module.register_forward_hook(lambda m, args, out, tap=tap: self._capture(tap, out))
                self._handles.append(h)
            for tap, head in self._heads.items():
                for i, part in enumerate(head.parts):
                    h = find_module(self.model, part).register_forward_hook(
                        lambda m, args, out, tap=tap, i=i: self._part(tap, i, out))
                    self._handles.append(h)
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        self._out, self._fired, self._shared, self._head_acts = {}, set(), {}, {}
        try:
            self.model(x)
        except _StopForward:
            pass
        for key, original in self._shared.items():  # what keeping the tensor itself would have stored
            if not torch.equal(original, self._out[key]):
                self.changed_in_place.add(key)
        self._shared, self._head_acts = {}, {}
        missing = [t.name for t in self.taps if t not in self._fired]
        if missing:
            raise LayerError(f"layers {missing} never ran in the forward pass (unused modules?)")
        return self._out
