"""Administration over TR50 (SPEC §10): orgs, users, applications and things, through the
gateway's own dispatcher over a real DuckDB file (tests/harness.py).

The rights matrix is literal: for every admin command, what a plain user, an org-admin and a
Super-Ops user of acme get when the object is in acme (own) and in globex (other). Each row runs
on a fresh fleet, every cell on objects made for it.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import FLEET_PASSWORD
from tests.harness import Fleet, thing_login

OK = "ok"
ACTORS = ("user@acme", "admin@acme", "ops@acme")
ORGS = ("acme", "globex")  # own, other

Setup = Callable[[Fleet, str], Awaitable[dict[str, Any]]]
"""Makes the objects a cell acts on in an org; answers the command's params."""

_unique = itertools.count(1)


def fresh(prefix: str) -> str:
    return f"{prefix}{next(_unique)}-{secrets.token_hex(2)}"


async def a_user(fleet: Fleet, org: str, role: str = "user") -> str:
    email = f"{fresh('u')}@{org}.test"
    org_id = (await fleet.h.services.admin.org(org_key=org)).org_id  # type: ignore[union-attr]
    await fleet.h.services.admin.create_user(email, org_id, FLEET_PASSWORD, role, "Ann", "Lee")
    return email


async def an_app(fleet: Fleet, org: str) -> str:
    org_id = (await fleet.h.services.admin.org(org_key=org)).org_id  # type: ignore[union-attr]
    app, _ = await fleet.h.services.admin.create_app(org_id, fresh("app"), "")
    return app.app_id


async def a_thing(fleet: Fleet, org: str) -> str:
    app_id = await an_app(fleet, org)
    token = await fleet.h.services.admin.rotate_app_token(app_id)
    key = fresh("thing")
    await thing_login(fleet.h, (app_id, token), key)
    return key


async def no_target(fleet: Fleet, org: str) -> dict[str, Any]:
    return {}


async def org_target(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"key": org}


async def new_org(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"key": fresh("org"), "name": "New"}


async def new_user(fleet: Fleet, org: str) -> dict[str, Any]:
    return {
        "emailAddress": f"{fresh('n')}@{org}.test",
        "password": "a long password",
        "orgKey": org,
    }


async def list_in(fleet: Fleet, org: str) -> dict[str, Any]:
    return {} if org == "acme" else {"showAll": True}


async def user_target(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"emailAddress": await a_user(fleet, org)}


async def user_names(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"emailAddress": await a_user(fleet, org), "firstName": "Bea"}


async def user_role(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"emailAddress": await a_user(fleet, org), "role": "org-admin"}


async def user_disable(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"emailAddress": await a_user(fleet, org), "disabled": True}


async def user_reset(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"emailAddress": await a_user(fleet, org), "password": "another long one"}


async def new_app(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"name": fresh("app"), "orgKey": org}


async def app_target(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"id": await an_app(fleet, org)}


async def app_rename(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"id": await an_app(fleet, org), "name": fresh("renamed")}


async def thing_target(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"key": await a_thing(fleet, org), "orgKey": org}


async def thing_rename(fleet: Fleet, org: str) -> dict[str, Any]:
    return {"key": await a_thing(fleet, org), "orgKey": org, "name": "Pump", "tags": ["north"]}


E3, E8 = -90003, -90008
# command, setup: (user own, user other), (org-admin own, other), (Super-Ops own, other)
MATRIX: list[tuple[str, Setup, tuple[tuple[Any, Any], ...]]] = [
    ("org.create", new_org, ((E3, E3), (E3, E3), (OK, OK))),
    ("org.list", no_target, ((OK, OK), (OK, OK), (OK, OK))),
    ("org.find", org_target, ((OK, E8), (OK, E8), (OK, OK))),
    ("org.update", org_target, ((E3, E8), (OK, E8), (OK, OK))),
    ("user.create", new_user, ((E3, E8), (OK, E8), (OK, OK))),
    ("user.list", list_in, ((E3, E3), (OK, E3), (OK, OK))),
    ("user.find", user_target, ((E3, E8), (OK, E8), (OK, OK))),
    ("user.update", user_names, ((E3, E8), (OK, E8), (OK, OK))),
    ("user.update", user_role, ((E3, E8), (OK, E8), (OK, OK))),
    ("user.update", user_disable, ((E3, E8), (OK, E8), (OK, OK))),
    ("user.update", user_reset, ((E3, E8), (OK, E8), (OK, OK))),
    ("user.delete", user_target, ((E3, E8), (OK, E8), (OK, OK))),
    ("app.create", new_app, ((E3, E8), (OK, E8), (OK, OK))),
    ("app.list", list_in, ((E3, E3), (OK, E3), (OK, OK))),
    ("app.find", app_target, ((E3, E8), (OK, E8), (OK, OK))),
    ("app.update", app_rename, ((E3, E8), (OK, E8), (OK, OK))),
    ("app.token.rotate", app_target, ((E3, E8), (OK, E8), (OK, OK))),
    ("app.delete", app_target, ((E3, E8), (OK, E8), (OK, OK))),
    ("thing.update", thing_rename, ((E3, E8), (OK, E8), (OK, OK))),
    ("thing.delete", thing_target, ((E3, E8), (OK, E8), (OK, OK))),
]


@pytest.mark.parametrize(
    ("command", "setup", "expected"),
    MATRIX,
    ids=[f"{command}-{setup.__name__}" for command, setup, _ in MATRIX],
)
async def test_rights(
    fleet: Fleet, command: str, setup: Setup, expected: tuple[tuple[Any, Any], ...]
) -> None:
    got = []
    for actor in ACTORS:
        row = []
        for org in ORGS:
            outcome = await fleet.call(actor, command, **await setup(fleet, org))
            row.append(OK if outcome["success"] else outcome["errorCodes"][0])
        got.append(tuple(row))
    assert tuple(got) == expected


THING_CALLS = {
    "org.list": {},
    "user.create": {"emailAddress": "x@acme.test", "password": "a long password"},
    "app.list": {},
    "thing.delete": {"key": "meter-2"},
}


@pytest.mark.parametrize("command", THING_CALLS)
async def test_a_thing_administers_nothing(fleet: Fleet, command: str) -> None:
    assert await fleet.code("meter-1", command, **THING_CALLS[command]) == -90003
