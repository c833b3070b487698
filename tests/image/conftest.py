"""The image, built once per session for both modules (tests/image/podman.py)."""

from __future__ import annotations

import shutil

import pytest

from tests.image.podman import build_context, build_image, podman


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        pytest.fail("make test-image needs podman and mmdebstrap: `make image-tools` installs them", pytrace=False)
    built = build_image(build_context(tmp_path_factory.mktemp("image") / "context"))
    podman("image", "prune", "-f")  # the build stage's layers
    return built
