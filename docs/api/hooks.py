"""How the API reference reads the library: mkdocs hooks and a griffe extension.

They keep mkdocstrings on static analysis (griffe reads the source; nothing is imported,
so TensorFlow never loads during `make docs`).

`on_startup` (mkdocs hook). The repository keeps towers/ losses/ data/ ... at the top
level and pyproject's package-dir maps each into the `twotower` namespace; griffe only
knows the ordinary layout, where `twotower.towers` lives in twotower/towers/. Before each
build this lays that layout out of symbolic links under build/griffe/ (git-ignored; the
handler's `paths` in mkdocs.yml points there): twotower/ links each entry of the real
twotower/ folder, plus one link a mapped package. The mapping is read from pyproject.toml,
so a new package there needs no change here.

`on_page_markdown` (mkdocs hook) fills docs/api/index.md's `<!-- twotower-exports -->`
with the table of twotower's public names, read from `_EXPORTS` in twotower/__init__.py
(parsed, not imported): each is a cross-reference, so a name whose page is gone fails the
strict build.

`DocumentOnce` (griffe extension, listed under the handler's `extensions`). A package
that re-exports its modules' names in `__all__` would show each of them twice: once under
the package and once in its module. This keeps them under their module only; links to
the package-level name (`twotower.towers.IDTower`) still resolve, to the module's entry.
"""

import ast
import os
import tomllib
from pathlib import Path

import griffe

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "build" / "griffe"


def _package_dirs():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["tool"]["setuptools"]["package-dir"])


def _link(target, link):
    """Points `link` at `target` (relative), replacing a stale link; safe when two builds
    lay the same tree at once."""
    rel = os.path.relpath(target, link.parent)
    if link.is_symlink() and os.readlink(link) == rel:
        return
    if link.is_symlink():
        link.unlink(missing_ok=True)
    try:
        os.symlink(rel, link)
    except FileExistsError:
        pass


def lay_tree():
    """build/griffe/twotower/ as an installed twotower would look; returns build/griffe."""
    dirs = _package_dirs()
    top = TREE / "twotower"
    top.mkdir(parents=True, exist_ok=True)
    wanted = {entry.name: entry for entry in (ROOT / dirs.pop("twotower")).iterdir()
              if entry.name != "__pycache__"}
    for name, folder in dirs.items():
        wanted[name.split(".", 1)[1]] = ROOT / folder
    for entry in top.iterdir():
        if entry.name not in wanted:
            entry.unlink(missing_ok=True)
    for name, target in wanted.items():
        _link(target, top / name)
    return TREE


def on_startup(**kwargs):
    lay_tree()


class DocumentOnce(griffe.Extension):
    """Hides a package's re-exports of its own modules' objects (documented there)."""

    def on_package(self, *, pkg, **kwargs):
        self._hide(pkg)

    def _hide(self, module):
        for member in module.members.values():
            if member.is_alias:
                inside = member.target_path.removeprefix(module.path + ".")
                # only when its module has a page of its own (no private name on the way)
                if (module.is_init_module and inside != member.target_path
                        and not any(part.startswith("_") for part in inside.split(".")[:-1])):
                    member.public = False
            elif member.is_module:
                self._hide(member)


EXPORTS_MARKER = "<!-- twotower-exports -->"


def exports_table():
    """The Markdown table of twotower/__init__.py's `_EXPORTS` (read, not imported), each
    name a cross-reference that `mkdocs build --strict` fails on when it does not resolve."""
    source = (ROOT / _package_dirs()["twotower"] / "__init__.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            exports = ast.literal_eval(node.value)
            break
    else:
        raise ValueError("twotower/__init__.py has no _EXPORTS dict")
    rows = [f"| [`{name}`][{module}.{name}] | `{module}` |"
            for name, module in sorted(exports.items(), key=lambda kv: (kv[1], kv[0]))]
    return "\n".join(["| name | defined in |", "|---|---|", *rows])


def on_page_markdown(markdown, page, **kwargs):
    if EXPORTS_MARKER in markdown:
        markdown = markdown.replace(EXPORTS_MARKER, exports_table())
    return markdown
