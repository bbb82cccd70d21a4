"""What the administration commands share (SPEC §10): who may act where, the params every
one of them checks the same way, and how a refusal of the store becomes a TR50 error.

Rights: an org-admin acts within its own org, Super-Ops in every org; a plain user may only read
and change itself; a thing session administers nothing. Another org's object is -90008 (not
found), never -90003: an org-admin cannot tell another org's user from one that does not exist.
A role the session lacks is -90003.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field

from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.errors import InvalidParams, NotFound, PermissionDenied
from gateway.core.ports import AlreadyExists, LastSuperOps, Missing, ProvisioningError
from gateway.core.records import OrgInfo, Session

__all__ = [
    "EMAIL",
    "NAME",
    "NEW_PASSWORD",
    "PASSWORD_MIN",
    "Role",
    "admin_session",
    "in_org",
    "listed_org",
    "refusals",
    "stamp",
    "user_session",
]

PASSWORD_MIN: Final = 8
"""A new password's minimum length (characters)."""
PASSWORD_MAX: Final = 256  # scrypt hashes whatever it is given: a bound on the work

# Syntax only (one @, no spaces, a dot in the domain): whether the address receives mail is
# not the gateway's business, and test domains (`.test`, `.local`) are fine.
_EMAIL: Final = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$")


def _valid_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not an email address")
    return value


EMAIL = Annotated[str, Field(min_length=3, max_length=254), AfterValidator(_valid_email)]
NEW_PASSWORD = Annotated[str, Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
NAME = Annotated[str, Field(max_length=200)]
Role = Literal["user", "org-admin", "super-ops"]


def user_session(ctx: CallContext) -> Session:
    """The session of a user (a thing administers nothing: -90003)."""
    session = ctx.require_session()
    if session.is_thing:
        raise PermissionDenied("permission denied: a thing session cannot administer")
    return session


def admin_session(ctx: CallContext) -> Session:
    """The session of an org-admin or Super-Ops user, or -90003."""
    session = user_session(ctx)
    if not session.has_org_admin:
        raise PermissionDenied("permission denied: needs an org-admin or Super-Ops user")
    return session


def sees(session: Session, org_id: str) -> bool:
    return session.has_super_ops or org_id == session.org_id


async def in_org(ctx: CallContext, session: Session, org_key: str | None) -> OrgInfo:
    """The org a command acts in: the session's own, or `orgKey`'s, which only Super-Ops may
    name when it is another (anyone else: -90008, as if it did not exist)."""
    admin = ctx.services.admin
    org = (
        await admin.org(org_id=session.org_id)
        if org_key is None
        else await admin.org(org_key=org_key)
    )
    if org is None or not sees(session, org.org_id):
        raise NotFound(f"not found: no org {org_key!r}" if org_key else "not found: no org")
    return org


async def listed_org(ctx: CallContext, show_all: bool, org_key: str | None) -> str | None:
    """The org a listing covers (None: every org): the session's own; `orgKey`'s (another is
    -90008 for all but Super-Ops); every org with `showAll` (Super-Ops, else -90003)."""
    session = admin_session(ctx)
    if show_all and org_key is not None:
        raise InvalidParams("invalid params: give showAll or orgKey, not both")
    if show_all:
        if not session.has_super_ops:
            raise PermissionDenied("permission denied: showAll needs Super-Ops")
        return None
    if org_key is None:
        return session.org_id
    return (await in_org(ctx, session, org_key)).org_id


@contextlib.contextmanager
def refusals(what: str) -> Iterator[None]:
    """The store's refusals as TR50 errors: a taken key is -90002 naming it, a vanished object
    -90008, the last Super-Ops user -90003."""
    try:
        yield
    except AlreadyExists as error:
        raise InvalidParams(f"invalid params: {what}: {error}") from None
    except LastSuperOps as error:
        raise PermissionDenied(f"permission denied: {error}") from None
    except Missing as error:
        raise NotFound(f"not found: {error}") from None
    except ProvisioningError as error:
        raise InvalidParams(f"invalid params: {error}") from None


def stamp(moment: datetime | None) -> str | None:
    return None if moment is None else format_utc(moment)
