//! `make demo`: the demo gateway in the foreground. Starts the echo backends, writes
//! the filters' resources, runs Envoy with the shipped bootstrap, prints what to try,
//! and stops everything on Ctrl-C.
//!
//! `gatehouse-demo --prepare` only writes the resources (for `envoy --mode validate`);
//! `gatehouse-demo --no-envoy` runs everything but Envoy, for the Docker Compose file
//! (`envoy-config/compose.yaml`), which runs the official Envoy image instead.

use gatehouse_tests::demo::{self, ADMIN, BACKENDS, GATEWAY, IDP_PORT};
use gatehouse_tests::echo::EchoBackend;
use gatehouse_tests::idp::Idp;
use gatehouse_tests::tls::TlsEcho;
use gatehouse_tests::{client, paths, wait_for, Context, HarnessError, Result};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// What the demo suggests trying, once it is up.
const TRY: &str = r#"Try:
  curl -i http://{GATEWAY}/public/echo
  curl -i http://{GATEWAY}/public/echo -H 'x-correlation-id: 0f8fad5b-d9cb-469f-a165-70867728950e'
  curl -i http://{GATEWAY}/nowhere                  # no rule allows it: 403, still with an id
  curl -i http://{GATEWAY}/accounts/42              # 401: a token is needed
  curl -i http://{GATEWAY}/accounts/42 -H "authorization: Bearer $(make -s token CLIENT=demo-user)"
  curl -i -X POST http://{GATEWAY}/accounts/close -H "authorization: Bearer $(make -s token CLIENT=demo-user)"   # 403
  curl -i -X POST http://{GATEWAY}/accounts/close -H "authorization: Bearer $(make -s token CLIENT=demo-admin)"  # 200
  curl -i http://{GATEWAY}/analytics/report -H 'x-api-key: demo-pro-key'
  curl -i --cacert target/certs/ca.pem https://localhost:8443/analytics/report -H 'x-api-key: demo-pro-key'
  tail -f target/demo/audit.jsonl                    # one audit record per request
  curl -s http://{ADMIN}/stats/prometheus | grep gatehouse_
  make swap FILTER=auth CONFIG=path/to/auth.json     # hot swap, no restart
Ctrl-C stops everything.
"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatehouse-demo: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    demo::prepare()?;
    if std::env::args().any(|arg| arg == "--prepare") {
        return Ok(());
    }

    let idp = Idp::start(IDP_PORT, "RS256")?;
    let backends: Vec<EchoBackend> = BACKENDS
        .iter()
        .map(|(name, address)| EchoBackend::start_on(name, address))
        .collect::<Result<_>>()?;
    // accounts speaks only mutual TLS: Envoy shows it the gateway's client certificate.
    let accounts = TlsEcho::start_on("accounts", &demo::certs_dir(), demo::ACCOUNTS_PORT)?;

    if std::env::args().any(|arg| arg == "--no-envoy") {
        println!(
            "gatehouse demo backends are up (Envoy not started): {:?}, accounts (mutual TLS) on {}, \
             identity provider {}; start the gateway with \
             `docker compose -f envoy-config/compose.yaml up`. Ctrl-C stops them.",
            BACKENDS.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
            accounts.address(),
            idp.issuer()
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    let audit_log = demo::state_dir().join("audit.jsonl");
    std::fs::write(&audit_log, "").context("reset target/demo/audit.jsonl")?;
    let mut command = Command::new(paths::envoy());
    gatehouse_tests::envoy::kill_with_parent(&mut command);
    let mut envoy = command
        .current_dir(paths::root())
        .arg("-c")
        .arg(demo::bootstrap())
        .args(["--concurrency", "2", "--disable-hot-restart"])
        .args([
            "-l",
            "warning",
            "--component-log-level",
            "wasm:info,config:info",
        ])
        .args(["--file-flush-interval-msec", "200"])
        .spawn()
        .context(format!("start {}", paths::envoy().display()))?;

    let ready = wait_for(Duration::from_secs(60), || {
        if matches!(envoy.try_wait(), Ok(Some(_))) {
            return Some(false);
        }
        let ready = client::get(&format!("http://{ADMIN}/ready"), &[]).ok()?;
        (ready.status == 200).then_some(true)
    });
    if ready != Some(true) {
        let _ = envoy.kill();
        return Err(HarnessError(
            "envoy did not become ready (see its log above)".into(),
        ));
    }

    let names: Vec<&str> = backends.iter().map(EchoBackend::name).collect();
    println!(
        "\ngatehouse demo is up: gateway http://{GATEWAY} and https://localhost:8443, \
         admin http://{ADMIN}, backends {names:?} and accounts (mutual TLS), identity provider {}",
        idp.issuer()
    );
    println!(
        "{}",
        TRY.replace("{GATEWAY}", GATEWAY).replace("{ADMIN}", ADMIN)
    );

    // Envoy gets Ctrl-C's SIGINT with the rest of the terminal's process group and
    // shuts down; the backends stop when this process returns.
    let status = envoy.wait().context("wait for envoy")?;
    drop(backends);
    drop(accounts);
    drop(idp);
    println!("gatehouse demo stopped (envoy {status})");
    Ok(())
}
