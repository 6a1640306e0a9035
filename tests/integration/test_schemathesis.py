"""The API against its own OpenAPI document, with generated requests.

schemathesis reads ``/api/v1/openapi.json`` from the application and calls every
operation in it with requests generated from its schema, valid and invalid ones,
and every integer id with values either side of what the database can hold. Each
request is made as a role that may call the operation, by a freshly signed-in
user (so requests that end sessions, disable users or change passwords cannot
lock the rest out), and half the generated incident ids and device references
name real ones, so requests get past the 404s. Every answer must not be a server
error, must have a status the document declares for the operation, and must
match the schema it declares for that status.

Left out: ``/metrics``, Prometheus' text format with no schema to conform to.
WebSockets, the apps' pages, static files and the OwnTracks endpoint are not in
the document (they are covered by the authorization matrix and their own tests).
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from bangpae.adapters.clock import ManualClock
from bangpae.api.factory import create_app
from bangpae.app import AppContext, build
from bangpae.config import Settings
from bangpae.domain.model import Event, EventKind, Fix, Order, event_id
from bangpae.services import sessions
from bangpae.services.auth import SCOPE_FULL, hash_password
from tests.scenario import T0

KEY = "device-secret-for-fuzzing"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES = 10  # per operation and mode: the whole run stays well under a minute


class Served:
    """The application with a lifespan that starts and stops its context, so the ingest
    and timers run in the event loop that serves the requests."""

    def __init__(self, app: Any, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await receive()
        await self.ctx.start()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await self.ctx.stop()
        await send({"type": "lifespan.shutdown.complete"})


class Seeded:
    """What the generated requests can name: real ids, and a way to sign someone in."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.app = Served(create_app(ctx), ctx)
        self.serial = itertools.count()
        s = ctx.store
        off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
        self.officer = s.add_person("officer", "A")
        self.people = {"victim": vic, "offender": off, "field_officer": self.officer}
        ankle = s.add_device("ANKLE-1", "ankle_monitor", "api", off, hash_password(KEY))
        phone = s.add_device("PHONE-1", "phone", "osmand", vic)
        s.add_order(Order(0, off, vic, valid_from=1.0))
        s.append_fixes(
            [
                Fix(ankle, T0 - 60, 37.5667, 126.978, 5.0),
                Fix(phone, T0 - 60, 37.5663, 126.9779, 5.0),
            ]
        )
        self.devices = ["ANKLE-1", "PHONE-1", str(ankle)]
        self.incidents = []
        for i, kind in enumerate((EventKind.TAMPER, EventKind.SOS, EventKind.LOW_BATTERY)):
            event = Event(event_id("fuzz", i), kind, T0 - 30, person_id=off)
            self.incidents.append(s.record_incident(kind.value, "high", event)[0])

    def headers(self, role: str) -> dict[str, str]:
        """A user of this role, just signed in."""
        name = f"{role}-{next(self.serial)}"
        s = self.ctx.store
        s.add_user(name, "not-a-password-hash", role, self.people.get(role))
        user = s.get_user_by_name(name)
        issued = sessions.open_session(s, self.ctx.settings, self.ctx.secret, user, SCOPE_FULL, T0)
        return {"Authorization": f"Bearer {issued.access_token}"}


def role_for(path: str) -> str:
    """Who may call an operation (the authorization matrix checks the rest)."""
    for prefix, role in (
        ("/api/v1/victim/", "victim"),
        ("/api/v1/push/", "victim"),
        ("/api/v1/field/", "field_officer"),
        ("/api/v1/audit", "auditor"),
        ("/api/v1/admin/", "admin"),
    ):
        if path.startswith(prefix):
            return role
    return "supervisor"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz"), tick_s=60, public_url="https://bangpae.example"
    )
    ctx = build(settings, clock=ManualClock(T0))
    seeded = Seeded(ctx)
    yield seeded
    asgi.shutdown_lifespans()  # stops the context in the loop it runs in


@pytest.fixture(scope="module")
def api_schema(seeded: Seeded) -> Any:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", seeded.app)
    return schema.exclude(path="/metrics")


def strategy(operation: Any, mode: GenerationMode, seeded: Seeded) -> Any:
    """Cases for one operation; where it names an incident or a device, half of them
    name one that exists."""
    generated = operation.as_strategy(mode)
    params = {p.name for p in operation.path_parameters}
    if "incident_id" in params:
        real = st.sampled_from(seeded.incidents).flatmap(
            lambda i: operation.as_strategy(mode, path_parameters={"incident_id": i})
        )
    elif "ref" in params:
        real = st.sampled_from(seeded.devices).flatmap(
            lambda d: operation.as_strategy(mode, path_parameters={"ref": d})
        )
    else:
        return generated
    return st.one_of(generated, real)


