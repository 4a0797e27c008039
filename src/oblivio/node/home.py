"""A node's home directory: its configuration, signing key and local key material.

HOME/config.json                 name, store URI, keys URI (read once, typed)
HOME/signing.key                 the node's Ed25519 seed, base64url (mode 0600)
HOME/oblivio.db                  the embedded default store (sqlite:///HOME/oblivio.db)
HOME/keys/software-root-keys     the software backend's root keys (mode 0600)
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from oblivio.core.canonical import parse_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import InvalidInputError, OblivioError
from oblivio.core.signing import SEED_SIZE, SigningKey
from oblivio.keys.key_tree import DEFAULT_FANOUT, MIN_FANOUT

CONFIG_FILE = "config.json"
SIGNING_KEY_FILE = "signing.key"
DEFAULT_DB_FILE = "oblivio.db"
DEFAULT_KEYS_URI = "software:"
MAX_FANOUT: Final = 4096
"""A node of 4,096 children re-wraps 4,096 keys per forget: beyond that a tree is a flat epoch."""


class NodeHomeError(OblivioError):
    """The node home is missing, incomplete or unreadable."""

    code = "node_home_error"


@dataclass(frozen=True)
class NodeConfig:
    """The node's configuration, read once from HOME/config.json.

    ``forgetting`` holds optional settings (``batch_size``, ``epoch_interval_seconds``,
    ``destruction_window_seconds``, ``heartbeat_seconds``, ``tombstone_level``); absent ones
    take their defaults (node/forgetting.py). ``key_tree`` holds ``fanout``, for trees made
    from then on (``key_tree_settings``). The destruction window is the forgetting section's:
    it holds back the whole execution, so no level-2 proof is issued while an old root lives.
    """

    name: str
    store_uri: str
    keys_uri: str
    forgetting: Mapping[str, Any] = field(default_factory=dict)
    key_tree: Mapping[str, Any] = field(default_factory=dict)
    federation: Mapping[str, Any] = field(default_factory=dict)
    """Optional federation settings (federation/settings.py): poll interval, ack deadline."""
    node_id: str | None = None
    """The key id of the node's first signing key: who the database and key store belong to
    (docs/adr/0016), unchanged when the signing key rotates. Homes made before it have none
    until they open once (``open_node`` records the current key id)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in config.json."""
        data: dict[str, Any] = {"name": self.name, "store": self.store_uri, "keys": self.keys_uri}
        if self.node_id is not None:
            data["node_id"] = self.node_id
        if self.forgetting:
            data["forgetting"] = dict(self.forgetting)
        if self.key_tree:
            data["key_tree"] = dict(self.key_tree)
        if self.federation:
            data["federation"] = dict(self.federation)
        return data

    @classmethod
    def from_dict(cls, data: object) -> NodeConfig:
        """Read the JSON form; raise NodeHomeError naming a missing or mistyped field."""
        if not isinstance(data, dict):
            raise NodeHomeError("config.json: expected a JSON object")
        values = {}
        for name in ("name", "store", "keys"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise NodeHomeError(f"config.json: field {name!r} must be a non-empty string")
            values[name] = value
        sections = {}
        for name in ("forgetting", "key_tree", "federation"):
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise NodeHomeError(f"config.json: field {name!r} must be an object")
            sections[name] = section
        node_id = data.get("node_id")
        if node_id is not None and not (
            isinstance(node_id, str) and len(node_id) == 64 and _is_hex(node_id)
        ):
            raise NodeHomeError("config.json: field 'node_id' must be 64 lower-case hex digits")
        config = cls(values["name"], values["store"], values["keys"], **sections, node_id=node_id)
        key_tree_settings(config.key_tree)
        return config


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class KeyTreeSettings:
    """How the node's key trees are made."""

    fanout: int = DEFAULT_FANOUT


