"""A run report: learning-curve PNGs under `output_dir/plots/` and a short `output_dir/report.md`.

Input is the list of per-iteration metric dicts the trainer logged (keys documented in
`stateset_agents.runs.metrics.METRIC_DOCS`), read from `metrics.jsonl` by default. Every
plot and summary row is drawn only from the keys that are present, so a run that logs a
subset (no eval, no continual learning) still gets a report. Records logged for the same
iteration in separate calls (e.g. an eval dict) are fine: each series is read key by key.

Simplifications: the x axis is the `iteration` field (the record's position when it is
missing); a task boundary is drawn where the `task` field changes between records.
Matplotlib is used through the Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stateset_agents.runs.metrics import METRICS_FILENAME, read_metrics, split_events

PLOTS_DIRNAME = "plots"
REPORT_FILENAME = "report.md"
TIME_PARTS = ("time/rollout", "time/reward", "time/update")
_NOT_COMPONENTS = {"reward/mean", "reward/std"}

Records = Sequence[Mapping[str, Any]]
Series = tuple[list[float], list[float]]


# ----------------------------------------------------------------------------- data access


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _x(record: Mapping[str, Any], position: int) -> float:
    iteration = record.get("iteration")
    return float(iteration) if _is_number(iteration) else float(position + 1)


def series(records: Records, key: str) -> Series:
    """(x, y) of every record holding a numeric `key`; x is the iteration."""
    xs, ys = [], []
    for position, record in enumerate(records):
        if _is_number(record.get(key)):
            xs.append(_x(record, position))
            ys.append(float(record[key]))
    return xs, ys


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def task_boundaries(records: Records) -> list[tuple[float, str]]:
    """(iteration, new task) wherever the `task` field changes between records."""
    boundaries, previous = [], None
    for position, record in enumerate(records):
        task = record.get("task")
        if task is None:
            continue
        if previous is not None and task != previous:
            boundaries.append((_x(record, position), str(task)))
        previous = task
    return boundaries


def reward_components(records: Records) -> list[str]:
    """The `reward/<component>` keys present, in first-seen order."""
    keys: dict[str, None] = {}
    for record in records:
        for key in record:
            if key.startswith("reward/") and key not in _NOT_COMPONENTS:
                keys[key] = None
    return list(keys)


# ----------------------------------------------------------------------------- plots


@dataclass(frozen=True)
class Panel:
    """One PNG: `draw(ax, records)` returns False when none of its keys are present."""

    filename: str
    title: str
    draw: Callable[[Any, Records], bool]


def _plot_lines(ax: Any, records: Records, keys: Sequence[str], style: str = "-") -> bool:
    drawn = False
    for key in keys:
        xs, ys = series(records, key)
        if xs:
            ax.plot(xs, ys, style, label=key, linewidth=1.5, markersize=4)
            drawn = True
    return drawn


def _line_panel(keys: Sequence[str], ylabel: str) -> Callable[[Any, Records], bool]:
    def draw(ax: Any, records: Records) -> bool:
        ax.set_ylabel(ylabel)
        return _plot_lines(ax, records, keys, "-o" if len(records) < 30 else "-")
    return draw


def _draw_reward(ax: Any, records: Records) -> bool:
    drawn = False
    xs, mean = series(records, "reward/mean")
    if xs:
        ax.plot(xs, mean, "-", color="C0", linewidth=2, label="reward/mean")
        std_by_x = dict(zip(*series(records, "reward/std")))
        if std_by_x:
            band = [(x, m, std_by_x[x]) for x, m in zip(xs, mean) if x in std_by_x]
            ax.fill_between([b[0] for b in band], [b[1] - b[2] for b in band],
                            [b[1] + b[2] for b in band], color="C0", alpha=0.2, label="± std")
        drawn = True
    for index, key in enumerate(reward_components(records)):
        cx, cy = series(records, key)
        if cx:
            ax.plot(cx, cy, "--", color=f"C{index + 2}", linewidth=1, label=key)
            drawn = True
    return _draw_eval(ax, records, "eval/reward_mean", "eval/reward_std") or drawn


def _draw_eval(ax: Any, records: Records, key: str, std_key: str | None = None) -> bool:
    xs, ys = series(records, key)
    if not xs:
        return False
    std_by_x = dict(zip(*series(records, std_key))) if std_key else {}
    errors = [std_by_x.get(x, 0.0) for x in xs] if std_by_x else None
    ax.errorbar(xs, ys, yerr=errors, fmt="s", color="C1", markersize=6, capsize=3, label=key)
    return True


def _draw_success(ax: Any, records: Records) -> bool:
    ax.set_ylabel("fraction")
    drawn = _plot_lines(ax, records, ["success_rate"])
    return _draw_eval(ax, records, "eval/success_rate") or drawn


def _draw_ratio(ax: Any, records: Records) -> bool:
    ax.set_ylabel("pi_theta / pi_old")
    xs_lo, lo = series(records, "ratio/min")
    xs_hi, hi = series(records, "ratio/max")
    if xs_lo and xs_lo == xs_hi:
        ax.fill_between(xs_lo, lo, hi, color="C0", alpha=0.15, label="ratio min..max")
    drawn = _plot_lines(ax, records, ["ratio/mean", "ratio/min", "ratio/max"])
    if drawn:
        ax.axhline(1.0, color="grey", linewidth=0.8)
    return drawn


def _twin_panel(left: Sequence[str], right: Sequence[str], left_label: str, right_label: str,
                log_right: bool = False) -> Callable[[Any, Records], bool]:
    def draw(ax: Any, records: Records) -> bool:
        ax.set_ylabel(left_label)
        drawn_left = _plot_lines(ax, records, left)
        if not any(series(records, key)[0] for key in right):
            return drawn_left
        twin = ax.twinx()
        twin.set_ylabel(right_label)
        for index, key in enumerate(right):
            xs, ys = series(records, key)
            twin.plot(xs, ys, ":", color=f"C{index + len(left)}", linewidth=1.5, label=key)
        if log_right and all(y > 0 for key in right for y in series(records, key)[1]):
            twin.set_yscale("log")
        twin.legend(loc="upper right", fontsize="small")
        return True
    return draw


def _draw_time(ax: Any, records: Records) -> bool:
    per_x: dict[float, dict[str, float]] = {}
    for key in (*TIME_PARTS, "time/iteration"):
        for x, y in zip(*series(records, key)):
            per_x.setdefault(x, {})[key] = y
    rows = {x: parts for x, parts in per_x.items() if any(k in parts for k in TIME_PARTS)}
    if not rows:
        return False
    xs = sorted(rows)
    bottom = [0.0] * len(xs)
    for index, key in enumerate(TIME_PARTS):
        heights = [rows[x].get(key, 0.0) for x in xs]
        ax.bar(xs, heights, bottom=bottom, color=f"C{index}", label=key, width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights)]
    other = [max(rows[x].get("time/iteration", b) - b, 0.0) for x, b in zip(xs, bottom)]
    if any(other):
        ax.bar(xs, other, bottom=bottom, color="lightgrey", label="other", width=0.8)
    ax.set_ylabel("seconds")
    return True


PANELS: tuple[Panel, ...] = (
    Panel("reward.png", "Reward (mean ± std, components, eval)", _draw_reward),
    Panel("success_rate.png", "Success rate", _draw_success),
    Panel("loss.png", "Loss", _line_panel(["loss/policy", "loss/kl_ref", "loss/total"], "loss")),
    Panel("clip.png", "Clipped fraction",
          _line_panel(["clip/low_fraction", "clip/high_fraction"], "fraction")),
    Panel("ratio.png", "Importance ratio", _draw_ratio),
    Panel("kl_entropy.png", "KL and entropy",
          _twin_panel(["kl/ref", "continual/kl_teacher"], ["entropy"], "KL (nats/token)",
                      "entropy (nats)")),
    Panel("grad_lr.png", "Gradient norm and learning rate",
          _twin_panel(["grad_norm"], ["lr"], "grad norm", "learning rate")),
    Panel("time.png", "Time per iteration", _draw_time),
)


def _mark_tasks(ax: Any, boundaries: Sequence[tuple[float, str]]) -> None:
    for x, task in boundaries:
        ax.axvline(x - 0.5, color="black", linestyle="--", linewidth=1)
        ax.annotate(task, xy=(x - 0.5, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", fontsize="small", rotation=0)


def render_panel(panel: Panel, records: Records, path: Path) -> bool:
    """Draw one panel into `path`; returns False (and writes nothing) when it has no data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    if not panel.draw(ax, records):
        return False
    _mark_tasks(ax, task_boundaries(records))
    ax.set_title(panel.title)
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a twin panel may draw only on its right axis (e.g. no KL term)
        ax.legend(loc="upper left", fontsize="small")
    figure.subplots_adjust(left=0.1, right=0.88, top=0.91, bottom=0.12)  # fixed: tight_layout is slow
    figure.savefig(path)
    return True


