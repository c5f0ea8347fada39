"""The REST transcoder: `google.api.http` rules become Starlette routes that call the RPC handlers.

One generic mapping (gRPC transcoding, as `google/api/http.proto` specifies it) serves every
management RPC over HTTP/JSON, so REST and gRPC call the very same handler objects and cannot drift
apart. For each method of each service descriptor the transcoder takes its HTTP rule — from the
configuration's rules (like a service config's `http.rules`, matched by `selector`) when one names
the method, else from the method's `google.api.http` annotation — plus the rule's
`additional_bindings`, and compiles each binding into one route:

- the path template (`/v1/{parent=projects/*/locations/*}/datasets`, nested field paths such as
  `{dicom_store.name=...}`, `*` one segment, `**` the rest, a literal `:verb` suffix) is matched
  segment by segment against the raw (still percent-encoded) path, so a `%2F` or `%3A` inside an
  id is never taken for a separator or a verb; a bare `:` in the last segment always starts a
  verb (`split_verb`), so a template matches such a path only if it has that very verb and never
  takes the verb for part of an id; each captured value is then percent-decoded exactly once (a
  variable spanning several segments keeps `%2F` encoded, as the specification says);
- the body (`*` the whole request message, a field name that field, empty none) is parsed with
  `json_format`, strictly: an unknown field or malformed JSON is INVALID_ARGUMENT;
- every query parameter sets a field the path and the body leave free (JSON or proto name, nested
  with dots, repeated by repetition, a `FieldMask` from a comma-separated list); Google's standard
  system parameters are accepted and ignored; anything else is INVALID_ARGUMENT;
- the handler's response becomes proto3 JSON (lowerCamelCase names, int64 as strings, `Any` with
  `@type`, `Empty` as `{}`).

A configured rule with no pattern withdraws the method from REST (its annotation is not served).
Errors are raised as domain errors (or Starlette's HTTPException for 404/405) and rendered by the
application's one exception handler. Not supported: `google.api.HttpBody` request or response
bodies (DICOMweb has dedicated routes), streaming methods, and the `fields` partial-response
parameter (accepted, the whole response is returned); `prettyPrint` is accepted and ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, json_format, message_factory, text_format
from google.protobuf.message import Message
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from dicomstore.core.errors import Unimplemented, invalid

Service = tuple[descriptor.ServiceDescriptor, object]
Handler = Callable[[Any], Awaitable[Any]]

JSON_MEDIA_TYPE = "application/json; charset=utf-8"
MAX_BODY_BYTES = 32 * 1024 * 1024

# Google's standard query parameters (the discovery document's top-level `parameters`).
SYSTEM_PARAMETERS = frozenset(
    {
        "$.xgafv",
        "access_token",
        "alt",
        "callback",
        "fields",
        "key",
        "oauth_token",
        "prettyPrint",
        "quotaUser",
        "upload_protocol",
        "uploadType",
    }
)

# Well-known message types whose JSON form is a scalar, so a query parameter can set them.
_SCALAR_JSON_MESSAGES = frozenset(
    f"google.protobuf.{name}"
    for name in (
        "FieldMask",
        "Timestamp",
        "Duration",
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)

_TYPE_NAMES = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in vars(descriptor.FieldDescriptor).items()
    if name.startswith("TYPE_")
}

# --- path templates ---------------------------------------------------------------------------


_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class _Variable:
    field_path: tuple[str, ...]
    start: int
    end: int | None  # None: to the end of the path (a trailing `**`)
    single: bool  # exactly one `*` segment: fully decoded, `%2F` included


class PathTemplate:
    """A compiled path template of `google/api/http.proto`'s grammar.

    Template = "/" Segments [ Verb ] ; Segment = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ; Verb = ":" LITERAL .
    """

    def __init__(self, template: str) -> None:
        self.text = template
        if not template.startswith("/"):
            raise ValueError(f"path template {template!r} must start with '/'")
        body = template[1:]
        self.verb: str | None = None
        colon = body.rfind(":")
        if colon > max(body.rfind("}"), body.rfind("/")):
            body, self.verb = body[:colon], body[colon + 1 :]
        self.segments: list[str] = []
        self.variables: list[_Variable] = []
        for piece in _split_outside_braces(body):
            if piece.startswith("{"):
                if not piece.endswith("}"):
                    raise ValueError(f"path template {template!r}: unbalanced braces")
                field, _, sub = piece[1:-1].partition("=")
                if not _FIELD_PATH.fullmatch(field):
                    raise ValueError(f"path template {template!r}: bad field path {field!r}")
                parts = (sub or "*").split("/")
                start = len(self.segments)
                self.segments.extend(parts)
                self.variables.append(
                    _Variable(
                        tuple(field.split(".")),
                        start,
                        None if parts[-1] == "**" else len(self.segments),
                        parts == ["*"],
                    )
                )
            else:
                self.segments.append(piece)
        for index, segment in enumerate(self.segments):
            if not segment or "{" in segment or "}" in segment:
                raise ValueError(f"path template {template!r}: bad segment {segment!r}")
            if segment == "**" and index != len(self.segments) - 1:
                raise ValueError(f"path template {template!r}: '**' must be the last segment")

    def match(self, raw_path: str) -> dict[tuple[str, ...], list[str]] | None:
        """The raw (percent-encoded) path segments each variable captures, or None.

        The path's verb (`split_verb`) must be the template's: none for none.
        """
        if not raw_path.startswith("/"):
            return None
        path, verb = split_verb(raw_path)
        if verb != self.verb:
            return None
        parts = path[1:].split("/")
        segments = self.segments
        many = bool(segments) and segments[-1] == "**"
        fixed = segments[:-1] if many else segments
        if len(parts) < len(fixed) or (not many and len(parts) != len(fixed)):
            return None
        for pattern, part in zip(fixed, parts, strict=False):
            if pattern == "*":
                if not part:
                    return None
            elif unquote(part) != pattern:
                return None
        return {v.field_path: parts[v.start : v.end] for v in self.variables}


def split_verb(raw_path: str) -> tuple[str, str | None]:
    """A raw path without its custom method's verb, and the verb (None when there is none).

    The verb follows the first bare `:` of the last segment (`.../dicomStores/s:import`). Ids in
    Google's resource names hold no bare `:` there; an id that holds a `:` is reached encoded
    (`s%3Aimport`), which is no verb. A `:` that ends the path gives the verb "".
    """
    colon = raw_path.find(":", raw_path.rfind("/") + 1)
    if colon < 0:
        return raw_path, None
    return raw_path[:colon], raw_path[colon + 1 :]


def _split_outside_braces(text: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == "/" and depth == 0:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


_SLASH = re.compile("%2F", re.IGNORECASE)


def _decode(parts: Sequence[str], single: bool, field: str) -> str:
    """Percent-decode captured segments once; several segments keep an encoded `/` as `%2F`."""
    try:
        if single:
            return unquote(parts[0], errors="strict")
        return "/".join(
            "%2F".join(unquote(piece, errors="strict") for piece in _SLASH.split(part))
            for part in parts
        )
    except UnicodeDecodeError:
        raise invalid(field, "the path is not percent-encoded UTF-8") from None


def raw_path(scope: Scope) -> str:
    """The request's path as it came, still percent-encoded, without the query string."""
    raw = scope.get("raw_path")
    if raw is None:
        return quote(scope["path"], safe="/:@!$&'()*+,;=")
    # Raw non-ASCII bytes are not valid in a request target; they cannot name a resource.
    return bytes(raw).split(b"?", 1)[0].decode("utf-8", errors="replace")


