//! `gatehouse`: the filters' configurations as code, without a proxy.
//!
//! - `gatehouse check <filter> <config.json>...` validates exactly as the filter
//!   does and prints its problem with the path of the field, then every other
//!   structural problem the schema finds (exit 1 if any file fails).
//! - `gatehouse explain [configurations] [request]` says which rule, limit and
//!   target apply to a described request and what each filter would decide.
//! - `gatehouse schema <filter>` prints the JSON Schema of a filter's configuration.
//! - `gatehouse oci <module.wasm> <layout-dir>` packages a module as a Wasm OCI
//!   artifact in an OCI image layout and prints its manifest digest.

mod explain;
mod oci;
mod structure;

use std::process::ExitCode;

const USAGE: &str = "usage:
  gatehouse check <audit|auth|ratelimit|traffic> <config.json>...
  gatehouse schema <audit|auth|ratelimit|traffic>
  gatehouse oci <module.wasm> <layout-dir> [--name NAME] [--tag TAG]
  gatehouse explain [--edge FILE]... [--auth FILE] [--ratelimit FILE]... [--traffic FILE] [--jwks PROVIDER=FILE]...
                    [--method M] --path P [--header 'name: value']... [--token JWT] [--api-key KEY]
                    [--client ADDRESS] [--at RFC3339] [--requests N]
  (a filter name may carry an instance suffix: ratelimit-edge is the ratelimit filter;
   --edge limits run before auth, --ratelimit limits after it)";

/// The filter a name stands for: `ratelimit-edge` is `ratelimit`.
pub fn module_of(name: &str) -> &str {
    name.split('-').next().unwrap_or(name)
}

/// Validates a configuration with the filter's own parser.
pub fn validate(filter: &str, bytes: &[u8]) -> Result<(), String> {
    let outcome = match module_of(filter) {
        "audit" => gatehouse_shared::audit::AuditSettings::from_json(bytes).map(|_| ()),
        "auth" => gatehouse_shared::auth::AuthSettings::from_json(bytes).map(|_| ()),
        "ratelimit" => gatehouse_shared::ratelimit::RateLimitSettings::from_json(bytes).map(|_| ()),
        "traffic" => gatehouse_shared::traffic::TrafficSettings::from_json(bytes).map(|_| ()),
        other => {
            return Err(format!(
                "unknown filter {other:?} (audit, auth, ratelimit, traffic)"
            ))
        }
    };
    outcome.map_err(|error| error.to_string())
}

fn check(filter: &str, files: &[String]) -> ExitCode {
    if files.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for file in files {
        let outcome = std::fs::read(file)
            .map_err(|error| format!("cannot read: {error}"))
            .and_then(|bytes| validate(filter, &bytes));
        match outcome {
            Ok(()) => println!("ok      {file} ({})", module_of(filter)),
            Err(problem) => {
                failed = true;
                println!("refused {file}: {problem}");
                // The filter stops at its first problem: list the structural ones
                // it did not reach, against its schema.
                for other in further_problems(filter, file, &problem) {
                    println!("        {file}: {}: {}", other.path, other.message);
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The schema of a filter's configuration, if it is one of the four.
fn schema_of(filter: &str) -> Option<serde_json::Value> {
    Some(match module_of(filter) {
        "audit" => gatehouse_shared::audit::AuditSettings::json_schema(),
        "auth" => gatehouse_shared::auth::AuthSettings::json_schema(),
        "ratelimit" => gatehouse_shared::ratelimit::RateLimitSettings::json_schema(),
        "traffic" => gatehouse_shared::traffic::TrafficSettings::json_schema(),
        _ => return None,
    })
}

/// Structural problems of a refused file beyond the one the filter reported (the
/// same field is not listed twice).
fn further_problems(filter: &str, file: &str, reported: &str) -> Vec<structure::Problem> {
    let Some(schema) = schema_of(filter) else {
        return Vec::new();
    };
    let Some(value) = std::fs::read(file)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
    else {
        return Vec::new();
    };
    // The filter says `path: message`, `.` for the top, and names a missing or
    // unknown member in backquotes; the schema names that member's own path.
    let (path, message) = reported.split_once(": ").unwrap_or(("", reported));
    let path = if path == "." { "" } else { path };
    let named = message.split('`').nth(1).map(|name| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    });
    let top = if path.is_empty() {
        "(the configuration)"
    } else {
        path
    };
    structure::problems(&schema, &value)
        .into_iter()
        .filter(|problem| problem.path != top && Some(&problem.path) != named.as_ref())
        .collect()
}

fn schema(filter: &str) -> ExitCode {
    let Some(schema) = schema_of(filter) else {
        eprintln!(
            "unknown filter {:?} (audit, auth, ratelimit, traffic)",
            module_of(filter)
        );
        return ExitCode::from(2);
    };
    match serde_json::to_string_pretty(&schema) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot print the schema: {error}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") if args.len() >= 2 => check(&args[1], &args[2..]),
        Some("schema") if args.len() == 2 => schema(&args[1]),
        Some("explain") => match explain::run(&args[1..]) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(problem) => {
                eprintln!("gatehouse explain: {problem}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("oci") if args.len() >= 3 => {
            let mut name = std::path::Path::new(&args[1])
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_else(|| "module".into());
            let mut tag = env!("CARGO_PKG_VERSION").to_string();
            let mut rest = args[3..].iter();
            while let Some(flag) = rest.next() {
                match (flag.as_str(), rest.next()) {
                    ("--name", Some(value)) => name = value.clone(),
                    ("--tag", Some(value)) => tag = value.clone(),
                    _ => {
                        eprintln!("{USAGE}");
                        return ExitCode::from(2);
                    }
                }
            }
            match oci::package(
                std::path::Path::new(&args[1]),
                std::path::Path::new(&args[2]),
                &name,
                &tag,
            ) {
                Ok(digest) => {
                    println!("{digest}");
                    ExitCode::SUCCESS
                }
                Err(problem) => {
                    eprintln!("gatehouse oci: {problem}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
