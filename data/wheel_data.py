"""Data files shipped inside a registry package (docs/data.md: the offline road).

The machines here reach package registries and nothing else, so real data that a wheel
ships (gensim 4.4.0's test_data, recbole 1.2.1's dataset_example) is read from:

1. an installed copy of the package, when its version matches, else
2. the wheel itself, fetched once with ``pip download --no-deps PACKAGE==VERSION`` into
   the cache folder and read as a zip (a wheel is a zip file).

The member is copied to ``$TWOTOWER_DATA/wheels/PACKAGE-VERSION/MEMBER`` so later reads
are plain file reads.
"""

import glob
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile


def cache_dir(*parts):
    """The twotower cache folder: ``$TWOTOWER_DATA`` or ``~/.cache/twotower``, joined with ``parts``."""
    root = os.environ.get("TWOTOWER_DATA") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "twotower")
    path = os.path.join(root, *parts)
    os.makedirs(path, exist_ok=True)
    return path


def _installed_member(package, version, member):
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    path = os.path.join(str(dist.locate_file("")), member)
    return path if os.path.isfile(path) else None


def _download_wheel(package, version, folder):
    found = glob.glob(os.path.join(folder, f"{package}-{version}-*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--dest", folder, f"{package}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = glob.glob(os.path.join(folder, f"{package}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        raise RuntimeError(f"could not fetch the {package}=={version} wheel with "
                           f"{' '.join(cmd)!r}: {result.stderr.strip()[-500:]}")
    return found[0]


def wheel_member(package, version, member):
    """Path to ``member`` (a path inside the wheel, e.g. 'gensim/test/test_data/x.txt').

    Uses an installed ``package`` of exactly ``version`` when present, else the cached
    wheel (downloading it once). Raises FileNotFoundError when the wheel lacks the member.
    """
    installed = _installed_member(package, version, member)
    if installed:
        return installed
    folder = cache_dir("wheels", f"{package}-{version}")
    target = os.path.join(folder, member)
    if os.path.isfile(target):
        return target
    wheel = _download_wheel(package, version, folder)
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            raise FileNotFoundError(f"member {member!r} is not in {os.path.basename(wheel)}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target))
        with os.fdopen(fd, "wb") as out, zf.open(member) as src:
            shutil.copyfileobj(src, out)
        os.replace(tmp, target)
    return target


GENSIM_VERSION = "4.4.0"
GENSIM_TEST_DATA = "gensim/test/test_data/"


def gensim_test_data(name):
    """Path to a file of gensim 4.4.0's test_data folder (offline road; gensim not imported)."""
    return wheel_member("gensim", GENSIM_VERSION, GENSIM_TEST_DATA + name)
