#!/usr/bin/python3
"""The pre-cached half of issue 15's experiment: on the topology of
experiments/storage-cold (a guest with a 512 MiB local disk, 256 MiB of it
written, writing 1 or 4 MiB/s; 50 Mbit/s links) plus an application guest
sending 20 Mbit/s across h1's uplink, each run on a fresh testbed:

1. the application's rate is read for 20 s (solive's port figures);
2. the guest's disk is cached on h2 (POST /v1/caches) and the application's
   rate is read again while the first copy runs;
3. the application guest is destroyed (the syncs and the evacuation then
   have the link as the cold runs had it); once the cache has caught up with
   the guest's writes (a sync ended less than 30 s behind the disk; at most
   240 s after the first copy, else `steady` is false), `disk` is evacuated
   to h2 by solive, pre-copy with reservation, urgency 80 (the cold runs'
   request);
4. the moved guest is checked: running on h2, its memory and disk checksums
   the same as before.

Usage: experiments/storage-cached/run.py [--runs 3] [--solive target/debug/solive]
Writes records/wW-rN.json and prints nothing else of note; summarize.py
makes RESULTS.md from them."""
import argparse
import importlib.machinery
import json
import os
import re
import signal
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
exp = importlib.machinery.SourceFileLoader("experiment", os.path.join(REPO, "mininet", "experiment")).load_module()
http, testbed, wait_for, console, read_from = exp.http, exp.testbed, exp.wait_for, exp.console, exp.read_from
DISKSUM = re.compile(r"slworker: disksum ([0-9a-f]+)")
STATE = "/tmp/solive-experiment-cached"
STEADY_LAG_S = 30
STEADY_WAIT_S = 240


def port_rate(host, port, secs):
    """Median of the controller's rx rate of `port` (what the guest behind it
    sends), sampled every 2 s for `secs`, bit/s."""
    out = []
    end = time.time() + secs
    while time.time() < end:
        time.sleep(2)
        view = http("GET", f"/v1/hosts/{host}")[1]
        for p in view.get("ports", []):
            if p["name"] == port and p.get("rx_bps") is not None:
                out.append(p["rx_bps"])
    return statistics.median(out) if out else None


def last(regex, path, offset=0):
    found = regex.findall(read_from(path, offset))
    return found[-1] if found else None


