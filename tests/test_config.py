"""Configuration (issue 2): defaults, the shipped file, validation errors, paths, overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nvsynth.app.cli import exit_code
from nvsynth.core.config import Config, from_dict, load_config, with_overrides
from nvsynth.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "nvsynth.app.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_defaults_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config_path.yaml here: built-in defaults
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.render.pattern == "gaussian" and cfg.render.views == 16 and cfg.render.seed == 0
    assert cfg.recon.detector == "dlib" and cfg.recon.workers == "auto"
    assert cfg.render.workers == "auto" and cfg.render.device == "auto"
    assert cfg.data.input is None and cfg.data.kind == "auto" and cfg.data.records is None
    assert cfg.data.background_path is None and cfg.render.normalization == "mpii-nv"
    assert len(cfg.digest()) == 16 and cfg.digest() == Config().digest()


def test_default_file_in_cwd_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config_path.yaml").write_text("render:\n  views: 3\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(None).render.views == 3


def test_repository_config_validates() -> None:
    """The shipped config_path.yaml has placeholder paths; validation must not require them to exist."""
    path = REPO / "config_path.yaml"
    cfg = load_config(path)
    raw = cfg.data.input
    assert raw is not None and not raw.exists()  # a placeholder, accepted as is
    assert cfg.data.records == (REPO / "recon_out").resolve()  # relative to the file's folder
    assert cfg.render.light.ambient == (0.4, 0.8)

    def keys(node: dict, prefix: str = "") -> set[str]:
        out: set[str] = set()
        for k, v in node.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    # the shipped file lists every key of the schema (it is the config reference)
    assert keys(yaml.safe_load(path.read_text())) == keys(Config().model_dump())


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("render:\n  viewz: 3\n", "render.viewz"),  # unknown key
        ("data:\n  mpii:\n    rw: /x\n", "data.mpii.rw"),  # unknown nested key
        ("colour: red\n", "colour"),  # unknown section
        ("render:\n  views: many\n", "render.views"),  # wrong type
        ("render:\n  light:\n    probability: often\n", "render.light.probability"),  # wrong type, nested
        ("render:\n  pattern: spiral\n", "render.pattern"),  # not one of the choices
        ("recon:\n  workers: 0\n", "recon.workers"),  # out of range
        ("render:\n  workers: all\n", "render.workers"),  # neither a number nor auto
        ("render:\n  device: gpu\n", "render.device"),  # neither auto, cpu nor a CUDA number
        ("render:\n  device: -1\n", "render.device"),
    ],
)
def test_bad_key_is_one_line_naming_it(text: str, key: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert exit_code(info.value) == 2  # the CLI alone maps errors to exit codes
    assert f"'{key}'" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [("render:\n  viewz: 3\n", "render.viewz"), ("render:\n  views: [1, 2]\n", "render.views")],
)
def test_cli_bad_config_exits_2_with_one_line(text: str, key: str, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    proc = _cli(["render", "--config", "bad.yaml", "-save", "x"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert key in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()  # nothing was started


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("render:\n  views: [1,\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_relative_paths_resolve_against_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    cfg_file = folder / "mine.yaml"
    cfg_file.write_text(
        "data:\n  mpii:\n    raw: ../MPIIFaceGaze\n    obj: out/recon\n  background_path: bg\n"
        "assets:\n  face_template: ~/models/face.obj\n  cache_dir: /abs/cache\n"
        "render:\n  pattern: file\n  pattern_file: poses.npy\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    cfg = load_config(Path("../conf/mine.yaml"))
    # the deprecated data.mpii keys still work, and say so in one line
    assert cfg.data.input == (tmp_path / "MPIIFaceGaze").resolve()
    assert cfg.data.records == (folder / "out" / "recon").resolve()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "deprecated" in err and "data.input" in err
    assert cfg.data.background_path == (folder / "bg").resolve()
    assert cfg.render.pattern_file == (folder / "poses.npy").resolve()
    assert cfg.assets.face_template == Path("~/models/face.obj").expanduser()
    assert cfg.assets.cache_dir == Path("/abs/cache")


def test_cli_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("render:\n  views: 4\n  seed: 7\n  pattern: eyediap-cs\n")
    cfg = load_config(cfg_file)
    out = with_overrides(cfg, {"render.views": 9, "render.seed": None, "render.pattern": "gaussian"})
    assert out.render.views == 9  # option given: wins over the file
    assert out.render.seed == 7  # option absent (None): the file's value stays
    assert out.render.pattern == "gaussian"
    assert cfg.render.views == 4  # the original is untouched (frozen)
    assert out.digest() != cfg.digest()
    # an override is validated like the file
    with pytest.raises(ConfigError, match=r"'render\.views'"):
        with_overrides(cfg, {"render.views": 0})
    # a relative path given on the command line resolves against the working directory
    monkeypatch.chdir(tmp_path)
    out = with_overrides(cfg, {"data.input": Path("mpii")})
    assert out.data.input == (tmp_path / "mpii").resolve()


def test_config_is_frozen() -> None:
    cfg = from_dict({"render": {"views": 2}})
    with pytest.raises(Exception, match="frozen"):
        cfg.render.views = 3  # type: ignore[misc]


def test_data_keys_new_and_deprecated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = from_dict({"data": {"input": "x.h5", "kind": "xgaze-h5", "records": "r"}}, base=tmp_path)
    assert (cfg.data.input, cfg.data.kind, cfg.data.records) == (tmp_path / "x.h5", "xgaze-h5", tmp_path / "r")
    assert capsys.readouterr().err == ""  # no deprecation line for the new keys
    with pytest.raises(ConfigError, match=r"'data\.kind'"):
        from_dict({"data": {"kind": "mpii"}})
    with pytest.raises(ConfigError, match=r"data\.mpii\.raw and data\.input disagree"):
        from_dict({"data": {"input": "/a", "mpii": {"raw": "/b"}}})
    with pytest.raises(ConfigError, match=r"unknown key 'data\.mpii\.rw'"):
        from_dict({"data": {"mpii": {"rw": "/b"}}})
    with pytest.raises(ConfigError, match=r"'render\.normalization'"):
        from_dict({"render": {"normalization": "xgaze"}})
