//! A VM's disks, and which of them a live migration must copy.
//!
//! A disk on storage that both hosts see (a network disk, a path on shared
//! storage, a disk marked shareable) needs no copy: the destination opens the
//! same image. A disk on the source's local storage must travel with the VM:
//! libvirt copies it over NBD (QEMU mirrors it into an NBD server the
//! destination's QEMU opens) before the memory moves. Which is which comes
//! from the domain's XML and the host's configured shared paths (`[[hosts]]
//! shared_storage`): libvirt itself cannot tell a local file from one on NFS
//! without looking, and an operator knows.
//!
//! Pure: [`parse`] reads libvirt's domain XML, [`decide`] applies the rules,
//! [`block_images`] and [`mirror_progress`] read QEMU's `query-block` and
//! `query-block-jobs` replies (sizes, and a running copy's progress),
//! [`describe`] puts them together, and [`settle`] says what to do with a
//! block job found on a disk before solive starts one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One disk as the domain's XML describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The guest-side name libvirt knows it by (`vda`).
    pub target: String,
    /// `file`, `block`, `network` or `volume`.
    pub kind: String,
    /// The image's path (file), device (block), `PROTOCOL:NAME` (network) or
    /// `POOL/VOLUME` (volume); None for an empty drive.
    pub source: Option<String>,
    /// The image format (`qcow2`, `raw`), when the XML says.
    pub format: Option<String>,
    /// libvirt's device alias (`virtio-disk0`): how QEMU's own reports name it.
    pub alias: Option<String>,
    pub readonly: bool,
    pub shareable: bool,
    /// The files under the image, nearest first (`<backingStore>`): a
    /// disk pre-cached by solive is a base with one overlay on it.
    pub backing: Vec<String>,
}

/// One disk of a running VM: what it is, how big, and whether a migration
/// copies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub target: String,
    pub kind: String,
    pub source: Option<String>,
    pub format: Option<String>,
    /// What the guest sees, bytes.
    pub capacity_bytes: u64,
    /// What the image holds on the host, bytes: what a copy sends.
    pub allocation_bytes: u64,
    /// Whether a migration copies it (local storage) or not (shared).
    pub copy: bool,
    /// Why, in words an operator can check.
    pub why: String,
    /// The files under `source`, nearest first (see [`DiskSpec::backing`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backing: Vec<String>,
}

/// Reads the `<disk device='disk'>` elements of a domain's XML (CD-ROMs and
/// floppies are not migrated: libvirt expects their media on the destination).
pub fn parse(xml: &str) -> Result<Vec<DiskSpec>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
    let mut out = Vec::new();
    let disks = doc.descendants().filter(|n| {
        n.has_tag_name("disk") && n.parent().is_some_and(|p| p.has_tag_name("devices"))
    });
    for d in disks {
        if d.attribute("device").unwrap_or("disk") != "disk" {
            continue;
        }
        let child = |name: &str| d.children().find(|c| c.has_tag_name(name));
        let kind = d.attribute("type").unwrap_or("file").to_string();
        let target = child("target")
            .and_then(|t| t.attribute("dev"))
            .ok_or_else(|| "domain XML: a disk without <target dev=...>".to_string())?
            .to_string();
        let source = child("source").and_then(|s| match kind.as_str() {
            "file" => s.attribute("file").map(str::to_string),
            "block" => s.attribute("dev").map(str::to_string),
            "network" => Some(format!(
                "{}:{}",
                s.attribute("protocol").unwrap_or("?"),
                s.attribute("name").unwrap_or("")
            )),
            "volume" => Some(format!(
                "{}/{}",
                s.attribute("pool").unwrap_or("?"),
                s.attribute("volume").unwrap_or("")
            )),
            _ => None,
        });
        out.push(DiskSpec {
            target,
            kind,
            source,
            format: child("driver")
                .and_then(|v| v.attribute("type"))
                .map(str::to_string),
            alias: child("alias")
                .and_then(|a| a.attribute("name"))
                .map(str::to_string),
            readonly: child("readonly").is_some(),
            shareable: child("shareable").is_some(),
            backing: backing_chain(d),
        });
    }
    Ok(out)
}

