"""OAuth2 bearer tokens (JWT) for the service, beside API keys: the same `Principal` comes out.

Off unless settings hold a secret (HS256) or a public key (RS256/ES256). A token must be signed
with an accepted algorithm, unexpired, carry `sub`, `exp`, the role claim (and the rep id claim
for reps and managers), and match the configured issuer and audience.
"""

from __future__ import annotations

import jwt

from forecast.settings import Settings
from service.keys import NEEDS_REP_ID, ROLES, Principal

KEY_ID_PREFIX = "jwt:"  # a token's caller in the logs: `jwt:<sub>`, never the token


class TokenError(ValueError):
    """A bearer token that cannot be accepted; the message says why (safe to show the caller)."""


def _verifying_key(settings: Settings) -> tuple[str, list[str]]:
    if settings.jwt_public_key:
        key, default = settings.jwt_public_key, ["RS256"]
    elif settings.jwt_secret is not None:
        key, default = settings.jwt_secret.get_secret_value(), ["HS256"]
    else:
        raise TokenError("bearer tokens are not accepted here (no JWT configured): use X-API-Key")
    return key, list(settings.jwt_algorithms or default)


def verify_token(token: str, settings: Settings) -> Principal:
    """The principal a bearer token speaks for.

    Raises:
        TokenError: not configured, malformed, badly signed, expired, not yet valid, wrong
            issuer or audience, or missing a claim; the message names which.
    """
    key, algorithms = _verifying_key(settings)
    required = ["exp", "sub"] + (["iss"] if settings.jwt_issuer else [])
    required += ["aud"] if settings.jwt_audience else []
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": required, "verify_aud": settings.jwt_audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("bearer token expired") from None
    except jwt.InvalidAudienceError:
        raise TokenError(f"bearer token audience is not {settings.jwt_audience!r}") from None
    except jwt.InvalidIssuerError:
        raise TokenError(f"bearer token issuer is not {settings.jwt_issuer!r}") from None
    except jwt.MissingRequiredClaimError as err:
        raise TokenError(f"bearer token lacks the {err.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise TokenError("bearer token signature does not verify") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError(f"bearer token algorithm not accepted (accepted: {algorithms})") from None
    except jwt.InvalidTokenError as err:
        raise TokenError(f"invalid bearer token: {err}") from None
    except jwt.PyJWTError as err:  # e.g. a key that does not fit the token's algorithm
        raise TokenError(f"bearer token cannot be checked: {err}") from None
    return _principal(claims, settings)


def _principal(claims: dict, settings: Settings) -> Principal:
    role = claims.get(settings.jwt_role_claim)
    if role not in ROLES:
        raise TokenError(
            f"bearer token claim {settings.jwt_role_claim!r} must be one of {', '.join(ROLES)}"
        )
    rep_id = claims.get(settings.jwt_rep_id_claim)
    if role in NEEDS_REP_ID and not (isinstance(rep_id, str) and rep_id):
        raise TokenError(f"a {role} token needs the {settings.jwt_rep_id_claim!r} claim")
    subject = str(claims["sub"])
    key_id = (KEY_ID_PREFIX + subject)[:64]  # the log's caller column holds 64 characters
    return Principal(key_id=key_id, role=role, rep_id=rep_id if role in NEEDS_REP_ID else None)
