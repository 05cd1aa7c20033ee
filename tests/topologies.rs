//! Every shipped topology file is one the controller reads, with the roles
//! the testbed and the scatter-gather work expect.

use solive::topology::{Role, Topology};

fn load(name: &str) -> Topology {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(format!("{name}.toml"));
    Topology::load(&path).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

#[test]
fn shipped_topologies_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Topology::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "{n} topology files");
}

#[test]
fn the_named_topologies_have_their_shape() {
    assert_eq!(load("two-hosts").hosts.len(), 2);
    let p4 = load("paper-4vm");
    let src = p4.with_role(Role::Source).next().unwrap();
    assert_eq!(src.vms.len(), 4);
    assert_eq!(
        load("paper-8vm")
            .with_role(Role::Source)
            .next()
            .unwrap()
            .vms
            .len(),
        8
    );
    let s = load("scatter-2i");
    assert_eq!(s.with_role(Role::Intermediary).count(), 2);
    let src = s.with_role(Role::Source).next().unwrap().capacity_mbps;
    let dst = s.with_role(Role::Destination).next().unwrap().capacity_mbps;
    assert!(dst < src, "the destination's link must be the slower one");
}
