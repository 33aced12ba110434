"""The wrangler.toml `edge init` and `edge dev` write: valid TOML, the bindings the Worker reads,
the Queue only when asked for, and never a secret."""

from __future__ import annotations

import tomllib

from tokenmanager.edge.project import QUEUE_MAX_RETRIES, build_wrangler_toml


def test_the_configuration_binds_kv_the_queue_and_the_control_plane() -> None:
    config = tomllib.loads(
        build_wrangler_toml(
            name="edge",
            main="src/index.js",
            control_plane_url='https://tm.example.com/"quoted"',
            kv_namespace_id="ns-1",
            use_queue=True,
        )
    )
    assert config["kv_namespaces"] == [{"binding": "TOKENS", "id": "ns-1"}]
    assert config["queues"]["producers"] == [
        {"binding": "USAGE_QUEUE", "queue": "tokenmanager-usage"}
    ]
    consumer = config["queues"]["consumers"][0]
    assert consumer["max_retries"] == QUEUE_MAX_RETRIES
    assert consumer["dead_letter_queue"] == "tokenmanager-usage-dlq"
    assert config["vars"] == {"CONTROL_PLANE_URL": 'https://tm.example.com/"quoted"'}
    assert config["send_metrics"] is False


def test_without_a_queue_there_is_no_queue_binding() -> None:
    config = tomllib.loads(
        build_wrangler_toml(
            name="edge",
            main="src/index.js",
            control_plane_url="http://127.0.0.1:8000",
            kv_namespace_id="ns-1",
            use_queue=False,
        )
    )
    assert "queues" not in config
    assert set(config["vars"]) == {"CONTROL_PLANE_URL"}
