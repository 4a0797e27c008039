"""PKCS#11 specifics against a real SoftHSM2 token: keys are non-extractable, and a destroyed
root that comes back after a crash (SoftHSMv2 issue 903) is destroyed again on restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oblivio.core.errors import IntegrityError
from oblivio.core.receipts import DestructionReceipt, verify_destruction_receipt
from oblivio.keys.pkcs11 import Pkcs11Backend, parse_pkcs11_uri
from oblivio.node.node import init_node, open_node
from oblivio.store.key_tree_nodes import all_receipts
from tests.keys.conftest import pkcs11_uri


def _session(uri: str):  # type: ignore[no-untyped-def]
    import pkcs11

    config = parse_pkcs11_uri(uri)
    token = pkcs11.lib(config.module_path).get_token(token_label=config.token_label)
    try:
        return token.open(rw=True, user_pin=config.pin)
    except pkcs11.UserAlreadyLoggedIn:
        return token.open(rw=True)


def test_root_keys_are_sensitive_and_not_extractable(softhsm_base_uri: str) -> None:
    from pkcs11 import Attribute

    uri = pkcs11_uri(softhsm_base_uri)
    backend = Pkcs11Backend(parse_pkcs11_uri(uri))
    ref = backend.create_root_key("wrap")
    with _session(uri) as session:
        [key] = list(session.get_objects({Attribute.ID: bytes.fromhex(ref[4:])}))
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.TOKEN] is True
    backend.close()


def test_key_wrap_mode_never_encrypts_with_the_root(softhsm_base_uri: str, tmp_path: Path) -> None:
    """The CKM_AES_KEY_WRAP fallback, for tokens that refuse AES-GCM C_Encrypt under a key: its
    root keys may wrap and unwrap, not encrypt or decrypt, and a node works on them."""
    from pkcs11 import Attribute

    uri = pkcs11_uri(softhsm_base_uri) + "&wrap-mechanism=aes-key-wrap"
    with init_node(tmp_path / "home", name="kw", keys_uri=uri) as node:
        ids = [node.vault.put(b"kw %d" % i, {}) for i in range(6)]
        node.vault.custody.forget([ids[2]])  # type: ignore[attr-defined]
        with node.db.transaction(write=False) as tx:
            roots = [r[0] for r in tx.fetchall("SELECT root_ref FROM key_tree_heads")]
        for i, aid in enumerate(ids):
            if i != 2:
                assert node.vault.get(aid) == b"kw %d" % i
    with _session(uri) as session:
        for ref in roots:
            [key] = list(session.get_objects({Attribute.ID: bytes.fromhex(ref[4:])}))
            assert key[Attribute.WRAP] is True
            assert key[Attribute.UNWRAP] is True
            assert key[Attribute.ENCRYPT] is False
            assert key[Attribute.DECRYPT] is False


def test_key_wrap_binds_the_context_and_the_bytes(softhsm_base_uri: str) -> None:
    uri = pkcs11_uri(softhsm_base_uri) + "&wrap-mechanism=aes-key-wrap"
    backend = Pkcs11Backend(parse_pkcs11_uri(uri))
    ref = backend.create_root_key("wrap")
    material = bytes(range(64))
    [wrapped] = backend.wrap_many(ref, [(material, b"position 1")])
    assert backend.unwrap_many(ref, [(wrapped, b"position 1")]) == [material]
    flipped = bytearray(wrapped)
    flipped[5] ^= 1
    for item in ((wrapped, b"position 2"), (bytes(flipped), b"position 1"), (wrapped[:-8], b"")):
        with pytest.raises(IntegrityError):
            backend.unwrap_many(ref, [item])
    backend.close()


def test_a_destroyed_root_that_comes_back_is_destroyed_again(
    softhsm_base_uri: str, tmp_path: Path
) -> None:
    from pkcs11 import Attribute, KeyType

    uri = pkcs11_uri(softhsm_base_uri)
    prefix = parse_pkcs11_uri(uri).object_prefix
    with init_node(tmp_path / "home", name="hsm", keys_uri=uri) as node:
        ids = [node.vault.put(b"x%d" % i, {}) for i in range(5)]
        receipts = node.vault.custody.forget([ids[0]])  # type: ignore[attr-defined]
        destroyed = {str(r.key_ref["key_id"]): str(r.key_ref["tree"]) for r in receipts}
        assert not any(node.backend.has_root_key(ref) for ref in destroyed)
    # As after a crash of SoftHSMv2 (issue 903): the destroyed objects are back in the token.
    with _session(uri) as session:
        for ref, tree in destroyed.items():
            session.generate_key(
                KeyType.AES,
                256,
                id=bytes.fromhex(ref[4:]),
                label=f"{prefix}-root-{tree}",
                store=True,
                template={Attribute.TOKEN: True, Attribute.EXTRACTABLE: False},
            )
    with open_node(tmp_path / "home") as node:
        assert not any(node.backend.has_root_key(ref) for ref in destroyed)
        again = [DestructionReceipt.from_dict(json.loads(r)) for r in all_receipts(node.db)]
        redone = [r for r in again if r.evidence.get("destroyed_again")]
        assert {str(r.key_ref["key_id"]) for r in redone} == set(destroyed)
        for receipt in redone:
            verify_destruction_receipt(receipt.to_bytes(), node.signing_key.verify_key)
        assert all(node.vault.get(aid) == b"x%d" % i for i, aid in enumerate(ids) if i)


@pytest.mark.parametrize("attribute", ["module-path=/nonexistent.so", "pin-value=0000"])
def test_unusable_token_settings_are_backend_errors(softhsm_base_uri: str, attribute: str) -> None:
    from oblivio.core.errors import KeyBackendError

    uri = pkcs11_uri(softhsm_base_uri)
    name = attribute.split("=", maxsplit=1)[0]
    parts = [p for p in uri.split("?")[1].split("&") if not p.startswith(name)]
    broken = uri.split("?")[0] + "?" + "&".join([*parts, attribute])
    with pytest.raises(KeyBackendError):
        Pkcs11Backend(parse_pkcs11_uri(broken)).close()
