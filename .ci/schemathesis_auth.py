"""Schemathesis hook: credentials for the operations that need them.

Each set comes from a fresh signup against the server under test (LATCHKEY_BASE_URL): its access
token as a bearer token, and its refresh token as the refresh cookie, so that authenticated
operations and refresh are exercised beyond their 401. Each operation has its own set, used for
one second at most: logout, logout-all, refresh-token reuse or a password change end a session,
and must not leave the other operations with nothing but 401s.

The admin API's operations (`/admin/v1/...`) get the admin key the script created with the CLI
(LATCHKEY_ADMIN_KEY) instead: nothing else authorizes them.
"""

import os
import uuid

import requests
import schemathesis

BASE_URL = os.environ["LATCHKEY_BASE_URL"]
ADMIN_KEY = os.environ["LATCHKEY_ADMIN_KEY"]
ADMIN_API = "/admin/v1/"
REFRESH_COOKIE = "__Secure-lk_refresh"


# The import's body (`application/x-ndjson`) is text, one JSON object a line: sent as text/plain is sent.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


def per_operation(case, ctx):
    return case.operation.label


@schemathesis.auth(refresh_interval=1, retry_on=[], cache_by_key=per_operation)
class FreshAccount:
    def get(self, case, ctx):
        if case.operation.path.startswith(ADMIN_API):
            return ADMIN_KEY, None
        response = requests.post(
            f"{BASE_URL}/auth/signup",
            json={
                "email": f"schemathesis-{uuid.uuid4().hex}@example.com",
                "password": "correct horse battery staple",
            },
            timeout=30,
        )
        response.raise_for_status()
        # Read from the header: a cookie jar would not hand a Secure cookie back over plain HTTP.
        refresh = next(
            value.split(";", 1)[0].split("=", 1)[1]
            for value in response.raw.headers.getlist("Set-Cookie")
            if value.startswith(REFRESH_COOKIE + "=")
        )
        return response.json()["access_token"], refresh

    def set(self, case, data, ctx):
        access, refresh = data
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {access}"
        if refresh is None:
            return
        case.cookies = case.cookies or {}
        case.cookies[REFRESH_COOKIE] = refresh
