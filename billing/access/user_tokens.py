"""End-user tokens (SPEC §7): HS256 JWTs the host application signs with `USER_TOKEN_SECRET`,
`sub` = the user id, `exp` required. Minted here only for testing (`smsledger token`)."""

from __future__ import annotations

from datetime import datetime, timedelta

import jwt

from billing.chart import CUSTOMER_ID
from billing.errors import InvalidUserToken

ALGORITHM = "HS256"


def mint_user_token(secret: str, user_id: str, now: datetime, ttl: timedelta) -> str:
    """A token for `user_id` valid for `ttl` from `now`."""
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + ttl}, secret, algorithm=ALGORITHM)


def user_of_token(secret: str, token: str) -> str:
    """The user id a valid token names.

    Raises: InvalidUserToken (bad signature, expired, no `exp`/`sub`, another algorithm).
    """
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidUserToken("the user token has expired") from error
    except jwt.InvalidTokenError as error:
        raise InvalidUserToken(f"the user token is not valid: {error}") from error
    subject = claims["sub"]
    if not isinstance(subject, str) or not CUSTOMER_ID.match(subject):
        raise InvalidUserToken("the user token's `sub` is not a user id")
    return subject
