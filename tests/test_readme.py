"""The README's model.fit example runs as written, and learns."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_fit_example_runs_and_learns():
    text = README.read_text()
    assert text.index("make demo") < 400 and text.index("make test") < 400
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    u, v = scope["user_vectors"], scope["item_vectors"]
    assert u.shape == (1000, 32) and v.shape == (500, 32)
    # each user's 5 liked items should be near the top of its 500 scores
    users = np.arange(200)
    top = np.argsort(-(u[users] @ v.T), axis=1)[:, :10]
    liked = (users[:, None] * 7 + np.arange(5)) % 500
    hits = np.mean([np.isin(liked[i], top[i]).mean() for i in range(200)])
    assert hits > 0.5, hits
