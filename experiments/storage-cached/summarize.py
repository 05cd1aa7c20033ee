#!/usr/bin/python3
"""Summary of experiments/storage-cached against experiments/storage-cold:
per write rate, the evacuation's time, the disk bytes it moved (QEMU's
count), what the cache saved, the VM's bytes, the downtime, the first copy's
time, the application's rate before and while the cache copied, and the
guests lost; median [min-max] over the runs. The cold runs' figures come
from their records (../storage-cold/wW/records). Records are grouped by
their name's prefix: `wW-rN` (solive's defaults), `eS-wW-rN` (`[cache]
every_s = S`), `old-wait-wW-rN` (the first wait policy, see the README).
Prints Markdown."""
import glob
import json
import os
import re
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
COLD = os.path.join(os.path.dirname(HERE), "storage-cold")


def cell(values, fmt):
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    return f"{fmt(statistics.median(v))} [{fmt(min(v))}-{fmt(max(v))}]"


def mib(x):
    return None if x is None else x / 2**20


def f0(x):
    return f"{x:.0f}"


def f1(x):
    return f"{x:.1f}"


def label(tag):
    if tag == "":
        return "defaults"
    if tag.startswith("old-wait"):
        return "first wait policy"
    if tag.startswith("handover"):
        return "sync in flight handed over"
    m = re.fullmatch(r"e([0-9.]+)-", tag)
    return f"every_s {m.group(1)}" if m else tag


def groups(w):
    """The pre-cached records of write rate `w`, by their name's prefix."""
    out = {}
    for f in sorted(glob.glob(os.path.join(HERE, "records", "*.json"))):
        m = re.fullmatch(r"(.*?)w(\d+)-r\d+\.json", os.path.basename(f))
        if m and int(m.group(2)) == w and not m.group(1).startswith("first-protocol"):
            out.setdefault(m.group(1), []).append(json.load(open(f)))
    return sorted(out.items(), key=lambda g: (g[0] != "", g[0]))


print("| write rate | kind | runs | migration s | disk MiB moved (QEMU's count) | disk MiB saved | VM MiB | downtime ms | first copy s | app Mbit/s before / while caching | cache rate Mbit/s | guests lost |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
reduction = {}
for w in (1, 4):
    cold = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(COLD, f"w{w}", "records", "*.json")))]
    cvms = [r["vms"][0] for r in cold if r.get("vms")]
    clost = sum(1 for r in cold for v in (r.get("checks") or {}).values() if str(v) != "ok")
    print(f"| {w} MiB/s | cold | {len(cvms)} "
          f"| {cell([v.get('duration_ms') and v['duration_ms'] / 1000 for v in cvms], f1)} "
          f"| {cell([mib(v.get('disk_bytes')) for v in cvms], f0)} | - "
          f"| {cell([mib(v.get('bytes')) for v in cvms], f0)} "
          f"| {cell([v.get('downtime_ms') for v in cvms], f0)} | - | - | - | {clost} |")
    for tag, recs in groups(w):
        broken = [r for r in recs if "error" in r]
        ok = [r for r in recs if "evacuation" in r]
        vms = [r["evacuation"]["vms"][0] for r in ok]
        lost = sum(1 for r in ok if r.get("check") != "ok")
        app = (f"{cell([r['app_bps_idle'] and r['app_bps_idle'] / 1e6 for r in ok], f1)} / "
               f"{cell([r['app_bps_caching'] and r['app_bps_caching'] / 1e6 for r in ok], f1)}")
        print(f"| {w} MiB/s | pre-cached, {label(tag)} | {len(vms)}{f' (+{len(broken)} broken)' if broken else ''} "
              f"| {cell([v.get('duration_ms') and v['duration_ms'] / 1000 for v in vms], f1)} "
              f"| {cell([mib(v.get('disk_bytes')) for v in vms], f0)} "
              f"| {cell([mib(v.get('disk_saved_bytes')) for v in vms], f0)} "
              f"| {cell([mib(v.get('bytes')) for v in vms], f0)} "
              f"| {cell([v.get('downtime_ms') for v in vms], f0)} "
              f"| {cell([r.get('first_copy_s') for r in ok], f0)} | {app} "
              f"| {cell([(r['cache_first'].get('rate_bps') or 0) / 1e6 for r in ok], f1)} | {lost} |")
        cold_disk = [v.get("disk_bytes") for v in cvms if v.get("disk_bytes")]
        warm_disk = [v.get("disk_bytes") for v in vms if v.get("disk_bytes") is not None]
        if cold_disk and warm_disk:
            reduction[(w, tag)] = 1 - statistics.median(warm_disk) / statistics.median(cold_disk)
print()
for (w, tag), r in reduction.items():
    print(f"- {w} MiB/s, {label(tag)}: the pre-cached evacuations moved {100 * r:.1f}% fewer disk bytes than the cold ones (medians).")
print()
print("Per run: was the cache used, had it caught up, and how old was it at the evacuation:")
print()
for f in sorted(glob.glob(os.path.join(HERE, "records", "*.json"))):
    r = json.load(open(f))
    if "error" in r:
        print(f"- {os.path.basename(f)}: broken run: {r['error']}")
        continue
    v = r["evacuation"]["vms"][0]
    c = r.get("cache_at_evacuation") or {}
    print(f"- {os.path.basename(f)}: steady {r.get('steady', '-')}, generation {c.get('generation')}, "
          f"lag {c.get('lag_s', 0):.0f} s, dirty {(c.get('disks') or [{}])[0].get('dirty_bytes', 0) >> 20} MiB; "
          f"`{v.get('disk_cache')}`; guest {r.get('check')}")
