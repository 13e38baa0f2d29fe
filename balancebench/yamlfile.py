"""YAML files and values a user gives, read so that no input can crash or exhaust the reader.

One reader for scenario files, ``--set`` values and kubeconfigs: a size cap (a device such as /dev/zero
never ends), UTF-8 with the offending line named, nesting measured on the event stream before anything
recurses, YAML alias bombs stopped by a value budget, and (for scenarios) keys given twice refused instead
of "last one wins". Every problem is one line of InvalidInput naming the file.

    >>> parse_yaml("a: {b: 1}", what="--set a")
    {'a': {'b': 1}}
    >>> read_yaml_file(Path("/dev/zero"), what="scenario file")
    Traceback (most recent call last):
    balancebench.errors.InvalidInput: /dev/zero: larger than 1 MiB …
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from balancebench.errors import InvalidInput

MAX_FILE_BYTES = 1 << 20
"""A scenario is a page of YAML; a file above 1 MiB is something else (or a device that never ends)."""

MAX_DEPTH = 32
"""Deepest nesting a scenario may have (it needs 4): deeper YAML is refused before it can recurse."""

MAX_NODES = 100_000
"""Most values (after YAML aliases are expanded) a scenario may hold: a YAML alias bomb stops here."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not "last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, *, what: str, unique_keys: bool = True) -> Any:
    """YAML text as plain data, or InvalidInput (one line naming ``what`` and the line) for anything a
    scenario cannot be: invalid YAML, a key given twice, nesting deeper than MAX_DEPTH, an alias bomb."""
    depth = 0
    try:
        # Nesting is measured on the token stream first, so absurd depth never reaches a recursion.
        loader = _UniqueKeyLoader if unique_keys else yaml.SafeLoader
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise InvalidInput(f"{what} is nested deeper than {MAX_DEPTH} levels: flatten it")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        data = yaml.load(text, Loader=loader)  # a SafeLoader (subclass): safe
    except yaml.reader.ReaderError as exc:
        raise InvalidInput(
            f"{what}: character {exc.character!r} at offset {exc.position} is not allowed in YAML: remove it"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise InvalidInput(f"{what}:{where} is not valid YAML: {problem}") from exc
    if _count_values(data, MAX_NODES) > MAX_NODES:
        raise InvalidInput(f"{what} expands to more than {MAX_NODES:,} values (YAML aliases?): write it out")
    return data


def _count_values(data: object, budget: int) -> int:
    """Values in ``data`` counting every alias again, as validation would see them; stops past ``budget``."""
    count = 0
    stack = [data]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def read_yaml_file(
    path: Path, *, what: str, max_bytes: int = MAX_FILE_BYTES, unique_keys: bool = True
) -> Any:
    """The data in the YAML file ``path`` (``what`` it is, for the messages), read within every limit."""
    return parse_yaml(
        read_text(path, what=what, max_bytes=max_bytes), what=str(path), unique_keys=unique_keys
    )


def read_text(path: Path, *, what: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A file's text; InvalidInput for a path that is not a readable, UTF-8 file of at most ``max_bytes``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise InvalidInput(f"{path}: no such {what}") from exc
    except IsADirectoryError as exc:
        raise InvalidInput(f"{path} is a directory: pass a {what}") from exc
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise InvalidInput(f"{str(path)[:120]}: cannot read the {what}: {reason}") from exc
    if len(raw) > max_bytes:
        raise InvalidInput(f"{path}: larger than {max_bytes >> 20} MiB, too large for a {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            f"{path}: line {line} is not UTF-8 (byte 0x{raw[exc.start]:02x}): save the file as UTF-8"
        ) from exc
