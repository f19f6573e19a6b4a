//! `make demo`: the demo gateway in the foreground. Starts the echo backends, writes
//! the filters' resources, runs Envoy with the shipped bootstrap, prints what to try,
//! and stops everything on Ctrl-C.
//!
//! `gatehouse-demo --prepare` only writes the resources (for `envoy --mode validate`).

use gatehouse_tests::demo::{self, ADMIN, BACKENDS, GATEWAY};
use gatehouse_tests::echo::EchoBackend;
use gatehouse_tests::{client, paths, wait_for, Context, HarnessError, Result};
use std::process::{Command, ExitCode};
use std::time::Duration;

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

    let backends: Vec<EchoBackend> = BACKENDS
        .iter()
        .map(|(name, address)| EchoBackend::start_on(name, address))
        .collect::<Result<_>>()?;

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
        "\ngatehouse demo is up: gateway http://{GATEWAY}, admin http://{ADMIN}, backends {names:?}\n\
         Try:\n\
         \x20 curl -i http://{GATEWAY}/public/echo\n\
         \x20 curl -i http://{GATEWAY}/public/echo -H 'x-correlation-id: 0f8fad5b-d9cb-469f-a165-70867728950e'\n\
         \x20 curl -i 'http://{GATEWAY}/public/echo?token=secret' -H 'x-api-key: demo-pro-key'\n\
         \x20 curl -i http://{GATEWAY}/nowhere                      # Envoy's 404, still with an id\n\
         \x20 tail -f target/demo/audit.jsonl                        # one audit record per request\n\
         \x20 curl -s http://{ADMIN}/stats/prometheus | grep gatehouse_\n\
         \x20 make swap FILTER=audit CONFIG=path/to/audit.json      # hot swap, no restart\n\
         Ctrl-C stops everything.\n"
    );

    // Envoy gets Ctrl-C's SIGINT with the rest of the terminal's process group and
    // shuts down; the backends stop when this process returns.
    let status = envoy.wait().context("wait for envoy")?;
    drop(backends);
    println!("gatehouse demo stopped (envoy {status})");
    Ok(())
}
