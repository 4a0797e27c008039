"""The shared Proof of Forgetting vectors (tests/vectors/pof/, made by tests/core/pof_vectors.py):
the committed files are what the generator makes, and the Python verifier gives every file the
result its manifest names. The browser's verifier is run over the same files by
tests/interfaces/test_console_browser.py (and here by Node.js, where it is installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from oblivio.core.pof import ProofInputError, ProofLinkError, parse_proof_document, verify_document
from tests.core.pof_vectors import DIRECTORY, write

JS_VERIFIER = (
    Path(__file__).resolve().parents[2] / "src/oblivio/interfaces/console/static/pof-verify.js"
)


def manifest() -> dict[str, Any]:
    value: dict[str, Any] = json.loads((DIRECTORY / "manifest.json").read_text())
    return value


def python_result(data: bytes, key: str) -> tuple[str, list[str]]:
    """``valid`` and the statements, ``input``, or the failing link, as ``oblivio verify``."""
    try:
        proven = verify_document(parse_proof_document(data), key)
    except ProofInputError:
        return "input", []
    except ProofLinkError as e:
        return e.link, []
    return "valid", [p.statement() for p in proven]


def test_the_committed_vectors_are_what_the_generator_makes(tmp_path: Path) -> None:
    count = write(tmp_path / "pof")
    made = sorted(p.name for p in (tmp_path / "pof").iterdir())
    committed = sorted(p.name for p in DIRECTORY.iterdir())
    assert made == committed, "regenerate with: python -m tests.core.pof_vectors"
    for name in made:
        assert (tmp_path / "pof" / name).read_bytes() == (DIRECTORY / name).read_bytes(), name
    assert count == len(manifest()["vectors"]) > 300


def test_the_set_holds_valid_proofs_and_failures_of_every_link() -> None:
    expected = {v["expect"] for v in manifest()["vectors"]}
    assert {
        "valid",
        "input",
        "artifact_id",
        "checkpoint",
        "map_root",
        "map_root_inclusion",
        "forget_event",
        "log_inclusion",
        "record",
        "smt_proof",
        "proofs[1].record",
    } <= expected


def test_the_python_verifier_agrees_with_the_manifest() -> None:
    listed = manifest()
    for vector in listed["vectors"]:
        data = (DIRECTORY / vector["file"]).read_bytes()
        result, statements = python_result(data, vector.get("key", listed["verifier_key"]))
        assert result == vector["expect"], f"{vector['file']} ({vector['what']})"
        assert statements == vector.get("statements", []), vector["file"]


NODE_CHECK = """
const [verifier, directory] = process.argv.slice(1);
const { verifyDocument } = await import(verifier);
const { readFileSync } = await import("node:fs");
const manifest = JSON.parse(readFileSync(directory + "/manifest.json", "utf8"));
const results = {};
for (const v of manifest.vectors) {
  const bytes = new Uint8Array(readFileSync(directory + "/" + v.file));
  const r = await verifyDocument(bytes, v.key || manifest.verifier_key);
  results[v.file] = r.valid ? ["valid", r.proven.map((p) => p.statement)] : [r.link, []];
}
console.log(JSON.stringify(results));
"""


def test_the_javascript_verifier_agrees_under_node() -> None:
    """The same module the console serves, run by Node.js (WebCrypto Ed25519 since Node 20);
    the browser test runs it in Chromium."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js not installed: the browser test covers the JavaScript verifier")
    done = subprocess.run(
        [node, "--input-type=module", "-e", NODE_CHECK, JS_VERIFIER.as_uri(), str(DIRECTORY)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for vector in manifest()["vectors"]:
        link, statements = results[vector["file"]]
        assert link == vector["expect"], f"{vector['file']} ({vector['what']})"
        assert statements == vector.get("statements", []), vector["file"]
