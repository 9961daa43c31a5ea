"""W0's cached decomposition: a hit gives what a miss gives, and an entry is named by its content."""

from __future__ import annotations

import torch

from bench.analysis import decompose, w0_cache


def test_a_hit_gives_the_basis_a_miss_gave_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    w = torch.randn(24, 16, generator=torch.Generator().manual_seed(0))
    first, hit = w0_cache.w0_basis(w, top_k=4)
    assert not hit
    (entry,) = (tmp_path / "analysis" / "w0").iterdir()
    assert entry.name == w0_cache.key(w) + ".pt"
    stamp = entry.stat().st_mtime_ns
    second, hit = w0_cache.w0_basis(w, top_k=4)
    assert hit and entry.stat().st_mtime_ns == stamp
    for a, b in ((first.U, second.U), (first.S, second.S), (first.V, second.V)):
        assert torch.equal(a, b)
    assert (first.route, first.error) == (second.route, second.error)
    direct = decompose.w0_basis(w, top_k=4)  # what the stage computes without a cache
    assert torch.equal(direct.U, first.U) and torch.equal(direct.S, first.S)
    assert torch.allclose(direct.V, first.V, atol=1e-12)
    # another k on a hit: V's columns are rebuilt from U and S
    wider, hit = w0_cache.w0_basis(w, top_k=6)
    assert hit and torch.allclose(wider.V[:, :4], first.V, atol=1e-12)
    assert torch.allclose(w.double() @ wider.V, wider.U[:, :6] * wider.S[:6], atol=1e-5)


def test_another_matrix_is_another_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    changed = w.clone()
    changed[3, 5] += 1e-6
    assert w0_cache.key(w) != w0_cache.key(changed) != w0_cache.key(w.reshape(4, 16))
    w0_cache.w0_basis(w, 2)
    assert not w0_cache.w0_basis(changed, 2)[1]
    assert len(list((tmp_path / "analysis" / "w0").iterdir())) == 2


def test_a_torn_entry_is_recomputed_and_the_cache_can_be_off(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    w = torch.randn(10, 6, generator=torch.Generator().manual_seed(2))
    path = w0_cache.directory() / (w0_cache.key(w) + ".pt")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half an entry")
    basis, hit = w0_cache.w0_basis(w, 3)
    assert not hit and torch.load(path, weights_only=True)["route"] == basis.route
    torch.save({"U": basis.U}, path)  # loadable but not an entry
    assert not w0_cache.w0_basis(w, 3)[1]
    other = torch.randn(10, 6, generator=torch.Generator().manual_seed(3))
    assert not w0_cache.w0_basis(other, 3, use_cache=False)[1]
    assert not (w0_cache.directory() / (w0_cache.key(other) + ".pt")).exists()
