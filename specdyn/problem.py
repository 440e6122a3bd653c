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

Padding (sizes of a field in one compiled program, see :mod:`specdyn.buckets`): a
static size declared ``sd.static(16, pad=True)`` may be zero-padded. The engine draws
``init``/``sample`` at the true size, zero-pads every leaf of params and data to its
shape at the bucket size, and runs a *padded instance*: the field holds the bucket
size (the arrays' shape) and :func:`true_size` the true size (a data leaf, traced
in the programs). ``loss`` and ``metrics`` must then normalise by ``true_size``
(never by an array's shape) and give zero gradient in the padded blocks;
:func:`size_mask` masks padded entries. An optional ``__can_pad__(self) -> bool``
says an instance cannot pad (it runs one program per size).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import numpy as np

__all__ = [
    "data_fields", "is_problem", "padded_fields", "problem", "require", "size_mask", "static",
    "static_fields", "true_size",
]

_METHODS = ("init", "sample", "loss", "metrics")


def static(default: Any = dataclasses.MISSING, *, pad: bool = False, **kwargs) -> Any:
    """Declare a static problem field (a shape or a switch): ``dim: int = sd.static(16)``.

    ``pad=True``: an integer size whose values may share one compiled program,
    zero-padded to a bucket size (the problem then normalises by :func:`true_size`).
    """
    metadata = dict(kwargs.pop("metadata", None) or {}, static=True, pad=bool(pad))
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


_SIZES = "_specdyn_true_sizes"  # instance attribute of a padded instance: {field: true size}


def padded_fields(obj_or_cls) -> tuple[str, ...]:
    """The static fields declared ``sd.static(..., pad=True)``."""
    return obj_or_cls.__specdyn_pad__


def true_size(problem, name: str):
    """The true size of field ``name``: the field itself, or in a padded instance the
    true size (an int array, traced inside the programs) while the field holds the bucket."""
    sizes = problem.__dict__.get(_SIZES)
    if sizes is not None and name in sizes:
        return sizes[name]
    return getattr(problem, name)


def size_mask(problem, name: str):
    """Boolean (field value,) array: True on the true entries ``arange(n) < true_size``."""
    import jax.numpy as jnp

    return jnp.arange(getattr(problem, name)) < true_size(problem, name)


def pad_instance(problem, buckets: dict, sizes: dict | None):
    """A padded instance: static ``buckets`` ({field: bucket size}) replace the fields,
    ``sizes`` ({field: true size}, numbers or arrays) become data leaves (None: a plain
    instance at the bucket sizes, for shapes). No validation:
    the bucket sizes may break a constraint between fields that the true sizes respect."""
    cls = type(problem)
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(obj, f.name, buckets.get(f.name, getattr(problem, f.name)))
    if sizes is not None:
        object.__setattr__(obj, _SIZES, {n: sizes[n] for n in sorted(sizes)})
    return obj


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
    cls.__specdyn_pad__ = tuple(f.name for f in fields if f.metadata.get("pad"))
    if not hasattr(cls, "sample"):
        cls.sample = lambda self, key: {}
    if not hasattr(cls, "metrics"):
        cls.metrics = lambda self, params, data: {}
    if not hasattr(cls, "metric_dims"):
        cls.metric_dims = {}

    # A padded instance (see pad_instance) adds its true sizes as leaves after the data
    # fields, and their names to the tree definition.
    def flatten_with_keys(obj):
        sizes = obj.__dict__.get(_SIZES)
        children = [(jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data_names]
        if sizes is not None:
            children += [(jax.tree_util.DictKey(n), sizes[n]) for n in sizes]
        return children, (tuple(getattr(obj, n) for n in static_names), None if sizes is None else tuple(sizes))

    def flatten(obj):
        children, aux = flatten_with_keys(obj)
        return [c for _, c in children], aux

    def unflatten(aux, children):
        # Bypass __init__: leaves may be tracers, batched arrays or placeholders.
        statics, padded = aux
        obj = object.__new__(cls)
        for name, value in zip(static_names, statics, strict=True):
            object.__setattr__(obj, name, value)
        children = list(children)
        for name, value in zip(data_names, children[: len(data_names)], strict=True):
            object.__setattr__(obj, name, value)
        if padded is not None:
            object.__setattr__(obj, _SIZES, dict(zip(padded, children[len(data_names):], strict=True)))
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls
