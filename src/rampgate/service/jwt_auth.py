"""End users: verified JWTs whose ``sub`` becomes the actor ``user:<sub>``.

The key type fixes the one algorithm accepted: ``RAMPGATE_JWT_SECRET`` means
HS256, ``RAMPGATE_JWT_PUBLIC_KEY`` (PEM text, or a path to a PEM file) means
RS256. A token with any other ``alg`` is rejected: ``none``, HS256 signed
with the public key, or RS256 where a secret is configured. So is a token
without ``sub`` or ``exp``, an expired one, and, when
``RAMPGATE_JWT_AUDIENCE`` or ``RAMPGATE_JWT_ISSUER`` is set, one whose
``aud`` or ``iss`` differs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm
from fastapi import Request

from rampgate.core.names import MAX_ACTOR_ID_LENGTH
from rampgate.errors import ConfigurationError
from rampgate.service.auth import Unauthorized, bearer_token, settings_of
from rampgate.settings import Settings

logger = logging.getLogger(__name__)

# Clock skew allowed on ``exp`` and ``nbf`` between the token issuer and this server.
LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class EndUser:
    """The actor of a request authenticated with an end-user JWT."""

    actor_type: str
    actor_id: str


class JwtVerifier:
    """Checks end-user JWTs against the configured key, algorithm, audience and issuer."""

    def __init__(self, settings: Settings) -> None:
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.key: Any
        self.algorithm: str | None
        if settings.jwt_secret:
            self.key = settings.jwt_secret
            self.algorithm = "HS256"
        elif settings.jwt_public_key:
            self.key = parse_public_key(load_public_key(settings.jwt_public_key))
            self.algorithm = "RS256"
        else:
            self.key = None
            self.algorithm = None

    @property
    def is_configured(self) -> bool:
        return self.key is not None

    def verify(self, token: str) -> EndUser:
        """Return the end user of a valid token; raise :class:`Unauthorized` for any other token."""
        if self.key is None or self.algorithm is None:
            raise Unauthorized(
                "end-user tokens are not accepted: set RAMPGATE_JWT_SECRET or RAMPGATE_JWT_PUBLIC_KEY"
            )

        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={
                    "require": ["sub", "exp"],
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized(f"the token's algorithm is not accepted; expected {self.algorithm}") from None
        except jwt.InvalidTokenError as error:
            raise Unauthorized(f"invalid token: {error}") from None

        subject = claims["sub"]
        if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_ACTOR_ID_LENGTH:
            raise Unauthorized(f"invalid token: sub must be a string of 1 to {MAX_ACTOR_ID_LENGTH} characters")
        return EndUser("user", subject)


def load_public_key(value: str) -> str:
    """Return PEM text given either the PEM text itself or the path of a PEM file."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text

    path = Path(text).expanduser()
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigurationError(
            "RAMPGATE_JWT_PUBLIC_KEY", value, f"PEM text or the path of a readable PEM file ({error.strerror})"
        ) from None
    if "-----BEGIN" not in text:
        raise ConfigurationError("RAMPGATE_JWT_PUBLIC_KEY", value, "a file that contains a PEM public key")
    return text


def parse_public_key(pem: str) -> Any:
    """Parse an RSA public key in PEM form; raise :class:`ConfigurationError` when it is not one."""
    try:
        return RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
    except (jwt.InvalidKeyError, ValueError, TypeError) as error:
        raise ConfigurationError("RAMPGATE_JWT_PUBLIC_KEY", "(PEM text)", f"an RSA public key in PEM form ({error})") from None


def jwt_verifier_of(request: Request) -> JwtVerifier:
    """Return the application's verifier (``app.state.jwt_verifier``), built from its settings on first use."""
    verifier = getattr(request.app.state, "jwt_verifier", None)
    if verifier is None:
        verifier = JwtVerifier(settings_of(request))
        request.app.state.jwt_verifier = verifier
    return verifier


def require_end_user(request: Request) -> EndUser:
    """FastAPI dependency: the end user of the request's ``Authorization: Bearer <JWT>``."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <JWT>'")
    return jwt_verifier_of(request).verify(token)
