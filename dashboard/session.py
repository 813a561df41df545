"""What every page of the dashboard shares: its settings, the store, the registry client, and who is
signed in. Connections are cached per process (`st.cache_resource`), keyed by the settings that make
them, so one Streamlit server serves every browser tab from one engine."""

from __future__ import annotations

import os
import time

import streamlit as st
from mlflow import MlflowClient

from dfguard.config import OVERRIDES_ENV, PARAMS_ENV, Config, config_from_env
from dfguard.feedback import PredictionStore, open_store, store_url
from dfguard.review.queue import release
from dfguard.review.users import User, authenticate, find_user

USER_KEY = "user"
FAILED_SIGN_INS = 5  # after this many wrong passwords a browser session waits LOCKOUT_S
LOCKOUT_S = 60.0


@st.cache_resource(show_spinner=False)
def _config(params: str, overrides: str) -> Config:
    return config_from_env()


def settings() -> Config:
    return _config(os.environ.get(PARAMS_ENV, ""), os.environ.get(OVERRIDES_ENV, ""))


@st.cache_resource(show_spinner=False)
def _store(url: str, root: str) -> PredictionStore:
    return open_store(settings().feedback)


def store() -> PredictionStore:
    cfg = settings().feedback
    return _store(store_url(cfg), cfg.root)


@st.cache_resource(show_spinner=False)
def _registry(root: str, tracking_uri: str) -> MlflowClient:
    from dfguard.registry import configure

    return configure(settings().registry)


def registry() -> MlflowClient:
    cfg = settings().registry
    return _registry(cfg.root, cfg.tracking_uri)


def signed_in() -> User | None:
    """The signed-in user of this browser session, or None."""
    if settings().dashboard.auth == "oidc":
        if not st.user.is_logged_in:
            return None
        email = str(st.user.get("email") or "")
        return find_user(store(), email) if email else None
    user = st.session_state.get(USER_KEY)
    return user if isinstance(user, User) else None


def require_user() -> User:
    """The signed-in user; a page reached without one stops here."""
    user = signed_in()
    if user is None:
        st.error("Sign in first.")
        st.stop()
    return user


def require_engineer() -> User:
    user = require_user()
    if not user.is_engineer:
        st.error("This page is for engineers.")
        st.stop()
    return user


def sign_in_page() -> None:
    """The sign-in form (local accounts) or the identity provider's button (OIDC)."""
    st.title("dfguard review")
    mode = settings().dashboard.auth
    if mode == "oidc":
        if st.user.is_logged_in:
            st.error(
                f"{st.user.get('email')} has no dfguard role: an engineer adds it with `dfguard users add`."
            )
            st.button("Sign out", on_click=st.logout)
        else:
            st.button("Sign in", type="primary", on_click=st.login)
        return
    if mode != "local":
        st.error(f"dashboard.auth must be local or oidc, got {mode!r}")
        return
    locked_until = st.session_state.get("locked_until", 0.0)
    with st.form("sign_in"):
        name = st.text_input("User name", key="sign_in_name")
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    if time.monotonic() < locked_until:
        st.error("Too many failed sign-ins: wait a minute.")
        return
    user = authenticate(store(), name.strip(), password)
    if user is None:
        failures = st.session_state.get("failed_sign_ins", 0) + 1
        st.session_state["failed_sign_ins"] = failures
        if failures >= FAILED_SIGN_INS:
            st.session_state["locked_until"] = time.monotonic() + LOCKOUT_S
            st.session_state["failed_sign_ins"] = 0
        st.error("Unknown user name or wrong password.")
        return
    st.session_state[USER_KEY] = user
    st.session_state.pop("failed_sign_ins", None)
    st.rerun()


def sign_out() -> None:
    user = signed_in()
    if user is not None:
        release(store(), user.name)  # the item they held goes back to the queue now
    if settings().dashboard.auth == "oidc":
        st.logout()
    for key in list(st.session_state):
        del st.session_state[key]