# --- request and response messages -------------------------------------------------------------


def _field(message: descriptor.Descriptor, name: str) -> descriptor.FieldDescriptor | None:
    field = message.fields_by_name.get(name)
    if field is not None:
        return field
    return next((f for f in message.fields if f.json_name == name), None)


def _resolve(
    message: descriptor.Descriptor, dotted: str
) -> list[descriptor.FieldDescriptor] | None:
    path: list[descriptor.FieldDescriptor] = []
    current: descriptor.Descriptor | None = message
    for name in dotted.split("."):
        if current is None:
            return None
        field = _field(current, name)
        if field is None:
            return None
        path.append(field)
        nested = field.message_type
        current = (
            nested
            if nested is not None
            and not field.is_repeated
            and nested.full_name not in _SCALAR_JSON_MESSAGES
            else None
        )
    return path


def _parent(message: Message, path: Sequence[descriptor.FieldDescriptor]) -> Message:
    for field in path[:-1]:
        message = getattr(message, field.name)
    return message


def _snake_case(path: str) -> str:
    # protobuf's JSON mapping of FieldMask paths; a path already in snake_case is kept.
    if "_" in path:
        return path
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), path)


def _query_value(field: descriptor.FieldDescriptor, text: str, name: str) -> object:
    """A query parameter's text as the JSON value json_format expects for `field`."""
    message = field.message_type
    if field.type == descriptor.FieldDescriptor.TYPE_BOOL or (
        message is not None and message.full_name == "google.protobuf.BoolValue"
    ):
        lowered = text.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise invalid(name, f"invalid value {text!r}: expected true or false")
    return text


