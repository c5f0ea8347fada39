"""How the management commands show resources: a Rich table, or with `-o json` the proto's JSON
as Google's REST API writes it (lowerCamelCase names, int64 values as strings)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from dicomstore_client.cli_options import Options, Output

Row = Mapping[str, str]


def to_json(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result


def _print_json(options: Options, value: object) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    options.console.print(text, markup=False, highlight=False, soft_wrap=True)


def show_list(options: Options, messages: Sequence[Any], row: Callable[[Any], Row]) -> None:
    """A table with one row per message, or a JSON array of them."""
    if options.output is Output.json:
        _print_json(options, [to_json(m) for m in messages])
        return
    rows = [row(m) for m in messages]
    if not rows:
        options.console.print("(none)", markup=False)
        return
    table = Table(*rows[0].keys())
    for values in rows:
        table.add_row(*values.values())
    _print_table(options, table)


def show_one(options: Options, message: Any) -> None:
    """One resource: a field / value table of its JSON (nested fields dotted), or the JSON."""
    if options.output is Output.json:
        _print_json(options, to_json(message))
        return
    # The table shows zero counts too, which proto3 JSON leaves out.
    document = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    table = Table("field", "value")
    for key, value in _flatten(document):
        table.add_row(key, value)
    _print_table(options, table)


def _print_table(options: Options, table: Table) -> None:
    console = options.console
    # A pipe has no width: rather than fold or cut names at 80 columns, print the table whole.
    if console.is_terminal:
        console.print(table)
        return
    width = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
    Console(file=console.file, width=width, color_system=None).print(table)


def show_text(options: Options, text: str, document: object) -> None:
    """A line of text, or `document` as JSON."""
    if options.output is Output.json:
        _print_json(options, document)
    else:
        options.console.print(text, markup=False, highlight=False, soft_wrap=True)


def _flatten(value: object, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        return [
            item
            for key, inner in value.items()
            for item in _flatten(inner, f"{prefix}.{key}" if prefix else key)
        ]
    if isinstance(value, list) and value:
        return [item for i, inner in enumerate(value) for item in _flatten(inner, f"{prefix}[{i}]")]
    return [(prefix, value if isinstance(value, str) else json.dumps(value))]
