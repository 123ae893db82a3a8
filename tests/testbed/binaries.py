"""Where the test bed's binaries live, so every launcher finds the ones `tests/testbed/build` made.

The build puts pinned binaries under `$BATON_CACHE/bin` with stable symlinks, and KubeRay's CRDs and
ClusterRole, copied from the module version its operator is built from, under
`$BATON_CACHE/kuberay/<version>`; Prometheus, containerd and runc come from Debian packages; images/build
leaves image archives in `$BATON_CACHE/images`. A missing binary or image is an error that says which
command makes it, never a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parent / "build"
IMAGES_SCRIPT = Path(__file__).resolve().parents[2] / "images" / "build"


class MissingBinaryError(RuntimeError):
    """A test-bed binary is not installed; the message names the build command."""


def cache_dir() -> Path:
    return Path(os.environ.get("BATON_CACHE", Path.home() / ".cache" / "baton"))


def bin_dir() -> Path:
    return cache_dir() / "bin"


def built(name: str) -> Path:
    """A binary built from the pinned Go modules: kube-apiserver, etcd, kubectl, helm, kuberay-operator..."""
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(
            f"{path} is missing: run {BUILD_SCRIPT} (builds the pinned test-bed binaries)"
        )
    return path


def system(name: str) -> Path:
    """A binary from a Debian package (prometheus, promtool, openssl)."""
    found = shutil.which(name)
    if found is None:
        raise MissingBinaryError(f"{name} is not on PATH: run {BUILD_SCRIPT} (installs it with apt-get)")
    return Path(found)


def image_archive(name: str) -> Path:
    """The newest docker-archive of a built image: operator, pool (images/build) or pause (the build)."""
    path = cache_dir() / "images" / f"{name}.tar"
    if not path.exists():
        script = BUILD_SCRIPT if name == "pause" else IMAGES_SCRIPT
        raise MissingBinaryError(f"{path} is missing: run {script}")
    return path


def kuberay_manifests() -> Path:
    """KubeRay's `crds/` (RayCluster, RayJob, RayService) and `rbac/role.yaml`, of the built operator."""
    path = cache_dir() / "kuberay" / "current"
    if not (path / "crds").is_dir():
        raise MissingBinaryError(
            f"{path}/crds is missing: run {BUILD_SCRIPT} (copies them from the KubeRay module)"
        )
    return path.resolve()