def write_plots(output_dir: Path, records: Records) -> list[Path]:
    """Write every panel that has data into output_dir/plots/; stale panel PNGs are removed."""
    plots_dir = output_dir / PLOTS_DIRNAME
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for panel in PANELS:
        path = plots_dir / panel.filename
        path.unlink(missing_ok=True)
        if render_panel(panel, records, path):
            written.append(path)
    return written


# ----------------------------------------------------------------------------- markdown


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _cell(value: Any) -> str:
    if isinstance(value, Mapping):
        value = ", ".join(f"{k}={_num(v)}" for k, v in value.items())
    return _num(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def summary_table(summary: Mapping[str, Any]) -> list[str]:
    """A dict of dicts (e.g. {"before": {...}, "after": {...}}) becomes one column per outer
    key; any other dict becomes a key/value table."""
    if summary and all(isinstance(v, Mapping) for v in summary.values()):
        columns = list(summary)
        row_keys = list(dict.fromkeys(k for inner in summary.values() for k in inner))
        rows = [[key, *(summary[c].get(key, "") for c in columns)] for key in row_keys]
        return markdown_table(["", *columns], rows)
    return markdown_table(["", "value"], [[k, v] for k, v in summary.items()])


def _time_split(records: Records) -> dict[str, float]:
    """Mean over iterations of each part's share of the iteration time (plus "other")."""
    shares: dict[str, list[float]] = {key: [] for key in (*TIME_PARTS, "other")}
    for record in records:
        parts = {k: float(record[k]) for k in TIME_PARTS if _is_number(record.get(k))}
        if not parts:
            continue
        total = record.get("time/iteration")
        total = float(total) if _is_number(total) and total > 0 else sum(parts.values())
        if total <= 0:
            continue
        for key in TIME_PARTS:
            shares[key].append(parts.get(key, 0.0) / total)
        shares["other"].append(max(1.0 - sum(parts.values()) / total, 0.0))
    return {k.removeprefix("time/"): sum(v) / len(v) for k, v in shares.items() if v}


def run_summary_rows(records: Records) -> list[tuple[str, str]]:
    """The (label, value) rows of the report's summary table, from whatever keys exist."""
    rows: list[tuple[str, str]] = []
    xs, ys = series(records, "reward/mean")
    if xs:
        rows.append((f"reward/mean, first (iter {xs[0]:g})", _num(ys[0])))
        rows.append((f"reward/mean, last (iter {xs[-1]:g})", f"{_num(ys[-1])} "
                     f"({ys[-1] - ys[0]:+.4g})"))
    ex, ey = series(records, "eval/reward_mean")
    finite_eval = [(x, y) for x, y in zip(ex, ey) if math.isfinite(y)]
    if finite_eval:
        best_x, best_y = max(finite_eval, key=lambda p: p[1])
        rows.append(("best eval/reward_mean", f"{_num(best_y)} (iter {best_x:g})"))
    sx, sy = series(records, "success_rate")
    if sx:
        rows.append((f"success_rate, last (iter {sx[-1]:g})", f"{sy[-1]:.1%}"))
    total = _finite(series(records, "time/iteration")[1])
    if total:
        rows.append(("total time (sum of time/iteration)", _duration(sum(total))))
    split = _time_split(records)
    if split:
        rows.append(("iteration time split (mean)",
                     " · ".join(f"{k} {v:.1%}" for k, v in split.items())))
    zero = _finite(series(records, "groups/zero_variance")[1])
    groups = _finite(series(records, "groups/total")[1])
    if zero:
        share = f" / {sum(groups):g} ({sum(zero) / sum(groups):.1%})" if sum(groups) else ""
        rows.append(("zero-variance groups (no gradient)", f"{sum(zero):g}{share}"))
    for key, label in (("skipped_steps/nonfinite", "skipped optimizer steps (non-finite)"),
                       ("rewards/skipped", "skipped rewards")):
        values = _finite(series(records, key)[1])
        if values:
            rows.append((label, f"{sum(values):g}"))
    return rows


def _headline(records: Records) -> str:
    xs = sorted({_x(r, i) for i, r in enumerate(records)})
    tasks = list(dict.fromkeys(str(r["task"]) for r in records if r.get("task") is not None))
    text = f"{len(xs)} iterations ({xs[0]:g}–{xs[-1]:g})"
    return text + (f", tasks: {' → '.join(tasks)}." if tasks else ".")


def render_markdown(title: str, records: Records, events: Records, plots: Sequence[Path],
                    summary: Mapping[str, Any] | None) -> str:
    """The report.md text."""
    lines = [f"# {title}", "", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}."]
    if not records:
        lines += ["", "No metrics were recorded."]
    else:
        lines += ["", _headline(records), "", "## Summary", "",
                  *markdown_table(["", "value"], run_summary_rows(records))]
    if summary:
        lines += ["", "## Results", "", *summary_table(summary)]
    if events:
        lines += ["", "## Events", ""]
        lines += [f"- iter {e.get('iteration') if e.get('iteration') is not None else '-'}: "
                  f"{e['event']}" for e in events]
    if plots:
        lines += ["", "## Plots", ""]
        titles = {panel.filename: panel.title for panel in PANELS}
        for path in plots:
            lines += [f"![{titles.get(path.name, path.stem)}]({PLOTS_DIRNAME}/{path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(output_dir: str | Path, metrics: Sequence[Mapping[str, Any]] | None = None,
                 title: str = "stateset-agents training report",
                 summary: Mapping[str, Any] | None = None) -> Path:
    """Write output_dir/plots/*.png and output_dir/report.md; returns the report.md path.

    `metrics` defaults to output_dir/metrics.jsonl (event lines are listed, not plotted).
    `summary` (e.g. {"before": {...}, "after": {...}} evaluation results) is rendered as a table.
    """
    output_dir = Path(output_dir)
    if metrics is None:
        path = output_dir / METRICS_FILENAME
        if not path.exists():
            raise FileNotFoundError(f"no metrics given and {path} does not exist; pass "
                                    "metrics=... or point output_dir at a run directory")
        metrics = read_metrics(path)
    records, events = split_events(metrics)
    output_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(output_dir, records) if records else []
    report_path = output_dir / REPORT_FILENAME
    report_path.write_text(render_markdown(title, records, events, plots, summary),
                           encoding="utf-8")
    return report_path
