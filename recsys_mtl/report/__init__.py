"""Offline evaluation report: metrics.json, plots, Markdown and a self-contained HTML page."""

from recsys_mtl.report.render import format_value, write_report

__all__ = ["format_value", "write_report"]
