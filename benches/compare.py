"""benches/compare.sh's arithmetic: a load generator's output read into one
line, and the Markdown tables of a whole run.

    oha ... --output-format json | python3 benches/compare.py oha
    wrk ... --latency | python3 benches/compare.py wrk
        print "responses req/s p50_ms p99_ms bad" (bad: non-2xx responses
        plus connection errors)
    python3 benches/compare.py report RESULTS

RESULTS has one line per pass, generator and target:
    pass generator target rps p50 p99 bad cpu user sys busy idle_rss peak_rss gen
where generator is oha, wrk or fixed (oha at 5000 req/s) and gen is the
generator's own CPU per response. Every ratio is taken within one pass and
one generator (the machine drifts between passes), then the median over the
passes is shown.
"""

import json
import re
import statistics
import sys

COLS = "rps p50 p99 bad cpu user sys busy idle peak gen".split()
GENERATORS = ("oha", "wrk")

# (label, numerator, denominator, goal): a goal is the most the ratio may be.
COMPARISONS = [
    ("everything on: gateway / pingap", "gw-full", "pingap-full", 0.8),
    ("everything on: gateway / Pingora floor", "gw-full", "floor", 1.10),
    ("JWT route: gateway (token cache) / NGINX+njs", "gw-jwt", "nginx-full-jwt", 0.9),
    ("JWT route: gateway, verified every time / NGINX+njs", "gw-jwt-nocache", "nginx-full-jwt", None),
    ("JWT route: gateway (token cache) / pingap", "gw-jwt", "pingap-jwt", None),
    ("JWT route: gateway, verified every time / pingap", "gw-jwt-nocache", "pingap-jwt", None),
    ("routing only: gateway / NGINX plain (moonshot)", "gw-route", "nginx", 1.3),
    ("routing only: gateway / Pingora floor", "gw-route", "floor", None),
    ("Pingora floor / NGINX plain", "floor", "nginx", None),
    ("routing + access log: gateway / NGINX plain", "gw-log", "nginx", None),
    ("routing + access log: gateway / HAProxy", "gw-log", "haproxy", None),
    ("routing + access log: gateway / Caddy", "gw-log", "caddy", None),
    ("routing + access log: gateway / pingap", "gw-log", "pingap", None),
    ("everything on / routing only", "gw-full", "gw-route", None),
    ("JSON access log (gw-full / gw-nolog)", "gw-full", "gw-nolog", None),
    ("HS256 JWT, cached (gw-jwt / gw-full)", "gw-jwt", "gw-full", None),
    ("HS256 JWT, verified every time (gw-jwt-nocache / gw-full)", "gw-jwt-nocache", "gw-full", None),
]


def read_oha(text):
    r = json.loads(text)
    codes, errors = r["statusCodeDistribution"], r["errorDistribution"]
    bad = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(errors.values())
    p = r["latencyPercentiles"]
    return sum(codes.values()), r["summary"]["requestsPerSec"], p["p50"] * 1e3, p["p99"] * 1e3, bad


