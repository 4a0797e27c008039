"""``oblivio request`` and ``oblivio report`` on SQLite and PostgreSQL (the command line run in
process, ``main``, for speed; the bundle verified by ``oblivio verify`` in a process of its own):
with no server, ``request verify-identity`` processes the request itself; refusals exit 3
(unknown id), 11 (invalid transition, extension past the limit) or 2 (bad input) and change
nothing; the report's attached bundle verifies with ``oblivio verify``."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from oblivio.interfaces.cli import main
from tests.interfaces.report_checks import HOSTILE, pdf_attachments, pdf_text, require_weasyprint
from tests.interfaces.test_cli import oblivio, one_error_line

EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 11


def _home(tmp_path: Path, store_uri: str) -> Path:
    home = tmp_path / "home"
    assert (
        main(["init", "--name", "cli-requests.test", "--store", store_uri, "--home", str(home)])
        == 0
    )
    for i in range(2):
        payload = tmp_path / f"payload-{i}"
        payload.write_bytes(b"a%d" % i)
        put = ["put", str(payload), "--entity", "user:alice", "--scope", "team"]
        assert main([*put, "--home", str(home)]) == 0
    return home


@pytest.fixture
def home(tmp_path: Path, store_uri: str) -> Path:
    """A node with two artifacts about user:alice, on each store."""
    return _home(tmp_path, store_uri)


@pytest.fixture
def sqlite_home(tmp_path: Path, sqlite_uri: str) -> Path:
    """The same on SQLite only: the report does not depend on the store."""
    return _home(tmp_path, sqlite_uri)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Runner:
    return Runner(capsys)


class Runner:
    """``oblivio ARGS --home HOME`` in process: (exit status, stdout, the one stderr line)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, home: Path, *args: str) -> tuple[int, str, str]:
        try:
            status = main([*args, "--home", str(home)])
        except SystemExit as e:  # usage errors (argparse) exit from inside main
            status = int(str(e.code))
        captured = self.capsys.readouterr()
        errors = captured.err.strip().splitlines()
        assert len(errors) <= 1, errors
        return status, captured.out, errors[0] if errors else ""

    def json(self, home: Path, *args: str) -> dict[str, Any]:
        status, out, err = self(home, *args, "--json")
        assert status == 0, err
        value: dict[str, Any] = json.loads(out)
        return value


def test_a_request_from_create_to_complete_and_its_refusals(home: Path, run: Runner) -> None:
    created = run.json(
        home, "request", "create", "--entity", "user:alice", "--regime", "ccpa", "--requestor", "A"
    )
    assert (created["status"], created["regime"], created["clock_running"]) == (
        "received",
        "ccpa",
        False,
    )
    request_id = created["id"]
    extended = run.json(
        home, "request", "extend", request_id, "--days", "45", "--reason", "complex"
    )
    assert extended["extended_days"] == 45

    status, _, error = run(home, "request", "extend", request_id, "--days", "1", "--reason", "x")
    assert status == EXIT_REFUSED
    assert "at most 0 more days" in error

    done = run.json(home, "request", "verify-identity", request_id)
    assert done["status"] == "complete"
    assert done["links"]["propagation"] == {
        "tombstone_id": done["tombstone_id"],
        "ack_deadline": done["links"]["propagation"]["ack_deadline"],
        "peers": [],
    }
    listed = run.json(home, "request", "list")
    assert [(r["id"], r["status"]) for r in listed["requests"]] == [(request_id, "complete")]
    assert run(home, "request", "list")[1].startswith(f"{request_id}\tcomplete\tccpa\tdue ")

    before = run.json(home, "request", "show", request_id)
    for action in ("verify-identity", "cancel"):
        status, _, error = run(home, "request", action, request_id)
        assert status == EXIT_REFUSED
        assert "cannot go from complete to" in error
    for args in (("show", "nope"), ("cancel", "nope"), ("process", "nope")):
        status, _, error = run(home, "request", *args)
        assert (status, error) == (
            EXIT_NOT_FOUND,
            "oblivio request: error: no erasure request nope",
        )
    assert run(home, "report", "nope", "-o", str(home / "r.html"))[0] == EXIT_NOT_FOUND
    for args in (
        ("create", "--entity", "not a uri", "--regime", "gdpr"),
        ("create", "--entity", "user:x", "--regime", "hipaa"),
        ("create", "--entity", "user:x"),
        ("extend", request_id, "--days", "3"),
        ("show",),
    ):
        assert run(home, "request", *args)[0] == EXIT_USAGE, args
    after = run.json(home, "request", "show", request_id)
    assert after["transitions"] == before["transitions"]
    assert len(run.json(home, "request", "list")["requests"]) == 1


