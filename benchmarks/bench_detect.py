"""Detection on the simulated contact population: recall, precision, lookalikes, memory.

`python -m benchmarks.bench_detect [--users 10000] [--days 30] [--seeds 1,2,3] [--quick]`

For each seed, :func:`bastion.contact.simulate.simulate` builds a synthetic population (children,
families, schools, coaches, popular teens...) with planted actors (fan-out groomers, slow
groomers with few targets, sextortion rings abroad, ban evaders) and benign lookalikes, and
:func:`bastion.contact.simulate.evaluate` replays its events hour by hour through the incremental
:class:`~bastion.contact.risk.RiskState` with the default policy's ``contact.risk`` settings:

* **recall**: planted actors whose band reached ``contact.case_band`` within 24 simulated hours
  of their first contact with a child;
* **precision**: planted actors among the accounts whose band ever reached it (an account case
  opens);
* **lookalikes flagged**: benign lookalikes whose band ever reached it.

Per detector: recall (the detector fired within 24 h of first contact, over all planted actors),
precision (planted among the opened cases it fired for) and the share of lookalikes it fired for
at any score. Two baselines in the same run, on the same events: the same settings with the
detectors named in ``--baseline-off`` disabled (the defaults before they were added), and a
*reactive* one, only ``blocked_reported`` with a case as soon as it fires (what waiting for
children's blocks and reports finds).

Memory per known account: the RSS growth of one process while a fresh ``RiskState`` takes every
event of the first seed (parsed from JSON inside the measured span, one rescore at the end),
beside the raw events' size (their JSON lines) per account.

Synthetic figures are not field figures. Prints markdown; writes benchmarks/results/detect.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bastion.contact.model import Event, event_to_json, parse_event
from bastion.contact.risk import DETECTORS, RiskSettings, RiskState
from bastion.contact.simulate import PLANTED_KINDS, Evaluation, evaluate, simulate
from bastion.policy import default_policy

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "detect.md"
GOALS = {"recall": 0.9, "precision": 0.8, "lookalikes": 0.02}


def _rss() -> int:
    """This process's resident set size in bytes."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _disable(settings: RiskSettings, names: Sequence[str]) -> RiskSettings:
    update = {
        n: getattr(settings, n).model_copy(update={"enabled": False})
        for n in names
        if n in DETECTORS
    }
    return settings.model_copy(update=update)


def _reactive(settings: RiskSettings) -> RiskSettings:
    """Only ``blocked_reported``, and a case as soon as it fires (its points are the band)."""
    only = _disable(settings, [d for d in DETECTORS if d != "blocked_reported"])
    points = settings.blocked_reported.points
    return only.model_copy(update={"medium_at": 1, "high_at": max(2, points)})


@dataclass
class Pool:
    """Counts summed over seeds (ratios of sums, not means of ratios)."""

    planted: int = 0
    caught: int = 0
    flagged: int = 0
    flagged_planted: int = 0
    lookalikes: int = 0
    lookalikes_flagged: int = 0
    seconds: float = 0.0
    kind_total: Counter[str] = field(default_factory=Counter)
    kind_caught: Counter[str] = field(default_factory=Counter)
    det: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, e: Evaluation, seconds: float) -> None:
        self.planted += e.planted
        self.caught += e.caught_in_time
        self.flagged += e.flagged
        self.flagged_planted += e.flagged_planted
        self.lookalikes += e.lookalikes
        self.lookalikes_flagged += e.lookalikes_flagged
        self.seconds += seconds
        for kind, (caught, total) in e.caught_by_kind.items():
            self.kind_total[kind] += total
            self.kind_caught[kind] += caught
        for d in e.detectors:
            c = self.det.setdefault(d.detector, Counter())
            c["caught"] += d.caught
            c["cases"] += d.cases
            c["cases_planted"] += d.cases_planted
            c["lookalikes_fired"] += d.lookalikes_fired

    def recall(self) -> float:
        return _r(self.caught, self.planted)

    def precision(self) -> float:
        return _r(self.flagged_planted, self.flagged)

    def lookalike_rate(self) -> float:
        return _r(self.lookalikes_flagged, self.lookalikes)


def _r(a: int, b: int) -> float:
    return a / b if b else 0.0


def _fmt(num: int, den: int) -> str:
    return f"{_r(num, den):.3f} ({num}/{den})"


