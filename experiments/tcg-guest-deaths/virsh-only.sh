#!/bin/bash
# virsh-only migrations of NO back and forth on paper-4vm: does the guest die without solive?
cd "$(dirname "$0")/../.."
S=/tmp/tcg/state
exec 9>/tmp/solive-root-ovs.lock; flock 9
/usr/bin/python3 mininet/testbed down --state $S >/dev/null 2>&1
/usr/bin/python3 mininet/testbed up paper-4vm --state $S > /tmp/tcg/up.log 2>&1 || { echo up failed; exit 1; }
/usr/bin/python3 mininet/testbed ready --state $S
U1=$(python3 -c "import json;d=json.load(open('$S/testbed.json'));print([h['libvirt_uri'] for h in d['hosts'] if h['name']=='h1'][0])")
U2=$(python3 -c "import json;d=json.load(open('$S/testbed.json'));print([h['libvirt_uri'] for h in d['hosts'] if h['name']=='h2'][0])")
from=$U1; to=$U2; toaddr=10.0.0.2; toname=h2
for i in 1 2 3 4 5 6; do
  t0=$(date +%s.%N)
  virsh -q -c $from migrate --live --p2p no $to tcp://$toaddr --bandwidth 9 2>&1
  sleep 8
  st=$(virsh -q -c $to domstate no 2>&1)
  echo "run $i to $toname: $(echo "$(date +%s.%N) - $t0" | bc) s, state: $st"
  if [ "$st" != "running" ]; then grep -m2 "BUG\|panic" $S/hosts/$toname/log/qemu/no-console.log; break; fi
  if [ $toname = h2 ]; then from=$U2; to=$U1; toaddr=10.0.0.1; toname=h1; else from=$U1; to=$U2; toaddr=10.0.0.2; toname=h2; fi
done
/usr/bin/python3 mininet/testbed down --state $S >/dev/null 2>&1
