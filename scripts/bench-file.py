#!/usr/bin/env python3
"""File mode against DuckDB on a workload salespulse did not write.

  scripts/bench-file.sh [EVENTS] [RUNS]     (default 1000000 5)

The workload (seeded, written once to $TMPDIR/salespulse-bench-file.jsonl):
EVENTS CloudEvents over 90 days, 40 % `crm.lead.created` with distinct
ids, 35 % `crm.deal.won` and 25 % `crm.deal.lost` for deals never
created, carrying rep, channel and product; 50 reps, 6 channels,
7 products. Both tools count it exactly, by day, by day and rep, and by
day and channel: salespulse with only day windows and the dimensions rep
and channel (every KPI these events feed), DuckDB with one thread and
one GROUP BY GROUPING SETS query over the same file. Reported: CPU
seconds (user + system) of each run, their medians and the ratio, and
where salespulse's time goes (examples/throughput, no output): decode
alone, decode + engine, and decode + engine without the entity model's
two costs on this workload (`state.max_waiting = 0`: an outcome for a
deal not seen counts at once instead of waiting up to `time.grace` for
the deal; `sla.first_contact = "0s"`: no speed-to-lead SLA per lead),
which DuckDB's query does not do either.
"""
import json, os, random, resource, statistics, subprocess, sys, time

events = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
tmp = os.environ.get("TMPDIR", "/tmp")
data = f"{tmp}/salespulse-bench-file-{events}.jsonl"
cfg = f"{tmp}/salespulse-bench-file.toml"
binary = "target/release/salespulse"

if not os.path.exists(data):
    rnd = random.Random(42)
    reps = [f"rep-{i:02}" for i in range(50)]
    channels = ["web", "paid_search", "referral", "events", "outbound", "partner"]
    products = ["Starter", "Basic", "Pro", "Team", "Business", "Enterprise", "Suite"]
    start = 1735689600.0  # 2025-01-01T00:00:00Z
    span = 90 * 86400
    with open(data + ".part", "w") as f:
        for i in range(events):
            t = start + span * i / events
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03}Z"
            u = rnd.random()
            rep, ch = rnd.choice(reps), rnd.choice(channels)
            if u < 0.40:
                ty, d = "crm.lead.created", {"lead_id": f"l{i}", "channel": ch, "rep": rep}
            else:
                amount = round(rnd.uniform(1000, 90000), 2)
                ty = "crm.deal.won" if u < 0.75 else "crm.deal.lost"
                d = {"deal_id": f"d{i}", "amount": amount, "rep": rep, "channel": ch,
                     "product": rnd.choice(products)}
            f.write(json.dumps({"specversion": "1.0", "id": f"e{i}", "source": "bench",
                                "type": ty, "time": stamp, "data": d}, separators=(",", ":")) + "\n")
    os.rename(data + ".part", data)

BASE = ('[windows]\ncalendar = ["day"]\nrolling = []\n'
        '[kpis]\ndimensions = ["rep", "channel"]\n'
        '[time]\nmax_future_skew = "0s"\n')
with open(cfg, "w") as f:
    f.write(BASE)
lean = f"{tmp}/salespulse-bench-file-lean.toml"
with open(lean, "w") as f:
    f.write(BASE + '[state]\nmax_waiting = 0\n[sla]\nfirst_contact = "0s"\n')

QUERY = f"""
SELECT date_trunc('day', CAST(time AS TIMESTAMP)) AS day, data.rep AS rep, data.channel AS channel,
       count(*) FILTER (WHERE type = 'crm.lead.created') AS leads,
       count(*) FILTER (WHERE type = 'crm.deal.won') AS won,
       sum(CAST(data.amount AS DOUBLE)) FILTER (WHERE type = 'crm.deal.won') AS revenue,
       count(*) FILTER (WHERE type = 'crm.deal.lost') AS lost,
       count(*) FILTER (WHERE type = 'crm.deal.won') / nullif(count(*) FILTER (WHERE type IN ('crm.deal.won', 'crm.deal.lost')), 0) AS win_rate
FROM read_json('{data}', format = 'newline_delimited',
     columns = {{type: 'VARCHAR', time: 'VARCHAR', data: 'STRUCT(rep VARCHAR, channel VARCHAR, amount DOUBLE)'}})
GROUP BY GROUPING SETS ((day), (day, rep), (day, channel))
"""
DUCK = ("import duckdb, sys\n"
        "c = duckdb.connect(config={'threads': 1})\n"
        "rows = c.execute(sys.argv[1]).fetchall()\n"
        "print(len(rows), file=sys.stderr)\n")


def cpu_of(cmd, **kw):
    """CPU seconds (user + system) of a child process and what it printed on stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, **kw)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, p.stderr.decode()


def timed(stage, config):
    """The timed part of examples/throughput: one thread (wall ≈ CPU), no output."""
    _, err = cpu_of(["target/release/examples/throughput", stage, str(events)],
                    env={**os.environ, "THROUGHPUT_LINES": data, "THROUGHPUT_CONFIG": config})
    return float(err.split(" in ")[1].split(" s")[0])


sp, dd, eng, dec, lean_eng = [], [], [], [], []
for r in range(runs):
    # alternating, so that a noisy neighbour hits both
    c, _ = cpu_of([binary, "run", "--config", cfg, "--input", data, "--output", "/dev/null",
                   "--dead-letter", "/dev/null"])
    sp.append(c)
    c, groups = cpu_of([sys.executable, "-c", DUCK, QUERY])
    dd.append(c)
    eng.append(timed("json", cfg))
    dec.append(timed("decode", cfg))
    lean_eng.append(timed("json", lean))
    print(f"run {r + 1}: salespulse {sp[-1]:.2f} CPU-s, duckdb {dd[-1]:.2f} CPU-s ({groups.strip()} groups), "
          f"decode + engine {eng[-1]:.2f} CPU-s, decode {dec[-1]:.2f}, "
          f"decode + engine without waiting and SLA {lean_eng[-1]:.2f}", file=sys.stderr)
m_sp, m_dd, m_eng = statistics.median(sp), statistics.median(dd), statistics.median(eng)
m_dec, m_lean = statistics.median(dec), statistics.median(lean_eng)
print(f"file mode, {events} events: salespulse {m_sp:.2f} CPU-s, duckdb (1 thread) {m_dd:.2f} CPU-s, "
      f"ratio salespulse/duckdb {m_sp / m_dd:.2f}; decode + engine {m_eng:.2f} CPU-s, "
      f"whole run / (decode + engine) {m_sp / m_eng:.2f} (medians of {runs})")
print(f"where it goes: decode {m_dec:.2f} CPU-s ({m_dec / m_dd:.2f} of duckdb), engine {m_eng - m_dec:.2f}, "
      f"of which waiting for entities and the first-contact SLA {m_eng - m_lean:.2f}; "
      f"output and the rest of the run {m_sp - m_eng:.2f}")