def one_run(solive_bin, w, n, every_s=None, tag=""):
    topo = os.path.join(HERE, f"disk-50m-cached-w{w}.toml")
    testbed("down", "--state", STATE)
    up = testbed("up", topo, "--state", STATE)
    if up.returncode != 0:
        raise RuntimeError(f"testbed up failed: {up.stderr}")
    if every_s is not None:
        with open(os.path.join(STATE, "solive.toml"), "a") as f:
            f.write(f"\n[cache]\nevery_s = {every_s}\n")
    info = json.load(open(os.path.join(STATE, "testbed.json")))
    uri = {h["name"]: h["libvirt_uri"] for h in info["hosts"]}
    log = open(os.path.join(HERE, "solive.log"), "a")
    solive = subprocess.Popen([solive_bin, "serve", "--config", os.path.join(STATE, "solive.toml")],
                              stdout=log, stderr=log)
    rec = {"write_mibps": w, "run": n, "every_s": every_s or 15}
    try:
        wait_for("hosts connected", 60, lambda: all(h["connected"] for h in http("GET", "/v1/hosts")[1]))
        r = testbed("ready", "--state", STATE)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip())
        src_console = console(STATE, "h1", "disk")
        disk_before = wait_for("disk's first disksum", 600, lambda: last(DISKSUM, src_console))
        mem_before = wait_for("disk's memsum", 60, lambda: last(exp.MEMSUM, src_console))
        rec["app_bps_idle"] = port_rate("h1", "h1-app", 20)
        s, c = http("POST", "/v1/caches", {"vm": "disk", "backup_host": "h2"})
        if s != 201:
            raise RuntimeError(f"POST /v1/caches: {s} {c}")
        t0 = time.time()
        time.sleep(4)
        rec["app_bps_caching"] = port_rate("h1", "h1-app", 20)
        # The application has been measured: it goes, so that the syncs and
        # the evacuation have the link as the cold runs had it.
        subprocess.run(["virsh", "-q", "-c", uri["h1"], "destroy", "app"], capture_output=True)
        first = wait_for("the first copy", 900,
                         lambda: (lambda c: c if c["generation"] >= 1 else None)(http("GET", "/v1/caches/disk")[1]))
        rec["first_copy_s"] = time.time() - t0
        rec["cache_first"] = first
        # Caching runs during normal operation: the evacuation comes once the
        # cache has caught up (a sync ended less than STEADY_LAG_S behind the
        # disk; the first copy took minutes, during which the guest wrote on),
        # or after STEADY_WAIT_S if it never does (the guest writes faster
        # than the cache may send): then `steady` is false.
        t1 = time.time()
        while True:
            c = http("GET", "/v1/caches/disk")[1]
            if c["state"] == "synced" and c["generation"] >= 2 and c["lag_s"] < STEADY_LAG_S:
                rec["steady"] = True
                break
            if c["state"] == "stopped" or time.time() - t1 > STEADY_WAIT_S:
                rec["steady"] = False
                break
            time.sleep(1)
        rec["catch_up_s"] = time.time() - t1
        rec["cache_at_evacuation"] = c
        dest_console = console(STATE, "h2", "disk")
        offset = os.path.getsize(dest_console) if os.path.exists(dest_console) else 0
        s, e = http("POST", "/v1/evacuations", {"source": "h1", "destination": "h2", "vms": ["disk"],
                                                 "mode": "precopy", "urgency": 80, "reserve": True})
        if s != 201:
            raise RuntimeError(f"POST /v1/evacuations: {s} {e}")
        ev = wait_for("the evacuation", 900, lambda: (lambda r: r if r["state"] in (
            "done", "failed", "cancelled") else None)(http("GET", f"/v1/evacuations/{e['id']}")[1]))
        rec["evacuation"] = ev
        rec["cache_after"] = http("GET", "/v1/caches/disk")[1]
        # The moved guest: running on h2, the same memory and disk as before.
        check = "ok"
        try:
            disk_after = wait_for("disksum on h2", 300, lambda: last(DISKSUM, dest_console, offset))
            mem_after = wait_for("memsum on h2", 60, lambda: last(exp.MEMSUM, dest_console, offset))
            state = subprocess.run(["virsh", "-q", "-c", uri["h2"], "domstate", "disk"],
                                   capture_output=True, text=True).stdout.strip()
            if exp.DEATH.search(read_from(dest_console, offset)):
                check = "dead: panic on h2's console"
            elif state != "running":
                check = f"dead: {state} on h2"
            elif disk_after != disk_before or mem_after != mem_before:
                check = f"changed: disk {disk_before}->{disk_after}, memory {mem_before}->{mem_after}"
        except RuntimeError as err:
            check = f"dead: {err}"
        rec["check"] = check
        if ev["state"] != "done" or check != "ok":
            exp.keep_logs(STATE, info, HERE, f"{tag}w{w}-r{n}")
        return rec
    finally:
        solive.send_signal(signal.SIGTERM)
        try:
            solive.wait(30)
        except subprocess.TimeoutExpired:
            solive.kill()
        testbed("down", "--state", STATE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rates", default="1,4")
    ap.add_argument("--solive", default=os.path.join(REPO, "target", "debug", "solive"))
    ap.add_argument("--every-s", type=float, default=None,
                    help="[cache] every_s for these runs (default: solive's, 15); records get an eN- prefix")
    ap.add_argument("--tag", default="",
                    help="a further prefix of these runs' records (another build's runs beside earlier ones)")
    args = ap.parse_args()
    tag = args.tag + (f"e{args.every_s:g}-" if args.every_s is not None else "")
    os.makedirs(os.path.join(HERE, "records"), exist_ok=True)
    for w in [int(x) for x in args.rates.split(",")]:
        for n in range(1, args.runs + 1):
            try:
                rec = one_run(args.solive, w, n, args.every_s, tag)
            except Exception as err:  # a run that breaks is recorded, not hidden
                rec = {"write_mibps": w, "run": n, "error": str(err)}
            with open(os.path.join(HERE, "records", f"{tag}w{w}-r{n}.json"), "w") as f:
                json.dump(rec, f, indent=1)
            ev = rec.get("evacuation", {}).get("vms", [{}])[0]
            print(f"{tag}w{w} r{n}: {rec.get('error') or ev.get('state')} disk {ev.get('disk_bytes')} "
                  f"check {rec.get('check')}", flush=True)


if __name__ == "__main__":
    main()
