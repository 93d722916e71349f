"""Users' own templates on a real Redis, through the library (strict parser → store):
create, update → version 2, the history cap, the per-user cap atomic under concurrency,
private vs groups visibility, clone (from admin and user templates), delete."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from vizdesk.auth.types import Identity
from vizdesk.config import Config
from vizdesk.contract.keys import Keys
from vizdesk.core.errors import VizdeskError
from vizdesk.core.validate import ValidationError
from vizdesk.jobs.template_library import TemplateLibrary, UnknownTemplate
from vizdesk.jobs.templates import TemplateRegistry
from vizdesk.jobs.user_templates import UserTemplateStore

ALICE = Identity("alice", ("physics", "users"))
BOB = Identity("bob", ("physics",))
CAROL = Identity("carol", ("chem",))


def definition(description: str = "mine", **more: Any) -> dict[str, Any]:
    return {
        "description": description,
        "image": "compute",
        "command": ["solve", "{n}"],
        "parameters": {"n": {"type": "int", "default": 1, "min": 1, "max": 10}},
        "tags": ["cfd"],
        **more,
    }


@pytest.fixture
def library(redis: aioredis.Redis, keys: Keys, tmp_path: Path) -> TemplateLibrary:
    cfg = Config()
    cfg.jobs.templates_dir = str(tmp_path)
    cfg.jobs.max_user_templates = 5
    cfg.jobs.max_template_versions = 3
    cfg.slurm.default_partition = "batch"
    (tmp_path / "admin-solver.yaml").write_text(
        "description: The site's solver\nimage: compute\ncommand: [solve]\nversion: '2.0'\n"
        "groups: [physics]\ntags: [cfd]\n"
    )
    return TemplateLibrary(cfg, TemplateRegistry(cfg), UserTemplateStore(redis, keys))


async def test_create_update_history_and_resolve(library: TemplateLibrary) -> None:
    t1 = await library.create(ALICE, "solver", definition("v1"))
    assert (t1.ref, t1.version, t1.source, t1.owner, t1.visibility) == (
        "~alice/solver", "1", "user", "alice", "private",
    )
    assert t1.to_public("alice")["editable"] is True
    assert t1.to_public("bob")["editable"] is False
    t2 = await library.update(ALICE, "~alice/solver", definition("v2"))
    assert t2.version == "2" and t2.description == "v2"
    current = await library.resolve(ALICE, "~alice/solver")
    assert current.version == "2" and current.description == "v2"
    old = await library.resolve(ALICE, "~alice/solver", 1)
    assert old.version == "1" and old.description == "v1"  # versions never change
    history = await library.history(ALICE, "~alice/solver")
    assert [h["version"] for h in history] == [1, 2]
    assert all(h["author"] == "alice" and h["created_at"].endswith("Z") for h in history)


async def test_history_cap_keeps_the_newest(library: TemplateLibrary) -> None:
    await library.create(ALICE, "capped", definition("v1"))
    for i in range(2, 7):
        await library.update(ALICE, "~alice/capped", definition(f"v{i}"))
    history = await library.history(ALICE, "~alice/capped")
    assert [h["version"] for h in history] == [4, 5, 6]  # max_template_versions = 3
    with pytest.raises(ValidationError) as err:
        await library.resolve(ALICE, "~alice/capped", 2)
    assert (err.value.code, err.value.field) == ("unknown_template_version", "template_version")
    assert (await library.resolve(ALICE, "~alice/capped", 4)).description == "v4"


async def test_per_user_cap_is_atomic(library: TemplateLibrary) -> None:
    results = await asyncio.gather(
        *(library.create(ALICE, f"t{i}", definition()) for i in range(20)),
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(made) == 5  # max_user_templates
    assert all(isinstance(r, VizdeskError) and r.code == "template_limit" for r in refused)
    assert len(await library.list_for(ALICE, "user")) == 5
    # others are not affected by alice's count
    assert (await library.create(BOB, "t0", definition())).ref == "~bob/t0"


async def test_name_taken_is_409(library: TemplateLibrary) -> None:
    await library.create(ALICE, "dup", definition())
    with pytest.raises(VizdeskError) as err:
        await library.create(ALICE, "dup", definition())
    assert (err.value.status, err.value.code, err.value.field) == (409, "template_exists", "name")


async def test_private_is_invisible_exactly_like_nothing(library: TemplateLibrary) -> None:
    await library.create(ALICE, "secret", definition())
    for ref in ("~alice/secret", "~alice/nothing-here"):
        with pytest.raises(UnknownTemplate) as err:
            await library.resolve(BOB, ref)
        assert (err.value.code, err.value.field) == ("unknown_template", "template")
        assert err.value.message == f"unknown template {ref!r}"
    assert [t.ref for t in await library.list_for(BOB, "user")] == []
    for action in (
        library.update(BOB, "~alice/secret", definition()),
        library.delete(BOB, "~alice/secret"),
        library.clone(BOB, "~alice/secret", "stolen"),
        library.history(BOB, "~alice/secret"),
    ):
        with pytest.raises(UnknownTemplate):
            await action


async def test_groups_visibility(library: TemplateLibrary) -> None:
    shared = await library.create(
        ALICE, "shared", definition(), visibility="groups", groups=["physics"]
    )
    assert shared.shared_with == ("physics",)
    assert (await library.resolve(BOB, "~alice/shared")).owner == "alice"
    assert "~alice/shared" in [t.ref for t in await library.list_for(BOB)]
    with pytest.raises(UnknownTemplate):
        await library.resolve(CAROL, "~alice/shared")  # not in physics
    with pytest.raises(UnknownTemplate):
        await library.update(BOB, "~alice/shared", definition())  # sees it, may not change it
    # back to private: bob loses it
    await library.update(ALICE, "~alice/shared", definition("again"), visibility="private")
    with pytest.raises(UnknownTemplate):
        await library.resolve(BOB, "~alice/shared")
    assert "~alice/shared" not in [t.ref for t in await library.list_for(BOB)]


async def test_clone_from_user_and_admin_templates(library: TemplateLibrary) -> None:
    await library.create(ALICE, "base", definition("first"), visibility="groups",
                         groups=["physics"])
    await library.update(ALICE, "~alice/base", definition("second"))
    mine = await library.clone(BOB, "~alice/base", "my-copy", version=1)
    assert (mine.ref, mine.version, mine.description) == ("~bob/my-copy", "1", "first")
    assert mine.cloned_from == "~alice/base@1" and mine.visibility == "private"
    admin = await library.clone(BOB, "admin-solver", "site-copy")
    assert admin.cloned_from == "admin-solver@2.0" and admin.groups == ()  # groups dropped
    with pytest.raises(UnknownTemplate):
        await library.clone(CAROL, "admin-solver", "nope")  # not in physics: hidden
    refs = {t.ref for t in await library.list_for(BOB)}
    assert {"admin-solver", "~alice/base", "~bob/my-copy", "~bob/site-copy"} <= refs


async def test_admin_templates_are_read_only(library: TemplateLibrary) -> None:
    for action in (
        library.update(BOB, "admin-solver", definition()),
        library.delete(BOB, "admin-solver"),
    ):
        with pytest.raises(VizdeskError) as err:
            await action
        assert (err.value.status, err.value.code) == (403, "read_only_template")
    assert (await library.resolve(BOB, "admin-solver")).version == "2.0"


async def test_delete_removes_every_version_and_index(
    library: TemplateLibrary, redis: aioredis.Redis, keys: Keys
) -> None:
    await library.create(ALICE, "gone", definition(), visibility="groups", groups=["physics"])
    await library.update(ALICE, "~alice/gone", definition("2"))
    await library.delete(ALICE, "~alice/gone")
    with pytest.raises(UnknownTemplate):
        await library.resolve(ALICE, "~alice/gone")
    assert not await redis.exists(keys.user_template("alice", "gone"))
    assert not await redis.sismember(keys.user_templates("alice"), "gone")
    assert not await redis.sismember(keys.group_templates("physics"), "alice/gone")
    with pytest.raises(UnknownTemplate):
        await library.delete(ALICE, "~alice/gone")
    # the name is free again, at version 1
    assert (await library.create(ALICE, "gone", definition())).version == "1"


async def test_bad_definitions_never_reach_redis(
    library: TemplateLibrary, redis: aioredis.Redis, keys: Keys
) -> None:
    for bad, field in (
        (definition(parameters={"n": {"type": "int", "max": "x"}}), "definition.parameters.n.max"),
        ({"command": ["x"]}, "definition.image"),
        (definition(groups=["physics"]), "definition.groups"),
        (definition(files={"m": {"pattern": "*.msh", "max_size": "lots"}}),
         "definition.files.m.max_size"),
    ):
        with pytest.raises(ValidationError) as err:
            await library.create(ALICE, "bad", bad)
        assert err.value.field == field
    assert not await redis.exists(keys.user_template("alice", "bad"))
    await library.create(ALICE, "good", definition())
    with pytest.raises(ValidationError):
        await library.update(ALICE, "~alice/good", {"image": "i"})  # no command
    assert [h["version"] for h in await library.history(ALICE, "~alice/good")] == [1]


async def test_sharing_only_with_own_groups_on_update(library: TemplateLibrary) -> None:
    await library.create(ALICE, "t", definition())
    from vizdesk.jobs.template_request import validate_template_update

    with pytest.raises(ValidationError) as err:
        validate_template_update(
            {"definition": definition(), "visibility": "groups", "groups": ["chem"]}, ALICE
        )
    assert err.value.field == "groups"


async def test_job_manager_resolves_user_templates_with_their_version(
    library: TemplateLibrary,
) -> None:
    """A job request names ``~owner/name`` (and optionally a version); the spec records
    the reference and the version it used. Host commands here only because the site
    allows them (no image catalog needed for the test)."""
    from vizdesk.jobs.manager import JobManager
    from vizdesk.jobs.request import validate_job_request

    library.cfg.jobs.allow_host_commands = True
    body = {"description": "d", "command": ["echo", "{n}"],
            "parameters": {"n": {"type": "int", "default": 1}}}
    await library.create(ALICE, "run-me", body, visibility="groups", groups=["physics"])
    await library.update(ALICE, "~alice/run-me", {**body, "command": ["printf", "{n}"]})
    m = JobManager(library.cfg, None, None, library.registry, None, library=library)  # type: ignore[arg-type]
    spec = await m.resolve(BOB, validate_job_request({"template": "~alice/run-me"}, library.cfg),
                           None)
    assert (spec.template, spec.template_version, spec.argv) == ("~alice/run-me", "2",
                                                                 ("printf", "1"))
    old = await m.resolve(BOB, validate_job_request(
        {"template": "~alice/run-me", "template_version": 1}, library.cfg), None)
    assert (old.template_version, old.argv) == ("1", ("echo", "1"))
    with pytest.raises(UnknownTemplate):
        await m.resolve(CAROL, validate_job_request({"template": "~alice/run-me"}, library.cfg),
                        None)
    (library.registry.directory / "on-host.yaml").write_text("command: [/bin/true]\n")
    admin = await m.resolve(BOB, validate_job_request({"template": "on-host"}, library.cfg),
                            None)
    assert admin.template == "on-host" and (admin.template_version or "").startswith("sha-")


async def test_switched_off_user_templates_do_not_exist(library: TemplateLibrary) -> None:
    await library.create(ALICE, "kept", definition())
    library.cfg.jobs.user_templates = False
    with pytest.raises(UnknownTemplate):
        await library.resolve(ALICE, "~alice/kept")
    assert all(t.source == "admin" for t in await library.list_for(ALICE))
    with pytest.raises(VizdeskError) as err:
        await library.create(ALICE, "new", definition())
    assert (err.value.status, err.value.code) == (403, "user_templates_disabled")
    library.cfg.jobs.user_templates = True
    assert (await library.resolve(ALICE, "~alice/kept")).version == "1"
