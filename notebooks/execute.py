"""Execute a notebook from its jupytext source and write the executed .ipynb.

    python notebooks/execute.py 01_phase_retrieval [--size smoke|full] [--out PATH]
    python notebooks/execute.py --all [--size smoke|full]

The source ``notebooks/NAME.py`` (jupytext percent format) is the notebook; the
``.ipynb`` beside it is that source executed, with its outputs. ``--size`` sets
``SIZE`` in a cell inserted after the cell tagged ``parameters`` (as papermill
does), tagged ``injected-parameters``; at the source's own size nothing is
inserted. Every cell's id is derived from its type and source (see
``stable_ids``), so executing a notebook again changes its outputs only. A
failing cell stops the run and its traceback is printed; nothing is written then. The kernel imports specdyn from this checkout (its root is put
first on the kernel's PYTHONPATH) and runs with ``notebooks/`` as its folder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbclient
import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZES = ("smoke", "full")
INJECTED = "injected-parameters"


def names() -> list[str]:
    """The notebooks: every ``notebooks/NN_*.py`` source."""
    return sorted(p.stem for p in HERE.glob("[0-9][0-9]_*.py"))


def source_path(name: str) -> Path:
    path = HERE / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"unknown notebook {name!r}: expected one of {names()}")
    return path


def stable_ids(nb):
    """Give every cell an id derived from its type and source (the first 12 hex digits of
    their SHA-256, with ``-2``, ``-3``, ... on repeats of the same cell): jupytext and
    nbformat draw random ids, which made every re-execution rewrite every id."""
    seen: dict[str, int] = {}
    for cell in nb.cells:
        digest = hashlib.sha256(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:12]
        seen[digest] = seen.get(digest, 0) + 1
        cell.id = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
    return nb


def read_source(name: str) -> nbformat.NotebookNode:
    """The notebook as written in its jupytext source, without outputs, with :func:`stable_ids`."""
    return stable_ids(jupytext.read(source_path(name)))


def parameters_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"a notebook needs exactly one cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


def set_size(nb, size: str):
    """Insert ``SIZE = size`` after the parameters cell, unless the source already says so."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    i = parameters_cell(nb)
    default = re.search(r"^SIZE\s*=\s*[\"'](\w+)[\"']", nb.cells[i].source, re.MULTILINE)
    if default and default.group(1) == size:
        return nb
    cell = nbformat.v4.new_code_cell(f'# Parameters set by notebooks/execute.py --size {size}\nSIZE = "{size}"')
    cell.metadata["tags"] = [INJECTED]
    nb.cells.insert(i + 1, cell)
    return stable_ids(nb)


def kernel_env() -> dict:
    """This interpreter's environment, with this checkout first on PYTHONPATH and
    this interpreter's folder first on PATH (the python3 kernel spec runs `python`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), *filter(None, [env.get("PATH")])])
    env.pop("MPLBACKEND", None)  # the kernel's inline backend shows the figures
    return env


def execute(name: str, size: str = "smoke", timeout: int = 3600) -> nbformat.NotebookNode:
    """Run notebook ``name`` at ``size``; return it executed, with outputs.

    Raises nbclient's CellExecutionError (with the cell's traceback) on the first failing cell.
    """
    nb = set_size(read_source(name), size)
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(HERE)}},
        record_timing=False,  # no timestamps in the committed notebooks: a re-run diffs by its outputs only
        # the few-core CPU guard before the notebook's first JAX work (specdyn/_cpu.py)
        extra_arguments=["--IPKernelApp.exec_lines=['import specdyn', 'specdyn.guard_cpu()']"],
    )
    client.execute(env=kernel_env())
    nb.metadata["specdyn"] = {"size": size}
    return nb


def cells(nb) -> list[tuple[str, str]]:
    """(type, source) of every cell but the one ``--size`` inserts: what must match the source."""
    return [(c.cell_type, c.source) for c in nb.cells if INJECTED not in c.metadata.get("tags", [])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"notebooks to run: {', '.join(names())}")
    parser.add_argument("--all", action="store_true", help="run every notebook")
    parser.add_argument("--size", default="smoke", choices=SIZES, help="SIZE for the run (default: smoke)")
    parser.add_argument("--out", type=Path, help="where to write the executed notebook (one NAME only; "
                        "default: notebooks/NAME.ipynb)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default: 3600)")
    args = parser.parse_args(argv)
    todo = names() if args.all else args.names
    if not todo or (args.all and args.names):
        parser.error("give NAME ... or --all")
    if args.out and len(todo) != 1:
        parser.error("--out needs exactly one NAME")
    for name in todo:
        try:
            source_path(name)
        except ValueError as e:
            parser.error(str(e))
    for name in todo:
        start = time.perf_counter()
        try:
            nb = execute(name, args.size, args.timeout)
        except nbclient.exceptions.CellExecutionError as e:
            print(f"{name}: a cell failed\n{e}", file=sys.stderr)
            return 1
        out = args.out or HERE / f"{name}.ipynb"
        nbformat.write(nb, out)
        print(f"{name}: executed at size {args.size} in {time.perf_counter() - start:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
