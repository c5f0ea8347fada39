"""What every command of `dicomstore-client` sees as `typer.Context.obj`: where to connect, the
scope of short ids, the output format and the consoles."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import typer
from rich.console import Console

from dicomstore_client.connection import Connection
from dicomstore_client.names import Scope


class Output(StrEnum):
    table = "table"
    json = "json"


@dataclass
class Options:
    connection: Connection
    project: str | None
    location: str | None
    dataset: str | None
    output: Output
    debug: bool
    console: Console = field(default_factory=Console)
    errors: Console = field(default_factory=lambda: Console(stderr=True))

    @property
    def scope(self) -> Scope:
        return Scope(self.project, self.location, self.dataset)


def options_of(ctx: typer.Context) -> Options:
    """The root command's Options, from a command's context."""
    obj = ctx.find_root().obj
    assert isinstance(obj, Options), "the root callback sets the Options"
    return obj
