"""What every recipe and benchmark reports: flat numeric metrics.json, a readable table,
and a PNG where a person would rather look than read (docs/conventions.md)."""

import math
import numbers
import os

from twotower.artifacts import atomic_write_json


def flatten_metrics(metrics, prefix=""):
    """Flattens nested dicts into flat keys joined by '_'; keeps numbers only.

    Raises ValueError naming the key when a value is not a number (metrics.json is flat
    keys and numbers).
    """
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, prefix=f"{name}_"))
        elif isinstance(value, bool):
            flat[name] = int(value)
        elif isinstance(value, numbers.Number):
            flat[name] = float(value) if not isinstance(value, numbers.Integral) else int(value)
        elif hasattr(value, "item") and getattr(value, "size", 2) == 1:  # numpy scalar
            flat[name] = value.item()
        else:
            raise ValueError(f"metric {name!r} must be a number, got {value!r}")
    return flat


def write_metrics(out_dir, metrics, filename="metrics.json"):
    """Writes flat numeric ``metrics`` to ``out_dir/metrics.json`` atomically; returns path."""
    flat = flatten_metrics(metrics)
    path = os.path.join(out_dir, filename)
    atomic_write_json(path, flat)
    return path


def format_table(rows, columns=None, floatfmt="{:.4f}"):
    """Renders a list of dicts as a Markdown table (readable in a terminal and a README)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))

    def cell(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else floatfmt.format(v)
        return str(v)

    body = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(str(c)), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
    out = [line([str(c) for c in columns]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in body]
    return "\n".join(out)


def plot_curves(path, curves, *, xlabel, ylabel, title=None, logx=False, styles=None):
    """Saves a PNG line plot. ``curves`` maps a label to (xs, ys); ``styles`` optionally
    maps a label to matplotlib line keywords (e.g. a dashed line over a solid one, so
    that two equal curves both stay visible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, **{"marker": "o", "label": label, **(styles or {}).get(label, {})})
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def twotower_command():
    """How to type the ``twotower`` command in this environment, for printed hints:
    ``twotower`` when it is on PATH, else the console script beside the running Python
    (``.venv/bin/twotower`` after ``make setup`` without an activated venv), else
    ``python -m twotower.cli`` with that Python."""
    import shutil
    import sys

    if shutil.which("twotower"):
        return "twotower"
    here = os.path.join(os.path.dirname(sys.executable), "twotower")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        rel = os.path.relpath(here)
        return here if rel.startswith("..") else rel
    return f"{sys.executable} -m twotower.cli"
