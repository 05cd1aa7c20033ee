//! Two hosts on a real Open vSwitch, as the live reservation tests use them:
//! bridges `brs` (source) and `brd` (destination) joined by a veth uplink
//! shaped to `mbps` on the source side (the test's own QoS row, not
//! solive's), a VM on the source, and each host's own address.

use std::process::{Command, Stdio};

use super::{quiet, run, KillOnDrop, NsHost, Sandbox};

pub struct TwoHosts {
    /// The source's VM (`vm-id` vm1) at `NET.11`.
    pub vm: NsHost,
    /// The source host's own address, `NET.1`.
    pub hs: NsHost,
    /// The destination host's own address, `NET.2`.
    pub hd: NsHost,
    /// The uplink's two ends (the source's, the destination's).
    pub uplinks: (String, String),
    pub net: String,
}

impl TwoHosts {
    /// Names start with `p` (a few letters, unique per test file); the
    /// addresses are in `net`.0/24 (e.g. "10.197.0").
    pub fn new(sb: &Sandbox, p: &str, net: &str, mbps: u64) -> TwoHosts {
        sb.add_bridge("brs");
        sb.add_bridge("brd");
        let (ups, upd) = (format!("{p}-ups"), format!("{p}-upd"));
        quiet(Command::new("ip").args(["link", "del", &ups]));
        run(Command::new("ip").args(["link", "add", &ups, "type", "veth", "peer", "name", &upd]));
        for l in [&ups, &upd] {
            run(Command::new("ip").args(["link", "set", l, "up"]));
        }
        sb.vsctl(&["add-port", "brs", &ups]);
        sb.vsctl(&["add-port", "brd", &upd]);
        let max_rate = format!("other_config:max-rate={}", mbps * 1_000_000);
        sb.htb_qos(
            &ups,
            &[&max_rate, "queues:0=@q0"],
            &["--", "--id=@q0", "create", "queue", &max_rate],
        );
        let at = |host: u8| format!("{net}.{host}/24");
        let vm_port = format!("{p}-vm1p");
        let vm = NsHost::new(sb, "brs", &format!("{p}-vm1"), &vm_port, &at(11));
        sb.vsctl(&[
            "set",
            "interface",
            &vm_port,
            "external_ids:vm-id=vm1",
            "external_ids:iface-id=vm1-eth0",
        ]);
        let hs = NsHost::new(sb, "brs", &format!("{p}-hs"), &format!("{p}-hsp"), &at(1));
        let hd = NsHost::new(sb, "brd", &format!("{p}-hd"), &format!("{p}-hdp"), &at(2));
        let dst = format!("{net}.2");
        vm.exec(&["ping", "-c", "1", "-W", "3", &dst]);
        hs.exec(&["ping", "-c", "1", "-W", "3", &dst]);
        TwoHosts {
            vm,
            hs,
            hd,
            uplinks: (ups, upd),
            net: net.to_string(),
        }
    }

    /// An iperf3 server on the destination host's address.
    pub fn server(&self, port: u16) -> KillOnDrop {
        KillOnDrop(
            self.hd
                .cmd(&["iperf3", "-s", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// The `[[hosts]]` of `src` and `dst` at `mbps`.
    pub fn hosts_toml(&self, sb: &Sandbox, mbps: u64) -> String {
        format!(
            "[[hosts]]\nname = \"src\"\novsdb = \"{db}\"\nbridge = \"brs\"\nuplink = \"{ups}\"\ncapacity_mbps = {mbps}\naddress = \"{net}.1\"\n\
             [[hosts]]\nname = \"dst\"\novsdb = \"{db}\"\nbridge = \"brd\"\nuplink = \"{upd}\"\ncapacity_mbps = {mbps}\naddress = \"{net}.2\"\n",
            db = sb.db,
            ups = self.uplinks.0,
            upd = self.uplinks.1,
            net = self.net,
        )
    }
}