def key_tree_settings(section: Mapping[str, Any]) -> KeyTreeSettings:
    """Read the ``key_tree`` section of config.json (every field optional); NodeHomeError
    names a field of the wrong type or out of range."""
    fanout = section.get("fanout", DEFAULT_FANOUT)
    if type(fanout) is not int or not MIN_FANOUT <= fanout <= MAX_FANOUT:
        raise NodeHomeError(
            f"config.json: key_tree.fanout: expected an integer from {MIN_FANOUT} to "
            f"{MAX_FANOUT}, got {fanout!r}"
        )
    unknown = sorted(set(section) - {"fanout"})
    if unknown:
        raise NodeHomeError(f"config.json: key_tree: unknown field {unknown[0]!r}")
    return KeyTreeSettings(fanout)


NODE_NAME_MAX = 255
"""Characters in a node name at most: a host name's length (RFC 1035), with room to spare."""


def validate_node_name(name: str) -> str:
    """A node name is a signed-note key name: non-empty, printable, no spaces and no '+', at
    most NODE_NAME_MAX characters."""
    if len(name) > NODE_NAME_MAX:
        raise InvalidInputError(f"node name: at most {NODE_NAME_MAX} characters, got {len(name)}")
    if not name or not name.isprintable() or any(c.isspace() or c == "+" for c in name):
        raise InvalidInputError(
            f"node name: expected printable text without spaces or '+', got {name!r}"
        )
    return name


def default_home() -> Path:
    """``$OBLIVIO_HOME`` if set, else ``./.oblivio``."""
    return Path(os.environ.get("OBLIVIO_HOME") or ".oblivio")


def default_store_uri(home: Path) -> str:
    """The embedded default: a SQLite file inside the home."""
    return "sqlite:///" + str((home / DEFAULT_DB_FILE).resolve()).lstrip("/")


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write an owner-only (0600) file and fsync it; refuse an existing one unless
    ``overwrite``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def signing_key_file_bytes(key: SigningKey) -> bytes:
    """How a signing key is kept on disk: its seed, base64url, one line."""
    return (b64url_encode(key.seed) + "\n").encode("ascii")


def new_signing_key() -> SigningKey:
    """A fresh Ed25519 signing key from the operating system's randomness."""
    return SigningKey(secrets.token_bytes(SEED_SIZE))


def default_node_name(signing_key: SigningKey) -> str:
    """``oblivio-`` and the first 12 hex characters of the node's key id."""
    return "oblivio-" + signing_key.key_id[:12]


def ensure_uninitialised(home: Path) -> None:
    """Raise NodeHomeError if ``home`` already holds a node."""
    if (home / CONFIG_FILE).exists() or (home / SIGNING_KEY_FILE).exists():
        raise NodeHomeError(f"node home {home} is already initialised")


def write_home(home: Path, config: NodeConfig, signing_key: SigningKey) -> None:
    """Write the signing key and then the configuration (which marks the home complete)."""
    ensure_uninitialised(home)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_file(home / SIGNING_KEY_FILE, signing_key_file_bytes(signing_key))
    write_private_file(home / CONFIG_FILE, _config_bytes(config))


def _config_bytes(config: NodeConfig) -> bytes:
    return (json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")


def save_config(home: Path, config: NodeConfig) -> None:
    """Replace HOME/config.json atomically (a new file renamed over it, then fsynced)."""
    partial = home / (CONFIG_FILE + ".partial")
    write_private_file(partial, _config_bytes(config), overwrite=True)
    os.replace(partial, home / CONFIG_FILE)
    fd = os.open(home, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_config(home: Path) -> NodeConfig:
    """Read HOME/config.json. Raises NodeHomeError if the home is missing or damaged."""
    path = home / CONFIG_FILE
    if not path.is_file():
        raise NodeHomeError(f"no oblivio node at {home} (run 'oblivio init --home {home}' first)")
    try:
        return NodeConfig.from_dict(parse_json(path.read_bytes()))
    except InvalidInputError as e:
        raise NodeHomeError(f"{path}: {e}") from e


def load_signing_key(home: Path) -> SigningKey:
    """Read the node's signing key. Raises NodeHomeError if missing or malformed."""
    path = home / SIGNING_KEY_FILE
    try:
        seed = b64url_decode(path.read_text("ascii").strip())
        return SigningKey(seed)
    except (OSError, ValueError) as e:
        raise NodeHomeError(f"{path}: cannot read the node's signing key: {e}") from e
