//! `make swap FILTER=<filter> [CONFIG=<file>]`: replaces a filter's module and
//! configuration in the running demo without restarting Envoy.
//!
//! The configuration is checked first with the filter's own code; a bad one is
//! refused here and nothing is written. Envoy then loads the new resource and this
//! reports whether it took it.

use gatehouse_tests::demo::{self, ADMIN};
use gatehouse_tests::{client, wait_for, HarnessError, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatehouse-swap: {error}");
            ExitCode::FAILURE
        }
    }
}

fn counter(filter: &str, name: &str) -> Option<u64> {
    let stat = format!("extension_config_discovery.http_filter.gatehouse.{filter}.{name}");
    let page = client::get(&format!("http://{ADMIN}/stats?filter=^{stat}$"), &[]).ok()?;
    page.body
        .lines()
        .find_map(|line| line.split_once(": ")?.1.trim().parse().ok())
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let filter = args
        .next()
        .ok_or_else(|| HarnessError("usage: gatehouse-swap <filter> [config.json]".into()))?;
    let config = args.next().map(PathBuf::from);

    let before = (
        counter(&filter, "update_success"),
        counter(&filter, "update_rejected"),
    );
    let module = demo::install(&filter, config, None)?;
    println!(
        "wrote {} (module {})",
        demo::ecds_dir().join(format!("{filter}.json")).display(),
        module.display()
    );

    let (Some(success), Some(rejected)) = before else {
        println!("the demo is not running; it will load this when it starts");
        return Ok(());
    };
    let outcome = wait_for(Duration::from_secs(15), || {
        if counter(&filter, "update_rejected")? > rejected {
            return Some(false);
        }
        (counter(&filter, "update_success")? > success).then_some(true)
    });
    match outcome {
        Some(true) => {
            println!("envoy is now serving the new {filter} filter");
            Ok(())
        }
        Some(false) => Err(HarnessError(format!(
            "envoy refused the update; the previous {filter} filter keeps serving (see envoy's log)"
        ))),
        None => Err(HarnessError(
            "envoy reported no change: the module and configuration may be the same as before"
                .into(),
        )),
    }
}
