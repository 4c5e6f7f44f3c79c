"""Every Python block of the README runs as printed, in order, in one namespace (as a
reader pastes them into one session), after the README's own `twotower convert` line has
made the Parquet folder its log example reads; and the first example learns."""

import os
import pathlib
import re
import shlex

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, re.S)


def readme_command(text, prefix):
    """The README's first indented command line starting with ``prefix``, as argv
    (the comment after ``#`` dropped)."""
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("    ") and stripped.startswith(prefix):
            return shlex.split(stripped.split(" #")[0])
    raise AssertionError(f"no README line starts with {prefix!r}")


def write_my_log(folder, n_users=200, n_items=60, seed=0):
    """my_log.csv as the README shows it: string ids, Unix-second timestamps."""
    rng = np.random.default_rng(seed)
    with open(os.path.join(folder, "my_log.csv"), "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in range(n_users):
            for t in range(8):
                f.write(f"u{u},item_{int(rng.integers(n_items)):03d},{1714564800 + 60 * t}\n")


def test_the_readme_starts_with_its_two_set_up_commands():
    text = README.read_text()
    assert text.index("make demo") < 400 and text.index("make test") < 400
    # the command that puts `twotower` on the PATH follows the set-up commands
    assert ". .venv/bin/activate" in text[:1200]


def test_every_python_block_runs_as_printed(tmp_path, monkeypatch):
    import twotower.cli as cli

    text = README.read_text()
    blocks = python_blocks(text)
    assert len(blocks) >= 4, len(blocks)
    monkeypatch.chdir(tmp_path)
    write_my_log(str(tmp_path))
    argv = readme_command(text, "twotower convert")
    assert argv[:3] == ["twotower", "convert", "my_log.csv"], argv
    assert cli.main(argv[1:]) == 0
    scope = {}
    for number, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"README.md python block {number}", "exec"), scope)
        except Exception as e:  # name the block that broke
            pytest.fail(f"README python block {number} failed: {type(e).__name__}: {e}")
    # the first example learns: each user's 5 liked items near the top of its 500 scores
    u, v = scope["user_vectors"], scope["item_vectors"]
    assert u.shape == (1000, 32) and v.shape == (500, 32)
    users = np.arange(200)
    top = np.argsort(-(u[users] @ v.T), axis=1)[:, :10]
    liked = (users[:, None] * 7 + np.arange(5)) % 500
    hits = np.mean([np.isin(liked[i], top[i]).mean() for i in range(200)])
    assert hits > 0.5, hits
    # the index block: answers by user id leave out what the user has seen
    ids = scope["retriever"].u2i_users([0, 1], k=10)[0]
    for row, user in zip(ids, (0, 1)):
        assert not set(row.tolist()) & set(scope["seen"][user].tolist())
    assert scope["r"].num_items == 499


def write_own_log(folder, seed=0):
    """my_log.csv and items.csv in the README's layout, holding its example ids (u0,
    item_042): 300 users who each keep to one of 4 categories of 50 items."""
    rng = np.random.default_rng(seed)
    cats = ("shoes", "books", "games", "music")
    with open(os.path.join(folder, "my_log.csv"), "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in range(300):
            for t in range(10):
                item = (u % 4) * 50 + int(rng.integers(50))
                f.write(f"u{u},item_{item:03d},{1714564800 + 3600 * t + u}\n")
    with open(os.path.join(folder, "items.csv"), "w") as f:
        f.write("item_id,category,title,price,tags\n")
        for i in range(200):
            f.write(f"item_{i:03d},{cats[i // 50]},{cats[i // 50].title()} item {i} in red,"
                    f"{10 + i % 37}.90,{'sale|new' if i % 3 else 'new'}\n")


@pytest.mark.slow
def test_the_own_log_commands_run_as_printed_after_activate(tmp_path):
    """The README's own-log road, each line as printed, with the venv's bin on PATH (what
    `. .venv/bin/activate` does): train, serve, and the two curl lines."""
    import json
    import subprocess
    import sys
    import time

    text = README.read_text()
    lines = [line.strip().split(" #")[0].strip() for line in text.splitlines()
             if line.startswith("    ")]
    train = next(x for x in lines if x.startswith("twotower youtube --interactions my_log.csv"))
    serve = next(x for x in lines if x.startswith("twotower serve out/mine/index"))
    curls = [x for x in lines if x.startswith("curl -s 127.0.0.1:8080/")][:2]
    assert len(curls) == 2, curls
    write_own_log(str(tmp_path))
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get("PATH", ""))
    env.pop("TWOTOWER_DEBUG", None)
    done = subprocess.run(train, shell=True, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    # no TensorFlow/absl log noise on a CPU machine
    assert "cuInit" not in done.stderr and "absl" not in done.stderr, done.stderr[-2000:]
    server = subprocess.Popen(serve, shell=True, cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            up = subprocess.run("curl -s 127.0.0.1:8080/health", shell=True,
                                capture_output=True, text=True, timeout=10)
            if up.returncode == 0 and up.stdout:
                break
            assert server.poll() is None and time.time() < deadline, "serve did not start"
            time.sleep(0.5)
        answers = [json.loads(subprocess.run(c, shell=True, capture_output=True, text=True,
                                             timeout=30).stdout) for c in curls]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    u2i, i2i = answers
    logged = {line.split(",")[1] for line in open(tmp_path / "my_log.csv")
              if line.startswith("u0,")}
    assert len(u2i["item_ids"][0]) == 10 and not logged & set(u2i["item_ids"][0]), u2i
    assert len(i2i["item_ids"][0]) == 10 and "item_042" not in i2i["item_ids"][0], i2i
