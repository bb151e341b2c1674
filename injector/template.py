"""Loads the sidecar template (YAML structure) and renders it against a per-pod context."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The parts of the template mutate.py places into the pod; all must be present.
REQUIRED_KEYS = ("initContainer", "proxyContainer", "volumes", "labels", "annotations")

# `${path}` or `${path | filter}`; paths are dotted identifiers, nothing else is evaluated.
_PLACEHOLDER = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*(?:\|\s*(\w+)\s*)?\}")
_FILTERS = ("str",)


class TemplateError(ValueError):
    """A template that cannot be loaded or rendered; the message names the place."""


class _Absent:
    """Marks a node that rendered away (a null value, a false `$if`)."""


_ABSENT = _Absent()


@dataclass(frozen=True, slots=True)
class SidecarTemplate:
    """The parsed template file; `render` is pure and never mutates `tree`."""

    source: str
    tree: Mapping[str, Any]

    def render(self, context: Mapping[str, Any]) -> dict[str, Any]:
        rendered = _render(self.tree, context, self.source)
        if not isinstance(rendered, dict):  # pragma: no cover - guarded by load_template
            raise TemplateError(f"{self.source}: the template must render to a mapping")
        return rendered


def parse_template(text: str, source: str = "<template>") -> SidecarTemplate:
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise TemplateError(f"{source}: the template must be a YAML mapping")
    missing = [key for key in REQUIRED_KEYS if key not in tree]
    if missing:
        raise TemplateError(f"{source}: missing top-level keys: {', '.join(missing)}")
    _check_placeholders(tree, source)
    return SidecarTemplate(source=source, tree=tree)


def load_template(path: str | Path) -> SidecarTemplate:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read the template: {exc.strerror}") from exc
    return parse_template(text, str(path))


def _check_placeholders(node: Any, source: str) -> None:
    """Reject unknown filters at load time, so a typo fails at start-up, not per pod."""
    if isinstance(node, str):
        for match in _PLACEHOLDER.finditer(node):
            if match.group(2) is not None and match.group(2) not in _FILTERS:
                raise TemplateError(f"{source}: unknown filter {match.group(2)!r} in {node!r}")
    elif isinstance(node, dict):
        for value in node.values():
            _check_placeholders(value, source)
    elif isinstance(node, list):
        for item in node:
            _check_placeholders(item, source)


def lookup(context: Mapping[str, Any], path: str, source: str) -> Any:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise TemplateError(f"{source}: unknown name {path!r} in the template")
        value = value[part]
    return value


def _truthy(context: Mapping[str, Any], condition: Any, source: str) -> bool:
    if not isinstance(condition, str):
        raise TemplateError(f"{source}: `$if` takes a name, got {condition!r}")
    negate = condition.startswith("!")
    value = lookup(context, condition.lstrip("!").strip(), source)
    return bool(value) != negate


def _render_string(text: str, context: Mapping[str, Any], source: str) -> Any:
    whole = _PLACEHOLDER.fullmatch(text.strip()) if text.strip().startswith("${") else None
    if whole is not None:
        value = lookup(context, whole.group(1), source)
        if value is None:
            return _ABSENT
        # Deep-copied so a rendered pod never shares lists or dicts with the context.
        return str(value) if whole.group(2) == "str" else copy.deepcopy(value)

    def substitute(match: re.Match[str]) -> str:
        value = lookup(context, match.group(1), source)
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(substitute, text)


def _render(node: Any, context: Mapping[str, Any], source: str) -> Any:
    if isinstance(node, str):
        return _render_string(node, context, source)
    if isinstance(node, list):
        items: list[Any] = []
        for item in node:
            if isinstance(item, dict) and "$splice" in item:
                if "$if" in item and not _truthy(context, item["$if"], source):
                    continue
                spliced = _render(item["$splice"], context, source)
                if not isinstance(spliced, list):
                    raise TemplateError(f"{source}: `$splice` needs a list, got {spliced!r}")
                items.extend(spliced)
                continue
            rendered = _render(item, context, source)
            if rendered is not _ABSENT:
                items.append(rendered)
        return items
    if isinstance(node, dict):
        if "$if" in node:
            if not _truthy(context, node["$if"], source):
                return _ABSENT
            if "$value" in node:
                return _render(node["$value"], context, source)
            node = {key: value for key, value in node.items() if key != "$if"}
        result: dict[str, Any] = {}
        for key, value in node.items():
            rendered = _render(value, context, source)
            if rendered is not _ABSENT:
                result[str(key)] = rendered
        # A mapping whose keys all rendered away is itself absent (no `lifecycle: {}`).
        if node and not result:
            return _ABSENT
        return result
    return node
