"""Typed configs: YAML + dotted overrides, and errors that name the file, key and value."""

import pytest
from pydantic import Field

from icrl.config import ConfigBase, ConfigError, apply_overrides, dump_config, load_config, save_config


class Optim(ConfigBase):
    lr: float = Field(1e-4, gt=0, description="learning rate")
    steps: int = Field(10, ge=1, description="steps")


class Run(ConfigBase):
    name: str = Field("run", description="run name")
    optim: Optim = Field(default_factory=Optim, description="optimiser")


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "name: a\noptim:\n  lr: 0.01\n")
    cfg = load_config(Run, path, ["optim.steps=7", "name=b"])
    assert cfg.name == "b" and cfg.optim.lr == 0.01 and cfg.optim.steps == 7


def test_defaults_without_file():
    assert load_config(Run).optim.steps == 10


def test_override_creates_missing_section():
    assert apply_overrides({}, ["optim.lr=3e-4"]) == {"optim": {"lr": 3e-4}}


def test_unknown_key_names_key_value_and_file(tmp_path):
    path = write(tmp_path, "optim:\n  lrr: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(Run, path)
    msg = str(err.value)
    assert "optim.lrr" in msg and "0.5" in msg and str(path) in msg


def test_wrong_type_names_key_value_and_file(tmp_path):
    path = write(tmp_path, "optim:\n  steps: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(Run, path)
    msg = str(err.value)
    assert "optim.steps" in msg and "'many'" in msg and str(path) in msg


def test_out_of_range_override_is_named(tmp_path):
    path = write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(Run, path, ["optim.lr=-1"])
    msg = str(err.value)
    assert "optim.lr" in msg and "-1" in msg and str(path) in msg and "--set optim.lr=-1" in msg


@pytest.mark.parametrize("override", ["optim.lr", "=3", "optim..lr=3"])
def test_malformed_override(override):
    with pytest.raises(ConfigError, match="override"):
        load_config(Run, None, [override])


def test_override_into_a_value_is_an_error(tmp_path):
    path = write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError, match="'name' is a value"):
        load_config(Run, path, ["name.first=x"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(Run, tmp_path / "nope.yaml")
    bad = write(tmp_path, "optim: [unclosed\n", "bad.yaml")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_config(Run, bad)
    assert str(bad) in str(err.value)
    listy = write(tmp_path, "- 1\n- 2\n", "list.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Run, listy)


def test_dump_save_round_trip(tmp_path):
    cfg = load_config(Run, None, ["optim.lr=0.002", "name=z"])
    out = tmp_path / "sub" / "config.yaml"
    save_config(cfg, out)
    assert out.read_text() == dump_config(cfg)
    assert load_config(Run, out) == cfg
    assert not list(out.parent.glob("*.tmp"))


def test_override_indexes_lists():
    data = {"sources": [{"path": "a"}, {"path": "b"}]}
    assert apply_overrides(data, ["sources.1.path=c"]) == {"sources": [{"path": "a"}, {"path": "c"}]}
    assert data["sources"][1]["path"] == "b"  # the input is not modified
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(data, ["sources.2.path=c"])
