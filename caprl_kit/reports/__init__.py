"""One render layer for the HTML pages: the curate funnel, the eval report (also ``caprl eval compare``) and the
demo report come from Jinja2 templates (``reports/templates``) that extend one base page with one stylesheet, and
draw their charts with one small set of helpers (``reports/charts.py``: horizontal bars, grouped bars, a line
chart), all inline SVG so every page is one self-contained file."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _env() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    from caprl_kit.reports import charts

    env = Environment(
        loader=PackageLoader("caprl_kit.reports", "templates"),
        undefined=StrictUndefined,
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.update(
        hbars=charts.hbars, grouped_hbars=charts.grouped_hbars, line_chart=charts.line_chart, palette=charts.PALETTE
    )
    env.filters.update(num=charts.num, pct=charts.pct)
    return env


def render(template: str, **context: Any) -> str:
    """The page ``template`` (a name under ``reports/templates``) filled with ``context``."""
    return _env().get_template(template).render(**context)
