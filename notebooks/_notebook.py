"""Write a notebook (no outputs) from a list of ("md" | "code", source) cells; used by make_0N_*.py."""

import nbformat as nbf


def write_notebook(cells, path: str) -> None:
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(s) if kind == "md" else nbf.v4.new_code_cell(s) for kind, s in cells]
    nbf.write(nb, path)
