"""Raises while being imported: the worker fails to boot (exit 3)."""

import rgunicorn_test_module_that_does_not_exist  # noqa: F401
