"""External assets (issue 2): resolution order config > env > cache > download, checksums, offline errors."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from nvsynth.core import assets
from nvsynth.core.errors import UserError

CONTENT = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"


def _spec(url: str | None, sha: str | None = hashlib.sha256(CONTENT).hexdigest()) -> assets.AssetSpec:
    return assets.AssetSpec(
        name="test mesh",
        filename="mesh.obj",
        env_var="NVSYNTH_TEST_ASSET",
        config_key="assets.test_mesh",
        url=url,
        sha256=sha,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The 'remote' file, served through a file:// URL."""
    src = tmp_path / "remote" / "mesh.obj"
    src.parent.mkdir()
    src.write_bytes(CONTENT)
    return src


def _file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_resolution_order(tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(source.as_uri())
    cache = tmp_path / "cache"
    configured = _file(tmp_path / "cfg" / "mine.obj", "config")
    env = _file(tmp_path / "env" / "theirs.obj", "env")
    cached = _file(cache / "mesh.obj", "cache")
    monkeypatch.setenv("NVSYNTH_TEST_ASSET", str(env))
    assert assets.resolve(spec, configured, cache) == configured  # config first
    assert assets.resolve(spec, None, cache) == env  # then the environment
    monkeypatch.delenv("NVSYNTH_TEST_ASSET")
    assert assets.resolve(spec, None, cache) == cached  # then the cache
    cached.unlink()
    monkeypatch.delenv("NVSYNTH_OFFLINE", raising=False)
    got = assets.resolve(spec, None, cache)  # then the download
    assert got == cache / "mesh.obj" and got.read_bytes() == CONTENT
    assert sorted(p.name for p in cache.iterdir()) == ["mesh.obj"]  # no temporary file left
    assert configured.read_text() == "config" and env.read_text() == "env"


def test_folder_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``is_dir_key``: the config key / env var name a folder that holds the file (targets_dir)."""
    spec = _spec(None, None)
    folder = tmp_path / "targets"
    f = _file(folder / "mesh.obj", "x")
    assert assets.resolve(spec, folder, tmp_path / "cache", is_dir_key=True) == f
    monkeypatch.setenv("NVSYNTH_TEST_ASSET", str(folder))
    assert assets.resolve(spec, None, tmp_path / "cache", is_dir_key=True) == f
    monkeypatch.setenv("NVSYNTH_TEST_ASSET", str(tmp_path / "elsewhere"))
    with pytest.raises(UserError, match=r"NVSYNTH_TEST_ASSET: .*elsewhere/mesh\.obj not found"):
        assets.resolve(spec, None, tmp_path / "cache", is_dir_key=True)


def test_missing_configured_or_env_file_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(None, None)
    _file(tmp_path / "cache" / "mesh.obj", "cached")  # present, but an explicit setting must not fall through
    with pytest.raises(UserError, match=r"assets\.test_mesh: .*nope\.obj not found"):
        assets.resolve(spec, tmp_path / "nope.obj", tmp_path / "cache")
    monkeypatch.setenv("NVSYNTH_TEST_ASSET", str(tmp_path / "gone.obj"))
    with pytest.raises(UserError, match=r"NVSYNTH_TEST_ASSET: .*gone\.obj not found"):
        assets.resolve(spec, None, tmp_path / "cache")


def test_wrong_checksum_is_rejected_and_nothing_is_left(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NVSYNTH_OFFLINE", raising=False)
    cache = tmp_path / "cache"
    spec = _spec(source.as_uri(), sha="0" * 64)
    with pytest.raises(UserError, match="expected 0000") as info:
        assets.resolve(spec, None, cache)
    assert hashlib.sha256(CONTENT).hexdigest() in str(info.value) and "\n" not in str(info.value)
    assert list(cache.iterdir()) == []  # neither the file nor a temporary


def test_unreachable_download_says_where_to_put_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVSYNTH_OFFLINE", raising=False)
    cache = tmp_path / "cache"
    spec = _spec((tmp_path / "no-such-file.obj").as_uri())
    with pytest.raises(UserError, match="could not be downloaded") as info:
        assets.resolve(spec, None, cache)
    msg = str(info.value)
    assert str(cache / "mesh.obj") in msg and "assets.test_mesh" in msg and "NVSYNTH_TEST_ASSET" in msg
    assert "\n" not in msg and list(cache.iterdir()) == []


def test_offline_and_absent_is_one_line_saying_where(tmp_path: Path, source: Path) -> None:
    # conftest sets NVSYNTH_OFFLINE=1: the reachable URL must not be used
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as info:
        assets.resolve(_spec(source.as_uri()), None, cache)
    msg = str(info.value)
    assert "NVSYNTH_OFFLINE=1" in msg and f"put mesh.obj at {cache / 'mesh.obj'}" in msg
    assert "assets.test_mesh" in msg and "NVSYNTH_TEST_ASSET" in msg and source.as_uri() in msg
    assert "\n" not in msg and not (cache / "mesh.obj").exists()
    # an asset with no public source: same advice, no URL
    with pytest.raises(UserError, match=r"test mesh not found: put mesh\.obj at"):
        assets.resolve(_spec(None, None), None, cache)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.default_cache_dir() == tmp_path / "xdg" / "nvsynth"
    assert assets.default_cache_dir(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert assets.default_cache_dir() == Path.home() / ".cache" / "nvsynth"


def test_pinned_checksums_match_the_shared_copies(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pinned sha256 of each public asset is that of the file the project was developed with,
    and the real spec downloads (here from a file:// copy) into the cache."""
    assert assets.sha256_of(shared / "assets" / "canonical_face_model.obj") == assets.FACE_TEMPLATE.sha256
    assert assets.sha256_of(shared / "targets" / "EYEDIAP_CS_head_distribution.txt") == assets.EYEDIAP_CS.sha256
    assert assets.sha256_of(shared / "targets" / "EYEDIAP_FT_head_distribution.txt") == assets.EYEDIAP_FT.sha256
    monkeypatch.delenv("NVSYNTH_OFFLINE", raising=False)
    monkeypatch.delenv(assets.FACE_TEMPLATE.env_var, raising=False)
    spec = dataclasses.replace(assets.FACE_TEMPLATE, url=(shared / "assets" / "canonical_face_model.obj").as_uri())
    got = assets.resolve(spec, None, tmp_path / "cache")
    assert got == tmp_path / "cache" / "canonical_face_model.obj"
    assert assets.sha256_of(got) == assets.FACE_TEMPLATE.sha256
