"""The dfguard reviewer dashboard: sign-in, then the pages the user's role allows.

Run with `dfguard dashboard` (or `streamlit run dashboard/app.py` from the repository root); the
settings come from params.yaml or what `dfguard dashboard --set` passed down."""

from __future__ import annotations

import streamlit as st

from dashboard.pages import pages_for
from dashboard.session import sign_in_page, sign_out, signed_in

st.set_page_config(page_title="dfguard review", page_icon=":material/shield:", layout="wide")

user = signed_in()
if user is None:
    sign_in_page()
    st.stop()
with st.sidebar:
    st.caption(f"Signed in as **{user.name}** ({user.role})")
    st.button("Sign out", on_click=sign_out, key="sign_out")
st.navigation(pages_for(user)).run()
