"""Key backends for the tests: software (a key file), threshold (file custodians) and pkcs11
(a real SoftHSM2 token).

SoftHSM2 reads its configuration once per process (python-pkcs11 loads the module once), so one
token in a temporary ``SOFTHSM2_CONF`` directory serves the whole test session and each test
gets its own object prefix (``object=`` in the URI) inside it. Subprocesses inherit the
configuration. Without SoftHSM2 the pkcs11 tests skip (fail under OBLIVIO_REQUIRE_SERVICES=1)
with a message saying how to enable them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oblivio.keys.backend import WrappingKeyBackend, open_key_backend
from oblivio.keys.pkcs11 import DEFAULT_MODULE_PATHS
from tests.conftest import skip_or_fail

SOFTHSM_HINT = (
    "SoftHSM2 not available ({why}): install it (apt-get install softhsm2; "
    "scripts/bootstrap.sh dev does it) to run the PKCS#11 backend tests"
)
TOKEN_LABEL = "oblivio-test"  # noqa: S105 - a label, not a secret
SO_PIN = ("--so-pin", "87654321")
TOKEN_PIN = "4321"  # noqa: S105 - a throwaway test token's PIN


@pytest.fixture(scope="session")
def softhsm_base_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A pkcs11: URI (without object prefix) for a fresh SoftHSM2 token, or skip/fail."""
    module = next((p for p in DEFAULT_MODULE_PATHS if Path(p).exists()), None)
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        skip_or_fail(SOFTHSM_HINT.format(why="no softhsm2-util or libsofthsm2.so"))
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        skip_or_fail(SOFTHSM_HINT.format(why="python-pkcs11 missing: pip install -e '.[dev]'"))
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [util, "--init-token", "--free", "--label", TOKEN_LABEL, "--pin", TOKEN_PIN, *SO_PIN],
        check=True,
        capture_output=True,
    )
    yield f"pkcs11:token={TOKEN_LABEL}?module-path={module}&pin-value={TOKEN_PIN}"
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


def pkcs11_uri(base: str) -> str:
    """The base URI with an object prefix of its own, so tests share the token safely."""
    token, _, query = base.partition("?")
    return f"{token};object=t{uuid.uuid4().hex[:12]}?{query}"


@pytest.fixture(params=["software", "threshold", "pkcs11", "pkcs11-aes-key-wrap"])
def keys_uri(request: pytest.FixtureRequest) -> str:
    """A keys URI of each backend in turn (pkcs11 on the session's SoftHSM2 token, wrapping
    with AES-GCM and with the CKM_AES_KEY_WRAP fallback)."""
    if request.param == "software":
        return "software:"
    if request.param == "threshold":
        return "threshold:?n=5&t=3"
    base: str = request.getfixturevalue("softhsm_base_uri")
    if request.param == "pkcs11-aes-key-wrap":
        return pkcs11_uri(base) + "&wrap-mechanism=aes-key-wrap"
    return pkcs11_uri(base)


@pytest.fixture
def open_backend(tmp_path: Path) -> Iterator[Callable[[str, Path | None], WrappingKeyBackend]]:
    """Opens backends (closed after the test); the default home is ``tmp_path/home``."""
    opened: list[WrappingKeyBackend] = []

    def opener(uri: str, home: Path | None = None) -> WrappingKeyBackend:
        backend = open_key_backend(uri, home or tmp_path / "home", create=True)
        opened.append(backend)
        return backend

    yield opener
    for backend in opened:
        backend.close()
