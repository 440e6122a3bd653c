"""The notebooks: each committed .ipynb is its jupytext source executed (same
cells, outputs, no errors), so a notebook left stale after its source changed
fails here. Each source is executed at smoke size by its own
tests/test_notebook_NAME.py (one file each, so the executions spread over the
xdist workers)."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOKS / "execute.py")
nbx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbx)
NAMES = nbx.names()


def test_every_source_has_its_committed_notebook_and_no_generator_is_left():
    assert NAMES, "no notebook sources found"
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    assert not list(NOTEBOOKS.glob("make_*.py")), "notebooks are written as jupytext sources, not generated"
    tests = Path(__file__).resolve().parent
    assert sorted(p.stem.removeprefix("test_notebook_") for p in tests.glob("test_notebook_*.py")) == NAMES




@pytest.mark.parametrize("name", NAMES)
def test_source_has_one_size_parameter(name):
    nb = nbx.read_source(name)
    params = nb.cells[nbx.parameters_cell(nb)]
    assert params.source.startswith('SIZE = "smoke"'), params.source
    assert nb.cells[0].cell_type == "markdown"


def test_size_injection():
    nb = nbx.read_source(NAMES[0])
    i = nbx.parameters_cell(nb)
    assert len(nbx.set_size(nbx.read_source(NAMES[0]), "smoke").cells) == len(nb.cells)
    full = nbx.set_size(nbx.read_source(NAMES[0]), "full")
    assert full.cells[i + 1].source.endswith('SIZE = "full"')
    assert nbx.cells(full) == nbx.cells(nb)
    assert [c.id for c in full.cells if nbx.INJECTED not in c.metadata.get("tags", [])] == [c.id for c in nb.cells]
    with pytest.raises(ValueError, match="size must be one of"):
        nbx.set_size(nb, "large")


@pytest.mark.parametrize("name", NAMES)
def test_cell_ids_follow_from_the_cells(name):
    """Reading a source twice gives the same ids (so a re-execution changes outputs only),
    valid and unique; a cell's id changes with its source and not with its neighbours'."""
    first, second = nbx.read_source(name), nbx.read_source(name)
    ids = [c.id for c in first.cells]
    assert ids == [c.id for c in second.cells]
    assert len(set(ids)) == len(ids)
    nbformat.validate(first)
    second.cells[-1].source += "\n# edited"
    nbx.stable_ids(second)
    assert [c.id for c in second.cells][:-1] == ids[:-1] and second.cells[-1].id != ids[-1]
    twice = nbx.read_source(name)
    twice.cells.append(nbformat.v4.new_markdown_cell(twice.cells[0].source))
    assert nbx.stable_ids(twice).cells[-1].id == ids[0] + "-2"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_its_source_executed(name):
    committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert nbx.cells(committed) == nbx.cells(nbx.read_source(name)), (
        f"notebooks/{name}.ipynb is stale: re-run `python notebooks/execute.py {name}`"
    )
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "committed without executing every cell"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure in the committed outputs"
    not_drawn = [o for o in outputs if "<Figure size" in "".join(o.get("data", {}).get("text/plain", ""))
                 and "image/png" not in o.get("data", {})]
    assert not not_drawn, "a figure left as its text representation: the inline backend did not draw it"
    source_ids = [c.id for c in nbx.read_source(name).cells]
    assert [c.id for c in committed.cells if nbx.INJECTED not in c.metadata.get("tags", [])] == source_ids, (
        f"notebooks/{name}.ipynb has cell ids other than notebooks/execute.py gives: re-execute it"
    )
    size = committed.metadata.get("specdyn", {}).get("size")
    assert size in nbx.SIZES, "executed notebooks record their size (notebooks/execute.py writes it)"
    assert f"{size} size" in committed.cells[0].source, "the first cell says at which size the outputs are"
