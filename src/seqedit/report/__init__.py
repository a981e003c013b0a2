"""Report rendering: a JSON-serialisable spec to a self-contained HTML file and a PDF."""

from seqedit.report.render import render_report

__all__ = ["render_report"]
