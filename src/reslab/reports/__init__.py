"""How results are shown: inline in Jupyter (:mod:`.notebook`) and as a static ``report.html`` beside every
run (:func:`write_run_report`) and sweep (:func:`write_sweep_report`) that opens from disk with no server.

Every page is self-contained (:mod:`.page`): inline CSS, figures as base64 PNG, no script and no external
resource.
"""

from __future__ import annotations

from reslab.reports.notebook import ablate_html, compare_html, run_html, study_html
from reslab.reports.run import run_report_html, write_run_report
from reslab.reports.sweep import write_sweep_report

__all__ = [
    "ablate_html",
    "compare_html",
    "run_html",
    "run_report_html",
    "study_html",
    "write_run_report",
    "write_sweep_report",
]