/// The file sources of a disk's nested `<backingStore>` elements (libvirt
/// writes the chain it opened into the live XML; an empty `<backingStore/>`
/// ends it).
fn backing_chain(disk: roxmltree::Node) -> Vec<String> {
    let mut out = Vec::new();
    let mut node = disk;
    while let Some(b) = node.children().find(|c| c.has_tag_name("backingStore")) {
        match b
            .children()
            .find(|c| c.has_tag_name("source"))
            .and_then(|s| s.attribute("file").or_else(|| s.attribute("dev")))
        {
            Some(f) => out.push(f.to_string()),
            None => break,
        }
        node = b;
    }
    out
}

/// Whether a migration copies `disk`, and why. `shared` lists the host's
/// paths on shared storage (a disk under one is not copied).
pub fn decide(disk: &DiskSpec, shared: &[String]) -> (bool, String) {
    let Some(source) = &disk.source else {
        return (false, "no medium".into());
    };
    if disk.kind == "network" {
        return (
            false,
            format!("network disk ({source}): both hosts reach it"),
        );
    }
    if disk.shareable {
        return (false, "marked shareable".into());
    }
    if disk.readonly {
        // libvirt copies no read-only disk: its image must be on the
        // destination already (an installation medium, a shared base).
        return (
            false,
            "read-only: its image must exist on the destination".into(),
        );
    }
    if let Some(p) = shared.iter().find(|p| under(source, p)) {
        return (false, format!("under shared storage {p}"));
    }
    (true, "local storage: copied with the VM".into())
}

/// One image QEMU has open (`query-block`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockImage {
    /// The image file (`inserted.file`).
    pub file: String,
    /// The device's QOM path (`/machine/peripheral/virtio-disk0/...`).
    pub qdev: String,
    /// Bytes the image and its backing chain take on the host
    /// (`actual-size`, summed down the chain).
    pub actual: u64,
    /// Bytes the guest sees (`virtual-size`).
    pub virtual_size: u64,
}

/// The images in a `query-block` reply (its `return` value); drives without
/// a medium are left out.
pub fn block_images(reply: &Value) -> Vec<BlockImage> {
    let Some(list) = reply.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|b| {
            let ins = b.get("inserted")?;
            let image = ins.get("image")?;
            Some(BlockImage {
                file: ins.get("file")?.as_str()?.to_string(),
                qdev: b
                    .get("qdev")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                // A full copy sends what the whole chain holds.
                actual: std::iter::successors(Some(image), |i| i.get("backing-image"))
                    .filter_map(|i| i.get("actual-size").and_then(Value::as_u64))
                    .sum(),
                virtual_size: image
                    .get("virtual-size")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            })
        })
        .collect()
}

/// A running storage copy's progress from a `query-block-jobs` reply: bytes
/// copied and the copy's length, summed over the mirror jobs (one per disk);
/// None when no mirror runs.
pub fn mirror_progress(reply: &Value) -> Option<(u64, u64)> {
    let mirrors: Vec<&Value> = reply
        .as_array()?
        .iter()
        .filter(|j| j.get("type").and_then(Value::as_str) == Some("mirror"))
        .collect();
    if mirrors.is_empty() {
        return None;
    }
    let sum = |k: &str| {
        mirrors
            .iter()
            .filter_map(|j| j.get(k)?.as_u64())
            .sum::<u64>()
    };
    Some((sum("offset"), sum("len")))
}

