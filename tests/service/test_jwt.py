"""OAuth2 bearer JWTs: accepted when configured, each failure a 401 saying why; keys still work."""

from __future__ import annotations

import subprocess
import sys
import time

import jwt
import pytest
import sqlalchemy as sa

from forecast.explain.scoring import open_deal_ids
from service.predlog import audit_log
from tests.service.conftest import home_env, serve

SECRET = "test-secret-that-is-long-enough-for-hs256"
AUDIENCE = "forecast-api"
ISSUER = "https://login.example.test/"


def token(secret: str = SECRET, *, ttl: float = 300, **claims: object) -> str:
    now = int(time.time())
    base = {"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl}
    payload = {k: v for k, v in {**base, **claims}.items() if v is not None}
    return jwt.encode(payload, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def jwt_api(trained_home):
    from service.app import create_app

    env = {
        "FORECAST_JWT_SECRET": SECRET,
        "FORECAST_JWT_AUDIENCE": AUDIENCE,
        "FORECAST_JWT_ISSUER": ISSUER,
        "FORECAST_JWT_LEEWAY_SECONDS": "0",
    }
    with home_env(trained_home, **env), serve(create_app()) as running:
        yield running


@pytest.fixture(scope="module")
def deals(jwt_api) -> dict[str, str]:
    tables = jwt_api.state.tables
    open_now = tables.deals[tables.deals["deal_id"].isin(open_deal_ids(tables, tables.as_of))]
    return {
        rep: str(open_now.loc[open_now["rep_id"] == rep, "deal_id"].iloc[0])
        for rep in ("R0001", "R0004")
    }


@pytest.mark.parametrize(
    ("claims", "own", "other"),
    [
        ({"role": "crm"}, 403, 403),
        ({"role": "rep", "rep_id": "R0001"}, 200, 404),
        ({"role": "manager", "rep_id": "M001"}, 200, 404),
        ({"role": "admin"}, 200, 200),
    ],
)
def test_a_valid_token_acts_with_its_role_and_reach(jwt_api, deals, claims, own, other):
    bearer = token(**claims)
    got = [
        jwt_api.call("GET", f"/v1/deals/{deals[r]}", token=bearer).status
        for r in ("R0001", "R0004")
    ]
    assert got == [own, other]
    scored = jwt_api.call(
        "POST", "/v1/deals:scoreFeatures", json_body={"deals": [{}]}, token=bearer
    )
    assert scored.status == 200, scored.detail


def test_a_token_caller_is_audit_logged_by_subject(jwt_api, deals):
    jwt_api.call("GET", f"/v1/deals/{deals['R0001']}", token=token(role="admin", sub="ops-42"))
    jwt_api.state.logs.flush()  # rows are written in batches, off the request path
    with jwt_api.state.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.caller == "jwt:ops-42")).all()
    assert [(r.role, r.status) for r in rows] == [("admin", 200)], [tuple(r) for r in rows]


@pytest.mark.parametrize(
    ("bearer", "said"),
    [
        (token(role="admin", ttl=-60), "expired"),
        (token("another-secret-that-is-long-enough-too", role="admin"), "signature"),
        (token(role="admin", aud="someone-else"), "audience"),
        (token(role="admin", iss="https://evil.example.test/"), "issuer"),
        (token(role="admin", exp=None), "'exp'"),
        (token(role="admin", sub=None), "'sub'"),
        (token(), "'role'"),
        (token(role="superuser"), "'role'"),
        (token(role="rep"), "'rep_id'"),
        ("not.a.jwt", "invalid bearer token"),
        (jwt.encode({"role": "admin"}, key=None, algorithm="none"), "algorithm"),
    ],
)
def test_a_bad_token_is_401_saying_why(jwt_api, bearer, said):
    answer = jwt_api.call(
        "POST", "/v1/deals:scoreFeatures", json_body={"deals": [{}]}, token=bearer
    )
    assert answer.status == 401 and said in answer.body["detail"], answer.detail
    assert answer.headers["www-authenticate"] == "Bearer"


def test_api_keys_keep_working_beside_tokens(jwt_api, deals):
    key = jwt_api.key("rep", rep_id="R0001")
    assert jwt_api.get(f"/v1/deals/{deals['R0001']}", key).status == 200
    assert jwt_api.get(f"/v1/deals/{deals['R0004']}", key).status == 404


def test_without_jwt_settings_a_bearer_token_is_401_saying_so(api):
    answer = api.call(
        "POST", "/v1/deals:scoreFeatures", json_body={"deals": [{}]}, token=token(role="admin")
    )
    assert answer.status == 401 and "no JWT configured" in answer.body["detail"]


def test_an_rs256_public_key_verifies_tokens_signed_by_its_private_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from forecast.settings import Settings
    from service.tokens import TokenError, verify_token

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = Settings(jwt_public_key=public.decode())
    now = int(time.time())
    claims = {"sub": "svc", "exp": now + 60, "role": "manager", "rep_id": "M001"}
    principal = verify_token(jwt.encode(claims, private, algorithm="RS256"), settings)
    assert (principal.role, principal.rep_id, principal.key_id) == ("manager", "M001", "jwt:svc")
    # an HS256 token "signed" with the public key must not pass (algorithm confusion)
    with pytest.raises(TokenError, match="algorithm"):
        verify_token(jwt.encode(claims, SECRET, algorithm="HS256"), settings)


def test_mixed_jwt_key_families_are_refused_at_start_naming_the_setting(monkeypatch):
    from forecast.settings import SettingsError, get_settings

    monkeypatch.setenv("FORECAST_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----")
    monkeypatch.setenv("FORECAST_JWT_ALGORITHMS", '["RS256", "HS256"]')
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match="FORECAST_JWT_ALGORITHMS mixes HMAC"):
            get_settings()
        monkeypatch.setenv("FORECAST_JWT_ALGORITHMS", '["HS256"]')
        get_settings.cache_clear()
        with pytest.raises(SettingsError, match="FORECAST_JWT_PUBLIC_KEY is set"):
            get_settings()
        done = subprocess.run(
            [sys.executable, "-m", "service.serve", "--port", "1"], capture_output=True, text=True
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "FORECAST_JWT_ALGORITHMS" in done.stderr
    finally:
        get_settings.cache_clear()


def test_a_public_key_that_cannot_be_read_is_a_token_error_not_a_500():
    from cryptography.hazmat.primitives.asymmetric import rsa

    from forecast.settings import Settings
    from service.tokens import TokenError, verify_token

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"sub": "svc", "exp": int(time.time()) + 60, "role": "admin"}
    settings = Settings(jwt_public_key="not a PEM")  # PyJWT raises InvalidKeyError on it
    with pytest.raises(TokenError, match="cannot be checked"):
        verify_token(jwt.encode(claims, private, algorithm="RS256"), settings)