def _set(
    message: Message, path: Sequence[descriptor.FieldDescriptor], value: object, name: str
) -> None:
    parent = _parent(message, path)
    leaf = path[-1]
    try:
        json_format.ParseDict({leaf.json_name: value}, parent)
    except json_format.ParseError:
        kind = leaf.message_type.full_name if leaf.message_type else _TYPE_NAMES[leaf.type]
        raise invalid(name, f"invalid value {value!r}: expected {kind}") from None


def _parse_error(exc: json_format.ParseError) -> str:
    # json_format appends the list of available fields on a second line; the first names the
    # offending field and where it is.
    return f"Invalid JSON payload received. {str(exc).splitlines()[0]}"


def _load_json(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid("body", f"Invalid JSON payload received. {exc}") from None


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise invalid("body", f"the request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(message: Message) -> Response:
    """A message as proto3 JSON: lowerCamelCase, int64 as strings, Any with `@type`."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=False)
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, media_type=JSON_MEDIA_TYPE)


@dataclass
class _QueryField:
    """The values of one query parameter (repeated by repetition) for one field."""

    name: str
    path: list[descriptor.FieldDescriptor]
    values: list[str]

    def apply(self, message: Message) -> None:
        leaf = self.path[-1]
        if not leaf.is_repeated and len(self.values) > 1:
            raise invalid(self.name, "is given more than once")
        if leaf.message_type is not None and (
            leaf.message_type.full_name == "google.protobuf.FieldMask"
        ):
            paths = [_snake_case(p.strip()) for p in self.values[0].split(",") if p.strip()]
            mask = getattr(_parent(message, self.path), leaf.name)
            mask.Clear()
            mask.SetInParent()
            mask.paths.extend(paths)
            return
        converted = [_query_value(leaf, v, self.name) for v in self.values]
        _set(message, self.path, converted if leaf.is_repeated else converted[0], self.name)


# --- routes ------------------------------------------------------------------------------------

_BINDINGS = "dicomstore.transcoder.bindings"


class RpcRoute(BaseRoute):
    """One HTTP binding of one RPC: match the path, build the request, call, answer JSON."""

    def __init__(
        self,
        method: descriptor.MethodDescriptor,
        handler: Handler,
        http_method: str,
        template: PathTemplate,
        body: str,
        response_body: str,
        max_body_bytes: int,
    ) -> None:
        self.rpc = method
        self.name = method.full_name
        self.path = template.text
        self.http_method = http_method
        self.methods = {http_method}
        self.template = template
        self._handler = handler
        self._request_class = message_factory.GetMessageClass(method.input_type)
        self._body = body
        self._response_body = response_body
        self._max_body_bytes = max_body_bytes
        request_type = method.input_type
        if body and body != "*" and _field(request_type, body) is None:
            raise ValueError(f"{method.full_name}: body field {body!r} does not exist")
        self._bound: list[tuple[str, ...]] = [v.field_path for v in template.variables]
        if body:
            self._bound.append(() if body == "*" else (body,))
        self._variables: list[tuple[_Variable, list[descriptor.FieldDescriptor]]] = []
        for variable in template.variables:
            path = _resolve(request_type, ".".join(variable.field_path))
            if path is None or [f.name for f in path] != list(variable.field_path):
                raise ValueError(f"{method.full_name}: no field {'.'.join(variable.field_path)}")
            self._variables.append((variable, path))

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        bindings = self.template.match(raw_path(scope))
        if bindings is None:
            return Match.NONE, {}
        match = Match.FULL if scope["method"] == self.http_method else Match.PARTIAL
        return match, {_BINDINGS: bindings}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != self.http_method:
            raise HTTPException(405)
        request = await self.request_message(Request(scope, receive), scope[_BINDINGS])
        response = await self._handler(request)
        if self._response_body:
            response = getattr(response, self._response_body)
        await json_response(response)(scope, receive, send)

    async def request_message(
        self, request: Request, bindings: Mapping[tuple[str, ...], list[str]]
    ) -> Message:
        """Body first, then query parameters, then path variables (which win)."""
        message = self._request_class()
        await self._parse_body(request, message)
        self._parse_query(request.scope.get("query_string", b""), message)
        for variable, path in self._variables:
            name = ".".join(variable.field_path)
            value = _decode(bindings[variable.field_path], variable.single, name)
            _set(message, path, value, name)
        return message

    async def _parse_body(self, request: Request, message: Message) -> None:
        raw = await _read_body(request, self._max_body_bytes)
        if not self._body:
            if raw.strip():
                raise invalid("body", f"{self.http_method} {self.path} takes no request body")
            return
        data = _load_json(raw)
        target = message
        if self._body != "*":
            field = _field(self.rpc.input_type, self._body)
            assert field is not None  # checked when the route was built
            if field.message_type is None or field.is_repeated:
                data = {field.json_name: data}
            else:
                target = getattr(message, field.name)
        scalar = target.DESCRIPTOR.full_name in _SCALAR_JSON_MESSAGES
        if not scalar and not isinstance(data, dict):
            raise invalid("body", "Invalid JSON payload received. Expected a JSON object.")
        try:
            json_format.ParseDict(data, target)
        except json_format.ParseError as exc:
            raise invalid("body", _parse_error(exc)) from None

    def _parse_query(self, query_string: bytes, message: Message) -> None:
        try:
            pairs = parse_qsl(query_string.decode(), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise invalid("query", "the query string is not percent-encoded UTF-8") from None
        grouped: dict[tuple[str, ...], _QueryField] = {}
        for name, value in pairs:
            if name in SYSTEM_PARAMETERS:
                if name == "alt" and value != "json":
                    raise invalid("alt", f"only alt=json is supported, not {value!r}")
                continue
            path = self._query_field(name)
            key = tuple(f.name for f in path)
            grouped.setdefault(key, _QueryField(name, path, [])).values.append(value)
        for query in grouped.values():
            query.apply(message)

    def _query_field(self, name: str) -> list[descriptor.FieldDescriptor]:
        """The field a query parameter sets, if the path and the body leave it free."""
        path = _resolve(self.rpc.input_type, name)
        if path is None:
            raise invalid(name, f"unknown query parameter of {self.rpc.full_name}")
        key = tuple(f.name for f in path)
        if any(key[: len(bound)] == bound or bound[: len(key)] == key for bound in self._bound):
            raise invalid(name, "is set by the path or the body, not by a query parameter")
        nested = path[-1].message_type
        if nested is not None and (
            nested.GetOptions().map_entry or nested.full_name not in _SCALAR_JSON_MESSAGES
        ):
            raise invalid(name, "cannot be set from a query parameter")
        return path

    def __repr__(self) -> str:
        return f"RpcRoute({self.http_method} {self.path} -> {self.name})"


# --- the transcoder ----------------------------------------------------------------------------


def _binding(rule: Any) -> tuple[str, str] | None:
    """(HTTP method, path template) of a rule, or None when it has no pattern."""
    kind = rule.WhichOneof("pattern")
    if kind is None:
        return None
    if kind == "custom":
        return str(rule.custom.kind).upper(), str(rule.custom.path)
    return kind.upper(), str(getattr(rule, kind))


def _missing(method: str) -> Handler:
    async def unimplemented(request: Any) -> Any:
        raise Unimplemented(f"method {method} is not implemented by this server")

    return unimplemented


class Transcoder:
    """Routes for every HTTP binding of every method of the given services.

    `rules` plays the part of a service config's `http.rules`: a rule whose `selector` names a
    method (`google.longrunning.Operations.GetOperation`) replaces that method's annotation, and
    a rule without a pattern takes the method off REST. `.../dicomStores/s:getDICOMStoreMetrics`
    is the metrics call, never a store named `s:getDICOMStoreMetrics` (which a client reaches as
    `s%3AgetDICOMStoreMetrics`); `verb_routes` are the routes with a verb.
    """

    def __init__(
        self,
        services: Iterable[Service],
        rules: Iterable[Any] = (),
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        configured = {rule.selector: rule for rule in rules}
        routes: list[RpcRoute] = []
        for service, handlers in services:
            for method in service.methods:
                rule = configured.get(method.full_name)
                if rule is None:
                    rule = method.GetOptions().Extensions[annotations_pb2.http]
                handler = getattr(handlers, method.name, None) or _missing(method.full_name)
                for binding in (rule, *rule.additional_bindings):
                    pattern = _binding(binding)
                    if pattern is None:
                        continue
                    http_method, template = pattern
                    routes.append(
                        RpcRoute(
                            method,
                            handler,
                            http_method,
                            PathTemplate(template),
                            str(binding.body),
                            str(binding.response_body),
                            max_body_bytes,
                        )
                    )
        self.routes: list[RpcRoute] = routes
        self.verb_routes = [route for route in routes if route.template.verb is not None]


def http_rules(text: str) -> list[Any]:
    """`google.api.Http` rules from the text format of a service config's `http` section."""
    return list(text_format.Parse(text, http_pb2.Http()).rules)
