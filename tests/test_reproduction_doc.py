"""REPRODUCTION.md shows its evidence: every committed figure (docs/figures/*.png) is
embedded as a markdown image, every image and link it names exists, and every embedded
figure has a caption with the command that regenerates it — a sweep file that exists and
plots the figure the caption says it writes, or a Python command whose imports resolve."""

import ast
import importlib
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "REPRODUCTION.md").read_text(encoding="utf-8")
FIGURES = sorted(p.name for p in (ROOT / "docs" / "figures").glob("*.png"))
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _captions() -> dict[str, str]:
    """figure file name -> the paragraph after its image (its caption)."""
    out = {}
    for m in IMAGE.finditer(DOC):
        rest = DOC[m.end():].lstrip("\n")
        out[Path(m.group(2)).name] = rest.split("\n\n", 1)[0]
    return out


CAPTIONS = _captions()


def test_every_figure_is_embedded_once_with_alt_text():
    assert FIGURES, "no figures in docs/figures"
    embedded = [(alt, path) for alt, path in IMAGE.findall(DOC)]
    paths = [path for _, path in embedded]
    for name in FIGURES:
        assert paths.count(f"docs/figures/{name}") == 1, f"docs/figures/{name} is embedded {paths.count(f'docs/figures/{name}')} times"
    assert all(len(alt.split()) >= 3 for alt, _ in embedded), "an image without a descriptive alt text"


def test_every_image_and_link_target_exists():
    targets = [path for _, path in IMAGE.findall(DOC)] + LINK.findall(DOC)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+://", t) and not t.startswith("#")]
    assert local
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing


@pytest.mark.parametrize("name", FIGURES)
def test_caption_names_the_figure_and_a_command_that_regenerates_it(name):
    caption = CAPTIONS[name]
    stem = name.removesuffix(".png")
    assert caption.startswith(f"*{stem}* — "), caption[:80]
    commands = re.findall(r"Regenerate:.*?`((?:specdyn|python) [^`]+)`", caption, re.DOTALL)
    assert commands, f"{name}: no 'Regenerate: `command`' in its caption"
    command = commands[0]
    for file in re.findall(r"`(sweeps/[\w/]+\.toml)`", caption):
        assert (ROOT / file).is_file(), file
    sweep = re.match(r"specdyn sweep (\S+\.toml)$", command)
    if sweep and sweep.group(1) != "COPY.toml":
        file = ROOT / sweep.group(1)
        assert file.is_file(), file
        writes = re.search(r"\(writes `out/([^/]+)/([^/]+)/([\w-]+)\.png`\)", caption)
        assert writes, f"{name}: the caption says which PNG the sweep writes"
        folder, out_name, figure = writes.groups()
        assert (folder, out_name) == (file.parent.name, file.stem)  # specdyn sweep's default --out
        plotted = tomllib.loads(file.read_text(encoding="utf-8"))["plot"]["figures"]
        assert figure.replace("-", ".", 1) in plotted, (figure, plotted)
    elif command.startswith("python -m "):
        module = command.split()[2]
        assert importlib.util.find_spec(module) is not None, module
    elif command.startswith("python -c "):
        code = command.removeprefix("python -c ").strip('"')
        assert f"savefig('{name}'" in code, f"{name}: the command saves another file"
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom):
                mod = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(mod, alias.name), f"{node.module}.{alias.name}"
    else:
        assert "COPY.toml" in command, command
