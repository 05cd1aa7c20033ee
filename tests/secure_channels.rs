//! `[tls]`: OpenFlow and OVSDB over mutual TLS against a real Open vSwitch
//! (ovs-vswitchd connecting to `ssl:` controller targets, ovsdb-server
//! listening on `pssl:`), with certificates made here by a test CA.
//!
//! - The right switch certificate: the host connects over both channels and
//!   solive's state is on the bridge.
//! - A switch certificate the CA signed, but for another host: refused and
//!   said in the host's error; nothing is installed.
//! - A peer without a certificate of the CA (self-signed), and a peer that
//!   speaks plain OpenFlow: refused at the TLS handshake.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use solive::config::Config;
use support::{eventually, Sandbox, Solive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

/// A test CA and what it signs, as PEM files in `dir`.
struct Ca {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, KeyPair>,
    cert: PathBuf,
}

impl Ca {
    fn new(dir: &Path) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "solive test CA");
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        Ca {
            dir: dir.to_path_buf(),
            issuer: rcgen::Issuer::new(params, key),
            cert: path,
        }
    }

    /// A certificate for common name `cn`, valid for 127.0.0.1 (the OVSDB
    /// server's certificate is checked against its address).
    fn sign(&self, cn: &str) -> Pem {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write(&self.dir, cn, &cert.pem(), &key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, cert: &str, key: &str) -> Pem {
    let pem = Pem {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pem.cert, cert).unwrap();
    std::fs::write(&pem.key, key).unwrap();
    pem
}

fn config(ca: &Ca, solive: &Pem, ovsdb_port: u16, switch_cert: &str) -> String {
    format!(
        "[controller]\nopenflow_listen = \"127.0.0.1:0\"\nperiod_ms = 200\n\
         echo_interval_ms = 1000\nrequest_timeout_ms = 2000\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\
         [[hosts]]\nname = \"h1\"\novsdb = \"ssl:127.0.0.1:{ovsdb_port}\"\nbridge = \"br0\"\n\
         uplink = \"br0\"\ncapacity_mbps = 100\nswitch_certificate = \"{switch_cert}\"\n",
        solive.cert.display(),
        solive.key.display(),
        ca.cert.display(),
    )
}

async fn start(toml: &str) -> (Solive, std::net::SocketAddr) {
    let of = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = of.local_addr().unwrap();
    let config = Config::parse(toml).unwrap();
    (Solive::start_with(config, of).await, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openflow_and_ovsdb_over_mutual_tls() {
    let _lock = support::lock();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let solive_pem = ca.sign("solive");
    let switch = ca.sign("h1-switch");
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    // The switch's and the OVSDB server's certificate (OVS keeps one, in the
    // SSL table), and the OVSDB server listening for TLS only.
    sb.vsctl(&[
        "set-ssl",
        switch.key.to_str().unwrap(),
        switch.cert.to_str().unwrap(),
        ca.cert.to_str().unwrap(),
    ]);
    let ovsdb_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    sb.vsctl(&["set-manager", &format!("pssl:{ovsdb_port}:127.0.0.1")]);

    // A certificate of the CA, but another host's: refused.
    let (solive, _) = start(&config(&ca, &solive_pem, ovsdb_port, "h2-switch")).await;
    let h1 = solive
        .host_when("h1", "the switch refused for its certificate", |h| {
            h["error"]
                .as_str()
                .is_some_and(|e| e.contains("not \"h2-switch\": refused"))
        })
        .await;
    assert_eq!(h1["ovsdb_connected"], true, "OVSDB over TLS works: {h1}");
    assert_eq!(h1["switch_connected"], false, "{h1}");
    let target = sb.vsctl(&["get-controller", "br0"]);
    assert!(target.trim().starts_with("ssl:127.0.0.1:"), "{target}");
    assert!(
        !sb.ofctl(&["dump-flows", "br0"])
            .contains("priority=0 actions=NORMAL"),
        "the refused switch was written to"
    );
    solive.stop().await;

    // The right one: both channels up, state installed.
    let (solive, of) = start(&config(&ca, &solive_pem, ovsdb_port, "h1-switch")).await;
    let h1 = solive
        .host_when("h1", "h1 connected over TLS", |h| h["connected"] == true)
        .await;
    assert!(h1["error"].is_null(), "{h1}");
    eventually(10, "baseline flow installed over TLS", || async {
        let f = sb.ofctl(&["dump-flows", "br0"]);
        if f.contains("priority=0 actions=NORMAL") {
            Ok(())
        } else {
            Err(f)
        }
    })
    .await;

    // Plain OpenFlow on the TLS port gets no HELLO, only a closed connection.
    let mut plain = tokio::net::TcpStream::connect(of).await.unwrap();
    let hello = [4u8, 0, 0, 8, 0, 0, 0, 1];
    plain.write_all(&hello).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(15), plain.read(&mut buf))
        .await
        .expect("closed within 15 s")
        .unwrap_or(0);
    assert!(
        n == 0 || buf[0] != 4,
        "plain OpenFlow was answered: {:?}",
        &buf[..n]
    );

    // A self-signed certificate (not the CA's): the handshake fails.
    let rogue_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["h1-switch".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "h1-switch");
    let rogue = params.self_signed(&rogue_key).unwrap();
    let rogue = write(
        dir.path(),
        "rogue",
        &rogue.pem(),
        &rogue_key.serialize_pem(),
    );
    let pki = solive::pki::Pki::load(&solive::config::TlsConfig {
        cert: rogue.cert,
        key: rogue.key,
        ca: ca.cert.clone(),
    })
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(of).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(of.ip().into());
    let refused = match tokio_rustls::TlsConnector::from(Arc::clone(&pki.client))
        .connect(name, tcp)
        .await
    {
        // TLS 1.3: the server's refusal of our certificate arrives with the
        // first read.
        Ok(mut s) => {
            let _ = s.write_all(&hello).await;
            let r = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await;
            matches!(r, Ok(Err(_)) | Ok(Ok(0)))
        }
        Err(_) => true,
    };
    assert!(
        refused,
        "a switch with a self-signed certificate was accepted"
    );
    // Signed by the CA, but no host's switch and an unknown datapath id:
    // refused after the OpenFlow handshake rather than held.
    let stranger = ca.sign("stranger");
    let pki = solive::pki::Pki::load(&solive::config::TlsConfig {
        cert: stranger.cert,
        key: stranger.key,
        ca: ca.cert.clone(),
    })
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(of).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(of.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&pki.client))
        .connect(name, tcp)
        .await
        .expect("the CA's certificate passes the handshake");
    support::closed_after_features(tls, 0x5742_0000_0000_0001, "the stranger").await;
    let h1 = solive.get("/v1/hosts/h1").await;
    assert_eq!(h1["connected"], true, "the real switch stays: {h1}");
    solive.stop().await;
    sb.vsctl(&["del-manager"]);
}
