"""The `user` service (SPEC §10, deviceWISE's `user.*`): create, list, find, update, delete.

Who may do what:

| | plain user | org-admin | Super-Ops |
| --- | --- | --- | --- |
| `user.find` | itself | its org's users | anyone |
| `user.list` | -90003 | its org | its org; every org with `showAll` |
| `user.create` | -90003 | in its org, as `user` or `org-admin` | anywhere, any role |
| `user.update` names | itself | its org's users | anyone |
| `user.update` password | its own, with `currentPassword` | its org's users (a reset) | anyone |
| `user.update` role, `disabled` | -90003 | its org's users and org-admins | anyone |
| `user.delete` | -90003 | as `user.update` role | anyone |

No one changes its own role, disables or deletes itself (-90003); a Super-Ops user is changed
only by Super-Ops; the last enabled Super-Ops user cannot be demoted, disabled or deleted
(-90003). Another org's user is -90008 (not found) for everyone but Super-Ops.

Effects (the store's): deleting, disabling or setting a user's password ends its sessions at
their next call (a user changing its own password keeps the session it did it with); a role
change reaches its live sessions at their next call. A disabled user's login fails like a wrong
password (-90004).

Departures from deviceWISE: one `role` per user instead of per-org role ids (`user.org.*`);
`orgKey` says where `user.create` puts the user (deviceWISE adds org access afterwards);
`user.delete` and `disabled` are ours (deviceWISE documents neither); `user.find` and
`user.update` name the user by `emailAddress` only (we have no user ids).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from commands.admin import (
    EMAIL,
    NAME,
    NEW_PASSWORD,
    PASSWORD_MAX,
    Role,
    admin_session,
    in_org,
    listed_org,
    refusals,
    sees,
    stamp,
    user_session,
)
from commands.params import Paging
from commands.presenters import listing_summary
from gateway.core.context import CallContext
from gateway.core.errors import AuthenticationFailed, InvalidParams, NotFound, PermissionDenied
from gateway.core.records import Session, UserChanges, UserInfo
from gateway.core.registry import Command

__all__ = ["COMMANDS", "FIELDS", "shown"]

FIELDS: Final = (
    "emailAddress",
    "firstName",
    "lastName",
    "orgId",
    "orgKey",
    "role",
    "isSuperOps",
    "isOrgAdmin",
    "disabled",
    "createdOn",
    "updatedOn",
    "lastLoginOn",
)
_SORTS: Final = r"^[+-]?(emailAddress|firstName|lastName|role|createdOn|lastLoginOn)$"


class CreateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    email_address: EMAIL = Field(alias="emailAddress")
    password: NEW_PASSWORD
    first_name: NAME = Field("", alias="firstName")
    last_name: NAME = Field("", alias="lastName")
    role: Role = "user"
    org_key: str | None = Field(None, alias="orgKey", min_length=1, max_length=64)


class ListParams(Paging):
    sort: str = Field("+emailAddress", pattern=_SORTS)
    show_all: bool = Field(False, alias="showAll")
    org_key: str | None = Field(None, alias="orgKey", min_length=1, max_length=64)


class FindParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    email_address: str = Field(alias="emailAddress", min_length=1, max_length=254)


class UpdateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    email_address: str | None = Field(None, alias="emailAddress", min_length=1, max_length=254)
    first_name: NAME | None = Field(None, alias="firstName")
    last_name: NAME | None = Field(None, alias="lastName")
    role: Role | None = None
    disabled: bool | None = None
    password: NEW_PASSWORD | None = None
    current_password: str | None = Field(
        None, alias="currentPassword", min_length=1, max_length=PASSWORD_MAX
    )


def shown(user: UserInfo) -> dict[str, Any]:
    return {
        "emailAddress": user.email,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "orgId": user.org_id,
        "orgKey": user.org_key,
        "role": user.role,
        "isSuperOps": user.role == "super-ops",
        "isOrgAdmin": user.role in ("org-admin", "super-ops"),
        "disabled": user.disabled,
        "createdOn": stamp(user.created_at),
        "updatedOn": stamp(user.updated_at),
        "lastLoginOn": stamp(user.last_login),
    }


async def _visible(ctx: CallContext, session: Session, email: str) -> UserInfo:
    """The user `email`, if the session may see it: another org's is -90008 (not found)."""
    user = await ctx.services.admin.user(email)
    if user is None or not sees(session, user.org_id):
        raise NotFound("not found: no such user")
    return user


