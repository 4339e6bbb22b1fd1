"""Storage URLs with and without their password: what may be shown, and what a job needs to connect.

A study's RDB storage URL (``postgresql://user:secret@host/db``) must never
appear in a command line, a log, the Snakemake metadata or the report: the
workflow strips the password (:func:`storage_without_password`) and hands it
to its jobs through :data:`STORAGE_PASSWORD_ENV`, the CLI puts it back
(:func:`storage_with_password`), and every message shows
:func:`redact_storage`'s form.
"""

from __future__ import annotations

#: Environment variable through which the workflow hands a storage password to its jobs (read by the CLI).
STORAGE_PASSWORD_ENV = "BIOPLAUS_STORAGE_PASSWORD"


def _split_netloc(url: str):
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    return parts, userinfo, at, hostport


def storage_without_password(url: str | None) -> tuple[str | None, str | None]:
    """``(url without its password, password or None)`` of an RDB storage URL.

    ``postgresql://user:secret@host/db`` gives ``("postgresql://user@host/db", "secret")``
    (the password percent-decoded). What the workflow writes into commands, logs,
    the report and its metadata is the first; the second travels by environment
    (:data:`STORAGE_PASSWORD_ENV`).
    """
    if not url:
        return url, None
    from urllib.parse import unquote, urlunsplit

    parts, userinfo, at, hostport = _split_netloc(url)
    user, colon, password = userinfo.partition(":")
    if not colon:
        return url, None
    return urlunsplit(parts._replace(netloc=f"{user}{at}{hostport}")), unquote(password)


def storage_with_password(url: str | None, password: str | None) -> str | None:
    """``url`` with ``password`` put in (percent-encoded); ``url`` unchanged without one or if it has one."""
    if not url or password is None:
        return url
    from urllib.parse import quote, urlunsplit

    parts, userinfo, at, hostport = _split_netloc(url)
    if not at or ":" in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo}:{quote(password, safe='')}@{hostport}"))


def redact_storage(url: str | None) -> str | None:
    """``url`` with any password replaced by ``***`` (for messages)."""
    bare, password = storage_without_password(url)
    if password is None:
        return url
    parts, userinfo, at, hostport = _split_netloc(bare)
    from urllib.parse import urlunsplit

    return urlunsplit(parts._replace(netloc=f"{userinfo}:***{at}{hostport}"))