def test_reports_escape_hostile_strings_and_carry_a_bundle_the_cli_verifies(
    sqlite_home: Path, tmp_path: Path, run: Runner
) -> None:
    require_weasyprint()
    home = sqlite_home
    created = run.json(
        home, "request", "create", "--entity", "user:alice", "--regime", "gdpr",
        "--requestor", HOSTILE, "--scope", '["team"]',
    )  # fmt: skip
    request_id = created["id"]
    run.json(home, "request", "extend", request_id, "--days", "7", "--reason", HOSTILE)
    assert run.json(home, "request", "verify-identity", request_id)["status"] == "complete"
    key = run(home, "key")[1].strip()

    html_path, pdf_path = tmp_path / "report.html", tmp_path / "report.pdf"
    wrote = run.json(home, "report", request_id, "-o", str(html_path))
    assert wrote["format"] == "html"
    assert run.json(home, "report", request_id, "-o", str(pdf_path))["format"] == "pdf"
    forced = tmp_path / "report.out"
    assert (
        run.json(home, "report", request_id, "-o", str(forced), "--format", "pdf")["format"]
        == "pdf"
    )
    assert forced.read_bytes().startswith(b"%PDF-")

    html = html_path.read_text("utf-8")
    assert "<script" not in html
    assert "<img" not in html
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") == 2
    command = re.search(r"<pre>(oblivio verify \S+ --key &#39;(\S+)&#39;)</pre>", html)
    assert command is not None
    assert command.group(2) == key
    data_uri = re.search(r'href="data:application/json;base64,([A-Za-z0-9+/=]+)"', html)
    assert data_uri is not None
    from_html = tmp_path / "from-html.pof.json"
    from_html.write_bytes(base64.b64decode(data_uri.group(1)))

    pdf = pdf_path.read_bytes()
    assert pdf_text(pdf).count(HOSTILE) == 2
    command_text = f"oblivio verify erasure-request-{request_id}.pof.json --key '{key}'"
    # Long lines wrap in the PDF: compare without white space.
    assert "".join(command_text.split()) in "".join(pdf_text(pdf).split())
    attached = pdf_attachments(pdf)
    from_pdf = tmp_path / f"erasure-request-{request_id}.pof.json"
    from_pdf.write_bytes(attached[from_pdf.name])

    for bundle in (from_html, from_pdf):
        verified = oblivio("verify", str(bundle), "--key", key, "--json")
        assert verified.returncode == 0, verified.stderr
        proven = json.loads(verified.stdout)["proven"]
        assert len(proven) == 2
    # A tampered bundle fails with the failing link named.
    document = json.loads(from_pdf.read_text("utf-8"))
    document["proofs"][0]["record"]["level"] = 1
    from_pdf.write_text(json.dumps(document), "utf-8")
    tampered = oblivio("verify", str(from_pdf), "--key", key)
    assert tampered.returncode == 8
    assert "failed link" in one_error_line(tampered)

    assert run(home, "report", request_id, "-o", str(tmp_path / "r"), "--format", "doc")[0] == 2


def test_a_legal_hold_pauses_and_process_resumes_after_release(home: Path, run: Runner) -> None:
    hold = run.json(home, "hold", "place", "--entity", "user:alice", "--authority", "court")
    create = ("request", "create", "--entity", "user:alice", "--regime", "gdpr")
    request_id = run.json(home, *create)["id"]
    paused = run.json(home, "request", "verify-identity", request_id)
    assert paused["status"] == "paused"
    assert hold["hold_id"] in paused["pause_reason"]
    assert run.json(home, "request", "process", request_id)["status"] == "paused"
    run.json(home, "hold", "release", hold["hold_id"], "--authority", "court")
    assert run.json(home, "request", "process", request_id)["status"] == "complete"
