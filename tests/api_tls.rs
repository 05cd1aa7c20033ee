//! The REST API over HTTPS (`[api] tls_cert` and `tls_key`), with a
//! self-signed certificate made by the test: the client trusting it gets in
//! (with a token), plain HTTP and a client without the CA do not, and the
//! CLI reaches it with `--ca`.

mod support;

use std::time::Duration;

use solive::config::Config;
use support::Solive;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "ops:s3cret-token-0123456789\n").unwrap();
    let toml = format!(
        "[controller]\nopenflow_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         tokens_file = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        tokens.display(),
        cert.display(),
        key.display()
    );
    let config = Config::parse(&toml).unwrap();
    let solive = Solive::start_with(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let https = solive.api.replace("http://", "https://");

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = trusting
        .get(format!("{https}/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = trusting
        .get(format!("{https}/v1/hosts"))
        .bearer_auth("s3cret-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = trusting
        .get(format!("{https}/v1/hosts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "TLS does not replace the token");
    // Plain HTTP to the TLS port, and a client that does not trust the
    // certificate: no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(plain
        .get(format!("{}/v1/health", solive.api))
        .send()
        .await
        .is_err());
    assert!(plain
        .get(format!("{https}/v1/health"))
        .send()
        .await
        .is_err());

    // The CLI, with --ca.
    let out = tokio::task::spawn_blocking({
        let (https, cert) = (https.clone(), cert.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_solive"))
                .args(["status", "--api", &https, "--ca", cert.to_str().unwrap()])
                .env("SOLIVE_TOKEN", "s3cret-token-0123456789")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is up"));
    solive.stop().await;
}

#[test]
fn bad_tls_settings_are_clear_errors() {
    let base = "[controller]\nopenflow_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n";
    let e = Config::parse(&format!("{base}tls_cert = \"/x.pem\"\n")).unwrap_err();
    assert!(
        e.to_string()
            .contains("tls_cert and api.tls_key go together"),
        "{e}"
    );
    let e = solive::api::tls::server_config(
        "/nonexistent/c.pem".as_ref(),
        "/nonexistent/k.pem".as_ref(),
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("api.tls_cert /nonexistent/c.pem"),
        "{e}"
    );
}
