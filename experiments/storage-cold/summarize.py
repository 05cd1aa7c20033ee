#!/usr/bin/python3
"""Summary of experiments/storage-cold: per write rate, the storage
migration's time, QEMU's disk count, the VM's bytes, the downtime and the
up-front prediction, median [min-max] over the runs (records/*.json that
mininet/experiment --concurrency wrote). Prints a Markdown table."""
import glob
import json
import os
import statistics
import sys

here = os.path.dirname(os.path.abspath(__file__))


def cell(values, fmt):
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    return f"{fmt(statistics.median(v))} [{fmt(min(v))}-{fmt(max(v))}]"


print("| write rate | runs | migration s | disk MiB (QEMU's count) | VM MiB | downtime ms | predicted s | guests lost |")
print("|---|---|---|---|---|---|---|---|")
for d in sorted(glob.glob(os.path.join(here, "w*"))):
    recs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(d, "records", "*.json")))]
    vms = [r["vms"][0] for r in recs if r.get("vms")]
    lost = sum(1 for r in recs for v in (r.get("checks") or {}).values() if str(v) != "ok")
    print(f"| {os.path.basename(d)[1:]} MiB/s | {len(vms)} "
          f"| {cell([v.get('duration_ms') and v['duration_ms'] / 1000 for v in vms], lambda x: f'{x:.1f}')} "
          f"| {cell([v.get('disk_bytes') and v['disk_bytes'] / 2**20 for v in vms], lambda x: f'{x:.0f}')} "
          f"| {cell([v.get('bytes') and v['bytes'] / 2**20 for v in vms], lambda x: f'{x:.0f}')} "
          f"| {cell([v.get('downtime_ms') for v in vms], lambda x: f'{x:.0f}')} "
          f"| {cell([v.get('predicted_ms') and v['predicted_ms'] / 1000 for v in vms], lambda x: f'{x:.1f}')} "
          f"| {lost} |")
sys.exit(0)
