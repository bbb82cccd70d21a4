"""Organizations, users, applications, things and sessions.

Passwords are stored as salted scrypt hashes; application tokens and session ids are random
256-bit values stored only as SHA-256 digests, so a copied database file opens no session.
Sessions are cached in memory and slide on use; the stored `last_accessed` is refreshed at most
once a minute per session, which is the precision of expiry after a restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cached_property
from typing import Final

import duckdb

from gateway.core.ports import AlreadyExists, ProvisioningError
from gateway.core.records import Org, Session, ThingSummary
from storage.duckdb.database import Database

__all__ = ["ROLES", "IdentityStore", "hash_password", "token_digest", "verify_password"]

logger = logging.getLogger("tr50gw.identity")

ROLES: Final = ("user", "org-admin", "super-ops")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_PERSIST_ACCESS_EVERY = timedelta(seconds=60)
RECHECK_EVERY: Final = 0.5
"""Seconds a session held in memory is trusted on a lake before it is read again: another
gateway may have ended it (or changed its role) meanwhile (issue 15: ended on all within 1 s)."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    encoded_salt = base64.b64encode(salt).decode()
    encoded_digest = base64.b64encode(digest).decode()
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encoded_salt}${encoded_digest}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class IdentityStore:
    """The `Sessions` and `Provisioning` ports over the DuckDB file."""

    def __init__(
        self,
        database: Database,
        clock: Callable[[], datetime],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """`on_change` is told whenever an application or a thing is added (the broker
        plugin's credentials follow them)."""
        self._on_change = on_change
        self._database = database
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        # On a lake (several gateways, one sessions table), when each session in memory was
        # last read from the table (time.monotonic()).
        self._checked: dict[str, float] = {}
        self._outage_logged = False  # said once per outage that sessions cannot be read

    @cached_property
    def _dummy_hash(self) -> str:
        """A hash to check unknown users' passwords against, so that a login costs the same
        whether or not the user exists (computed at the first such login, not at import)."""
        return hash_password("timing-equalizer", salt=b"0" * 16)

    # -- provisioning (synchronous: set-up for tests and benchmarks; administration, the CLI's
    # included, goes through the admin commands and storage/duckdb/administration.py) --------
    def create_org(self, org_key: str, name: str | None = None) -> Org:
        org = Org(org_id=uuid.uuid4().hex, org_key=org_key, name=name or org_key)
        cursor = self._database.cursor()
        if cursor.execute("SELECT 1 FROM orgs WHERE org_key = ?", [org_key]).fetchone():
            raise AlreadyExists(f"org {org_key!r} already exists")
        cursor.execute(
            # Every defaulted column named: PostgreSQL's tables (storage/ducklake/) get NULL
            # for a column an INSERT through DuckDB leaves out, not its default.
            "INSERT INTO orgs (org_id, org_key, name, created_at, description)"
            " VALUES (?, ?, ?, ?, '')",
            [org.org_id, org.org_key, org.name, self._clock()],
        )
        return org

    def org_by_key(self, org_key: str) -> Org | None:
        row = (
            self._database.cursor()
            .execute("SELECT org_id, org_key, name FROM orgs WHERE org_key = ?", [org_key])
            .fetchone()
        )
        return Org(*row) if row else None

    def _require_org(self, org_key: str) -> Org:
        org = self.org_by_key(org_key)
        if org is None:
            raise ProvisioningError(f"no org with key {org_key!r}")
        return org

    def create_user(self, email: str, org_key: str, password: str, role: str = "user") -> Org:
        if role not in ROLES:
            raise ProvisioningError(f"role must be one of {', '.join(ROLES)}")
        if not password:
            raise ProvisioningError("password must not be empty")
        org = self._require_org(org_key)
        cursor = self._database.cursor()
        if cursor.execute("SELECT 1 FROM users WHERE email = ?", [email]).fetchone():
            raise AlreadyExists(f"user {email!r} already exists")
        cursor.execute(
            "INSERT INTO users (email, org_id, role, password_hash, created_at, first_name,"
            " last_name, disabled) VALUES (?, ?, ?, ?, ?, '', '', false)",
            [email, org.org_id, role, hash_password(password), self._clock()],
        )
        return org

    def create_app(self, org_key: str, name: str) -> tuple[str, str]:
        """Returns `(appId, appToken)`; the token is shown once and stored only as a digest."""
        org = self._require_org(org_key)
        app_id = uuid.uuid4().hex
        app_token = secrets.token_urlsafe(32)
        self._database.cursor().execute(
            "INSERT INTO applications (app_id, org_id, name, token_hash, created_at,"
            " description) VALUES (?, ?, ?, ?, ?, '')",
            [app_id, org.org_id, name, token_digest(app_token), self._clock()],
        )
        self._changed()
        return app_id, app_token

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _register_thing(
        self, cursor: duckdb.DuckDBPyConnection, org_id: str, thing_key: str, app_id: str
    ) -> None:
        """Register the thing on first use (and tell whoever follows things)."""
        inserted = cursor.execute(
            "INSERT INTO things (org_id, thing_key, app_id, created_at, tags)"
            " VALUES (?, ?, ?, ?, []::VARCHAR[]) ON CONFLICT DO NOTHING",
            [org_id, thing_key, app_id, self._clock()],
        ).fetchone()
        if inserted is not None and inserted[0]:
            self._changed()

    # -- authentication ----------------------------------------------------------------------
    def _user_session_sync(self, email: str, password: str, ttl: int) -> tuple[Session, str] | None:
        cursor = self._database.cursor()
        row = cursor.execute(
            "SELECT u.password_hash, u.role, o.org_id, o.org_key, u.disabled FROM users u "
            "JOIN orgs o ON o.org_id = u.org_id WHERE u.email = ?",
            [email],
        ).fetchone()
        if row is None:
            verify_password(password, self._dummy_hash)  # same cost whether or not the user exists
            return None
        password_hash, role, org_id, org_key, disabled = row
        # A disabled user's password is checked all the same: its answer costs what any other
        # failed login does, and says nothing more (-90004).
        if not verify_password(password, password_hash) or disabled:
            return None
        with contextlib.suppress(duckdb.TransactionException):  # a concurrent login may win
            cursor.execute(
                "UPDATE users SET last_login = ? WHERE email = ?", [self._clock(), email]
            )
        return self._new_session_sync(org_id, org_key, "user", email, role, "", ttl)

    def password_matches(self, email: str, password: str) -> bool:
        """Whether `password` is `email`'s (a user changing its own password proves it)."""
        row = (
            self._database.cursor()
            .execute("SELECT password_hash FROM users WHERE email = ?", [email])
            .fetchone()
        )
        return verify_password(password, row[0] if row else self._dummy_hash) and row is not None

    def affect_sessions(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        kind: str,
        subject: str | None = None,
        app_id: str | None = None,
        org_id: str | None = None,
        end: bool = False,
        role: str | None = None,
        keep: str | None = None,
    ) -> Callable[[], None]:
        """End (`end`) or re-role (`role`) the sessions of a user (`subject`), of an app's things
        (`app_id`) or of one thing (`subject`, `org_id`), except the one hashed `keep`: in the
        stored table through `cursor` (inside the caller's transaction), and, by the function
        returned (to call once it committed), in the live sessions of this process."""
        where = ["kind = ?", "NOT ended"]
        values: list[object] = [kind]
        for column, value in (("subject", subject), ("app_id", app_id), ("org_id", org_id)):
            if value is not None:
                where.append(f"{column} = ?")
                values.append(value)
        if keep is not None:
            where.append("token_hash <> ?")
            values.append(keep)
        if end:
            sql = "UPDATE sessions SET ended = true WHERE " + " AND ".join(where)  # noqa: S608
            cursor.execute(sql, values)
        elif role is not None:
            sql = "UPDATE sessions SET role = ? WHERE " + " AND ".join(where)  # noqa: S608
            cursor.execute(sql, [role, *values])

        def matches(session: Session) -> bool:
            return (
                session.kind == kind
                and subject in (None, session.subject)
                and app_id in (None, session.app_id)
                and org_id in (None, session.org_id)
                and session.token_hash != keep
            )

        def apply() -> None:
            for session in list(self._sessions.values()):
                if not matches(session):
                    continue
                if end:
                    session.ended = True
                    self._sessions.pop(session.token_hash, None)
                elif role is not None:
                    session.role = role

        return apply

    def _thing_session_sync(
        self, app_id: str, app_token: str, thing_key: str, ttl: int
    ) -> tuple[Session, str] | None:
        cursor = self._database.cursor()
        row = cursor.execute(
            "SELECT a.token_hash, o.org_id, o.org_key FROM applications a "
            "JOIN orgs o ON o.org_id = a.org_id WHERE a.app_id = ?",
            [app_id],
        ).fetchone()
        if row is None or not hmac.compare_digest(row[0], token_digest(app_token)):
            return None
        _, org_id, org_key = row
        self._register_thing(cursor, org_id, thing_key, app_id)
        return self._new_session_sync(org_id, org_key, "thing", thing_key, "thing", app_id, ttl)

    def _connected_thing_session_sync(
        self, org_id: str, app_id: str, thing_key: str, ttl: int
    ) -> tuple[Session, str] | None:
        cursor = self._database.cursor()
        row = cursor.execute(
            "SELECT o.org_key FROM applications a JOIN orgs o ON o.org_id = a.org_id"
            " WHERE a.app_id = ? AND a.org_id = ?",
            [app_id, org_id],
        ).fetchone()
        if row is None:  # revoked since the broker let the device in
            return None
        self._register_thing(cursor, org_id, thing_key, app_id)
        return self._new_session_sync(org_id, row[0], "thing", thing_key, "thing", app_id, ttl)

    async def open_thing_session(
        self, org_id: str, app_id: str, thing_key: str, ttl: int
    ) -> tuple[Session, str] | None:
        """A session for a thing the broker authenticated at CONNECT (its app token checked
        there), registering the thing on first use; None if the app no longer exists."""
        result = await asyncio.to_thread(
            self._connected_thing_session_sync, org_id, app_id, thing_key, ttl
        )
        if result:
            self._held(result[0])
        return result

    def _new_session_sync(
        self, org_id: str, org_key: str, kind: str, subject: str, role: str, app_id: str, ttl: int
    ) -> tuple[Session, str]:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(
            token_hash=token_digest(token),
            org_id=org_id,
            org_key=org_key,
            kind=kind,
            subject=subject,
            role=role,
            app_id=app_id,
            ttl_seconds=ttl,
            start_time=now,
            last_accessed=now,
            stored_access=now,
        )
        self._database.cursor().execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, false)",
            [session.token_hash, org_id, kind, subject, role, app_id, ttl, now, now],
        )
        return session, token

    async def authenticate_user(
        self, email: str, password: str, ttl: int
    ) -> tuple[Session, str] | None:
        result = await asyncio.to_thread(self._user_session_sync, email, password, ttl)
        if result:
            self._held(result[0])
        return result

    async def authenticate_thing(
        self, app_id: str, app_token: str, thing_key: str, ttl: int
    ) -> tuple[Session, str] | None:
        result = await asyncio.to_thread(
            self._thing_session_sync, app_id, app_token, thing_key, ttl
        )
        if result:
            self._held(result[0])
        return result

    # -- sessions ----------------------------------------------------------------------------
    def _load_session_sync(self, token_hash: str) -> Session | None:
        row = (
            self._database.cursor()
            .execute(
                "SELECT s.token_hash, s.org_id, o.org_key, s.kind, s.subject, s.role, s.app_id, "
                "s.ttl_seconds, s.start_time, s.last_accessed FROM sessions s "
                "JOIN orgs o ON o.org_id = s.org_id WHERE s.token_hash = ? AND NOT s.ended",
                [token_hash],
            )
            .fetchone()
        )
        if row is None:
            return None
        session = Session(*row)
        session.stored_access = session.last_accessed
        return session

    def _store_access_sync(self, token_hash: str, last_accessed: datetime) -> None:
        # A concurrent refresh of the same session may win the write; either timestamp is fine.
        with contextlib.suppress(duckdb.TransactionException):
            self._database.cursor().execute(
                "UPDATE sessions SET last_accessed = ? WHERE token_hash = ?",
                [last_accessed, token_hash],
            )

    async def resolve(self, token: str) -> Session | None:
        """The live session for `token`, its expiry slid forward; None if unknown or expired."""
        session = await self._held_or_read(token_digest(token))
        return session if session is not None and await self.touch(session) else None

    async def _held_or_read(self, token_hash: str) -> Session | None:
        """The session held in memory as `token_hash`, else read from the table (and held from
        then on); None if the table has no open session of that hash."""
        session = self._sessions.get(token_hash)
        if session is None:
            session = await asyncio.to_thread(self._load_session_sync, token_hash)
            if session is not None:
                self._held(session)
        return session

    async def touch(self, session: Session) -> bool:
        """Whether `session` is still alive; if so its expiry slides forward.

        Transports keep the Session of a bound connection and call this directly, which spares
        hashing the token on every envelope.
        """
        if session.ended:
            return False
        if self._database.lake and not await self._still_open(session):
            return False
        now = self._clock()
        if now >= session.expires_at():
            session.ended = True
            self._sessions.pop(session.token_hash, None)
            return False
        session.last_accessed = now
        if now - session.stored_access >= _PERSIST_ACCESS_EVERY:
            session.stored_access = now
            await asyncio.to_thread(self._store_access_sync, session.token_hash, now)
        return True

    def _held(self, session: Session) -> None:
        """Keep a session just made or read from the table in memory."""
        self._sessions[session.token_hash] = session
        if self._database.lake:
            self._checked[session.token_hash] = time.monotonic()

    async def _still_open(self, session: Session) -> bool:
        """Whether the sessions table still holds `session` open, read again at most every
        `RECHECK_EVERY` seconds (its role too: an administrator may change it elsewhere). A
        session this store never held (the admin CLI's own caller) is not in the table."""
        checked = self._checked.get(session.token_hash)
        now = time.monotonic()
        if checked is None or now - checked < RECHECK_EVERY:
            return True
        try:
            stored = await asyncio.to_thread(self._load_session_sync, session.token_hash)
        except duckdb.Error as error:
            # PostgreSQL out of reach: no gateway can end a session, change a role or delete a
            # user meanwhile (all of that is written there), so the session held stays as it was
            # read last; its expiry is still checked here.
            if not self._outage_logged:
                self._outage_logged = True
                logger.warning(
                    "sessions cannot be read again (%s); trusting the ones held until it is back",
                    str(error).splitlines()[0][:160],
                )
            return True
        self._outage_logged = False
        if stored is None:
            session.ended = True
            self._sessions.pop(session.token_hash, None)
            self._checked.pop(session.token_hash, None)
            return False
        session.role = stored.role
        self._checked[session.token_hash] = now
        return True

    async def session_by_hash(self, token_hash: str) -> Session | None:
        """The session stored as `token_hash`, the one held in memory if it is, else read (and
        held from then on); None if unknown or ended. Not touched: the caller does (a session
        bound to a namespace through another gateway, which gave only its hash)."""
        session = await self._held_or_read(token_hash)
        return None if session is None or session.ended else session

    async def end(self, token: str) -> None:
        await self.end_hashed(token_digest(token))

    async def end_hashed(self, token_hash: str) -> None:
        session = self._sessions.pop(token_hash, None)
        self._checked.pop(token_hash, None)
        values: list[object]
        if session is None:
            sql, values = "UPDATE sessions SET ended = true WHERE token_hash = ?", [token_hash]
        else:
            session.ended = True
            # Its last use is kept exactly (a thing's lastSeen), not to the minute.
            sql = "UPDATE sessions SET ended = true, last_accessed = ? WHERE token_hash = ?"
            values = [session.last_accessed, token_hash]
        await asyncio.to_thread(lambda: self._database.cursor().execute(sql, values))

    # -- things --------------------------------------------------------------------------------
    async def things(self, org_id: str, keys: list[str] | None = None) -> list[ThingSummary]:
        stored = await asyncio.to_thread(self._things_sync, org_id, keys)
        # A live session's last use is exact in memory and stored at most once a minute.
        seen: dict[str, datetime] = {}
        for session in list(self._sessions.values()):
            if session.kind == "thing" and session.org_id == org_id:
                before = seen.get(session.subject)
                if before is None or session.last_accessed > before:
                    seen[session.subject] = session.last_accessed
        summaries = []
        for thing in stored:
            live = seen.get(thing.thing_key)
            if live is not None and (thing.last_seen is None or live > thing.last_seen):
                thing = dataclasses.replace(thing, last_seen=live)
            summaries.append(thing)
        return summaries

    def _things_sync(self, org_id: str, keys: list[str] | None) -> list[ThingSummary]:
        sql = (
            "SELECT t.org_id, t.thing_key, t.app_id, t.created_at, s.last_seen, t.name,"
            " t.tags FROM things t"
            " LEFT JOIN (SELECT subject, max(last_accessed) AS last_seen FROM sessions"
            "  WHERE org_id = ? AND kind = 'thing' GROUP BY subject) s ON s.subject = t.thing_key"
            " WHERE t.org_id = ?"
        )
        values: list[object] = [org_id, org_id]
        if keys is not None:
            sql += " AND list_contains(?, t.thing_key)"
            values.append(keys)
        rows = self._database.cursor().execute(sql, values).fetchall()
        return [
            ThingSummary(org_id, key, app_id, created, seen, name, tuple(tags))
            for org_id, key, app_id, created, seen, name, tags in rows
        ]
