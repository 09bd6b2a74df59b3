"""What ran, where: the environment record of config.json and ``medchallenge env``.

A result is only reproducible when its run says which code, libraries and hardware made it, so
every run folder records the command line, the package version and git commit, Python, torch,
CUDA and cuDNN versions, the devices, and the mixed-precision type actually used.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from medchallenge import __version__

PACKAGE_DIR = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "SimpleITK", "openslide-python",
             "openslide-bin", "tifffile", "imagecodecs", "efficientnet-pytorch", "typer", "rich")


def git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with local changes) when the package runs from a git checkout."""
    root = PACKAGE_DIR.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries results depend on (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def devices() -> dict[str, Any]:
    """CUDA availability, versions and the name and memory of every visible GPU."""
    import torch

    info: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "gpus": []}
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append({"index": index, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    return info


def environment() -> dict[str, Any]:
    """The whole environment record (versions, commit, host, devices)."""
    return {"medchallenge": __version__, "git_commit": git_commit(), "python": platform.python_version(),
            "platform": platform.platform(), "host": socket.gethostname(), "libraries": library_versions(),
            **devices()}


def run_record(device: Any, amp_dtype: Any) -> dict[str, Any]:
    """What config.json records about how a run was started and on what."""
    return {"command": [Path(sys.argv[0]).name, *sys.argv[1:]], "cwd": str(Path.cwd()),
            "device": str(device), "amp_dtype": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
            "environment": environment()}


def fingerprint(path: Path) -> str | None:
    """A SHA-256 that changes when the data at ``path`` changes; None when it does not exist.

    A file is hashed whole (up to 256 MB; larger ones by size and modification time). A folder
    (a tile cache, a dataset) is hashed by its metadata and index files (``*.json``, ``*.csv`` at
    its top) and the relative path and size of every file in it, without reading images.
    """
    import hashlib
    import os

    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        _hash_file(digest, path)
        return digest.hexdigest()
    if not path.is_dir():
        return None
    for index in sorted([*path.glob("*.json"), *path.glob("*.csv")]):
        digest.update(index.name.encode())
        _hash_file(digest, index)
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(folder, name)
            digest.update(f"{file.relative_to(path)}\0{file.stat().st_size}\n".encode())
    return digest.hexdigest()


def _hash_file(digest: Any, path: Path, limit: int = 256 << 20) -> None:
    stat = path.stat()
    if stat.st_size > limit:
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        return
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def data_record(options: Any) -> dict[str, Any]:
    """Every input path among a run's options: its absolute path and :func:`fingerprint`."""
    import dataclasses

    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    else:
        values = dict(options or {}) if isinstance(options, dict) else {}
    return {name: {"path": str(Path(value).absolute()), "fingerprint": fingerprint(Path(value))}
            for name, value in values.items() if isinstance(value, Path) and Path(value).exists()}


def pretrained_files() -> list[dict[str, Any]]:
    """Every pretrained weight file the toolkit can use, where it is looked for, and whether it is there."""
    import torchvision.models as tvm

    from medchallenge.core.backbones import ARCHS, weights_file_name
    from medchallenge.core.pretrained import hub_checkpoint_dir

    folder = hub_checkpoint_dir()
    names = {arch: weights_file_name(arch) for arch in ARCHS}
    names["retinanet_resnet50_fpn_v2 (COCO, midog)"] = Path(tvm.detection.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1.url).name
    return [{"model": model, "file": str(folder / name), "present": (folder / name).is_file()}
            for model, name in names.items()]
