"""Completion reports of erasure requests (DESIGN.md §18): HTML from a Jinja2 template with
autoescaping on, and PDF from that HTML with WeasyPrint, the Proof of Forgetting bundle
attached (embedded in the PDF; inline and as a download link in the HTML) with the one command
that verifies it offline.

The report holds nothing beyond what the request itself holds (entity URI, scope, requestor,
reasons of its extensions) and the evidence: ids, levels, epochs, per-peer status, the
checkpoint. Used by ``oblivio report`` and ``GET /v1/requests/{id}/report``; the console reuses
``report_view`` and the templates.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from oblivio.core.canonical import JsonValue
from oblivio.core.errors import InfrastructureError, InvalidInputError
from oblivio.core.identifiers import format_time

ReportFormat = Literal["html", "pdf"]
FORMATS: Final[tuple[ReportFormat, ...]] = ("html", "pdf")
WEASYPRINT_HINT: Final = (
    "PDF reports need WeasyPrint and the pango library: install it with "
    "`apt-get install libpango-1.0-0 libpangoft2-1.0-0` (scripts/bootstrap.sh does it as root)"
)

_templates = Environment(
    loader=PackageLoader("oblivio.interfaces.reports", "templates"),
    autoescape=select_autoescape(["html", "j2"], default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class ReportUnavailableError(InfrastructureError):
    """The PDF renderer cannot run here (WeasyPrint or its system libraries missing): 503."""

    code = "report_renderer_unavailable"


def report_format(text: str | None, output: str | None = None) -> ReportFormat:
    """The format named (``html`` or ``pdf``), else the one of the output file's suffix, else
    html. Raises InvalidInputError for anything else."""
    name = text
    if name is None and output is not None:
        suffix = output.rsplit(".", 1)[-1].lower() if "." in output else ""
        name = suffix if suffix in ("pdf", "html", "htm") else "html"
    name = "html" if name in (None, "htm") else name
    if name == "html":
        return "html"
    if name == "pdf":
        return "pdf"
    raise InvalidInputError(f"report format: expected html or pdf, got {name!r}")


def bundle_file_name(request_id: str) -> str:
    """The name the attached bundle goes by (and the verify command names)."""
    return f"erasure-request-{request_id}.pof.json"


def report_view(
    described: Mapping[str, JsonValue], bundle: Mapping[str, JsonValue] | None, now: datetime
) -> dict[str, Any]:
    """What the template shows: the request as ``ErasureRequestService.describe`` gives it,
    its bundle (or None), the forgotten artifacts, and the verify command."""
    links = described["links"]
    assert isinstance(links, dict)  # noqa: S101 - describe() always has links
    forgotten = []
    for forget in links.get("forget_requests") or []:
        assert isinstance(forget, dict)  # noqa: S101 - forgetting.status() is an object
        for event in forget.get("events") or []:
            assert isinstance(event, dict)  # noqa: S101 - as above
            forgotten.append(
                {
                    "artifact_id": event["artifact_id"],
                    "level": forget["level"],
                    "capabilities": ", ".join(str(c) for c in forget.get("capabilities") or []),
                    "requested_at": forget["requested_at"],
                    "epoch": event["epoch"],
                    "forget_request": forget["request_id"],
                }
            )
    bundle_text = None if bundle is None else json.dumps(bundle, indent=1, sort_keys=True) + "\n"
    file_name = bundle_file_name(str(described["id"]))
    propagation = links.get("propagation")
    return {
        "request": described,
        "links": links,
        "forgotten": forgotten,
        "peers": propagation.get("peers", []) if isinstance(propagation, dict) else [],
        "federated": isinstance(propagation, dict),
        "bundle_text": bundle_text,
        "bundle_data_uri": None
        if bundle_text is None
        else "data:application/json;base64,"
        + base64.b64encode(bundle_text.encode("utf-8")).decode("ascii"),
        "bundle_file": file_name,
        "verify_command": f"oblivio verify {file_name} --key '{links['verifier_key']}'",
        "generated_at": format_time(now),
    }


def render_html(view: Mapping[str, Any], *, for_pdf: bool = False) -> str:
    """The report as an HTML document (every value escaped by the template engine)."""
    return _templates.get_template("completion_report.html.j2").render(view, for_pdf=for_pdf)


def render_pdf(view: Mapping[str, Any]) -> bytes:
    """The report as PDF with the bundle embedded as a file attachment. Raises
    ReportUnavailableError when WeasyPrint or its system libraries cannot be loaded."""
    try:
        import weasyprint
    except (ImportError, OSError) as e:
        raise ReportUnavailableError(f"{WEASYPRINT_HINT} ({e})") from e
    attachments = []
    if view["bundle_text"] is not None:
        attachments.append(
            weasyprint.Attachment(
                string=view["bundle_text"],
                name=view["bundle_file"],
                description="Proof of Forgetting bundle (oblivio.pof.v1)",
            )
        )
    document = weasyprint.HTML(string=render_html(view, for_pdf=True))
    pdf = document.write_pdf(attachments=attachments)
    assert isinstance(pdf, bytes)  # noqa: S101 - write_pdf without a target returns bytes
    return pdf


def render(view: Mapping[str, Any], kind: ReportFormat) -> bytes:
    """The report in ``kind``, as bytes (HTML as UTF-8)."""
    return render_pdf(view) if kind == "pdf" else render_html(view).encode("utf-8")
