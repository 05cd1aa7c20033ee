//! libvirt over `qemu+tls://` (issue 14: secure channels to the
//! hypervisors). The testbed's libvirtds talk over unix sockets across mount
//! namespaces, so no libvirt traffic crosses its fabric; this test runs a
//! real libvirtd of its own (in a private mount namespace, as the testbed
//! does) listening for TLS only, with certificates from a test CA, and
//! drives it through solive's libvirt driver:
//!
//! - with the CA's client certificate (`?pkipath=`), solive lists the VMs;
//! - with a client certificate of another CA, the connection is refused;
//! - plain `qemu+tcp://` finds nothing listening.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use solive::hypervisor::libvirt::Libvirt;
use solive::hypervisor::Hypervisor;
use support::{free_port, run};

struct Ca {
    issuer: rcgen::Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// (certificate, key) in PEM.
    fn sign(&self, cn: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        params.extended_key_usages = vec![usage];
        (
            params.signed_by(&key, &self.issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    }
}

/// A client's `pkipath` directory, as libvirt reads it.
fn pkipath(dir: &Path, name: &str, ca: &str, cert: &(String, String)) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("cacert.pem"), ca).unwrap();
    std::fs::write(p.join("clientcert.pem"), &cert.0).unwrap();
    std::fs::write(p.join("clientkey.pem"), &cert.1).unwrap();
    p
}

/// libvirtd and virtlogd in a mount namespace of their own (their run,
/// state and config directories bound over the system's), stopped on drop.
struct Libvirtd {
    dir: PathBuf,
}

impl Libvirtd {
    fn start(dir: &Path, conf: &str) -> Libvirtd {
        let h = dir.join("host");
        for sub in ["run", "lib", "cache", "log"] {
            std::fs::create_dir_all(h.join(sub)).unwrap();
        }
        run(Command::new("cp")
            .arg("-a")
            .arg("/etc/libvirt")
            .arg(h.join("etc")));
        // No default NAT network: it would need dnsmasq and iptables.
        let _ = std::fs::remove_dir_all(h.join("etc/qemu/networks/autostart"));
        let mut c = std::fs::read_to_string(h.join("etc/libvirtd.conf")).unwrap();
        c += conf;
        std::fs::write(h.join("etc/libvirtd.conf"), c).unwrap();
        let script = format!(
            "set -euo pipefail\nmount --make-rprivate /\n\
             for m in run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt etc:/etc/libvirt log:/var/log/libvirt; do\n\
               mkdir -p \"${{m#*:}}\"; mount --bind \"{h}/${{m%%:*}}\" \"${{m#*:}}\"\n\
             done\n\
             virtlogd -d -p /run/libvirt/virtlogd.pid\n\
             libvirtd -d --listen -p /run/libvirt/libvirtd.pid\n",
            h = h.display()
        );
        run(Command::new("unshare").args(["-m", "-u", "bash", "-c", &script]));
        Libvirtd { dir: h }
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        for pid in ["libvirtd.pid", "virtlogd.pid"] {
            if let Ok(p) = std::fs::read_to_string(self.dir.join("run").join(pid)) {
                support::quiet(Command::new("kill").arg(p.trim()));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libvirt_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("solive test CA");
    let server = ca.sign("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let client = ca.sign("solive", ExtendedKeyUsagePurpose::ClientAuth);
    let other = Ca::new("someone else's CA");
    let rogue = other.sign("solive", ExtendedKeyUsagePurpose::ClientAuth);
    let pki = dir.path().join("server");
    std::fs::create_dir_all(&pki).unwrap();
    for (name, text) in [
        ("cacert.pem", &ca.pem),
        ("servercert.pem", &server.0),
        ("serverkey.pem", &server.1),
    ] {
        std::fs::write(pki.join(name), text).unwrap();
    }
    let port = free_port();
    let _libvirtd = Libvirtd::start(
        dir.path(),
        &format!(
            "\nlisten_tls = 1\nlisten_tcp = 0\nlisten_addr = \"127.0.0.1\"\ntls_port = \"{port}\"\n\
             auth_tls = \"none\"\nkey_file = \"{p}/serverkey.pem\"\ncert_file = \"{p}/servercert.pem\"\n\
             ca_file = \"{p}/cacert.pem\"\nhost_uuid = \"{}\"\n",
            uuid::Uuid::new_v4(),
            p = pki.display()
        ),
    );
    let uri = |pki: &Path| {
        format!(
            "qemu+tls://127.0.0.1:{port}/system?pkipath={}",
            pki.display()
        )
    };
    let good = pkipath(dir.path(), "client", &ca.pem, &client);
    let listed = support::eventually(30, "libvirtd answering over TLS", || async {
        Libvirt::new(&uri(&good))
            .list()
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert!(listed.is_empty(), "{listed:?}");

    // A client certificate the server's CA did not sign: refused by the
    // server (the client trusts both CAs, so its own checks pass).
    let both = format!("{}{}", ca.pem, other.pem);
    let bad = pkipath(dir.path(), "rogue", &both, &rogue);
    let e = Libvirt::new(&uri(&bad))
        .list()
        .await
        .unwrap_err()
        .to_string();
    eprintln!("rogue client: {e}");
    assert!(e.contains("TLS"), "refused for another reason: {e}");
    // Plain TCP: nothing listens for it.
    let tcp = format!("qemu+tcp://127.0.0.1:{port}/system");
    assert!(Libvirt::new(&tcp).list().await.is_err());
}
