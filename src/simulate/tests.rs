use super::*;

fn small_site() -> Site {
    let spec: generate::Spec = "2:2:12:3".parse().unwrap();
    generate::site(&spec)
}

#[test]
fn a_testbed_topology_is_simulated_like_a_real_evacuation() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/topologies/paper-4vm-precopy.toml"
    );
    let t = Topology::load(std::path::Path::new(path)).unwrap();
    let site = Site::from_topology(&t, Some(30e6));
    let m = site.vms.iter().find(|v| v.name == "m").unwrap();
    // Fill 64 MiB + the testbed's 47: 111 MiB, as measured (28,500 pages).
    assert_eq!(m.non_zero_pages, 111 * 256);
    assert_eq!(m.dirty_pages_per_sec, 256.0);
    let opts = Options {
        concurrency: Concurrency::Fixed(1),
        ..Options::default()
    };
    let r = simulate(&site, &opts).unwrap();
    // The paper's order, as the testbed's evacuations of this topology
    // had it (experiments/predict-order): no, m, c, ni.
    assert_eq!(r.sources[0].order, ["no", "m", "c", "ni"]);
    assert!(r.unfinished.is_empty(), "{:?}", r.unfinished);
    let total = r.total_migration_ms.unwrap() as f64 / 1000.0;
    // Four 116 MB guests at the host's 30 Mbit/s, 2 s start-up each: about
    // 4 x 33 s. The testbed measured 79-96 s (its guests push 30-45).
    assert!((100.0..200.0).contains(&total), "{total}");
    // One at a time: never two running.
    assert!(r.concurrency.timeline.iter().all(|p| p.running <= 1));
    // The report draws it as a real record.
    let svg = crate::report::evacuation_svg(&serde_json::to_value(&r).unwrap()).unwrap();
    assert!(svg.contains("<svg") && svg.contains("m · done"), "{svg}");
}

#[test]
fn every_source_is_emptied_into_destinations_with_room() {
    let site = small_site();
    let r = simulate(&site, &Options::default()).unwrap();
    assert_eq!(r.vms.len(), 12);
    assert!(r.unfinished.is_empty(), "{:?}", r.unfinished);
    assert_eq!(r.sources.len(), 2);
    let dests: BTreeSet<&str> = r.vms.iter().map(|v| v.destination.as_str()).collect();
    assert_eq!(dests.len(), 2, "both destinations used: {dests:?}");
    // Memory placed on each destination within its room.
    for h in site.hosts.iter().filter(|h| h.role == Role::Destination) {
        let placed: u64 = r
            .vms
            .iter()
            .filter(|v| v.destination == h.name)
            .map(|v| {
                site.vms
                    .iter()
                    .find(|s| s.name == v.record.name)
                    .unwrap()
                    .memory_kib
                    / 1024
            })
            .sum();
        assert!(placed <= h.memory_mib.unwrap(), "{}: {placed}", h.name);
    }
    // Auto: one per source to begin with, decisions on the record.
    assert!(r.sources.iter().all(|s| s.concurrency.decisions[0].to == 1));
    assert!(r.metrics.is_some());
    // The sources ran in parallel: the evacuation is shorter than the sum
    // of the two sources' own spans would be back to back.
    let span = |src: &str| {
        let vs: Vec<&SimVm> = r.vms.iter().filter(|v| v.source == src).collect();
        let a = vs.iter().filter_map(|v| v.record.started_ms).min().unwrap();
        let b = vs.iter().filter_map(|v| v.record.ended_ms).max().unwrap();
        b - a
    };
    assert!(r.total_migration_ms.unwrap() < span("src001") + span("src002"));
}

#[test]
fn no_room_names_the_vm_and_the_destinations() {
    let mut site = small_site();
    for h in &mut site.hosts {
        if h.role == Role::Destination {
            h.memory_mib = Some(1024);
        }
    }
    let e = simulate(&site, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no destination has room for VM") && e.contains("dst001 has"),
        "{e}"
    );
}

