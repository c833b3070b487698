"""Podman on this machine, as `make test-image` uses it: the engine's local settings, a base image made from
Debian's own packages, a wheelhouse built on the host, and the image built from the repository's Dockerfile.

Two facts of a machine like CI's: containers may not set rlimits (``setrlimit … operation not permitted``), so
podman runs with ``default_ulimits = []`` and ``runc``, and the host's network; and no registry is reachable, so
the base is ``mmdebstrap``'d from Debian's packages and ``podman import``ed (cached in var/image-cache).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "var" / "image-cache"
BASE = "localhost/zhangben-base:bookworm"
IMAGE = "localhost/zhangben:test"
# the names compose.yaml asks for, given to the images made here (it is run unchanged)
COMPOSE_IMAGE = "localhost/zhangben:latest"
POSTGRES = "docker.io/library/postgres:15-bookworm"
CONTAINERS_CONF = """\
# podman's settings for make test-image (tests/image/podman.py): no rlimits in containers, the runc runtime
[containers]
default_ulimits = []
[engine]
runtime = "runc"
"""


def env() -> dict[str, str]:
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], env=env(), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} …: {done.stderr.strip()[-2000:]}")
    return done


def debian_image(name: str, packages: str) -> str:
    """An image of Debian bookworm with ``packages``, from Debian's own packages (made once, ~30 s, then cached)."""
    if podman("image", "exists", name, check=False).returncode == 0:
        return name
    tar = CACHE / f"{name.rsplit('/', 1)[-1].replace(':', '-')}.tar"
    if not tar.exists():
        made = subprocess.run(
            ["mmdebstrap", "--variant=apt", f"--include={packages}", "bookworm", str(tar)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if made.returncode != 0:
            tar.unlink(missing_ok=True)
            raise AssertionError(f"mmdebstrap: {made.stderr.strip()[-2000:]}")
    podman("import", str(tar), name)
    return name


def base_image() -> str:
    """The image's BASE here: python3 and python3-venv, as the public Python image has them."""
    return debian_image(BASE, "python3,python3-venv,ca-certificates")


def postgres_image() -> str:
    """A stand-in for the official PostgreSQL image compose.yaml names (tests/image/postgres/), under its name."""
    if podman("image", "exists", POSTGRES, check=False).returncode != 0:
        debian = debian_image("localhost/zhangben-postgres-base:bookworm", "postgresql-15,ca-certificates")
        podman("build", "--format", "docker", "--network", "host", "--build-arg", f"BASE={debian}",
               "-t", POSTGRES, str(Path(__file__).parent / "postgres"))  # fmt: skip
    return POSTGRES


def build_context(into: Path) -> Path:
    """What the Dockerfile's COPY lines name, and a wheelhouse of every dependency built on the host with pip."""
    into.mkdir(parents=True)
    dockerfile = (ROOT / "Dockerfile").read_text()
    shutil.copy(ROOT / "Dockerfile", into / "Dockerfile")
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for name in source.split():
            origin = ROOT / name.rstrip("/")
            if origin.is_dir():
                shutil.copytree(origin, into / origin.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(origin, into / origin.name)
    wheels = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(into / "wheelhouse"), ".", "setuptools>=77", "wheel"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if wheels.returncode != 0:
        raise AssertionError(f"pip wheel: {wheels.stderr.strip()[-2000:]}")
    for own in (into / "wheelhouse").glob("zhangben-*.whl"):
        own.unlink()  # the image builds its own from the context
    return into


def build_image(context: Path) -> str:
    """The repository's Dockerfile, unchanged, on the Debian-made base, offline (only the wheelhouse)."""
    podman(
        "build",
        "--format", "docker",  # keeps the HEALTHCHECK (the OCI format has none)
        "--network", "host",
        "--build-arg", f"BASE={base_image()}",
        "--build-arg", "PIP_NO_INDEX=1",
        "-t", IMAGE,
        str(context),
        timeout=1800,
    )  # fmt: skip
    return IMAGE
