"""The report as files: the table in Markdown, self-contained HTML and CSV, and runs.csv.

`ablation.html` embeds the PNGs as base64 data URIs with inline CSS, so the single file opens
anywhere (e.g. as an MLflow artifact); the CSVs hold numbers at full precision (blank = none).
"""

from __future__ import annotations

import base64
import csv
import html
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from leoclr_platform.report.records import (
    STRATEGY,
    TABLE_STATS,
    RunRecord,
    effective_status,
    format_value,
    run_epochs,
    run_value,
    seed_of,
    status_of,
)

_HEADERS = {
    "n": "n", "mean": "mean", "std": "std", "mean_std": "mean ± std", "best": "best",
    "ci95": "95 % CI (t)", "bootstrap95": "95 % CI (bootstrap)",
    "best_trial": "best trial", "best_params": "best hyperparameters", "stopped": "stopped",
    "failed": "failed",
}


def _cell(col: str, v: Any, dec: int) -> str:
    """Display text of one table cell."""
    if col in ("mean", "std", "best"):
        return "-" if v is None else f"{v:.{dec}f}"
    if col in ("best_trial", "best_params", "ci95", "bootstrap95"):
        return v or "-"
    if col in TABLE_STATS:
        return str(v)
    return format_value(col, v)


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def status_counts(records: Sequence[RunRecord], max_epochs: int | None) -> dict[str, int]:
    """How many runs have each effective status (FINISHED, KILLED, FAILED, RUNNING...)."""
    counts: dict[str, int] = {}
    for rec in records:
        s = effective_status(rec, max_epochs)
        counts[s] = counts.get(s, 0) + 1
    return counts


def summary_text(records, metric, mode, grid, group_cols, counts, reclassified, no_value) -> str:
    """The paragraph under the title: what was compared, how runs were counted."""
    total = len(records)
    names = {"FINISHED": "finished", "KILLED": "stopped early (ASHA)", "FAILED": "failed",
             "RUNNING": "still running"}
    parts = [f"{counts[s]} {names[s]}" for s in names if counts.get(s)]
    parts += [f"{c} {s.lower()}" for s, c in sorted(counts.items()) if s not in names]
    groups = " x ".join(f"`{c}`" for c in group_cols)
    text = (f"Compared the final `{metric}` ({'higher' if mode == 'max' else 'lower'} is better) of "
            f"{total} run{'s' if total != 1 else ''}: {', '.join(parts)}. "
            f"{'Grid sweep' if grid else 'Search sweep'}, one row per {groups}; n, mean ± std "
            f"(sample std) and 95 % intervals over finished runs only, stopped and failed runs are counted apart.")
    if reclassified:
        text += (f" {reclassified} run{'s' if reclassified != 1 else ''} recorded as finished but "
                 f"short of the full epochs {'are' if reclassified != 1 else 'is'} counted as stopped.")
    if no_value:
        text += (f" {no_value} finished run{'s' if no_value != 1 else ''} without a `{metric}` "
                 f"value {'are' if no_value != 1 else 'is'} left out.")
    if not counts.get("FINISHED") or counts.get("FINISHED") == no_value:
        text += " No finished run has a value, so the table has no means."
    return text


def table_lines(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], dec: int) -> list[str]:
    """A Markdown table of `rows` (numbers right-aligned)."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    head = [esc(_HEADERS.get(c, c)) for c in columns]
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join("---:" if c in _NUMERIC else "---" for c in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(esc(_cell(c, row.get(c), dec)) for c in columns) + " |")
    return lines


_NUMERIC = {"n", "mean", "std", "mean_std", "ci95", "bootstrap95", "best", "stopped", "failed"}
_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;
color:#222;max-width:1400px}table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;display:block;
margin:1em 0}"""
_NUMBER = re.compile(r"^(?:[-+]?\d|\[[-+]?\d|< \d|-$)")
_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")


def _inline(text: str) -> str:
    """Markdown `code` and **bold** spans of one line, as HTML (the rest escaped)."""
    parts = html.escape(text.replace("\\|", "|")).split("`")
    out = "".join(p if i % 2 == 0 else f"<code>{p}</code>" for i, p in enumerate(parts))
    bold = out.split("**")
    return "".join(p if i % 2 == 0 else f"<strong>{p}</strong>" for i, p in enumerate(bold))


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip() for c in cells]


def _html_table(block: list[str]) -> list[str]:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in _cells(block[0]))
           + "</tr></thead><tbody>"]
    for line in block[2:]:
        out.append("<tr>" + "".join(("<td class=\"num\">" if _NUMBER.match(c) else "<td>") + _inline(c) + "</td>"
                                    for c in _cells(line)) + "</tr>")
    return out + ["</tbody></table>"]


def html_page(title: str, markdown_text: str, images: dict[str, bytes]) -> str:
    """ablation.html: the Markdown report as one self-contained page (PNGs embedded)."""
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    lines = markdown_text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out += _html_table(lines[i:j])
            i = j
            continue
        image = _IMAGE.match(line)
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 4)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif image and image["src"] in images:
            data = base64.b64encode(images[image["src"]]).decode("ascii")
            out.append(f"<img alt=\"{html.escape(image['alt'])}\" src=\"data:image/png;base64,{data}\">")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """`columns` as the header, one line per row (numbers at full precision, blank = none)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])


def runs_table(records, metric, mode, searched, group_cols, max_epochs):
    """(columns, rows) of runs.csv: every run with its status, how it was counted, its value
    and searched params; best first."""
    extra = [c for c in group_cols if c != STRATEGY]
    extra += [k for k in searched if k not in extra and k not in (STRATEGY, "seed", "epochs")]
    columns = ["trial_id", "run_id", "stage", "status", "counted_as", STRATEGY, "seed", "epochs", metric] + extra
    sign = 1.0 if mode == "max" else -1.0
    rows = []
    for rec in records:
        params = rec.params or {}
        value = run_value(rec, metric)
        counted = {"FINISHED": "finished" if value is not None else "no value",
                   "KILLED": "stopped", "FAILED": "failed"}.get(effective_status(rec, max_epochs), "-")
        row = {"trial_id": rec.trial_id, "run_id": rec.run_id, "stage": rec.stage, "status": status_of(rec),
               "counted_as": counted,
               STRATEGY: params.get(STRATEGY), "seed": seed_of(rec), "epochs": run_epochs(rec),
               metric: value}
        row.update({k: params.get(k) for k in extra})
        rows.append(row)
    # best first among runs with a value (stable: ties keep input order), then the rest
    rows.sort(key=lambda r: (r[metric] is None, -sign * r[metric] if r[metric] is not None else 0.0))
    return columns, rows
