"""What produced a sweep's numbers: code fingerprints and the run's provenance.

*Fingerprints* identify everything that defines the numbers: a problem class, an
optimizer factory, a learning-rate rule or data callable, hashed from their source
(``inspect.getsource``) or, when the source is not available (a class made in a
notebook cell or by ``exec``), from their code objects (``co_code``, ``co_consts``,
recursively). A sweep store records them in its config, so a store never hands back
numbers from code that has since changed (:class:`specdyn.storage.CellStore` refuses
the mismatch and names what changed).

*Provenance* (versions, devices, date, the project's git commit) describes a run
without defining its numbers: it is recorded with the results, never compared.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import inspect
import subprocess
import types
from pathlib import Path

__all__ = ["code_fingerprint", "describe_callable", "problem_fingerprint", "provenance"]


def _code_digest(code: types.CodeType, digest) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, digest)
        else:
            digest.update(repr(const).encode())


def code_fingerprint(obj) -> str:
    """A short digest of a function's or class's code: its source text, or its code
    objects when the source cannot be read. ``functools.partial`` objects hash their
    function and arguments; wrapped functions (``functools.wraps``) their original."""
    digest = hashlib.sha256()
    if isinstance(obj, functools.partial):
        digest.update(code_fingerprint(obj.func).encode())
        digest.update(repr((obj.args, sorted(obj.keywords.items()))).encode())
        return digest.hexdigest()[:16]
    obj = inspect.unwrap(obj) if callable(obj) else obj
    try:
        digest.update(inspect.getsource(obj).encode())
    except (OSError, TypeError):
        call = vars(type(obj)).get("__call__")  # a callable instance's method
        code = getattr(obj, "__code__", None) or getattr(call, "__code__", None)
        if isinstance(obj, type):
            for name, member in sorted(vars(obj).items()):
                digest.update(name.encode())
                if callable(member) or isinstance(member, staticmethod | classmethod | property):
                    digest.update(code_fingerprint(getattr(member, "__func__", member)).encode())
                else:
                    digest.update(repr(member).encode())
        elif code is not None:
            _code_digest(code, digest)
        else:
            digest.update(repr(obj).encode())
    return digest.hexdigest()[:16]


def describe_callable(obj) -> str:
    """``module:qualname`` of a callable (the name a store shows for it)."""
    if isinstance(obj, functools.partial):
        return describe_callable(obj.func)
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def problem_fingerprint(cls) -> dict[str, str]:
    """Digests of a problem class: ``{"Name": class body, "Name.method": ...}`` for each
    method it defines or inherits (outside ``object``), so a mismatch names the method."""
    out = {cls.__qualname__: code_fingerprint(cls)}
    seen = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, member in vars(klass).items():
            func = getattr(member, "__func__", member)
            if name in seen or not isinstance(func, types.FunctionType) or name.startswith("__"):
                continue
            seen.add(name)
            out[f"{cls.__qualname__}.{name}"] = code_fingerprint(func)
    return out


def _git_commit() -> str | None:
    """``HEAD`` of the repository holding the specdyn package (``-dirty`` when it has
    uncommitted changes), or None: no git, no repository, or git failed."""
    here = Path(__file__).resolve().parent
    try:
        run = lambda *args: subprocess.run(
            ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit or None


def provenance(**extra) -> dict[str, str | int | bool]:
    """Versions (specdyn, jax, jaxlib, optax, numpy), x64, device kind and count, the date
    (UTC, ISO 8601), the project's git commit when available, and ``extra`` entries
    (e.g. ``sweep_file_text``). Values are strings, ints or bools (netCDF attributes)."""
    import jax
    import jaxlib
    import numpy as np
    import optax

    import specdyn

    devices = jax.local_devices()
    out = {
        "specdyn_version": specdyn.__version__,
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "optax_version": optax.__version__,
        "numpy_version": np.__version__,
        "x64": bool(jax.config.jax_enable_x64),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    commit = _git_commit()
    if commit is not None:
        out["git_commit"] = commit
    out.update({k: v for k, v in extra.items() if v is not None})
    return out
