#!/usr/bin/python3
# The table of experiments/concurrency-8vm/README.md from a concurrency.csv:
# per cell, median [min-max] of each figure.
# python3 experiments/concurrency-8vm/table.py experiments/concurrency-8vm/concurrency.csv
import csv,statistics as st,sys
rows=list(csv.DictReader(open(sys.argv[1])))
cells={}
for r in rows: cells.setdefault(r['concurrency'],[]).append(r)
print("| concurrency | runs | total s | mean individual s | max individual s | score s (w 0.5) | lost |")
print("|---|---|---|---|---|---|---|")
for c,rs in cells.items():
    def f(k):
        xs=[float(r[k]) for r in rs if r[k]]
        return f"{st.median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]" if xs else "-"
    print(f"| {c} | {len(rs)} | {f('total_s')} | {f('mean_s')} | {f('max_s')} | {f('score_s')} | {sum(int(r['lost']) for r in rs)} |")
