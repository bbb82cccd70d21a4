"""The `Administration` port over the DuckDB file (SPEC §10): orgs, users, applications and
things, changed while the gateway runs.

Every change runs in one transaction on the calling worker thread's cursor, so a failure in the
middle (a key taken meanwhile, the last Super-Ops user) leaves nothing half-done. What it does to
sessions happens in the same transaction (the `sessions` table) and, once committed, to the live
sessions this process holds in memory (`IdentityStore.affect_sessions`): the next call of a
deleted, disabled or re-passworded user, or of a deleted or rotated app's things, finds its
session ended; a role change is seen by the session's next call.
"""

# ruff: noqa: S608 - the SQL built here interpolates only this module's column and table names
# (fixed tables: USER_SORTS, _*_COLUMNS, the schema's table names, the changed columns' names);
# every value is a placeholder.
from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, TypeVar

import duckdb

from gateway.core.ports import AlreadyExists, LastSuperOps, Missing, ProvisioningError
from gateway.core.records import AppInfo, OrgInfo, UserChanges, UserInfo
from storage.duckdb import rollups
from storage.duckdb.database import CURRENT_SERIES, DEVICE_TABLES, Database
from storage.duckdb.identity import ROLES, IdentityStore, hash_password, token_digest
from storage.duckdb.transaction import transaction

__all__ = ["USER_SORTS", "AdminStore"]

T = TypeVar("T")

CONFLICT_RETRIES: Final = 5

USER_SORTS: Final = {
    "emailAddress": "u.email",
    "firstName": "u.first_name",
    "lastName": "u.last_name",
    "role": "u.role",
    "createdOn": "u.created_at",
    "lastLoginOn": "u.last_login",
}
"""`user.list`'s sort fields -> columns (a fixed table: no sort text reaches the SQL)."""

_ORG_COLUMNS = "org_id, org_key, name, description, created_at, updated_at"
_USER_COLUMNS = (
    "u.email, u.org_id, o.org_key, u.role, u.first_name, u.last_name, u.disabled, "
    "u.created_at, u.updated_at, u.last_login"
)
_APP_COLUMNS = (
    "a.app_id, a.org_id, o.org_key, a.name, a.description, a.created_at, a.updated_at, "
    "a.token_rotated_at"
)


