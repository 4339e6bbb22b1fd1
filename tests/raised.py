"""What a call raises, for tests that compare errors (a helper module of the tests, not a test file)."""


def raised(fn):
    """``(type, message)`` of what ``fn()`` raises, or None if it returns."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return type(exc), str(exc)
    return None