def memory(events: Sequence[Event]) -> dict[str, float]:
    """RSS growth per known account of a RiskState built from the events' JSON lines."""
    lines = [json.dumps(event_to_json(e), separators=(",", ":")) for e in events]
    raw = sum(len(line) + 1 for line in lines)
    settings = default_policy().contact.risk
    gc.collect()
    before = _rss()
    t0 = time.perf_counter()
    state = RiskState(settings)
    for line in lines:
        state.apply(parse_event(json.loads(line)))
    results = state.results()
    seconds = time.perf_counter() - t0
    gc.collect()
    grown = _rss() - before
    accounts = len(state.accounts)
    del state, results
    return {
        "accounts": accounts,
        "events": len(lines),
        "rss_bytes": grown,
        "per_account": grown / accounts,
        "per_event": grown / len(lines),
        "raw_per_account": raw / accounts,
        "raw_bytes": raw,
        "seconds": seconds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument(
        "--baseline-off",
        default="stranger_conversation",
        help="detectors disabled in the same-run baseline (comma-separated)",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 users, 7 days, seeds 1,2")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.days, args.seeds = 1000, 7, "1,2"
    seeds = [int(s) for s in args.seeds.split(",") if s]
    policy = default_policy().contact
    settings, case_band = policy.risk, policy.case_band
    off = [d for d in args.baseline_off.split(",") if d]
    configs = {
        "default policy": settings,
        f"baseline: without {', '.join(off)}": _disable(settings, off),
        "baseline: reactive (a case when blocked_reported fires)": _reactive(settings),
    }
    pools = {name: Pool() for name in configs}
    per_seed: list[str] = []
    mem: dict[str, float] | None = None
    started = datetime.now(UTC)
    for seed in seeds:
        t0 = time.perf_counter()
        events, labels = simulate(args.users, args.days, seed)
        sim_s = time.perf_counter() - t0
        print(f"seed {seed}: {len(events):,} events, {len(labels):,} accounts ({sim_s:.0f} s)")
        if mem is None:
            mem = memory(events)
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            e = evaluate(events, labels, cfg, case_band=case_band)
            seconds = time.perf_counter() - t0
            pools[name].add(e, seconds)
            line = (
                f"| {seed} | {name} | {len(events):,} | {_fmt(e.caught_in_time, e.planted)} | "
                f"{_fmt(e.flagged_planted, e.flagged)} | "
                f"{_fmt(e.lookalikes_flagged, e.lookalikes)} | {seconds:.0f} |"
            )
            print(line, flush=True)
            per_seed.append(line)
        del events, labels
        gc.collect()

    main_pool = pools["default policy"]
    out = [
        f"# Detection on the simulator ({args.users:,} users, {args.days} days, seeds "
        f"{', '.join(map(str, seeds))})",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{started:%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}; case band "
        f"`{case_band}`; recall within 24 simulated hours of first contact with a child. "
        "Synthetic figures are not field figures.",
        "",
        "## Overall, pooled over the seeds",
        "",
        "| settings | recall | precision | lookalikes flagged | replay s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, p in pools.items():
        out.append(
            f"| {name} | {_fmt(p.caught, p.planted)} | {_fmt(p.flagged_planted, p.flagged)} | "
            f"{_fmt(p.lookalikes_flagged, p.lookalikes)} | {p.seconds:.0f} |"
        )
    met = (
        main_pool.recall() >= GOALS["recall"]
        and main_pool.precision() >= GOALS["precision"]
        and main_pool.lookalike_rate() <= GOALS["lookalikes"]
    )
    out += [
        "",
        f"Goals (recall >= 0.9, precision >= 0.8, lookalikes <= 2%): "
        f"**{'met' if met else 'not met'}** with the default policy.",
        "",
        "## Recall by planted kind (default policy, and the first baseline)",
        "",
        "| kind | " + " | ".join(configs) + " |",
        "| --- | " + " | ".join("---" for _ in configs) + " |",
    ]
    for kind in PLANTED_KINDS:
        cells = [_fmt(p.kind_caught[kind], p.kind_total[kind]) for p in pools.values()]
        out.append(f"| {kind} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Per detector (default policy)",
        "",
        "Recall: planted actors the detector fired for within 24 h of first contact, over all "
        "planted actors (each detector is built for some kinds only). Precision: planted among "
        "the opened cases it fired for. Lookalikes: the share it fired for at any score.",
        "",
        "| detector | recall | precision | lookalikes fired |",
        "| --- | --- | --- | --- |",
    ]
    for det in DETECTORS:
        c = main_pool.det.get(det, Counter())
        out.append(
            f"| `{det}` | {_fmt(c['caught'], main_pool.planted)} | "
            f"{_fmt(c['cases_planted'], c['cases'])} | "
            f"{_fmt(c['lookalikes_fired'], main_pool.lookalikes)} |"
        )
    out += [
        "",
        "## Per seed",
        "",
        "| seed | settings | events | recall | precision | lookalikes flagged | replay s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *per_seed,
    ]
    if mem is not None:
        out += [
            "",
            f"## Memory per known account (seed {seeds[0]})",
            "",
            "| measure | accounts | events | bytes | per account | per event |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| `RiskState` RSS growth (apply all, rescore once; {mem['seconds']:.0f} s) | "
            f"{mem['accounts']:,.0f} | {mem['events']:,.0f} | {mem['rss_bytes']:,.0f} | "
            f"**{mem['per_account']:,.0f}** | {mem['per_event']:,.0f} |",
            f"| baseline: the raw events as JSON lines | {mem['accounts']:,.0f} | "
            f"{mem['events']:,.0f} | {mem['raw_bytes']:,.0f} | {mem['raw_per_account']:,.0f} | "
            f"{mem['raw_bytes'] / mem['events']:,.0f} |",
            "",
            f"Peak RSS of the benchmark process: "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB.",
        ]
    report = "\n".join(out) + "\n"
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
