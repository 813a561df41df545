"""The dashboard's local accounts: names, roles and bcrypt password hashes in the store's database, so
a team's PostgreSQL store shares them across dashboard hosts. With OIDC sign-in (`st.login`) the
identity provider checks passwords and this table only gives a signed-in e-mail its role."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import bcrypt
import sqlalchemy as sa

from dfguard.feedback import ROLES, PredictionStore
from dfguard.feedback.db import write_transaction
from dfguard.feedback.schema import users

# Letters, digits and _ . @ - : a local name or an OIDC e-mail, never markup or a path.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further: a longer password would be cut silently
BCRYPT_ROUNDS = 12
# Checked against when the name is unknown, so a wrong name costs as long as a wrong password and the
# sign-in's timing does not tell which names exist.
_DUMMY_HASH = bcrypt.hashpw(b"not a password of anyone", bcrypt.gensalt(BCRYPT_ROUNDS))


@dataclass(frozen=True)
class User:
    name: str
    role: str  # "reviewer" or "engineer"

    @property
    def is_engineer(self) -> bool:
        return self.role == "engineer"


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        raise ValueError(
            "user name must be 1-64 letters, digits or _ . @ + - (starting with a letter or digit), "
            f"got {name!r}"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def check_password(password: str) -> bytes:
    """The password's bytes, refused when too short for a shared machine or too long for bcrypt."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise ValueError(f"a password may have at most {MAX_PASSWORD_BYTES} bytes (bcrypt reads no more)")
    return encoded


def add_user(store: PredictionStore, name: str, role: str, password: str) -> User:
    """Create an account; ValueError when the name is taken or a value is refused."""
    user = User(check_user_name(name), check_role(role))
    hashed = bcrypt.hashpw(check_password(password), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
    try:
        with write_transaction(store.engine) as connection:
            connection.execute(
                users.insert().values(
                    name=user.name, role=user.role, password_hash=hashed, created_at=datetime.now(UTC)
                )
            )
    except sa.exc.IntegrityError as err:
        raise ValueError(f"user {name!r} exists already") from err
    return user


def authenticate(store: PredictionStore, name: str, password: str) -> User | None:
    """The user whose name and password these are; None for anything else (never says which was wrong)."""
    row = None
    if isinstance(name, str) and USER_NAME.fullmatch(name):
        with store.engine.connect() as connection:
            row = connection.execute(sa.select(users).where(users.c.name == name)).mappings().first()
    encoded = password.encode() if isinstance(password, str) else b""
    if not encoded or len(encoded) > MAX_PASSWORD_BYTES:
        return None
    stored = row["password_hash"].encode() if row is not None else _DUMMY_HASH
    if not bcrypt.checkpw(encoded, stored) or row is None:
        return None
    return User(row["name"], row["role"])


def find_user(store: PredictionStore, name: str) -> User | None:
    """The account named `name` (an OIDC sign-in's e-mail), without a password check."""
    with store.engine.connect() as connection:
        row = connection.execute(sa.select(users.c.name, users.c.role).where(users.c.name == name)).first()
    return None if row is None else User(row.name, row.role)


def list_users(store: PredictionStore) -> list[User]:
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(users.c.name, users.c.role).order_by(users.c.name)).all()
    return [User(row.name, row.role) for row in rows]