class AdminStore:
    """`Administration` over `database`; sessions through `identity`, device data through the
    device writers (`flush_devices` commits what they hold before a thing's data is deleted)."""

    def __init__(
        self,
        database: Database,
        identity: IdentityStore,
        clock: Callable[[], datetime],
        *,
        flush_devices: Callable[[], object] = lambda: None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._database = database
        self._identity = identity
        self._clock = clock
        self._flush_devices = flush_devices
        self._on_change = on_change

    # -- plumbing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction on this thread's cursor: committed, or rolled back whole. A key
        taken meanwhile by a concurrent change (the unique index refuses it) is `AlreadyExists`."""
        try:
            with transaction(self._database.cursor()) as cursor:
                yield cursor
        except duckdb.ConstraintException:
            raise AlreadyExists("it already exists") from None

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        """`function` on a worker thread; a write-write conflict with a concurrent change (DuckDB
        aborts the later transaction) runs it again, up to CONFLICT_RETRIES times."""
        for attempt in itertools.count(1):
            try:
                return await asyncio.to_thread(function, *args)
            except duckdb.TransactionException:
                if attempt >= CONFLICT_RETRIES:
                    raise
                await asyncio.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # -- orgs -----------------------------------------------------------------------------------
    async def orgs(self, org_id: str | None, offset: int, limit: int) -> tuple[int, list[OrgInfo]]:
        return await self._run(self._orgs, org_id, offset, limit)

    def _orgs(self, org_id: str | None, offset: int, limit: int) -> tuple[int, list[OrgInfo]]:
        where, values = ("WHERE org_id = ?", [org_id]) if org_id is not None else ("", [])
        cursor = self._database.cursor()
        (count,) = cursor.execute(f"SELECT count(*) FROM orgs {where}", values).fetchone() or (0,)
        rows = cursor.execute(
            f"SELECT {_ORG_COLUMNS} FROM orgs {where} ORDER BY org_key LIMIT ? OFFSET ?",
            [*values, limit, offset],
        ).fetchall()
        return count, [OrgInfo(*row) for row in rows]

    async def org(self, *, org_id: str | None = None, org_key: str | None = None) -> OrgInfo | None:
        return await self._run(self._org, org_id, org_key)

    def _org(self, org_id: str | None, org_key: str | None) -> OrgInfo | None:
        column, value = ("org_id", org_id) if org_id is not None else ("org_key", org_key)
        row = (
            self._database.cursor()
            .execute(f"SELECT {_ORG_COLUMNS} FROM orgs WHERE {column} = ?", [value])
            .fetchone()
        )
        return OrgInfo(*row) if row else None

    async def create_org(self, org_key: str, name: str, description: str) -> OrgInfo:
        return await self._run(self._create_org, org_key, name, description)

    def _create_org(self, org_key: str, name: str, description: str) -> OrgInfo:
        org = OrgInfo(uuid.uuid4().hex, org_key, name, description, self._clock(), None)
        with self._transaction() as cursor:
            if cursor.execute("SELECT 1 FROM orgs WHERE org_key = ?", [org_key]).fetchone():
                raise AlreadyExists(f"org {org_key!r} already exists")
            cursor.execute(
                "INSERT INTO orgs (org_id, org_key, name, description, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [org.org_id, org_key, name, description, org.created_at],
            )
        return org

    async def update_org(self, org_id: str, name: str | None, description: str | None) -> None:
        await self._run(
            self._update, "orgs", {"org_id": org_id}, {"name": name, "description": description}
        )

    def _update(self, table: str, keys: dict[str, str], changes: dict[str, Any]) -> None:
        """`_set` in a transaction of its own."""
        with self._transaction() as cursor:
            self._set(cursor, table, keys, changes)

    def _set(
        self,
        cursor: duckdb.DuckDBPyConnection,
        table: str,
        keys: dict[str, str],
        changes: dict[str, Any],
    ) -> None:
        """Set the `changes` that are not None (and `updated_at`) on the row `keys` names.
        `table` and the column names are this module's constants; values are parameters."""
        changed = {column: value for column, value in changes.items() if value is not None}
        assignments = "".join(f"{column} = ?, " for column in changed)
        where = " AND ".join(f"{column} = ?" for column in keys)
        cursor.execute(
            f"UPDATE {table} SET {assignments}updated_at = ? WHERE {where}",
            [*changed.values(), self._clock(), *keys.values()],
        )

    # -- users ----------------------------------------------------------------------------------
    async def users(
        self, org_id: str | None, offset: int, limit: int, sort: str
    ) -> tuple[int, list[UserInfo]]:
        return await self._run(self._users, org_id, offset, limit, sort)

    def _users(
        self, org_id: str | None, offset: int, limit: int, sort: str
    ) -> tuple[int, list[UserInfo]]:
        column = USER_SORTS[sort.lstrip("+-")]
        order = "DESC" if sort.startswith("-") else "ASC"
        where, values = ("WHERE u.org_id = ?", [org_id]) if org_id is not None else ("", [])
        cursor = self._database.cursor()
        (count,) = cursor.execute(f"SELECT count(*) FROM users u {where}", values).fetchone() or (
            0,
        )
        rows = cursor.execute(
            f"SELECT {_USER_COLUMNS} FROM users u JOIN orgs o ON o.org_id = u.org_id {where}"
            f" ORDER BY {column} {order} NULLS LAST, u.email LIMIT ? OFFSET ?",
            [*values, limit, offset],
        ).fetchall()
        return count, [UserInfo(*row) for row in rows]

    async def user(self, email: str) -> UserInfo | None:
        return await self._run(self._user, email)

    def _user(self, email: str) -> UserInfo | None:
        row = (
            self._database.cursor()
            .execute(
                f"SELECT {_USER_COLUMNS} FROM users u JOIN orgs o ON o.org_id = u.org_id"
                " WHERE u.email = ?",
                [email],
            )
            .fetchone()
        )
        return UserInfo(*row) if row else None

    async def create_user(
        self, email: str, org_id: str, password: str, role: str, first_name: str, last_name: str
    ) -> UserInfo:
        return await self._run(
            self._create_user, email, org_id, password, role, first_name, last_name
        )

    def _create_user(
        self, email: str, org_id: str, password: str, role: str, first_name: str, last_name: str
    ) -> UserInfo:
        if role not in ROLES:
            raise ProvisioningError(f"role must be one of {', '.join(ROLES)}")
        password_hash = hash_password(password)  # slow: outside the transaction
        with self._transaction() as cursor:
            if cursor.execute("SELECT 1 FROM orgs WHERE org_id = ?", [org_id]).fetchone() is None:
                raise Missing("no such org")
            if cursor.execute("SELECT 1 FROM users WHERE email = ?", [email]).fetchone():
                raise AlreadyExists(f"user {email!r} already exists")
            cursor.execute(
                "INSERT INTO users (email, org_id, role, password_hash, created_at, first_name,"
                " last_name, disabled) VALUES (?, ?, ?, ?, ?, ?, ?, false)",
                [email, org_id, role, password_hash, self._clock(), first_name, last_name],
            )
        created = self._user(email)
        assert created is not None
        return created

    def _guard_last_super_ops(
        self, cursor: duckdb.DuckDBPyConnection, email: str, what: str
    ) -> None:
        """Refuse a change that would leave no enabled Super-Ops user (`email` is one now)."""
        (others,) = cursor.execute(
            "SELECT count(*) FROM users WHERE role = 'super-ops' AND NOT disabled AND email <> ?",
            [email],
        ).fetchone() or (0,)
        if others == 0:
            raise LastSuperOps(f"the last Super-Ops user cannot be {what}")

    async def update_user(
        self, email: str, changes: UserChanges, keep_session: str | None = None
    ) -> UserInfo:
        return await self._run(self._update_user, email, changes, keep_session)

    def _update_user(self, email: str, changes: UserChanges, keep_session: str | None) -> UserInfo:
        if changes.role is not None and changes.role not in ROLES:
            raise ProvisioningError(f"role must be one of {', '.join(ROLES)}")
        password_hash = hash_password(changes.password) if changes.password else None
        columns: dict[str, Any] = {
            "role": changes.role,
            "first_name": changes.first_name,
            "last_name": changes.last_name,
            "disabled": changes.disabled,
            "password_hash": password_hash,
        }
        with self._transaction() as cursor:
            row = cursor.execute("SELECT role FROM users WHERE email = ?", [email]).fetchone()
            if row is None:
                raise Missing("no such user")
            if row[0] == "super-ops":
                if changes.role not in (None, "super-ops"):
                    self._guard_last_super_ops(cursor, email, "demoted")
                if changes.disabled:
                    self._guard_last_super_ops(cursor, email, "disabled")
            self._set(cursor, "users", {"email": email}, columns)
            ends = bool(changes.disabled) or password_hash is not None
            effects = self._identity.affect_sessions(
                cursor,
                kind="user",
                subject=email,
                end=ends,
                role=changes.role,
                keep=keep_session if password_hash is not None and not changes.disabled else None,
            )
        effects()
        updated = self._user(email)
        assert updated is not None
        return updated

    async def delete_user(self, email: str) -> None:
        await self._run(self._delete_user, email)

    def _delete_user(self, email: str) -> None:
        with self._transaction() as cursor:
            row = cursor.execute("SELECT role FROM users WHERE email = ?", [email]).fetchone()
            if row is None:
                raise Missing("no such user")
            if row[0] == "super-ops":
                self._guard_last_super_ops(cursor, email, "deleted")
            cursor.execute("DELETE FROM users WHERE email = ?", [email])
            effects = self._identity.affect_sessions(cursor, kind="user", subject=email, end=True)
        effects()

    async def check_password(self, email: str, password: str) -> bool:
        return await asyncio.to_thread(self._identity.password_matches, email, password)

    # -- applications ---------------------------------------------------------------------------
    async def apps(self, org_id: str | None, offset: int, limit: int) -> tuple[int, list[AppInfo]]:
        return await self._run(self._apps, org_id, offset, limit)

    def _apps(self, org_id: str | None, offset: int, limit: int) -> tuple[int, list[AppInfo]]:
        where, values = ("WHERE a.org_id = ?", [org_id]) if org_id is not None else ("", [])
        cursor = self._database.cursor()
        (count,) = cursor.execute(
            f"SELECT count(*) FROM applications a {where}", values
        ).fetchone() or (0,)
        rows = cursor.execute(
            f"SELECT {_APP_COLUMNS} FROM applications a JOIN orgs o ON o.org_id = a.org_id"
            f" {where} ORDER BY o.org_key, a.name, a.app_id LIMIT ? OFFSET ?",
            [*values, limit, offset],
        ).fetchall()
        return count, [AppInfo(*row) for row in rows]

    async def app(self, app_id: str) -> AppInfo | None:
        return await self._run(self._app, app_id)

    def _app(self, app_id: str) -> AppInfo | None:
        row = (
            self._database.cursor()
            .execute(
                f"SELECT {_APP_COLUMNS} FROM applications a JOIN orgs o ON o.org_id = a.org_id"
                " WHERE a.app_id = ?",
                [app_id],
            )
            .fetchone()
        )
        return AppInfo(*row) if row else None

    async def create_app(self, org_id: str, name: str, description: str) -> tuple[AppInfo, str]:
        return await self._run(self._create_app, org_id, name, description)

    def _create_app(self, org_id: str, name: str, description: str) -> tuple[AppInfo, str]:
        app_id, token = uuid.uuid4().hex, secrets.token_urlsafe(32)
        with self._transaction() as cursor:
            if cursor.execute("SELECT 1 FROM orgs WHERE org_id = ?", [org_id]).fetchone() is None:
                raise Missing("no such org")
            if cursor.execute(
                "SELECT 1 FROM applications WHERE org_id = ? AND name = ?", [org_id, name]
            ).fetchone():
                raise AlreadyExists(f"application {name!r} already exists in this org")
            cursor.execute(
                "INSERT INTO applications (app_id, org_id, name, token_hash, created_at,"
                " description) VALUES (?, ?, ?, ?, ?, ?)",
                [app_id, org_id, name, token_digest(token), self._clock(), description],
            )
        self._changed()
        created = self._app(app_id)
        assert created is not None
        return created, token

    async def update_app(self, app_id: str, name: str | None, description: str | None) -> None:
        await self._run(self._update_app, app_id, name, description)

    def _update_app(self, app_id: str, name: str | None, description: str | None) -> None:
        app = self._app(app_id)
        if app is None:
            raise Missing("no such application")
        if name is not None and name != app.name:
            taken = (
                self._database.cursor()
                .execute(
                    "SELECT 1 FROM applications WHERE org_id = ? AND name = ? AND app_id <> ?",
                    [app.org_id, name, app_id],
                )
                .fetchone()
            )
            if taken:
                raise AlreadyExists(f"application {name!r} already exists in this org")
        self._update("applications", {"app_id": app_id}, {"name": name, "description": description})

    async def rotate_app_token(self, app_id: str) -> str:
        return await self._run(self._rotate_app_token, app_id)

    def _rotate_app_token(self, app_id: str) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._transaction() as cursor:
            if (
                cursor.execute("SELECT 1 FROM applications WHERE app_id = ?", [app_id]).fetchone()
                is None
            ):
                raise Missing("no such application")
            cursor.execute(
                "UPDATE applications SET token_hash = ?, token_rotated_at = ?, updated_at = ?"
                " WHERE app_id = ?",
                [token_digest(token), now, now, app_id],
            )
            effects = self._identity.affect_sessions(cursor, kind="thing", app_id=app_id, end=True)
        effects()
        self._changed()
        return token

    async def delete_app(self, app_id: str) -> None:
        await self._run(self._delete_app, app_id)

    def _delete_app(self, app_id: str) -> None:
        with self._transaction() as cursor:
            if (
                cursor.execute("SELECT 1 FROM applications WHERE app_id = ?", [app_id]).fetchone()
                is None
            ):
                raise Missing("no such application")
            cursor.execute("DELETE FROM applications WHERE app_id = ?", [app_id])
            effects = self._identity.affect_sessions(cursor, kind="thing", app_id=app_id, end=True)
        effects()
        self._changed()

    # -- things ---------------------------------------------------------------------------------
    async def update_thing(
        self, org_id: str, thing_key: str, name: str | None, tags: list[str] | None
    ) -> None:
        await self._run(
            self._update,
            "things",
            {"org_id": org_id, "thing_key": thing_key},
            {"name": name, "tags": tags},
        )

    async def delete_thing(self, org_id: str, thing_key: str) -> None:
        await self._run(self._flush_devices)  # what its writers hold goes in before the delete
        await self._run(self._delete_thing, org_id, thing_key)

    def _delete_thing(self, org_id: str, thing_key: str) -> None:
        tables = [table for table, _ in DEVICE_TABLES]
        tables += [f"{name}_current" for name in CURRENT_SERIES]
        tables += [level.table for level in rollups.PROPERTY_LEVELS]  # its values' rollups

        def delete_values(cursor: duckdb.DuckDBPyConnection) -> None:
            for table in tables:  # this module's table names, never input
                cursor.execute(
                    f"DELETE FROM {table} WHERE org_id = ? AND thing_key = ?", [org_id, thing_key]
                )

        # On a lake the values and the thing are in two databases (storage/ducklake/), and a
        # transaction writes to one: the values go first, so that a crash in between leaves a
        # thing to delete again, never values without their thing.
        if self._database.lake:
            with self._transaction() as cursor:
                delete_values(cursor)
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM things WHERE org_id = ? AND thing_key = ?", [org_id, thing_key]
            )
            if not self._database.lake:
                delete_values(cursor)
            effects = self._identity.affect_sessions(
                cursor, kind="thing", subject=thing_key, org_id=org_id, end=True
            )
        effects()
        self._changed()
