"""``@sd.problem``: a training problem as a frozen dataclass registered as a pytree.

Fields declared ``sd.static(default)`` are static — shapes and switches (dimension,
width, sample count, depth, "spiked" vs "power_law"): they live in the pytree's
tree definition, so each value gets its own compiled program. Every other field
is data — floats such as spike strength, init scale, noise: pytree leaves, so a
sweep vmaps over them without recompiling (equinox's rule: "it is usually a bug
to make JAX arrays static").

A problem defines pure methods::

    init(key) -> params                   # a pytree
    sample(key) -> data                   # dict of arrays; {} for population losses
    loss(params, data) -> scalar
    metrics(params, data) -> dict[str, Array]   # scalars or small fixed-shape arrays

and may define ``__check_init__(self)`` to validate its fields at construction
(raise ``ValueError`` naming the field and value; :func:`require` helps).
A class attribute ``metric_dims = {"alpha": ("class",)}`` names the extra axes of
array-valued metrics in sweep results.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import numpy as np

__all__ = ["data_fields", "is_problem", "problem", "require", "static", "static_fields"]

_METHODS = ("init", "sample", "loss", "metrics")


def static(default: Any = dataclasses.MISSING, **kwargs) -> Any:
    """Declare a static problem field (a shape or a switch): ``dim: int = sd.static(16)``."""
    metadata = dict(kwargs.pop("metadata", None) or {}, static=True)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def require(ok: bool, name: str, value: Any, must: str) -> None:
    """Raise ``ValueError("{name} must {must}, got {name}={value!r}")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} must {must}, got {name}={value!r}")


def static_fields(obj_or_cls) -> tuple[str, ...]:
    return obj_or_cls.__specdyn_static__


def data_fields(obj_or_cls) -> tuple[str, ...]:
    return obj_or_cls.__specdyn_data__


def is_problem(obj) -> bool:
    return hasattr(type(obj), "__specdyn_static__") and not isinstance(obj, type)


def _check_field_values(obj) -> None:
    for name in static_fields(obj):
        value = getattr(obj, name)
        try:
            hash(value)
        except TypeError:
            raise ValueError(
                f"static field {name} must be hashable (use a tuple, not a list), got {name}={value!r}"
            ) from None
    for name in data_fields(obj):
        value = getattr(obj, name)
        if isinstance(value, str | bool) or value is None:
            raise ValueError(
                f"data field {name} must be a number or an array, got {name}={value!r} (a field meant to "
                f"hold strings, booleans or None changes the program: declare it static, "
                f"`{name}: ... = sd.static(...)`)"
            )
        if not isinstance(value, numbers.Number | np.ndarray | jax.Array | np.generic):
            raise ValueError(f"data field {name} must be a number or an array, got {name}={value!r}")


def problem(cls: type) -> type:
    """Turn ``cls`` into a frozen dataclass registered as a pytree (see module doc)."""
    user_post_init = cls.__dict__.get("__post_init__")

    def __post_init__(self):
        if user_post_init is not None:
            user_post_init(self)
        _check_field_values(self)
        check = getattr(self, "__check_init__", None)
        if check is not None:
            check()

    cls.__post_init__ = __post_init__  # before @dataclass, which wires it into __init__
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    clash = [f.name for f in fields if f.name in _METHODS]
    if clash:
        raise TypeError(
            f"problem {cls.__name__}: field(s) {clash} share a name with a problem method; "
            "rename them (init_type, loss_type, ...)"
        )
    for method in ("init", "loss"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"problem {cls.__name__} must define {method}()")
    static_names = tuple(f.name for f in fields if f.metadata.get("static"))
    data_names = tuple(f.name for f in fields if not f.metadata.get("static"))
    cls.__specdyn_static__ = static_names
    cls.__specdyn_data__ = data_names
    if not hasattr(cls, "sample"):
        cls.sample = lambda self, key: {}
    if not hasattr(cls, "metrics"):
        cls.metrics = lambda self, params, data: {}
    if not hasattr(cls, "metric_dims"):
        cls.metric_dims = {}

    def flatten_with_keys(obj):
        children = [(jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data_names]
        return children, tuple(getattr(obj, n) for n in static_names)

    def flatten(obj):
        return [getattr(obj, n) for n in data_names], tuple(getattr(obj, n) for n in static_names)

    def unflatten(aux, children):
        # Bypass __init__: leaves may be tracers, batched arrays or placeholders.
        obj = object.__new__(cls)
        for name, value in zip(static_names, aux, strict=True):
            object.__setattr__(obj, name, value)
        for name, value in zip(data_names, children, strict=True):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls
