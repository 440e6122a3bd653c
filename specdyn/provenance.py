"""What produced a sweep's numbers: code fingerprints and the run's provenance.

*Fingerprints* identify everything that defines the numbers:

* a problem class, an optimizer factory, a learning-rate rule or data callable, hashed
  from their source (``inspect.getsource``) or, when the source is not available (a
  class made in a notebook cell or by ``exec``), from their code objects (``co_code``,
  ``co_consts``, recursively): :func:`code_fingerprint`, :func:`problem_fingerprint`;
* specdyn's own source, one digest per ``.py`` file of the package, computed once per
  process (:func:`specdyn_source`): any edit of specdyn counts, whatever its version;
* the user code around them (:func:`user_code`): the source file of each module that
  defines one of them, and of each module those modules import or take a function or
  class from, outside specdyn and the installed libraries (the standard library and
  site-packages, whose versions are in the provenance); so an edit of a module-level
  helper or constant that ``loss`` calls counts. Code without a source file (a notebook
  cell, ``exec``) is digested through its code objects and the module globals it
  refers to: the functions and classes by their code, numbers, strings and arrays by
  their values; other objects (instances) are not digested, a limit of this fallback.

Files are read as they are on disk when the sweep starts: an edit saved but not yet
re-imported counts as a change. A sweep store records the fingerprints in its config,
so a store never hands back numbers from code that has since changed
(:class:`specdyn.storage.CellStore` refuses the mismatch and names what changed).

*Provenance* (versions, devices, date, the project's git commit) describes a run
without defining its numbers: it is recorded with the results, never compared.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import inspect
import site
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import numpy as np

__all__ = [
    "code_fingerprint", "describe_callable", "package_source", "problem_fingerprint", "provenance",
    "specdyn_source", "user_code",
]

_PACKAGE_ROOT = Path(__file__).resolve().parent  # the specdyn package this module belongs to


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


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def package_source(root) -> dict[str, str]:
    """``{relative path: digest}`` of every ``.py`` file under the folder ``root``."""
    root = Path(root)
    return {f.relative_to(root).as_posix(): _file_digest(f) for f in sorted(root.rglob("*.py"))}


@functools.cache
def _package_source_once(root: str) -> dict[str, str]:
    return package_source(root)


def specdyn_source() -> dict[str, str]:
    """:func:`package_source` of the specdyn package in use, computed once per process
    (the code a process runs is the code it imported)."""
    return dict(_package_source_once(str(_PACKAGE_ROOT)))


@functools.cache
def _library_roots() -> tuple[Path, ...]:
    """Folders of installed code: the standard library and the site-packages."""
    paths = sysconfig.get_paths()
    folders = [paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    folders += [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]
    return tuple(dict.fromkeys(Path(f).resolve() for f in folders if f))


def _installed(module: types.ModuleType) -> bool:
    """Whether ``module`` is specdyn (digested by :func:`specdyn_source`), built in, or
    installed in the standard library or site-packages (its version is in the provenance)."""
    name = module.__name__
    if name == "specdyn" or name.startswith("specdyn.") or name in sys.builtin_module_names:
        return True
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.origin in ("built-in", "frozen"):
        return True
    file = getattr(module, "__file__", None)
    if file is None:
        return hasattr(module, "__path__")  # a namespace package: no code of its own
    path = Path(file).resolve()
    return any(path.is_relative_to(root) for root in _library_roots())


def _source_file(module: types.ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    path = Path(file) if file else None
    return path if path is not None and path.is_file() else None


def _module_of(obj) -> types.ModuleType | None:
    if isinstance(obj, types.ModuleType):
        return obj
    name = getattr(obj, "__module__", None)
    return sys.modules.get(name) if isinstance(name, str) else None


def _parts(obj) -> list:
    """The functions and classes ``obj`` is made of: a partial's function and callable
    arguments, a wrapped function's original, a callable instance's class."""
    if isinstance(obj, functools.partial):
        return [p for o in (obj.func, *obj.args, *obj.keywords.values()) if callable(o) for p in _parts(o)]
    if isinstance(obj, types.FunctionType | types.MethodType | type):
        return [inspect.unwrap(obj) if not isinstance(obj, type) else obj]
    return [type(obj)] if callable(obj) else []


def _functions(obj) -> list[types.FunctionType]:
    """The Python functions of a function or class (its methods, properties' getters, ...)."""
    obj = getattr(obj, "__func__", obj)
    if isinstance(obj, types.FunctionType):
        return [obj]
    if isinstance(obj, type):
        members = [m for klass in obj.__mro__ if klass is not object for m in vars(klass).values()]
        members = [getattr(m, "fget", None) if isinstance(m, property) else m for m in members]
        return [f for m in members for f in _functions(m) if getattr(f, "__module__", None) == obj.__module__]
    return []


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


_SIMPLE = (bool, int, float, complex, str, bytes, type(None))


def _value_digest(value) -> str | None:
    """A digest of a global's value: numbers, strings (and tuples of them) by repr, arrays
    by dtype, shape and bytes; None for anything else (not digested)."""
    if isinstance(value, _SIMPLE) or (
        isinstance(value, tuple | frozenset) and all(isinstance(v, _SIMPLE) for v in value)
    ):
        return repr(value)
    if all(hasattr(value, a) for a in ("__array__", "dtype", "shape")):  # numpy and JAX arrays
        try:
            array = np.asarray(value)
        except Exception:  # a tracer or an abstract value: not a concrete global
            return None
        if array.dtype == object:
            return None
        return f"{array.dtype}{array.shape}" + hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    return None


def user_code(objs) -> dict[str, str]:
    """Digests of the user code ``objs`` (problem classes, factories, rules, callables)
    depend on, outside specdyn and the installed libraries (see the module doc):
    ``{module name: digest of its source file}`` for each module that defines one of
    ``objs`` or that such a module imports or takes a function or class from, and
    ``{"<module> (no source file)": digest}`` of the code and referenced globals of the
    objects whose module has no source file."""
    modules: dict[str, str] = {}
    sourceless: dict = {}  # name -> a running sha256
    seen_functions: set[int] = set()

    def visit_module(module: types.ModuleType | None) -> bool:
        """Digest a module's source file (and what it refers to); False: it has none (or
        is not imported: code made by ``exec`` in a namespace of its own)."""
        if module is None:
            return False
        if _installed(module):
            return True
        name = module.__name__
        if name in modules:
            return True
        file = _source_file(module)
        if file is None:
            return False
        modules[name] = _file_digest(file)
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType) or isinstance(value, types.FunctionType | type):
                other = _module_of(value)
                if other is not None and other is not module:
                    visit_module(other)
        return True

    def visit_code(obj) -> None:
        """Digest the code of an object without a source file and the globals it uses."""
        for func in _functions(obj):
            if id(func) in seen_functions:
                continue
            seen_functions.add(id(func))
            digest = sourceless.setdefault(f"{func.__module__} (no source file)", hashlib.sha256())
            digest.update(describe_callable(func).encode())
            digest.update(code_fingerprint(func).encode())
            scope = func.__globals__
            for name in sorted(_names(func.__code__)):
                if name not in scope:
                    continue  # a builtin or an attribute name
                value = scope[name]
                if isinstance(value, types.ModuleType | types.FunctionType | type):
                    if not visit_module(_module_of(value)):
                        visit_code(value)
                    continue
                digest.update(f"{name}={_value_digest(value)}".encode())

    for obj in objs:
        for part in _parts(obj):
            klasses = part.__mro__ if isinstance(part, type) else (part,)
            for klass in klasses:
                if klass is not object and not visit_module(_module_of(klass)):
                    visit_code(klass)
    return {**modules, **{k: d.hexdigest()[:16] for k, d in sourceless.items()}}


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