/// The ids of the mirror jobs in a `query-block-jobs` reply (what
/// `block-job-set-speed` takes as `device`).
pub fn mirror_ids(reply: &Value) -> Vec<String> {
    reply
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .filter(|j| j.get("type").and_then(Value::as_str) == Some("mirror"))
                .filter_map(|j| Some(j.get("device")?.as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The disks of a VM: its XML's disks, sized from QEMU's images (matched by
/// file, else by the device alias in the QOM path), and the copy decision.
pub fn describe(specs: &[DiskSpec], images: &[BlockImage], shared: &[String]) -> Vec<Disk> {
    specs
        .iter()
        .map(|d| {
            let image = images.iter().find(|i| {
                d.source.as_deref() == Some(i.file.as_str())
                    || d.alias
                        .as_ref()
                        .is_some_and(|a| i.qdev.contains(&format!("/{a}/")))
            });
            let (copy, why) = decide(d, shared);
            Disk {
                target: d.target.clone(),
                kind: d.kind.clone(),
                source: d.source.clone(),
                format: d.format.clone(),
                capacity_bytes: image.map_or(0, |i| i.virtual_size),
                allocation_bytes: image.map_or(0, |i| i.actual),
                copy,
                why,
                backing: d.backing.clone(),
            }
        })
        .collect()
}

/// `xml` (a domain's migratable XML) without the backing chains of the
/// disks in `targets`, or None when none of them has one. A full copy
/// mirrors the whole disk into one new image on the destination; left in,
/// the chain would make the destination open the source's backing files
/// there too (a cached disk's base, which may be stale, broken or absent).
pub fn without_backing(xml: &str, targets: &[String]) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let mut cut: Vec<std::ops::Range<usize>> = doc
        .descendants()
        .filter(|n| n.has_tag_name("disk"))
        .filter(|d| {
            d.children()
                .find(|c| c.has_tag_name("target"))
                .and_then(|t| t.attribute("dev"))
                .is_some_and(|dev| targets.iter().any(|t| t == dev))
        })
        .flat_map(|d| d.children().filter(|c| c.has_tag_name("backingStore")))
        // An empty `<backingStore/>` says "no backing": nothing to cut.
        .filter(|b| b.has_children())
        .map(|b| b.range())
        .collect();
    if cut.is_empty() {
        return None;
    }
    cut.sort_by_key(|r| std::cmp::Reverse(r.start));
    let mut out = xml.to_string();
    for r in cut {
        out.replace_range(r, "");
    }
    Some(out)
}

/// The XML of an external, disk-only snapshot that puts a new overlay on
/// each disk in `overlays` (target, new file) and leaves every other disk in
/// `targets` alone (libvirt would snapshot an unnamed disk too).
pub fn snapshot_xml(name: &str, targets: &[String], overlays: &[(String, String)]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('\'', "&apos;")
    };
    let mut xml = format!(
        "<domainsnapshot><name>{}</name><memory snapshot='no'/><disks>",
        esc(name)
    );
    for t in targets {
        match overlays.iter().find(|(o, _)| o == t) {
            Some((_, file)) => xml.push_str(&format!(
                "<disk name='{}' snapshot='external' type='file'><driver type='qcow2'/><source file='{}'/></disk>",
                esc(t),
                esc(file)
            )),
            None => xml.push_str(&format!("<disk name='{}' snapshot='no'/>", esc(t))),
        }
    }
    xml.push_str("</disks></domainsnapshot>");
    xml
}

/// Bytes a migration copies: the allocation of the disks it copies.
pub fn copy_bytes(disks: &[Disk]) -> u64 {
    disks
        .iter()
        .filter(|d| d.copy)
        .map(|d| d.allocation_bytes)
        .sum()
}

/// Whether `path` lies in directory `dir` (a component-wise prefix, so
/// `/srv/nfs` does not take in `/srv/nfs2`).
fn under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    !dir.is_empty() && (path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
}

/// A block job libvirt reports on a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockJob {
    pub kind: BlockJobKind,
    /// Ready to pivot (an active commit that has caught up).
    pub ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockJobKind {
    /// A layer under the active one merged down: ends by itself.
    Commit,
    /// The active layer merged down: mirrors until pivoted or cancelled.
    ActiveCommit,
    /// libvirt's type number (pull, copy, backup): not solive's.
    Other(u32),
}

/// What to do with the job on a disk before solive snapshots, commits or
/// migrates it. solive starts only commits, and only waits for them to end
/// (a commit under the top) or pivots them once ready (the top merged into
/// its base); a job found before it starts one was left by a controller
/// killed in the middle, and is finished as that controller would have
/// finished it. A job of another kind is someone else's: refused, not
/// touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// No job: go on.
    Clear,
    /// A commit on its way: look again shortly.
    Wait,
    /// An active commit ready: pivot it.
    Pivot,
    Refuse(u32),
}

pub fn settle(job: Option<BlockJob>) -> Settle {
    match job {
        None => Settle::Clear,
        Some(BlockJob {
            kind: BlockJobKind::ActiveCommit,
            ready: true,
        }) => Settle::Pivot,
        Some(BlockJob {
            kind: BlockJobKind::Commit | BlockJobKind::ActiveCommit,
            ..
        }) => Settle::Wait,
        Some(BlockJob {
            kind: BlockJobKind::Other(n),
            ..
        }) => Settle::Refuse(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_left_commit_is_finished_as_its_controller_would_and_other_jobs_are_refused() {
        let job = |kind, ready| Some(BlockJob { kind, ready });
        assert_eq!(settle(None), Settle::Clear);
        assert_eq!(settle(job(BlockJobKind::Commit, false)), Settle::Wait);
        assert_eq!(settle(job(BlockJobKind::Commit, true)), Settle::Wait);
        assert_eq!(settle(job(BlockJobKind::ActiveCommit, false)), Settle::Wait);
        assert_eq!(settle(job(BlockJobKind::ActiveCommit, true)), Settle::Pivot);
        assert_eq!(settle(job(BlockJobKind::Other(2), true)), Settle::Refuse(2));
    }

    const XML: &str = r#"<domain type='kvm'><name>d</name><devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/var/lib/libvirt/images/d.qcow2'/>
        <target dev='vda' bus='virtio'/>
        <alias name='virtio-disk0'/>
      </disk>
      <disk type='file' device='cdrom'>
        <source file='/iso/install.iso'/><target dev='sda' bus='sata'/><readonly/>
      </disk>
      <disk type='network' device='disk'>
        <driver name='qemu' type='raw'/>
        <source protocol='rbd' name='pool/img'><host name='mon1'/></source>
        <target dev='vdb' bus='virtio'/>
      </disk>
      <disk type='file' device='disk'>
        <source file='/srv/nfs/d-data.raw'/><target dev='vdc' bus='virtio'/>
      </disk>
      <disk type='block' device='disk'>
        <source dev='/dev/vg/d'/><target dev='vdd' bus='virtio'/><shareable/>
      </disk>
      <disk type='file' device='disk'>
        <source file='/srv/base.img'/><target dev='vde' bus='virtio'/><readonly/>
      </disk>
    </devices></domain>"#;

    #[test]
    fn reads_every_disk_but_removable_media() {
        let d = parse(XML).unwrap();
        let targets: Vec<_> = d.iter().map(|d| d.target.as_str()).collect();
        assert_eq!(targets, ["vda", "vdb", "vdc", "vdd", "vde"]);
        assert_eq!(
            d[0],
            DiskSpec {
                target: "vda".into(),
                kind: "file".into(),
                source: Some("/var/lib/libvirt/images/d.qcow2".into()),
                format: Some("qcow2".into()),
                alias: Some("virtio-disk0".into()),
                readonly: false,
                shareable: false,
                backing: vec![],
            }
        );
        assert_eq!(d[1].source.as_deref(), Some("rbd:pool/img"));
        assert!(d[3].shareable && d[4].readonly);
    }

    #[test]
    fn reads_the_backing_chain_libvirt_opened() {
        let xml = r#"<domain><devices><disk type='file' device='disk'>
          <driver name='qemu' type='qcow2'/>
          <source file='/i/d.solive-3.qcow2'/>
          <backingStore type='file' index='1'><format type='qcow2'/>
            <source file='/i/d.qcow2'/><backingStore/></backingStore>
          <target dev='vda' bus='virtio'/></disk></devices></domain>"#;
        let d = parse(xml).unwrap();
        assert_eq!(d[0].source.as_deref(), Some("/i/d.solive-3.qcow2"));
        assert_eq!(d[0].backing, ["/i/d.qcow2"]);
    }

    #[test]
    fn a_full_copy_leaves_the_copied_disks_chains_behind() {
        let xml = r#"<domain><devices>
          <disk type='file' device='disk'><source file='/i/d.s1.qcow2'/>
            <backingStore type='file'><format type='qcow2'/><source file='/i/d.qcow2'/><backingStore/></backingStore>
            <target dev='vda'/></disk>
          <disk type='file' device='disk'><source file='/i/e.s1.qcow2'/>
            <backingStore type='file'><format type='qcow2'/><source file='/i/e.qcow2'/><backingStore/></backingStore>
            <target dev='vdb'/></disk>
          <disk type='file' device='disk'><source file='/i/f.qcow2'/><backingStore/><target dev='vdc'/></disk>
        </devices></domain>"#;
        let out = without_backing(xml, &["vda".into(), "vdc".into()]).unwrap();
        let d = parse(&out).unwrap();
        assert!(d[0].backing.is_empty(), "{out}");
        assert_eq!(d[0].source.as_deref(), Some("/i/d.s1.qcow2"));
        assert_eq!(d[1].backing, ["/i/e.qcow2"], "vdb is not copied: kept");
        assert_eq!(without_backing(xml, &["vdc".into()]), None);
    }

    #[test]
    fn a_snapshot_puts_overlays_on_the_named_disks_only() {
        let xml = snapshot_xml(
            "solive-cache-1",
            &["vda".into(), "vdb".into()],
            &[("vda".into(), "/i/d'1.qcow2".into())],
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let disks: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("disk"))
            .collect();
        assert_eq!(disks[0].attribute("snapshot"), Some("external"));
        let src = disks[0]
            .children()
            .find(|c| c.has_tag_name("source"))
            .unwrap();
        assert_eq!(src.attribute("file"), Some("/i/d'1.qcow2"));
        assert_eq!(disks[1].attribute("name"), Some("vdb"));
        assert_eq!(disks[1].attribute("snapshot"), Some("no"));
    }

    #[test]
    fn copies_local_disks_only() {
        let shared = vec!["/srv/nfs/".to_string()];
        let verdicts: Vec<bool> = parse(XML)
            .unwrap()
            .iter()
            .map(|d| decide(d, &shared).0)
            .collect();
        assert_eq!(verdicts, [true, false, false, false, false]);
        let nfs = &parse(XML).unwrap()[2];
        assert_eq!(decide(nfs, &shared).1, "under shared storage /srv/nfs/");
        // Without the shared path it is local.
        assert!(decide(nfs, &[]).0);
    }

    #[test]
    fn a_shared_prefix_is_a_directory_not_a_string_prefix() {
        assert!(under("/srv/nfs/a.img", "/srv/nfs"));
        assert!(!under("/srv/nfs2/a.img", "/srv/nfs"));
        assert!(!under("/a.img", ""));
    }

    #[test]
    fn sizes_come_from_qemus_images() {
        // As QEMU 10 answers with libvirt's -blockdev (no drive name).
        let reply = serde_json::json!([
            {"device": "", "qdev": "/machine/peripheral/virtio-disk0/virtio-backend",
             "inserted": {"file": "/var/lib/libvirt/images/d.qcow2", "ro": false, "drv": "qcow2",
                          "image": {"virtual-size": 1073741824u64, "actual-size": 537001984u64,
                                    "format": "qcow2", "filename": "/var/lib/libvirt/images/d.qcow2"}},
             "type": "unknown", "removable": false, "locked": false},
            {"device": "", "qdev": "/machine/peripheral/sata0-0-0", "removable": true, "locked": false}
        ]);
        let images = block_images(&reply);
        assert_eq!(images.len(), 1, "the empty CD drive is left out");
        let disks = describe(&parse(XML).unwrap(), &images, &[]);
        assert_eq!(disks[0].capacity_bytes, 1 << 30);
        assert_eq!(disks[0].allocation_bytes, 537_001_984);
        assert_eq!(disks[1].allocation_bytes, 0, "no image for the rbd disk");
        // vda plus the local-looking ones without sizes.
        assert_eq!(copy_bytes(&disks), 537_001_984);
        // Matched by alias when the file differs (e.g. a path through a symlink).
        let by_alias = vec![BlockImage {
            file: "/other".into(),
            ..images[0].clone()
        }];
        assert_eq!(
            describe(&parse(XML).unwrap(), &by_alias, &[])[0].allocation_bytes,
            537_001_984
        );
    }

    #[test]
    fn a_copys_progress_sums_its_mirrors() {
        let jobs = serde_json::json!([
            {"type": "mirror", "device": "drive-virtio-disk0", "len": 100, "offset": 40, "ready": false},
            {"type": "mirror", "device": "drive-virtio-disk1", "len": 50, "offset": 50, "ready": true},
            {"type": "commit", "device": "x", "len": 999, "offset": 1}
        ]);
        assert_eq!(mirror_progress(&jobs), Some((90, 150)));
        assert_eq!(
            mirror_ids(&jobs),
            ["drive-virtio-disk0", "drive-virtio-disk1"]
        );
        assert_eq!(mirror_progress(&serde_json::json!([])), None);
        assert_eq!(mirror_progress(&serde_json::json!({"nope": 1})), None);
    }

    #[test]
    fn bad_xml_is_an_error_not_a_panic() {
        assert!(parse("<domain><devices><disk").is_err());
        let no_target =
            "<domain><devices><disk type='file'><source file='/x'/></disk></devices></domain>";
        assert!(parse(no_target).unwrap_err().contains("target"));
        assert!(parse("<domain/>").unwrap().is_empty());
    }
}