def read_wrk(text):
    unit = {"us": 1e-3, "ms": 1, "s": 1e3}

    def ms(percent):
        value, u = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
        return float(value) * unit[u]

    responses = int(re.search(r"(\d+) requests in", text).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    bad = (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return responses, rps, ms(50), ms(99), bad


def load(path):
    data = {}  # (pass, generator, target) -> {column: value}
    for line in open(path):
        pass_, generator, target, *values = line.split()
        data[(pass_, generator, target)] = dict(zip(COLS, map(float, values)))
    return data


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def full_peer(target):
    return "nginx-full-jwt" if "jwt" in target else "nginx-full"


def main(results_path):
    data = load(results_path)
    passes = sorted({p for p, _, _ in data}, key=int)
    targets = list(dict.fromkeys(t for _, _, t in data))

    def value(p, g, t, col="cpu"):
        row = data.get((p, g, t))
        return row[col] if row else None

    def ratio(g, a, b):
        """The median over the passes of a's CPU per request over b's."""
        per_pass = []
        for p in passes:
            x, y = value(p, g, a), value(p, g, b)
            per_pass.append(x / y if x and y else None)
        return med(per_pass), [r for r in per_pass if r is not None]

    print("| pass | load | target | req/s | p50 ms | p99 ms | non-2xx+errors | CPU µs/req | user | kernel | busy % | RSS idle/peak MB | load's CPU µs/req |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in passes:
        for g in GENERATORS + ("fixed",):
            for t in targets:
                d = data.get((p, g, t))
                if d:
                    print(f'| {p} | {g} | {t} | {d["rps"]:.0f} | {d["p50"]:.2f} | {d["p99"]:.2f} | '
                          f'{d["bad"]:.0f} | {d["cpu"]:.1f} | {d["user"]:.1f} | {d["sys"]:.1f} | '
                          f'{d["busy"]:.0f} | {d["idle"]:.1f}/{d["peak"]:.1f} | {d["gen"]:.1f} |')

    print()
    print(f"Medians over {len(passes)} passes, oha / wrk (ratios: the median of the per-pass ratios):")
    print()
    print("| target | req/s | CPU µs/req | user µs | kernel µs | busy % | load's CPU µs/req | CPU vs nginx | vs nginx-full (JWT: njs) | RSS idle/peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        if t not in {t2 for _, g, t2 in data if g in GENERATORS}:
            continue
        cells = []
        for col, digits in (("rps", 0), ("cpu", 1), ("user", 1), ("sys", 1), ("busy", 0), ("gen", 1)):
            cells.append(" / ".join(fmt(med([value(p, g, t, col) for p in passes]), digits)
                                    for g in GENERATORS))
        plain = " / ".join(fmt(ratio(g, t, "nginx")[0]) for g in GENERATORS) if t != "direct" else "-"
        full = " / ".join(fmt(ratio(g, t, full_peer(t))[0]) for g in GENERATORS) if t != "direct" else "-"
        idle = med([value(p, "wrk", t, "idle") for p in passes])
        peak = med([value(p, g, t, "peak") for p in passes for g in GENERATORS])
        print(f"| {t} | {' | '.join(cells)} | {plain} | {full} | {fmt(idle, 1)}/{fmt(peak, 1)} |")

    print()
    print("CPU per request compared (median of per-pass ratios; the range over the passes in brackets):")
    print()
    print("| comparison | oha | wrk | goal |")
    print("|---|---|---|---|")
    for label, a, b, goal in COMPARISONS:
        cells = []
        for g in GENERATORS:
            m, per_pass = ratio(g, a, b)
            if m is None:
                cells.append("-")
                continue
            verdict = "" if goal is None else (" met" if m <= goal else " missed")
            cells.append(f"{m:.2f} [{min(per_pass):.2f}-{max(per_pass):.2f}]{verdict}")
        goal_text = "-" if goal is None else f"≤ {goal:.2f}"
        print(f"| {label} | {cells[0]} | {cells[1]} | {goal_text} |")

    fixed = [t for t in targets if any((p, "fixed", t) in data for p in passes)]
    print()
    print("Fixed rate, 5000 req/s for 15 s (oha, latency corrected), medians over the passes; "
          "the goal is a p99 within 0.5 ms of NGINX plain's:")
    print()
    print("| target | p50 ms | p99 ms | p99 - nginx p99 ms (per pass) | goal met | non-2xx+errors | CPU µs/req |")
    print("|---|---|---|---|---|---|---|")
    for t in fixed:
        m = {c: med([value(p, "fixed", t, c) for p in passes]) for c in ("p50", "p99", "bad", "cpu")}
        over = [value(p, "fixed", t, "p99") - value(p, "fixed", "nginx", "p99") for p in passes]
        goal = ("met" if med(over) <= 0.5 else "missed") if t.startswith("gw-") else "-"
        print(f'| {t} | {m["p50"]:.2f} | {m["p99"]:.2f} | {med(over):+.2f} '
              f'({", ".join(f"{o:+.2f}" for o in over)}) | {goal} | {m["bad"]:.0f} | {m["cpu"]:.1f} |')


if __name__ == "__main__":
    if sys.argv[1] in ("oha", "wrk"):
        n, rps, p50, p99, bad = (read_oha if sys.argv[1] == "oha" else read_wrk)(sys.stdin.read())
        print(n, f"{rps:.0f}", f"{p50:.3f}", f"{p99:.3f}", bad)
    else:
        main(sys.argv[2])
