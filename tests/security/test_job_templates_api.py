"""The template library through the real daemon (`vizdesk serve`, real Redis): bob can
neither see, update, delete, clone nor run alice's private template (404, exactly as for
one that does not exist), sees a groups-shared one only while in the group; admin
templates are read-only (403) and hidden from non-members when restricted; filters and
search; every bad body or definition is a 400 naming the key; versions and history.

Needs no Slurm: nothing here reaches sbatch.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests import conftest
from tests.conftest import REPO, Daemon, start_daemon, stop_daemon

pytestmark = pytest.mark.e2e

RESTRICTED = """\
description: Only for physics
display_name: Physics only
category: physics
tags: [restricted]
version: "3"
groups: [physics]
command: [/bin/true]
"""
SOLVER = """\
description: A CFD solver with a mesh and a checked JSON config
display_name: Flow solver
category: CFD
tags: [openfoam, mesh]
version: "1.0"
image: compute
command: [solve]
files:
  mesh: {pattern: "*.msh", max_size: 1GiB}
  config:
    pattern: "*.json"
    format: json
    schema: {type: object, required: [solver]}
outputs: ["results/**"]
"""


@pytest.fixture(scope="module")
def tdaemon(testbed: conftest.Testbed) -> Iterator[Daemon]:
    """A daemon of its own with a templates directory of its own."""
    tdir = testbed.dir / "tests" / f"templates-{secrets.token_hex(3)}"
    tdir.mkdir(parents=True)
    shutil.copy(REPO / "templates" / "hello.yaml", tdir / "hello.yaml")
    (tdir / "physics-only.yaml").write_text(RESTRICTED)
    (tdir / "flow-solver.yaml").write_text(SOLVER)
    d = start_daemon(
        testbed,
        "tmpl",
        {"jobs": {"templates_dir": str(tdir), "max_user_templates": 8}},
    )
    yield d
    stop_daemon(d)
    shutil.rmtree(tdir, ignore_errors=True)


class Client:
    def __init__(self, http: aiohttp.ClientSession, d: Daemon, user: str, groups: list[str]):
        self.http, self.d, self.h = http, d, d.headers(user, groups)
        self.base = f"{d.url}/api/v1/job-templates"

    async def call(self, method: str, path: str = "", body: Any = None,
                   **params: str) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, headers=self.h,
                                     params=params) as r:
            text = await r.text()
            assert "Traceback" not in text
            return r.status, (await r.json() if r.content_type == "application/json" else text)


def definition(description: str = "mine", **more: Any) -> dict[str, Any]:
    return {
        "description": description,
        "image": "compute",
        "command": ["solve", "{count}"],
        "parameters": {"count": {"type": "int", "default": 1, "min": 1, "max": 10}},
        "category": "mine",
        "tags": ["personal"],
        **more,
    }


@pytest.fixture
def alice(http: aiohttp.ClientSession, tdaemon: Daemon) -> Client:
    return Client(http, tdaemon, "alice", ["physics"])


@pytest.fixture
def bob(http: aiohttp.ClientSession, tdaemon: Daemon) -> Client:
    return Client(http, tdaemon, "bob", ["physics"])


@pytest.fixture
def bob_chem(http: aiohttp.ClientSession, tdaemon: Daemon) -> Client:
    return Client(http, tdaemon, "bob", ["chem"])


def uniq(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def test_bob_cannot_touch_alices_private_template(alice: Client, bob: Client) -> None:
    name = uniq("secret")
    status, made = await alice.call("POST", body={"name": name, "definition": definition()})
    assert status == 201, made
    assert (made["ref"], made["version"], made["source"], made["owner"], made["editable"]) == (
        f"~alice/{name}", "1", "user", "alice", True,
    )
    ghost = uniq("never-existed")
    for path in (f"/~alice/{name}", f"/~alice/{ghost}"):
        answers = [
            await bob.call("GET", path),
            await bob.call("GET", path + "/versions"),
            await bob.call("PUT", path, {"definition": definition("bob was here")}),
            await bob.call("DELETE", path),
            await bob.call("POST", path + "/clone", {"name": uniq("stolen")}),
        ]
        for status, body in answers:
            assert status == 404, body
            assert body == {"error": {"code": "not_found", "message": "no such template"}}
    # submitting it is the same 400 as a template that does not exist
    for ref in (f"~alice/{name}", f"~alice/{ghost}"):
        async with bob.http.post(f"{bob.d.url}/api/v1/jobs", json={"template": ref},
                                 headers=bob.h) as r:
            err = (await r.json())["error"]
            assert r.status == 400 and (err["code"], err["field"]) == ("unknown_template",
                                                                       "template")
            assert err["message"] == f"unknown template {ref!r}"
    listed = (await bob.call("GET", "", source="user"))[1]["templates"]
    assert f"~alice/{name}" not in [t["ref"] for t in listed]
    # alice still has it, untouched
    status, body = await alice.call("GET", f"/~alice/{name}")
    assert status == 200 and body["version"] == "1" and body["description"] == "mine"
    assert body["definition"]["command"] == ["solve", "{count}"]


async def test_groups_shared_template(alice: Client, bob: Client, bob_chem: Client) -> None:
    name = uniq("shared")
    status, made = await alice.call("POST", body={
        "name": name, "definition": definition(), "visibility": "groups", "groups": ["physics"],
    })
    assert status == 201, made
    assert made["visibility"] == "groups" and made["groups"] == ["physics"]
    status, seen = await bob.call("GET", f"/~alice/{name}")
    assert status == 200 and seen["editable"] is False and seen["owner"] == "alice"
    assert f"~alice/{name}" in [t["ref"] for t in (await bob.call("GET"))[1]["templates"]]
    # bob sees it but may not change it
    assert (await bob.call("PUT", f"/~alice/{name}", {"definition": definition()}))[0] == 404
    assert (await bob.call("DELETE", f"/~alice/{name}"))[0] == 404
    # bob may clone it: his own, private, version 1
    copy_name = uniq("copy")
    status, copy = await bob.call("POST", f"/~alice/{name}/clone", {"name": copy_name})
    assert status == 201, copy
    assert (copy["ref"], copy["version"], copy["visibility"], copy["cloned_from"]) == (
        f"~bob/{copy_name}", "1", "private", f"~alice/{name}@1",
    )
    # bob outside the group: as if it did not exist
    assert (await bob_chem.call("GET", f"/~alice/{name}"))[0] == 404
    assert (await bob_chem.call("POST", f"/~alice/{name}/clone", {"name": uniq("c")}))[0] == 404
    # alice cannot share with a group she is not in
    status, body = await alice.call("PUT", f"/~alice/{name}", {
        "definition": definition(), "visibility": "groups", "groups": ["chem"],
    })
    assert status == 400 and body["error"]["field"] == "groups"


async def test_admin_templates_are_read_only(alice: Client, bob_chem: Client) -> None:
    for method, body in (("PUT", {"definition": definition()}), ("DELETE", None)):
        status, err = await alice.call(method, "/hello", body)
        assert status == 403 and err["error"]["code"] == "read_only_template", err
    status, hello = await alice.call("GET", "/hello")
    assert status == 200 and hello["source"] == "admin" and hello["editable"] is False
    assert hello["version"] == "1.1" and hello["category"] == "examples"
    status, versions = await alice.call("GET", "/hello/versions")
    assert status == 200 and versions["versions"] == [
        {"version": "1.1", "author": None, "created_at": None}
    ]
    # a restricted admin template does not exist for non-members, not even to change it
    assert (await alice.call("GET", "/physics-only"))[0] == 200
    for method, body in (("GET", None), ("PUT", {"definition": definition()}),
                         ("DELETE", None)):
        status, err = await bob_chem.call(method, "/physics-only", body)
        assert status == 404, (method, err)
    assert (await alice.call("GET", "/no-such-template"))[0] == 404


async def test_filters_and_search(alice: Client, bob_chem: Client) -> None:
    name = uniq("findme")
    assert (await alice.call("POST", body={"name": name, "definition": definition(
        "Searchable Needle", tags=["needle-tag"])}))[0] == 201

    async def refs(client: Client, **q: str) -> list[str]:
        status, body = await client.call("GET", **q)
        assert status == 200, body
        return [t["ref"] for t in body["templates"]]

    everything = await refs(alice)
    assert {"hello", "physics-only", "flow-solver", f"~alice/{name}"} <= set(everything)
    assert "physics-only" not in await refs(bob_chem)
    assert await refs(alice, category="cfd") == ["flow-solver"]
    assert await refs(alice, tag="MESH") == ["flow-solver"]
    assert await refs(alice, q="needle") == [f"~alice/{name}"]
    assert await refs(alice, q="NEEDLE-TAG") == [f"~alice/{name}"]
    assert await refs(alice, q="flow sol") == ["flow-solver"]
    admin_only = await refs(alice, source="admin")
    assert all(not r.startswith("~") for r in admin_only) and "hello" in admin_only
    assert all(r.startswith("~alice/") for r in await refs(alice, source="user"))
    status, err = await alice.call("GET", source="everyone")
    assert status == 400 and err["error"]["field"] == "source"
    status, body = await alice.call("GET", q="solver")
    entry = next(t for t in body["templates"] if t["ref"] == "flow-solver")
    assert {"ref", "source", "owner", "version", "editable"} <= set(entry)
    assert entry["files"][1]["schema"] == {"type": "object", "required": ["solver"]}
    assert entry["outputs"] == ["results/**"]


async def test_bad_bodies_and_definitions_name_the_key(alice: Client) -> None:
    name = uniq("bad")
    cases = [
        ({"name": name, "definition": definition(parameters={
            "count": {"type": "int", "max": "lots"}})}, "definition.parameters.count.max"),
        ({"name": name, "definition": definition(colour="red")}, "definition.colour"),
        ({"name": name, "definition": definition(groups=["physics"])}, "definition.groups"),
        ({"name": name, "definition": {"command": ["/bin/sh"]}}, "definition.image"),
        ({"name": name, "definition": definition(files={"m": {"pattern": "[x"}})},
         "definition.files.m.pattern"),
        ({"name": name, "definition": definition(files={"c": {
            "pattern": "*.json", "format": "json", "schema": {"type": "objekt"}}})},
         "definition.files.c.schema"),
        ({"name": name, "definition": definition(), "extra": 1}, "extra"),
        ({"name": "~alice/x", "definition": definition()}, "name"),
        ({"definition": definition()}, "name"),
        ({"name": name, "definition": "yaml text"}, "definition"),
        ({"name": name, "definition": definition(), "visibility": "public"}, "visibility"),
        ({"name": name, "definition": definition(), "visibility": "groups"}, "groups"),
    ]
    for body, field in cases:
        status, err = await alice.call("POST", body=body)
        assert status == 400, (body, err)
        assert err["error"]["field"] == field, (body, err)
    assert (await alice.call("GET", f"/~alice/{name}"))[0] == 404  # nothing was stored


async def test_versions_and_delete(alice: Client) -> None:
    name = uniq("versioned")
    path = f"/~alice/{name}"
    assert (await alice.call("POST", body={"name": name, "definition": definition("one")}))[0] \
        == 201
    status, v2 = await alice.call("PUT", path, {"definition": definition("two")})
    assert status == 200 and v2["version"] == "2" and v2["description"] == "two"
    status, taken = await alice.call("POST", body={"name": name, "definition": definition()})
    assert status == 409 and taken["error"]["code"] == "template_exists"
    assert (await alice.call("GET", path, version="1"))[1]["description"] == "one"
    assert (await alice.call("GET", path))[1]["description"] == "two"
    status, err = await alice.call("GET", path, version="7")
    assert status == 400 and err["error"]["field"] == "template_version"
    status, hist = await alice.call("GET", path + "/versions")
    assert status == 200 and [v["version"] for v in hist["versions"]] == [1, 2]
    status, err = await alice.call("PUT", path, {"definition": definition(), "x": 1})
    assert status == 400 and err["error"]["field"] == "x"
    assert (await alice.call("DELETE", path))[0] == 204
    assert (await alice.call("GET", path))[0] == 404
    assert (await alice.call("DELETE", path))[0] == 404


async def test_clone_an_admin_template(alice: Client) -> None:
    name = uniq("my-solver")
    status, body = await alice.call("POST", "/flow-solver/clone", {"name": name})
    assert status == 201, body
    assert body["cloned_from"] == "flow-solver@1.0" and body["version"] == "1"
    assert body["files"][0]["pattern"] == "*.msh"
    # hello has no image: a user template may not run host commands
    status, err = await alice.call("POST", "/hello/clone", {"name": uniq("h")})
    assert status == 400 and err["error"]["field"] == "definition.image"
