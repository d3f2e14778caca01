"""Reading a policy from YAML, reporting every problem at once with its YAML path and line.

:func:`parse_policy` composes the YAML into nodes first (PyYAML keeps each node's position), so any
problem found later, by pydantic or by :func:`~guardrails.policy.cross_problems`, can be pointed at
the line that holds it. Duplicate keys, which YAML loaders silently collapse, are problems too, and
so is a scalar PyYAML cannot build (``2026-02-30`` resolves as a date that does not exist): such a
value becomes a problem at its path and line instead of an exception.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from yaml.constructor import ConstructorError

from budgetloop.errors import InputError, PolicyError
from budgetloop.fileio import read_user_text
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
    date_problem,
)

Loc = tuple[str | int, ...]


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raise :class:`PolicyError` listing every problem."""
    file = Path(path)
    try:
        text = read_user_text(file, what="the policy file")
    except InputError as exc:  # missing, a folder, unreadable, not UTF-8: no problems list, one reason
        raise PolicyError(f"{exc.message} — {exc.fix}" if exc.fix else exc.message, file=str(file)) from None
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
    index = _Index()
    index.walk(node, ())
    lines, problems = index.lines, index.problems
    loader = _Constructor("")
    try:
        data = loader.construct_document(node)
    except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        # a collection PyYAML cannot build (`!!python/object`, a malformed `!!omap`): one problem
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        loc = index.marks.get((mark.line, mark.column), ()) if mark is not None else ()
        line = mark.line + 1 if mark is not None else None
        problems.append(
            Problem(loc, f"cannot read the YAML: {what}", "remove the tag or fix the value", line)
        )
        return None, sorted(problems, key=lambda p: (p.line or 0, p.path))
    finally:
        loader.dispose()
    unreadable: set[Loc] = set()  # values already reported: pydantic's complaint about them is noise
    for bad, message, fix in loader.unreadable:
        loc, is_key = index.paths.get(id(bad), ((), False))
        if not is_key:
            unreadable.add(loc)
        problems.append(Problem(loc, message, fix, bad.start_mark.line + 1))
    if not isinstance(data, dict):
        problems.append(
            Problem((), "the policy must be a mapping of sections", "start from examples/policy.yaml", 1)
        )
        return None, problems
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data, context={"skip_cross_checks": True})
    except ValidationError as exc:
        problems.extend(_from_pydantic(exc, skip=unreadable))
    problems.extend(cross_problems(_parsed_sections(data)))
    located = sorted(
        (_locate(p, lines) for p in problems), key=lambda p: (p.line if p.line is not None else 0, p.path)
    )
    unique = list(dict.fromkeys(located))
    return (policy if not unique else None), unique


