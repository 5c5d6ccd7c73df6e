"""External assets (issue 2): resolution order config > env > cache > download, checksums, offline errors.

Downloads go through pooch over real HTTP, from a server on the loopback interface (127.0.0.1) that
serves a temporary folder; nothing leaves the machine.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from nvsynth.core import assets
from nvsynth.core.errors import AssetError

CONTENT = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _spec(url: str | None, sha: str | None = hashlib.sha256(CONTENT).hexdigest()) -> assets.AssetSpec:
    return assets.AssetSpec(
        name="test mesh",
        filename="mesh.obj",
        env_var="NVSYNTH_TEST_ASSET",
        config_key="assets.test_mesh",
        url=url,
        sha256=sha,
    )


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class Server:
    root: Path  # the folder it serves
    url: str  # http://127.0.0.1:PORT/

    def put(self, name: str, data: bytes) -> str:
        """Serve ``data`` as ``name``; its URL."""
        (self.root / name).write_bytes(data)
        return self.url + name


def _serve(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # loopback only, never through a proxy
    monkeypatch.delenv("NVSYNTH_OFFLINE", raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}/")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """An HTTP server on 127.0.0.1 serving ``tmp_path/remote``; downloads allowed."""
    root = tmp_path / "remote"
    root.mkdir()
    yield from _serve(root, monkeypatch)


def _file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_resolution_order(tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(server.put("mesh.obj", CONTENT))
    cache = tmp_path / "cache"
    configured = _file(tmp_path / "cfg" / "mine.obj", "config")
    env = _file(tmp_path / "env" / "theirs.obj", "env")
    cached = _file(cache / "mesh.obj", "cache")
    monkeypatch.setenv("NVSYNTH_TEST_ASSET", str(env))
    assert assets.resolve(spec, configured, cache) == configured  # config first
    assert assets.resolve(spec, None, cache) == env  # then the environment
    monkeypatch.delenv("NVSYNTH_TEST_ASSET")
    assert assets.resolve(spec, None, cache) == cached  # then the cache
    assert cached.read_text() == "cache"  # used as it is, not re-downloaded
    cached.unlink()
    got = assets.resolve(spec, None, cache)  # then the download
    assert got == cache / "mesh.obj" and got.read_bytes() == CONTENT
    assert sorted(p.name for p in cache.iterdir()) == ["mesh.obj"]  # no temporary file left
    assert configured.read_text() == "config" and env.read_text() == "env"


def test_download_creates_the_cache_folder(tmp_path: Path, server: Server) -> None:
    cache = tmp_path / "deep" / "cache"
    got = assets.resolve(_spec(server.put("mesh.obj", CONTENT)), None, cache)
    assert got == cache / "mesh.obj" and _sha256(got) == hashlib.sha256(CONTENT).hexdigest()


def test_folder_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``is_dir_key``: the config key / env var name a folder that holds the file (targets_dir)."""
    spec = _spec(None, None)
    folder = tmp_path / "targets"
    f = _file(folder / "mesh.obj", "x")
    assert assets.resolve(spec, folder, tmp_path / "cache", is_dir_key=True) == f
    monkeypatch.setenv("NVSYNTH_TEST_ASSET", str(folder))
    assert assets.resolve(spec, None, tmp_path / "cache", is_dir_key=True) == f
    monkeypatch.setenv("NVSYNTH_TEST_ASSET", str(tmp_path / "elsewhere"))
    with pytest.raises(AssetError, match=r"NVSYNTH_TEST_ASSET: .*elsewhere/mesh\.obj not found"):
        assets.resolve(spec, None, tmp_path / "cache", is_dir_key=True)


def test_missing_configured_or_env_file_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(None, None)
    _file(tmp_path / "cache" / "mesh.obj", "cached")  # present, but an explicit setting must not fall through
    with pytest.raises(AssetError, match=r"assets\.test_mesh: .*nope\.obj not found"):
        assets.resolve(spec, tmp_path / "nope.obj", tmp_path / "cache")
    monkeypatch.setenv("NVSYNTH_TEST_ASSET", str(tmp_path / "gone.obj"))
    with pytest.raises(AssetError, match=r"NVSYNTH_TEST_ASSET: .*gone\.obj not found"):
        assets.resolve(spec, None, tmp_path / "cache")