#[test]
fn a_deadline_says_what_made_it() {
    let site = small_site();
    let all = simulate(&site, &Options::default()).unwrap();
    let total_s = all.total_migration_ms.unwrap() as f64 / 1000.0;
    let opts = Options {
        deadline_s: Some(total_s / 2.0),
        ..Options::default()
    };
    let r = simulate(&site, &opts).unwrap();
    let d = r.deadline.unwrap();
    assert!(!d.made.is_empty() && !d.late.is_empty(), "{d:?}");
    assert_eq!(d.made.len() + d.late.len() + d.not_moved.len(), 12);
    assert_eq!(d.total_priority, 12);
}

#[test]
fn predict_orders_each_source_by_the_model() {
    let site = small_site();
    let opts = Options {
        order: OrderChoice::Predict,
        concurrency: Concurrency::Fixed(1),
        ..Options::default()
    };
    let r = simulate(&site, &opts).unwrap();
    assert!(r
        .sources
        .iter()
        .all(|s| s.rules_gap_pct.is_some_and(|g| g >= -1e-6)));
    assert!(r.unfinished.is_empty());
}

#[test]
fn bad_sites_and_options_name_their_field() {
    type Break = Box<dyn Fn(&mut Site, &mut Options)>;
    let cases: Vec<(Break, &str)> = vec![
        (
            Box::new(|s, _| s.vms[3].host = "nowhere".into()),
            "vms[3].host",
        ),
        (
            Box::new(|s, _| s.vms[2].name = s.vms[1].name.clone()),
            "vms[2].name",
        ),
        (
            Box::new(|s, _| s.hosts[1].name = s.hosts[0].name.clone()),
            "hosts[1].name",
        ),
        (
            Box::new(|s, _| s.hosts[0].capacity_bps = -1.0),
            "hosts[0].capacity_bps",
        ),
        (
            Box::new(|s, _| s.vms[0].priority = Some(0)),
            "vms[0].priority",
        ),
        (
            Box::new(|s, _| s.vms[0].non_zero_pages = u64::MAX / 8),
            "vms[0].non_zero_pages",
        ),
        (
            Box::new(|s, _| s.hosts.retain(|h| h.role != Role::Destination)),
            "hosts",
        ),
        (Box::new(|_, o| o.deadline_s = Some(-5.0)), "deadline_s"),
        (
            Box::new(|_, o| o.concurrency = Concurrency::Fixed(0)),
            "concurrency",
        ),
        (Box::new(|_, o| o.score_weight = 2.0), "score_weight"),
    ];
    for (break_it, name) in cases {
        let (mut s, mut o) = (small_site(), Options::default());
        break_it(&mut s, &mut o);
        let e = simulate(&s, &o).unwrap_err().to_string();
        assert!(e.starts_with(name), "{name}: {e}");
    }
    let e = serde_json::from_str::<Site>(r#"{"name":"x","hosts":[],"vms":[],"extra":1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("extra"), "{e}");
}

#[test]
fn a_guest_with_a_local_disk_copies_it_first_and_a_shared_one_does_not() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/disk-1vm.toml");
    let mut t = Topology::load(std::path::Path::new(path)).unwrap();
    let opts = Options {
        concurrency: Concurrency::Fixed(1),
        ..Options::default()
    };
    let site = Site::from_topology(&t, None);
    let v = &site.vms[0];
    let tv = t.hosts.iter().flat_map(|h| &h.vms).next().unwrap().clone();
    // Its allocation: what the testbed writes before boot (default: half).
    let fill = tv.disk_fill_mib.unwrap_or(tv.disk_mib.unwrap() / 2);
    assert_eq!(v.disk_bytes, fill << 20);
    assert_eq!(v.disk_write_bps, tv.write_mibps.unwrap() * 1_048_576.0);
    let with_disk = simulate(&site, &opts).unwrap().total_migration_ms.unwrap();
    for h in &mut t.hosts {
        for v in &mut h.vms {
            v.disk_shared = true;
        }
    }
    let site = Site::from_topology(&t, None);
    assert_eq!(site.vms[0].disk_bytes, 0);
    let shared = simulate(&site, &opts).unwrap().total_migration_ms.unwrap();
    // The disk's bytes at most at the link's rate come first.
    let link = site.hosts[0].capacity_bps;
    assert!(
        (with_disk - shared) as f64 / 1000.0 >= (fill << 20) as f64 * 8.0 / link,
        "{with_disk} ms with the disk, {shared} ms without"
    );
}
