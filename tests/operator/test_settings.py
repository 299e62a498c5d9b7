from pathlib import Path

import pytest
from relora_operator.__main__ import kopf_options
from relora_operator.settings import Settings, settings_table

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert s.worker_command == ("relora",)
    assert s.gpu_resource_name == "nvidia.com/gpu"
    s = Settings.from_env(
        {
            "RELORA_WORKER_COMMAND": "python -m relora_worker",
            "RELORA_NAMESPACES": "a, b",
            "RELORA_MAX_CONCURRENT_JOBS": "3",
            "RELORA_DEFAULT_NODE_SELECTOR": '{"gpu": "a100"}',
            "RELORA_DEFAULT_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
            "RELORA_RESYNC_SECONDS": "2.5",
        }
    )
    assert s.worker_command == ("python", "-m", "relora_worker")
    assert s.namespaces == ("a", "b")
    assert s.max_concurrent_jobs == 3
    assert s.default_node_selector == {"gpu": "a100"}
    assert s.default_tolerations == ({"key": "gpu", "operator": "Exists"},)
    assert s.resync_seconds == 2.5


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="RELORA_MAX_CONCURRENT_JOBS"):
        Settings.from_env({"RELORA_MAX_CONCURRENT_JOBS": "many"})
    with pytest.raises(ValueError, match="RELORA_DEFAULT_NODE_SELECTOR"):
        Settings.from_env({"RELORA_DEFAULT_NODE_SELECTOR": "[1]"})


def test_namespace_scoping_maps_to_kopf() -> None:
    assert kopf_options(Settings.from_env({})) == {
        "standalone": True,
        "clusterwide": True,
        "liveness_endpoint": "http://0.0.0.0:8081/healthz",
    }
    opts = kopf_options(Settings.from_env({"RELORA_NAMESPACES": "ns1", "RELORA_LIVENESS_PORT": "0"}))
    assert opts == {"standalone": True, "namespaces": ["ns1"]}


def test_every_setting_documented() -> None:
    doc = (ROOT / "docs" / "operator.md").read_text()
    assert settings_table() in doc
