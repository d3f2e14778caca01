"""Reading a policy from YAML, reporting every problem at once with its YAML path and line.

:func:`parse_policy` composes the YAML into nodes first (PyYAML keeps each node's position), so any
problem found later, by pydantic or by :func:`~guardrails.policy.cross_problems`, can be pointed at
the line that holds it. Duplicate keys, which YAML loaders silently collapse, are problems too.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from budgetloop.errors import PolicyError
from guardrails.policy import (
    Approval,
    Budget,
    CampaignRule,
    ChannelRule,
    FreezeWindow,
    Policy,
    Problem,
    RuleName,
    cross_problems,
)

Loc = tuple[str | int, ...]


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raise :class:`PolicyError` listing every problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            f"cannot read the policy file ({exc.strerror or exc}); check the path", file=str(file)
        ) from None
    return parse_policy(text, source=str(file))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy YAML text; raise :class:`PolicyError` (``problems``: one line each) when invalid."""
    policy, problems = check_policy_text(text)
    if policy is None:
        count = len(problems)
        error = PolicyError(
            f"{count} problem{'s' if count != 1 else ''} in the guardrail policy",
            file=source,
            problems=[str(p) for p in problems],
        )
        error.details = problems  # type: ignore[attr-defined]
        raise error
    return policy


def check_policy_text(text: str) -> tuple[Policy | None, list[Problem]]:
    """The policy and no problems, or None and every problem found (sorted by line). Never raises."""
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        return None, [Problem((), f"not valid YAML: {what}", "fix the syntax at that line", line)]
    except yaml.YAMLError as exc:
        return None, [Problem((), f"not valid YAML: {exc}", "fix the syntax")]
    if node is None:
        return None, [Problem((), "the policy is empty", "start from examples/policy.yaml")]
    lines: dict[Loc, int] = {}
    problems: list[Problem] = []
    _index(node, (), lines, problems)
    data = yaml.SafeLoader("").construct_document(node)
    if not isinstance(data, dict):
        problems.append(
            Problem((), "the policy must be a mapping of sections", "start from examples/policy.yaml", 1)
        )
        return None, problems
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data, context={"skip_cross_checks": True})
    except ValidationError as exc:
        problems.extend(_from_pydantic(exc))
    problems.extend(cross_problems(_parsed_sections(data)))
    located = sorted(
        (_locate(p, lines) for p in problems), key=lambda p: (p.line if p.line is not None else 0, p.path)
    )
    unique = list(dict.fromkeys(located))
    return (policy if not unique else None), unique


def _compose(text: str) -> yaml.Node | None:
    loader = yaml.SafeLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _index(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem], visited: set[int] | None = None
) -> None:
    """Record the line of every path; each node is walked once (aliases cannot make this blow up or loop)."""
    lines.setdefault(loc, node.start_mark.line + 1)
    visited = set() if visited is None else visited
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(
                        (*loc, key),
                        f"duplicate key (first given on line {seen[key]})",
                        "keep one of them; YAML would silently use the last",
                        line,
                    )
                )
                continue
            seen[key] = line
            lines[(*loc, key)] = line
            _index(value_node, (*loc, key), lines, problems, visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _index(item, (*loc, i), lines, problems, visited)


def _locate(problem: Problem, lines: Mapping[Loc, int]) -> Problem:
    if problem.line is not None:
        return problem
    loc = problem.loc
    while loc and loc not in lines:
        loc = loc[:-1]
    return Problem(problem.loc, problem.message, problem.fix, lines.get(loc))


def _clean_loc(loc: Sequence[str | int]) -> Loc:
    """Drop pydantic's schema tags (``[key]``, ``function-after[...]``) from an error location."""
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in p and "(" not in p))


def _from_pydantic(exc: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            fix = f"did you mean `{near[0]}`?" if near else "remove it"
            fix += f" (allowed here: {', '.join(allowed)})" if allowed else ""
            out.append(Problem(loc, f"unknown key `{loc[-1]}`", fix))
        elif kind == "missing":
            out.append(Problem(loc, "required key is missing", f"add `{loc[-1]}:` here"))
        elif kind == "literal_error" and "[key]" in [str(p) for p in err["loc"]]:
            expected = err.get("ctx", {}).get("expected", "")
            out.append(Problem(loc, f"unknown rule `{loc[-1]}`", f"use one of {expected}"))
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            fix = ""
            if kind == "value_error" and "; " in message:
                message, fix = message.rsplit("; ", 1)
            if kind not in ("value_error", "model_type", "dict_type", "list_type") and not isinstance(
                err.get("input"), dict | list
            ):
                message += f" (got {_short(err.get('input'))})"
            out.append(Problem(loc, message[:1].lower() + message[1:], fix))
    return out


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys the schema accepts at ``loc`` (for 'did you mean')."""
    target: Any = Policy
    for part in loc:
        target = _unwrap(target)
        if isinstance(target, type) and issubclass(target, BaseModel):
            field = target.model_fields.get(str(part))
            if field is None:
                return []
            target = field.annotation
        elif get_origin(target) in (dict, list):
            target = get_args(target)[-1]
        else:
            return []
    target = _unwrap(target)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return list(target.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _parsed_sections(data: Mapping[str, Any]) -> dict[str, Any]:
    """Each section that parses on its own, so cross-section checks run even when others are broken."""
    out: dict[str, Any] = {}

    def attempt(name: str, parse: Callable[[Any], Any], default: Any = None) -> None:
        if name not in data:
            out[name] = default
            return
        try:
            out[name] = parse(data[name])
        except (ValidationError, ValueError, TypeError):
            out[name] = _BROKEN

    attempt("budget", Budget.model_validate)
    attempt("channels", _each(ChannelRule.model_validate))
    attempt("campaigns", _each(CampaignRule.model_validate), {})
    attempt("freeze_windows", _each(FreezeWindow.model_validate), {})
    attempt("approval", Approval.model_validate)
    attempt("autonomy", TypeAdapter(str).validate_python, "approval")
    attempt("enforcement", _each(TypeAdapter(str).validate_python, TypeAdapter(RuleName).validate_python), {})
    attempt("owners", TypeAdapter(list[str]).validate_python, [])
    attempt("timezone", TypeAdapter(str).validate_python, "UTC")
    if out["approval"] is _BROKEN or out["autonomy"] is _BROKEN:
        out["approval"] = out["autonomy"] = None
    return {k: v for k, v in out.items() if v is not _BROKEN}


_BROKEN = object()


def _each(
    parse: Callable[[Any], Any], parse_key: Callable[[Any], Any] = str
) -> Callable[[Any], dict[Any, Any]]:
    """Parse a mapping (or list, keyed by index) entry by entry, keeping the entries that parse."""

    def run(raw: Any) -> dict[Any, Any]:
        items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else None
        if items is None:
            raise TypeError("not a mapping or a list")
        kept: dict[Any, Any] = {}
        for key, value in items:
            try:
                kept[parse_key(key) if isinstance(raw, dict) else key] = parse(value)
            except (ValidationError, ValueError, TypeError):
                continue
        return kept

    return run


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
