"""`make docs`: the site (mkdocs.yml, docs/, the API reference from the docstrings) builds
offline with warnings as errors, and its API pages document the library's names."""

import re
import subprocess
import sys
from pathlib import Path

import twotower

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict_and_document_the_public_names(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"

    losses = (site / "api" / "twotower.losses.html").read_text(encoding="utf-8")
    assert 'id="twotower.losses.retrieval.RetrievalLoss"' in losses
    assert "The loss family of docs/formulation.md as one layer." in losses

    # docs/api/index.md's table of twotower's public names: every one a resolved link
    # (an unresolved one is already a --strict failure; this catches a dropped table)
    overview = (site / "api" / "index.html").read_text(encoding="utf-8")
    linked = set(re.findall(r'<a[^>]*href="[^"]+#twotower\.[\w.]+"[^>]*><code>(\w+)</code>',
                            overview))
    assert set(twotower._EXPORTS) <= linked, sorted(set(twotower._EXPORTS) - linked)

    # the design notes are pages too, README.md the home page
    assert (site / "index.html").is_file() and (site / "formulation.html").is_file()
