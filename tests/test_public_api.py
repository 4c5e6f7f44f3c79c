"""Every public name of ``twotower`` imports (the moves of the house kept them)."""

import importlib

import twotower


def test_every_public_name_imports():
    missing = []
    for name in twotower.__all__:
        try:
            getattr(twotower, name)
        except (AttributeError, ImportError) as e:
            missing.append(f"{name}: {e}")
    assert missing == []


def test_every_package_imports():
    for package in ("towers", "losses", "data", "metrics", "training", "index",
                    "index.server", "recipes"):
        assert importlib.import_module(f"twotower.{package}").__doc__