def _may_manage(session: Session, user: UserInfo, what: str) -> None:
    """Whether `session` may change `user`'s role or state, or delete it (seen already)."""
    if user.email == session.subject:
        raise PermissionDenied(f"permission denied: a user cannot {what} itself")
    if not session.has_org_admin:
        raise PermissionDenied("permission denied: needs an org-admin or Super-Ops user")
    if user.role == "super-ops" and not session.has_super_ops:
        raise PermissionDenied("permission denied: only Super-Ops changes a Super-Ops user")


async def create(params: CreateParams, ctx: CallContext) -> None:
    session = user_session(ctx)
    org = await in_org(ctx, session, params.org_key)  # another org's: -90008 before any -90003
    admin_session(ctx)
    if params.role == "super-ops" and not session.has_super_ops:
        raise PermissionDenied("permission denied: only Super-Ops creates a Super-Ops user")
    with refusals("emailAddress"):
        await ctx.services.admin.create_user(
            params.email_address,
            org.org_id,
            params.password,
            params.role,
            params.first_name,
            params.last_name,
        )


async def list_users(params: ListParams, ctx: CallContext) -> dict[str, Any]:
    org_id = await listed_org(ctx, params.show_all, params.org_key)
    count, users = await ctx.services.admin.users(org_id, params.offset, params.limit, params.sort)
    return {"count": count, "fields": list(FIELDS), "result": [shown(u) for u in users] or None}


async def find(params: FindParams, ctx: CallContext) -> dict[str, Any]:
    session = user_session(ctx)
    user = await _visible(ctx, session, params.email_address)
    if user.email != session.subject and not session.has_org_admin:
        raise PermissionDenied("permission denied: a user may look up only itself")
    return shown(user)


async def update(params: UpdateParams, ctx: CallContext) -> None:
    session = user_session(ctx)
    user = await _visible(ctx, session, params.email_address or session.subject)
    itself = user.email == session.subject
    if params.role is not None and params.role != user.role:
        _may_manage(session, user, "change the role of")
        if "super-ops" in (params.role, user.role) and not session.has_super_ops:
            raise PermissionDenied("permission denied: only Super-Ops grants or takes Super-Ops")
    if params.disabled is not None:
        _may_manage(session, user, "disable or enable")
    if not itself:
        if not session.has_org_admin:
            raise PermissionDenied("permission denied: a user may change only itself")
        if user.role == "super-ops" and not session.has_super_ops:
            raise PermissionDenied("permission denied: only Super-Ops changes a Super-Ops user")
        if params.current_password is not None:
            raise InvalidParams("invalid params: currentPassword is for a user's own password")
    elif params.password is not None:
        if params.current_password is None:
            raise InvalidParams("invalid params: currentPassword is required to change it")
        if not await ctx.services.admin.check_password(user.email, params.current_password):
            raise AuthenticationFailed("authentication failed: currentPassword is not right")
    changes = UserChanges(
        role=params.role,
        first_name=params.first_name,
        last_name=params.last_name,
        disabled=params.disabled,
        password=params.password,
    )
    with refusals("emailAddress"):
        await ctx.services.admin.update_user(
            user.email, changes, keep_session=session.token_hash if itself else None
        )


async def delete(params: FindParams, ctx: CallContext) -> None:
    session = user_session(ctx)
    user = await _visible(ctx, session, params.email_address)
    _may_manage(session, user, "delete")
    with refusals("emailAddress"):
        await ctx.services.admin.delete_user(user.email)


COMMANDS = (
    Command("user.create", CreateParams, create),
    Command("user.list", ListParams, list_users, log_result=listing_summary),
    Command("user.find", FindParams, find),
    Command("user.update", UpdateParams, update),
    Command("user.delete", FindParams, delete),
)
