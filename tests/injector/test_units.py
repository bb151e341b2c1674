"""The pure pieces on their own: template rendering, value checks, mesh config, policy."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from injector import names, policy, values
from injector.config import MeshConfig, MeshConfigError, parse_mesh_config
from injector.mutate import Injector, mutate, workload_name
from injector.overrides import quantity_value
from injector.template import ABSENT, TemplateError, parse_template
from tests.injector.reviews import app_pod, proxy_env_of

BASE = (
    "initContainer: {}\nproxyContainer: {}\nvolumes: []\nlabels: {}\nannotations: {}\n"
    "appProbe: {}\nprometheusMerge: {}\n"
)


def render(body: str, context: dict[str, object]) -> dict[str, Any]:
    """Renders each top-level key of `body` as a template part."""
    template = parse_template(BASE + body)
    rendered = {key: template.parts[key](context) for key in yaml.safe_load(body)}
    return {key: value for key, value in rendered.items() if value is not ABSENT}


def test_template_keeps_types_interpolates_and_drops_nulls() -> None:
    out = render(
        "x: ${a.n}\ns: ${a.n | str}\nt: 'port-${a.n}'\nl: ${a.list}\nnone: ${a.none}\n"
        "items: ['${a.none}', 1]\n",
        {"a": {"n": 15020, "list": [1, 2], "none": None}},
    )
    assert (out["x"], out["s"], out["t"], out["l"], out["items"]) == (
        15020,
        "15020",
        "port-15020",
        [1, 2],
        [1],
    )
    assert "none" not in out


def test_template_conditions_and_splices() -> None:
    body = (
        "a: {$if: lit, $value: shown}\nb: {$if: '!lit', $value: hidden}\n"
        "c: [x, {$if: lit, $splice: [-q, '${v}']}, {$if: dark, $splice: [-o, z]}]\n"
        "d: {e: {$if: dark, $value: 1}}\nf: {$if: lit, g: 2}\n"
    )
    out = render(body, {"lit": True, "dark": False, "v": "443"})
    assert out["a"] == "shown" and "b" not in out
    assert out["c"] == ["x", "-q", "443"]
    assert "d" not in out  # every key rendered away
    assert out["f"] == {"g": 2}


def test_template_errors_name_the_problem() -> None:
    with pytest.raises(TemplateError, match=r"unknown name 'a\.missing'"):
        render("x: ${a.missing}\n", {"a": {}})
    with pytest.raises(TemplateError, match="unknown filter"):
        parse_template(BASE + "x: ${a | upper}\n")
    with pytest.raises(TemplateError, match="missing top-level keys: proxyContainer"):
        parse_template("initContainer: {}\nvolumes: []\nlabels: {}\nannotations: {}\n")
    with pytest.raises(TemplateError, match="not valid YAML"):
        parse_template("a: [")


def test_rendering_does_not_share_context_objects() -> None:
    context = {"r": {"limits": {"cpu": "1"}}}
    out = render("res: ${r}\n", context)
    out["res"]["limits"]["cpu"] = "2"  # type: ignore[index]
    assert context["r"]["limits"]["cpu"] == "1"


@pytest.mark.parametrize(
    ("parse", "good", "bad"),
    [
        (values.parse_ports, ["*", "80", " 80 , 443", ""], ["0", "65536", "http", "80;443", "-1"]),
        (
            values.parse_cidrs,
            ["*", "10.0.0.0/8", "10.1.2.3/32,fd00::/8", ""],
            ["10.0.0.0", "10.0.0.0/33", "300.0.0.0/8", "x/8"],
        ),
        (
            values.parse_quantity,
            ["100m", "1", "1.5", "128Mi", "1e3", "2Gi"],
            ["-1", "lots", "1.5.5", "10 Mi", "", "1mi"],
        ),
        (values.parse_interfaces, ["eth0", "eth0,net1", ""], ["a b", "x" * 16, "eth0/1"]),
        (values.parse_buckets, ["1,5,10", "0.5"], ["", "5,1", "0,1", "a"]),
        (values.parse_duration, ["5s", "1m30s", "500ms"], ["5", "five", ""]),
    ],
)
def test_value_checks(parse: object, good: list[str], bad: list[str]) -> None:
    assert callable(parse)
    for text in good:
        parse(text)
    for text in bad:
        with pytest.raises(ValueError):
            parse(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_value_checks_never_raise_anything_but_value_error(text: str) -> None:
    for parse in (
        values.parse_ports,
        values.parse_cidrs,
        values.parse_quantity,
        values.parse_interfaces,
        values.parse_buckets,
        values.parse_duration,
        values.parse_bool,
        values.parse_log_level,
        values.parse_image,
        values.parse_proxy_config,
    ):
        with contextlib.suppress(ValueError):
            parse(text)


def test_quantities_compare() -> None:
    assert quantity_value("2000m") == quantity_value("2") < quantity_value("3")
    assert quantity_value("1Gi") == 1024 * quantity_value("1Mi")


def test_mesh_config_errors_name_file_and_field() -> None:
    assert parse_mesh_config({}) == MeshConfig()
    with pytest.raises(MeshConfigError, match=r"m.yaml: ports.agent: expected int"):
        parse_mesh_config({"ports": {"agent": "15020"}}, "m.yaml")
    with pytest.raises(MeshConfigError, match=r"capture.excludeInboundPorts: 'x'"):
        parse_mesh_config({"capture": {"excludeInboundPorts": "x"}})
    with pytest.raises(MeshConfigError, match=r"nativSidecar: unknown field"):
        parse_mesh_config({"nativSidecar": True})
    with pytest.raises(MeshConfigError, match=r"resources\.limits\.cpu"):
        parse_mesh_config({"resources": {"limits": {"cpu": "lots"}}})
    with pytest.raises(MeshConfigError, match="proxyConfig"):
        parse_mesh_config({"proxyConfig": {"concurrency": -1}})


def test_policy_with_namespace_labels() -> None:
    mesh = MeshConfig()
    pod: dict[str, object] = {"metadata": {}, "spec": {}}
    enabled = {names.NAMESPACE_LABEL: names.NAMESPACE_ENABLED}
    assert policy.decide(pod, "shop", mesh, enabled).inject
    decision = policy.decide(pod, "shop", mesh, {})
    assert (decision.inject, decision.reason) == (False, policy.NOT_OPTED_IN)
    opted_in = {"metadata": {"labels": {names.INJECT: "true"}}, "spec": {}}
    assert policy.decide(opted_in, "shop", mesh, {}).inject
    no_default = MeshConfig(default_inject=False)
    assert not policy.decide(pod, "shop", no_default).inject


def test_workload_name_without_owner() -> None:
    assert workload_name({"metadata": {"name": "solo"}}) == "solo"
    assert workload_name({"metadata": {"generateName": "batch-"}}) == "batch"
    assert workload_name({"metadata": {}}) == "unknown"


def test_files_are_found_by_flag_then_env_then_mount_then_repo(tmp_path: Path) -> None:
    from injector import loading

    flag, env_file = tmp_path / "flag.yaml", tmp_path / "env.yaml"
    env = {loading.ENV_TEMPLATE: str(env_file)}
    assert loading.find_file(str(flag), loading.ENV_TEMPLATE, "template.yaml", env) == flag
    assert loading.find_file(None, loading.ENV_TEMPLATE, "template.yaml", env) == env_file
    found = loading.find_file(None, loading.ENV_TEMPLATE, "template.yaml", {})
    assert found in (loading.MOUNT_DIR / "template.yaml", loading.REPO_DIR / "template.yaml")
    assert found.is_file()


def test_cluster_name_reaches_the_sidecar(injector: Injector) -> None:
    """mesh.yaml's clusterName becomes the sidecar's *_cluster metric labels."""
    pod = app_pod(name="c")
    assert proxy_env_of(mutate(pod, injector))["PILOTFISH_CLUSTER_ID"] == "Kubernetes"
    east = Injector(parse_mesh_config({"clusterName": "east"}), injector.template)
    assert proxy_env_of(mutate(pod, east))["PILOTFISH_CLUSTER_ID"] == "east"