class _Constructor(yaml.SafeLoader):
    """PyYAML's safe constructor, except that a value it cannot build (a date that does not exist, an
    explicit ``!!int abc``, an unknown or unsafe ``!tag``) is listed in ``unreadable`` as
    (node, message, fix) instead of raising, and kept as its text (a scalar) or None (a collection),
    so the rest of the document is still checked."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.unreadable: list[tuple[yaml.Node, str, str]] = []

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects or node in self.recursive_objects:
            return super().construct_object(node, deep=deep)  # cached, or PyYAML's own recursion error
        deep_before = self.deep_construct
        scalar = isinstance(node, yaml.ScalarNode)
        caught: tuple[type[Exception], ...] = (
            (ConstructorError, ValueError, TypeError, KeyError, AttributeError, OverflowError)
            if scalar
            else (ConstructorError,)
        )
        try:
            return super().construct_object(node, deep=deep)
        except caught as exc:
            self.deep_construct = deep_before
            self.recursive_objects.pop(node, None)
            self.unreadable.append((node, *_unreadable_problem(node, exc)))
            value = node.value if scalar else None
            self.constructed_objects[node] = value
            return value


def _unreadable_problem(node: yaml.Node, exc: Exception) -> tuple[str, str]:
    """(message, fix) for a value PyYAML could not build."""
    timestamp = isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:timestamp"
    if timestamp and isinstance(exc, ValueError | OverflowError):
        return date_problem(str(node.value), str(exc))
    if isinstance(exc, ConstructorError):
        return f"cannot read the value: {exc.problem}", "remove the tag and write a plain value"
    text = str(node.value)
    tag = str(node.tag).removeprefix("tag:yaml.org,2002:")
    return f"{text!r} is not a valid {tag}", f"remove the `!!{tag}` tag or write a valid {tag}"


def channel_names(text: str) -> list[str] | None:
    """The keys of a policy text's ``channels`` mapping, read off the composed YAML without building
    it (so an alias bomb costs nothing), whatever else in the text is wrong; None without one."""
    try:
        node = _compose(text)
    except yaml.YAMLError:
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if (
            isinstance(key, yaml.ScalarNode)
            and key.value == "channels"
            and isinstance(value, yaml.MappingNode)
        ):
            names = [str(k.value) for k, _ in value.value if isinstance(k, yaml.ScalarNode)]
            # a merge key (`<<: *base`) brings channels only building the YAML would name
            return None if "<<" in names else names
    return None


def _compose(text: str) -> yaml.Node | None:
    loader = yaml.SafeLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


@dataclass
class _Index:
    """What a walk of the composed YAML records: the line of every path, the first path of every node
    (by ``id``; whether it is a mapping key), the path at each node's start (line, column), and
    duplicate keys as problems."""

    lines: dict[Loc, int] = field(default_factory=dict)
    paths: dict[int, tuple[Loc, bool]] = field(default_factory=dict)
    marks: dict[tuple[int, int], Loc] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    visited: set[int] = field(default_factory=set)

    def walk(self, node: yaml.Node, loc: Loc) -> None:
        """Each node is walked once (aliases cannot make this blow up or loop)."""
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if id(node) in self.visited:
            return
        self.visited.add(id(node))
        self.paths[id(node)] = (loc, False)
        self.marks.setdefault((node.start_mark.line, node.start_mark.column), loc)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.problems.append(
                        Problem(
                            (*loc, key),
                            f"duplicate key (first given on line {seen[key]})",
                            "keep one of them; YAML would silently use the last",
                            line,
                        )
                    )
                    continue
                seen[key] = line
                self.lines[(*loc, key)] = line
                self.paths.setdefault(id(key_node), ((*loc, key), True))
                self.walk(value_node, (*loc, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[(*loc, i)] = item.start_mark.line + 1
                self.walk(item, (*loc, i))


def _locate(problem: Problem, lines: Mapping[Loc, int]) -> Problem:
    if problem.line is not None:
        return problem
    loc = problem.loc
    while loc and loc not in lines:
        # a mapping key YAML read as a number (`7:`) is indexed by its text
        as_text = tuple(str(p) for p in loc)
        if as_text in lines:
            loc = as_text
            break
        loc = loc[:-1]
    return Problem(problem.loc, problem.message, problem.fix, lines.get(loc))


def _clean_loc(loc: Sequence[str | int]) -> Loc:
    """Drop pydantic's schema tags (``[key]``, ``function-after[...]``) from an error location."""
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in p and "(" not in p))


def _from_pydantic(exc: ValidationError, skip: set[Loc] | None = None) -> list[Problem]:
    """One problem per error; ``skip``: paths whose value is already reported as unreadable (only an
    unknown key is still reported there)."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        kind = err["type"]
        if skip and loc in skip and kind != "extra_forbidden":
            continue
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
        elif kind == "finite_number":
            out.append(
                Problem(
                    loc,
                    f"input should be a finite number (got {_short(err.get('input'))})",
                    "write a finite amount; .inf, .nan and numbers too large for a float are not allowed",
                )
            )
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
    declared = data.get("channels")
    if isinstance(declared, dict):  # every channel declared, whatever its own errors (unknown-channel checks)
        out["channel_names"] = frozenset(str(k) for k in declared)
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
