"""What the report tests share: WeasyPrint present (or skip/fail with how to get it), and the
text and attachments of a PDF read back with pypdf."""

from __future__ import annotations

import io

import pypdf

from oblivio.interfaces.reports import WEASYPRINT_HINT
from tests.conftest import skip_or_fail

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;"\''
"""A string that is markup if it is not escaped."""


def require_weasyprint() -> None:
    """Skip (outside CI) or fail (OBLIVIO_REQUIRE_SERVICES=1) when WeasyPrint cannot render."""
    try:
        import weasyprint

        weasyprint.HTML(string="<p>probe</p>").write_pdf()
    except (ImportError, OSError) as e:
        skip_or_fail(f"{WEASYPRINT_HINT}: {e}")


def pdf_text(pdf: bytes) -> str:
    """Every page's text, runs of white space (lines wrapped at a space) as one space."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


def pdf_attachments(pdf: bytes) -> dict[str, bytes]:
    """The PDF's embedded files by name (each holds one content here)."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return {name: contents[0] for name, contents in reader.attachments.items()}