def test_wrong_checksum_is_one_line_with_both_sums_and_nothing_is_left(tmp_path: Path, server: Server) -> None:
    cache = tmp_path / "cache"
    url = server.put("mesh.obj", CONTENT)
    with pytest.raises(AssetError, match="expected 0000") as info:
        assets.resolve(_spec(url, sha="0" * 64), None, cache)
    msg = str(info.value)
    assert f"has sha256 {hashlib.sha256(CONTENT).hexdigest()}, expected {'0' * 64}" in msg
    assert f"put mesh.obj at {cache / 'mesh.obj'}" in msg and url in msg  # where to put it by hand, from where
    assert "assets.test_mesh" in msg and "NVSYNTH_TEST_ASSET" in msg and "\n" not in msg
    assert list(cache.iterdir()) == []  # neither the file nor a temporary


@pytest.mark.parametrize("where", ["missing-on-server", "closed-port"])
def test_unreachable_download_says_where_to_put_the_file(tmp_path: Path, server: Server, where: str) -> None:
    cache = tmp_path / "cache"
    if where == "missing-on-server":
        url = server.url + "no-such-file.obj"  # HTTP 404
    else:
        with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/mesh.obj"
    with pytest.raises(AssetError, match="could not be downloaded") as info:
        assets.resolve(_spec(url), None, cache)
    msg = str(info.value)
    assert str(cache / "mesh.obj") in msg and "assets.test_mesh" in msg and "NVSYNTH_TEST_ASSET" in msg
    assert f"(source: {url})" in msg
    assert "\n" not in msg and (not cache.exists() or list(cache.iterdir()) == [])


def test_offline_and_absent_is_one_line_saying_where(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVSYNTH_OFFLINE", "1")  # the reachable URL must not be used
    cache = tmp_path / "cache"
    url = server.put("mesh.obj", CONTENT)
    with pytest.raises(AssetError) as info:
        assets.resolve(_spec(url), None, cache)
    msg = str(info.value)
    assert "NVSYNTH_OFFLINE=1" in msg and f"put mesh.obj at {cache / 'mesh.obj'}" in msg
    assert "assets.test_mesh" in msg and "NVSYNTH_TEST_ASSET" in msg and url in msg
    assert "\n" not in msg and not (cache / "mesh.obj").exists()
    # an asset with no public source: same advice, no URL
    with pytest.raises(AssetError, match=r"test mesh not found: put mesh\.obj at"):
        assets.resolve(_spec(None, None), None, cache)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert assets.default_cache_dir(tmp_path / "mine") == tmp_path / "mine"  # assets.cache_dir wins
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_CACHE_HOME applies on Linux only")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.default_cache_dir() == tmp_path / "xdg" / "nvsynth"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert assets.default_cache_dir() == Path.home() / ".cache" / "nvsynth"


def test_cache_dir_without_config_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_CACHE_HOME applies on Linux only")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cached = _file(tmp_path / "xdg" / "nvsynth" / "mesh.obj", "cache")
    assert assets.resolve(_spec(None, None), None) == cached


def test_pinned_checksums_match_the_shared_copies(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pinned sha256 of each public asset is that of the file the project was developed with,
    and the real spec downloads (here over HTTP from a loopback copy) into the cache."""
    pinned = [
        (assets.FACE_TEMPLATE, shared / "assets"),
        (assets.FACE_LANDMARK_MODEL, shared / "assets"),
        (assets.IRIS_LANDMARK_MODEL, shared / "assets"),
        (assets.EYEDIAP_CS, shared / "targets"),
        (assets.EYEDIAP_FT, shared / "targets"),
    ]
    for spec, folder in pinned:
        assert _sha256(folder / spec.filename) == spec.sha256, spec.name
    for server in _serve(shared / "assets", monkeypatch):
        monkeypatch.delenv(assets.FACE_TEMPLATE.env_var, raising=False)
        spec = dataclasses.replace(assets.FACE_TEMPLATE, url=server.url + "canonical_face_model.obj")
        got = assets.resolve(spec, None, tmp_path / "cache")
        assert got == tmp_path / "cache" / "canonical_face_model.obj"
        assert _sha256(got) == assets.FACE_TEMPLATE.sha256
