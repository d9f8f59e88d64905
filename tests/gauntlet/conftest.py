"""Fixtures for the core's tests.

The S3 server fixture is imported rather than listed in `pytest_plugins`: pytest only accepts
`pytest_plugins` in the top-level conftest (tests/conftest.py).
"""

from tests.s3server import s3_server  # noqa: F401  (a session fixture: a moto server on loopback)
