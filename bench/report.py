"""Statistics, the results table, the JSON file and the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

TARGETS = {
    # name: (description, comparison, threshold)
    "emails_per_s": ("sustained emails/s to accepted assignment (RATE=0)", ">=", 25.0),
    "p99_queued_ms_at_10_per_s": ("p99 arrival->queued at a steady 10 emails/s", "<=", 1000.0),
    "floor_ratio": ("emails_per_s / floor_emails_per_s (RATE=0)", ">=", 0.7),
    "first_offer_history_events_max": (
        "history events, email accepted on its first offer",
        "<=",
        30.0,
    ),
    "backlog_worker_rss_mb": ("worker RSS with the backlog parked", "<", 300.0),
}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values), q)), 1)


def dist(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": round(float(arr.max()), 1),
        "mean": round(float(arr.mean()), 1),
    }


def per_second(offsets: list[float], span: float | None = None) -> list[int]:
    if not offsets:
        return []
    end = span if span is not None else max(offsets)
    counts = [0] * (int(math.floor(end)) + 1)
    for x in offsets:
        i = int(math.floor(x))
        if 0 <= i < len(counts):
            counts[i] += 1
    return counts


def check(name: str, value: float | None) -> dict[str, Any]:
    desc, op, limit = TARGETS[name]
    met = None
    if value is not None:
        met = value >= limit if op == ">=" else value <= limit if op == "<=" else value < limit
    return {"target": f"{op} {limit:g}", "value": value, "met": met, "what": desc}


def write_json(result: dict[str, Any], name: str, stamp: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str)
    latest = RESULTS / f"{name}.json"
    latest.write_text(text + "\n")
    (RESULTS / f"{stamp}-{name}.json").write_text(text + "\n")
    return latest


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1 else f"{v:,.1f}"
    return str(v)


def print_table(title: str, rows: list[tuple[str, Any, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("target / note")
    for metric, value, note in rows:
        table.add_row(metric, _fmt(value), note)
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)


def target_note(check_result: dict[str, Any] | None) -> str:
    if not check_result:
        return ""
    met = check_result["met"]
    mark = "[green]met[/]" if met else "[red]not met[/]" if met is False else "n/a"
    return f"{check_result['target']}  {mark}"


def plot_bench(path: Path, result: dict[str, Any], series: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for key, label, style in (
        ("arrivals", "handed to SMTP", ":"),
        ("created", "case created", "--"),
        ("assigned", "assigned (offer accepted)", "-"),
        ("floor", "engine floor (completed no-op workflows)", "-."),
        ("handshake_floor", "handshake floor (no-op + signal, update, upserts)", (0, (3, 1, 1, 1, 1, 1))),
    ):
        counts = series.get(key) or []
        if counts:
            ax1.plot(
                range(len(counts)),
                counts,
                linestyle=style,
                label=label,
                linewidth=1.4,
                marker="." if len(counts) < 30 else None,
            )
    ax1.set_xlabel("seconds since the first email (floors: since their first start)")
    ax1.set_ylabel("per second")
    ax1.set_title(
        f"throughput: {result.get('emails_per_s')} emails/s sustained, floor {result.get('floor_emails_per_s')}/s,"
        f" handshake floor {result.get('handshake_floor_emails_per_s')}/s",
        fontsize=10,
    )
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)

    for key, label in (
        ("created", "arrival -> case created"),
        ("queued", "arrival -> queued"),
        ("assigned", "arrival -> assigned"),
    ):
        values = sorted(series.get(f"lat_{key}") or [])
        if values:
            y = np.arange(1, len(values) + 1) / len(values)
            ax2.plot(values, y, label=label, linewidth=1.4)
    ax2.set_xscale("log")
    ax2.set_xlabel("latency (ms, log scale)")
    ax2.set_ylabel("fraction of emails")
    ax2.set_title("latency CDF")
    ax2.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    commit = (result.get("commit") or {}).get("sha") or "?"
    dirty = " (dirty)" if (result.get("commit") or {}).get("dirty") else ""
    fig.suptitle(
        f"routedesk bench: {result.get('emails')} emails, RATE={result.get('rate')}, "
        f"{result['machine']['cores']} cores, commit {commit[:10]}{dirty}, "
        f"{result.get('date', '')[:16]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_backlog(path: Path, result: dict[str, Any], series: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(9, 4.5))
    t = series["t"]
    for name in ("worker", "server", "intake"):
        ax1.plot(t, series[f"rss_{name}"], label=f"{name} RSS (MB)")
    ax1.axhline(300, color="red", linewidth=0.7, linestyle=":", label="300 MB target (worker)")
    ax1.set_xlabel("seconds since the first email")
    ax1.set_ylabel("MB")
    ax2 = ax1.twinx()
    ax2.plot(
        series["parked_t"],
        series["parked"],
        color="grey",
        linestyle="--",
        label="cases waiting in queues",
    )
    ax2.set_ylabel("cases waiting")
    lines = ax1.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    ax1.grid(alpha=0.3)
    ax1.set_title(
        f"bench-backlog: {result.get('backlog')} unassigned items, "
        f"worker RSS {result.get('worker_rss_mb_parked')} MB when parked"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