def has_inputs(operation: Any) -> bool:
    """Whether an operation takes parameters or a body."""
    return bool(operation.path_parameters or operation.query or operation.headers or operation.body)


def exercise(operation: Any, mode: GenerationMode, seeded: Seeded) -> str | None:
    """Run generated cases of one operation; the first failure, or None."""

    @hypothesis.given(case=strategy(operation, mode, seeded))
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases on every run
        database=None,
        phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate),
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def call(case: Any) -> None:
        if case.path == "/api/v1/fixes":
            key = base64.b64encode(f"ANKLE-1:{KEY}".encode()).decode()
            headers = {"Authorization": f"Basic {key}"}
        else:
            headers = seeded.headers(role_for(case.path))
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        call()
    except Unsatisfiable:
        return None  # no invalid value exists (an unconstrained string in the path)
    except Exception as exc:  # noqa: BLE001 - a failed check or a crash: reported per operation
        return f"{mode.value} {operation.label}: {exc}"
    return None


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_its_document_says(
    api_schema: Any, seeded: Seeded, mode: GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert "GET /api/v1/victim/status" in labels and "GET /metrics" not in labels
    if mode == GenerationMode.NEGATIVE:  # only an operation with inputs has invalid ones
        operations = [op for op in operations if has_inputs(op)]
    failures = [f for f in (exercise(op, mode, seeded) for op in operations) if f]
    assert not failures, "\n\n".join(failures)


BEYOND = (2**63, 2**64, 10**30)  # past the largest id the database holds
BOUNDARIES = (0, -1, *BEYOND)
# Words the string path parameters beside an id take, so a call gets as far as the id.
FILLERS = ("acknowledge", "disable", "reset-totp")


def integer_parameters(definition: dict[str, Any]) -> list[tuple[str, str]]:
    """(location, name) of an operation's integer path and query parameters."""
    out = []
    for p in definition.get("parameters", []):
        schema = p.get("schema", {})
        types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
        if "integer" in types and p["in"] in ("path", "query"):
            out.append((p["in"], p["name"]))
    return out


def minimal_value(prop: dict[str, Any], spec: dict[str, Any] | None = None) -> Any:
    """The smallest valid value of a required field: an enum's first, else by its type
    (an object of the spec's schemas: its own required fields, each smallest)."""
    if "$ref" in prop and spec is not None:
        schema = spec["components"]["schemas"][prop["$ref"].rsplit("/", 1)[1]]
        return {n: minimal_value(schema["properties"][n], spec) for n in schema["required"]}
    if prop.get("type") == "array":
        return []
    if "enum" in prop:
        return prop["enum"][0]
    kind = prop.get("type")
    if kind == "boolean":
        return False
    if kind == "string":
        return "x" * int(prop.get("minLength", 1))
    raise AssertionError(f"no minimal value for {prop}")


def minimal_body(spec: dict[str, Any], definition: dict[str, Any]) -> Any:
    """The smallest valid JSON body of an operation."""
    content = definition.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return NOT_SET
    schema = content["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return {
        name: minimal_value(schema["properties"][name], spec) for name in schema.get("required", [])
    }


def test_ids_beyond_what_the_database_holds_are_refused_not_crashed(
    api_schema: Any, seeded: Seeded
) -> None:
    spec = api_schema.raw_schema
    failures, tried = [], 0
    for operation in (result.ok() for result in api_schema.get_all_operations()):
        definition = spec["paths"][operation.path][operation.method.lower()]
        numbers = integer_parameters(definition)
        words = [
            p["name"]
            for p in definition.get("parameters", [])
            if p["in"] == "path" and ("path", p["name"]) not in numbers
        ]
        for (location, name), value, filler in itertools.product(
            numbers, BOUNDARIES, FILLERS if words else FILLERS[:1]
        ):
            path = {n: 1 for loc, n in numbers if loc == "path"} | {w: filler for w in words}
            if location == "path":
                path[name] = value
            case = operation.Case(
                path_parameters=path or None,
                query={name: value} if location == "query" else None,
                body=minimal_body(spec, definition),
            )
            tried += 1
            try:
                response = case.call_and_validate(
                    headers=seeded.headers(role_for(operation.path)), checks=CHECKS
                )
                if value in BEYOND:
                    assert 400 <= response.status_code < 500, response.status_code
            except Exception as exc:  # noqa: BLE001 - collected, reported together
                failures.append(f"{operation.label} {location} {name}={value}: {exc}")
    assert tried > 100  # every id of the API was tried
    assert not failures, "\n\n".join(failures)
