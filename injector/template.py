"""Loads the sidecar template (YAML structure) and renders it against a per-pod context."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The parts of the template mutate.py places into the pod, rendered once per pod.
POD_PARTS = ("initContainer", "proxyContainer", "volumes", "labels", "annotations")
# Parts rendered on their own: a rewritten app probe (per probe) and the merged scrape
# annotations. All must be present.
REQUIRED_KEYS = (*POD_PARTS, "appProbe", "prometheusMerge")

# `${path}` or `${path | filter}`; paths are dotted identifiers, nothing else is evaluated.
_PLACEHOLDER = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*(?:\|\s*(\w+)\s*)?\}")
_FILTERS = ("str",)


class TemplateError(ValueError):
    """A template that cannot be loaded or rendered; the message names the place."""


class _Absent:
    """Marks a node that rendered away (a null value, a false `$if`)."""


ABSENT = _Absent()  # what a part that rendered away renders to


@dataclass(frozen=True, slots=True)
class SidecarTemplate:
    """The parsed template file; `render` is pure and never mutates `tree`."""

    source: str
    tree: Mapping[str, Any]
    # Each top-level part compiled into closures once, at load: rendering a pod then does no
    # parsing, no regex matching of static strings, and copies static subtrees plainly.
    parts: Mapping[str, Callable[[Mapping[str, Any]], Any]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        compiled = {str(key): _compile(value, self.source) for key, value in self.tree.items()}
        object.__setattr__(self, "parts", compiled)

    def render(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The pod-level parts (POD_PARTS); a part that rendered away is left out."""
        rendered = {key: self.parts[key](context) for key in POD_PARTS}
        return {key: value for key, value in rendered.items() if value is not ABSENT}

    def render_part(self, key: str, context: Mapping[str, Any]) -> dict[str, Any]:
        value = self.parts[key](context)
        if not isinstance(value, dict):
            raise TemplateError(f"{self.source}: {key} must render to a mapping, got {value!r}")
        return value


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
        # dict, not Mapping: the context is plain dicts, and the ABC check costs per lookup.
        if not isinstance(value, dict) or part not in value:
            raise TemplateError(f"{source}: unknown name {path!r} in the template")
        value = value[part]
    return value


def plain_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data, several times faster than copy.deepcopy."""
    kind = type(value)
    if kind is dict:
        return {key: plain_copy(item) for key, item in value.items()}
    if kind is list:
        return [plain_copy(item) for item in value]
    return value


Renderer = Callable[[Mapping[str, Any]], Any]


def _is_static(node: Any) -> bool:
    if isinstance(node, str):
        return "${" not in node
    if isinstance(node, list):
        return all(_is_static(item) for item in node)
    if isinstance(node, dict):
        return "$if" not in node and all(
            not str(key).startswith("$") and _is_static(value) for key, value in node.items()
        )
    return True


def _compile_string(text: str, source: str) -> Renderer:
    whole = _PLACEHOLDER.fullmatch(text.strip()) if text.strip().startswith("${") else None
    if whole is not None:
        path, as_string = whole.group(1), whole.group(2) == "str"

        def value_of(context: Mapping[str, Any]) -> Any:
            value = lookup(context, path, source)
            if value is None:
                return ABSENT
            # Copied so a rendered pod never shares lists or dicts with the context.
            return str(value) if as_string else plain_copy(value)

        return value_of

    def interpolate(context: Mapping[str, Any]) -> str:
        def substitute(match: re.Match[str]) -> str:
            value = lookup(context, match.group(1), source)
            return "" if value is None else str(value)

        return _PLACEHOLDER.sub(substitute, text)

    return interpolate


def _compile_condition(condition: Any, source: str) -> Renderer:
    if not isinstance(condition, str):
        raise TemplateError(f"{source}: `$if` takes a name, got {condition!r}")
    negate = condition.startswith("!")
    path = condition.lstrip("!").strip()
    return lambda context: bool(lookup(context, path, source)) != negate


def _compile(node: Any, source: str) -> Renderer:
    if _is_static(node):
        if isinstance(node, dict | list):
            return lambda context: plain_copy(node)
        return lambda context: node
    if isinstance(node, str):
        return _compile_string(node, source)
    if isinstance(node, list):
        return _compile_list(node, source)
    assert isinstance(node, dict)
    if "$if" in node:
        condition = _compile_condition(node["$if"], source)
        if "$value" in node:
            inner = _compile(node["$value"], source)
        else:
            inner = _compile({k: v for k, v in node.items() if k != "$if"}, source)
        return lambda context: inner(context) if condition(context) else ABSENT
    fields = [(str(key), _compile(value, source)) for key, value in node.items()]

    def render_mapping(context: Mapping[str, Any]) -> Any:
        result: dict[str, Any] = {}
        for key, render_value in fields:
            rendered = render_value(context)
            if rendered is not ABSENT:
                result[key] = rendered
        # A mapping whose keys all rendered away is itself absent (no `lifecycle: {}`).
        return result if result or not fields else ABSENT

    return render_mapping


def _compile_list(node: list[Any], source: str) -> Renderer:
    parts: list[tuple[bool, Renderer | None, Renderer]] = []  # (splice, condition, render)
    for item in node:
        if isinstance(item, dict) and "$splice" in item:
            condition = _compile_condition(item["$if"], source) if "$if" in item else None
            parts.append((True, condition, _compile(item["$splice"], source)))
        else:
            parts.append((False, None, _compile(item, source)))

    def render_list(context: Mapping[str, Any]) -> list[Any]:
        items: list[Any] = []
        for splice, condition, render_item in parts:
            if condition is not None and not condition(context):
                continue
            rendered = render_item(context)
            if splice:
                if not isinstance(rendered, list):
                    raise TemplateError(f"{source}: `$splice` needs a list, got {rendered!r}")
                items.extend(rendered)
            elif rendered is not ABSENT:
                items.append(rendered)
        return items

    return render_list
