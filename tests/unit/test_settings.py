"""The settings models, their generated chart schema and reference, and the shared parsing.

The chart's env wiring against the models is checked on the rendered chart in
tests/integration/test_helm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hack import settingsgen

from vmresize.agent.settings import AgentSettings
from vmresize.api.envsettings import EnvSettings, SettingsError
from vmresize.operator.settings import Settings

REPO = Path(__file__).resolve().parents[2]
MODELS: tuple[type[EnvSettings], ...] = (Settings, AgentSettings)
AGENT_REQUIRED = {"VMRESIZE_HOST_NAME": "h", "VMRESIZE_MIGRATION_ADDRESS": "a",
                  "VMRESIZE_MIGRATION_KEY_FILE": "/k"}


def test_generated_files_match_the_models() -> None:
    stale = settingsgen.drift(REPO)
    assert stale == [], f"regenerate with `make crds`: {stale}"


def test_drift_is_detected(tmp_path: Path) -> None:
    for rel in (settingsgen.SCHEMA, settingsgen.VALUES, settingsgen.DOC):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((REPO / rel).read_text())
    assert settingsgen.main(["--root", str(tmp_path), "--check"]) == 0
    values = tmp_path / settingsgen.VALUES
    values.write_text(values.read_text().replace("maxAttempts: 3", "maxAttempts: 4"))
    schema = tmp_path / settingsgen.SCHEMA
    schema.write_text(schema.read_text().replace('"minimum": 2\n', '"minimum": 3\n'))
    assert settingsgen.drift(tmp_path) == [str(settingsgen.SCHEMA), str(settingsgen.VALUES)]
    assert settingsgen.main(["--root", str(tmp_path), "--check"]) == 1
    assert settingsgen.main(["--root", str(tmp_path)]) == 0
    assert settingsgen.drift(tmp_path) == []


def test_the_wiring_names_every_field_once() -> None:
    for model in MODELS:
        wired = [w.field for w in settingsgen.WIRING[model]]
        assert sorted(wired) == sorted(model.model_fields)
        for wire in settingsgen.WIRING[model]:
            assert (wire.value is None) != (wire.note == ""), wire


def test_chart_defaults_are_the_model_defaults() -> None:
    values = yaml.safe_load((REPO / settingsgen.VALUES).read_text())
    schema = json.loads((REPO / settingsgen.SCHEMA).read_text())
    for model in MODELS:
        for wire in settingsgen.WIRING[model]:
            if wire.value is None:
                continue
            node, sub = values, schema
            for key in wire.value.split("."):
                node, sub = node[key], sub["properties"][key]
            default = model.model_fields[wire.field].default
            assert node == (str(default) if isinstance(default, Path) else default), wire
            assert model.env_name(wire.field) in sub["description"]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_variable_and_a_description(model: type[EnvSettings]) -> None:
    for name, info in model.model_fields.items():
        assert model.env_name(name).startswith("VMRESIZE_")
        assert info.description


def test_a_field_without_a_variable_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="validation_alias"):
        class Bad(EnvSettings):
            x: int = 1


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("True", True), ("1", True), ("yes", True), ("on", True),
    ("false", False), ("FALSE", False), ("0", False), ("no", False), ("off", False),
])
def test_both_processes_parse_booleans_alike(text: str, value: bool) -> None:
    op = Settings.from_env({"VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST": text})
    agent = AgentSettings.from_env({**AGENT_REQUIRED, "VMRESIZE_STOP_VMS_ON_EXIT": text})
    assert op.allow_resize_to_same_host is agent.stop_vms_on_exit is value


@pytest.mark.parametrize("text", ["maybe", "2", "enabled"])
def test_both_processes_refuse_other_booleans(text: str) -> None:
    with pytest.raises(SettingsError, match="VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST"):
        Settings.from_env({"VMRESIZE_ALLOW_RESIZE_TO_SAME_HOST": text})
    with pytest.raises(SettingsError, match="VMRESIZE_STOP_VMS_ON_EXIT"):
        AgentSettings.from_env({**AGENT_REQUIRED, "VMRESIZE_STOP_VMS_ON_EXIT": text})


def test_health_probe_networks_are_cidrs() -> None:
    ok = AgentSettings.from_env({**AGENT_REQUIRED,
                                 "VMRESIZE_HEALTH_PROBE_NETWORKS": "10.0.0.0/8, fd00::/8"})
    assert [str(n) for n in ok.probe_networks()] == ["10.0.0.0/8", "fd00::/8"]
    assert AgentSettings.from_env(AGENT_REQUIRED).probe_networks() == []
    with pytest.raises(SettingsError, match=r"VMRESIZE_HEALTH_PROBE_NETWORKS.*10\.0\.0\.0/33"):
        AgentSettings.from_env({**AGENT_REQUIRED,
                                "VMRESIZE_HEALTH_PROBE_NETWORKS": "10.0.0.0/8,10.0.0.0/33"})


def test_only_the_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable named like a field (``max_attempts``) is not a setting; the process
    environment and an explicit mapping are read the same way."""
    monkeypatch.setenv("max_attempts", "9")
    monkeypatch.setenv("VMRESIZE_MAX_ATTEMPTS", "4")
    assert Settings().max_attempts == Settings.from_env().max_attempts == 4
    assert Settings.from_env({"max_attempts": "9"}).max_attempts == 3


@pytest.mark.timeout(30)  # were the check missing, kopf would start and wait for a cluster
def test_operator_refuses_a_bad_setting_before_kopf_starts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from vmresize.operator import __main__ as entry

    monkeypatch.setenv("VMRESIZE_MAX_ATTEMPTS", "0")
    with pytest.raises(SystemExit) as err:
        entry.main(["--standalone"])
    assert err.value.code == 2
    assert "VMRESIZE_MAX_ATTEMPTS: Input should be greater than or equal to 1" in \
        capsys.readouterr().err
