//! A real Envoy for one scenario: two workers, filters by discovery, helpers as
//! clusters, every port picked by the system. Killed when dropped, pass or fail.

use crate::client::{self, Response};
use crate::ecds::{self, FilterSpec};
use crate::{paths, Context, HarnessError, Result};
use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Envoy may take to start (it compiles the modules).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a scenario's gateway is made of.
#[derive(Debug, Default)]
pub struct GatewayBuilder {
    filters: Vec<FilterSpec>,
    backends: Vec<(String, SocketAddr)>,
    collector: Option<SocketAddr>,
    clusters: Vec<(String, SocketAddr)>,
    native_after: Vec<Value>,
    header_routes: Vec<HeaderRoute>,
    mirror: Option<(String, String)>,
    workers: u32,
    /// Terminate TLS on the listener with the gateway certificate of this directory.
    tls: Option<PathBuf>,
    /// Backends reached over mutual TLS with the certificates of this directory.
    mtls_backends: Vec<(String, SocketAddr, PathBuf)>,
}

/// Routes that pick the cluster by a request header a filter sets (see
/// [`GatewayBuilder::header_route`]).
#[derive(Debug, Clone)]
struct HeaderRoute {
    prefix: String,
    header: String,
    targets: Vec<(String, String)>,
    default_backend: String,
}

impl GatewayBuilder {
    pub fn new() -> Self {
        Self {
            workers: 2,
            ..Self::default()
        }
    }

    /// Adds a wasm filter, in request order.
    pub fn filter(mut self, spec: FilterSpec) -> Self {
        self.filters.push(spec);
        self
    }

    /// Routes `/<name>/...` to a backend at `address` (cluster `<name>`).
    pub fn backend(mut self, name: &str, address: SocketAddr) -> Self {
        self.backends.push((name.to_string(), address));
        self
    }

    /// Adds a cluster with no route to it (a key-set server, a webhook receiver).
    pub fn cluster(mut self, name: &str, address: SocketAddr) -> Self {
        self.clusters.push((name.to_string(), address));
        self
    }

    /// Adds the `collector` cluster.
    pub fn collector(mut self, address: SocketAddr) -> Self {
        self.collector = Some(address);
        self
    }

    /// Adds a native HTTP filter after the wasm filters (before the router).
    pub fn native_filter(mut self, filter: Value) -> Self {
        self.native_after.push(filter);
        self
    }

    /// Routes by the header `header` a filter sets: a request whose `header` is one
    /// of the `targets`' values goes to that value's backend cluster, whatever its
    /// path (the filter may have rewritten it); any other request under `prefix` goes
    /// to `default_backend`. These routes come before the `/<name>/` ones, in the
    /// order added. The backends are clusters added with [`Self::backend`] or
    /// [`Self::cluster`].
    pub fn header_route(
        mut self,
        prefix: &str,
        header: &str,
        targets: &[(&str, &str)],
        default_backend: &str,
    ) -> Self {
        self.header_routes.push(HeaderRoute {
            prefix: prefix.to_string(),
            header: header.to_string(),
            targets: targets
                .iter()
                .map(|(value, backend)| (value.to_string(), backend.to_string()))
                .collect(),
            default_backend: default_backend.to_string(),
        });
        self
    }

    /// Mirrors, on every header route, the requests that carry `header: 1`: Envoy
    /// sends a copy to the cluster `backend` (and the client gets the primary's answer).
    pub fn header_mirror(mut self, header: &str, backend: &str) -> Self {
        self.mirror = Some((header.to_string(), backend.to_string()));
        self
    }

    /// Terminates TLS on the listener with `certs`' gateway certificate (see
    /// [`crate::tls::certificates`]); the gateway's URL becomes `https://`.
    pub fn tls(mut self, certs: &Path) -> Self {
        self.tls = Some(certs.to_path_buf());
        self
    }

    /// Routes `/<name>/...` to a backend reached over mutual TLS: Envoy shows the
    /// gateway's client certificate and checks the backend's.
    pub fn mtls_backend(mut self, name: &str, address: SocketAddr, certs: &Path) -> Self {
        self.mtls_backends
            .push((name.to_string(), address, certs.to_path_buf()));
        self
    }

    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    /// Writes the configuration and starts Envoy; returns once it is ready.
    pub fn start(self) -> Result<Gateway> {
        let envoy = paths::envoy();
        if !envoy.exists() {
            return Err(HarnessError(format!(
                "no Envoy at {} (run `make tools` or set GATEHOUSE_ENVOY)",
                envoy.display()
            )));
        }
        let directory = tempfile::Builder::new()
            .prefix("gatehouse-")
            .tempdir()
            .context("create scenario directory")?;
        let ecds_dir = directory.path().join("ecds");
        fs::create_dir_all(&ecds_dir).context("create ecds directory")?;
        for spec in &self.filters {
            if !spec.module.exists() {
                return Err(HarnessError(format!(
                    "no module at {} (run `make build`)",
                    spec.module.display()
                )));
            }
            ecds::install(&ecds_dir, spec)?;
        }

        let access_log = directory.path().join("access.jsonl");
        let bootstrap = self.bootstrap(&ecds_dir, &access_log);
        let bootstrap_path = directory.path().join("envoy.json");
        fs::write(&bootstrap_path, bootstrap.to_string()).context("write bootstrap")?;

        let admin_path = directory.path().join("admin-address");
        let log_path = directory.path().join("envoy.log");
        let log = fs::File::create(&log_path).context("create envoy log")?;
        let mut command = Command::new(&envoy);
        command
            .arg("-c")
            .arg(&bootstrap_path)
            .args(["--concurrency", &self.workers.to_string()])
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--file-flush-interval-msec", "20", "-l", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        kill_with_parent(&mut command);
        let child = command
            .spawn()
            .context(format!("start {}", envoy.display()))?;

        let mut gateway = Gateway {
            child,
            directory,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_log,
            log: log_path,
            ecds: ecds_dir,
        };
        gateway.wait_ready(&admin_path)?;
        Ok(gateway)
    }

    fn bootstrap(&self, ecds_dir: &Path, access_log: &Path) -> Value {
        let mut http_filters: Vec<Value> = self
            .filters
            .iter()
            .map(|spec| ecds::discovered_filter(ecds_dir, spec))
            .collect();
        http_filters.extend(self.native_after.iter().cloned());
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));

        let mut routes: Vec<Value> = self
            .header_routes
            .iter()
            .enumerate()
            .flat_map(|(index, route)| self.header_route_entries(index, route))
            .collect();
        let mtls_names = self.mtls_backends.iter().map(|(name, _, _)| name);
        routes.extend(
            self.backends
                .iter()
                .map(|(name, _)| name)
                .chain(mtls_names)
                .map(|name| {
                    json!({
                        "name": format!("route-{name}"),
                        "match": {"prefix": format!("/{name}/")},
                        "route": {"cluster": name, "timeout": "10s"}
                    })
                }),
        );
        routes.push(json!({
            "name": "route-direct",
            "match": {"prefix": "/direct/"},
            "direct_response": {"status": 200, "body": {"inline_string": "direct"}}
        }));

        let mut clusters: Vec<Value> = self
            .backends
            .iter()
            .map(|(name, address)| cluster(name, *address))
            .collect();
        if let Some(address) = self.collector {
            clusters.push(cluster("collector", address));
        }
        clusters.extend(
            self.clusters
                .iter()
                .map(|(name, address)| cluster(name, *address)),
        );
        clusters.extend(self.mtls_backends.iter().map(|(name, address, certs)| {
            let mut mtls = cluster(name, *address);
            mtls["transport_socket"] = crate::tls::upstream_mtls(certs);
            mtls
        }));
        let mut filter_chain = json!({"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "gateway",
                // The connection's peer is the client unless trusted
                // hops say otherwise: with Envoy's default,
                // `source.address` would come from x-forwarded-for.
                "use_remote_address": true,
                "skip_xff_append": true,
                "access_log": [{
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                        "path": access_log.display().to_string(),
                        "log_format": {"text_format_source": {
                            "inline_string": "%FILTER_STATE(wasm.gatehouse.audit.record:PLAIN)%\n"
                        }}
                    }
                }],
                "route_config": {"virtual_hosts": [{
                    "name": "gateway",
                    "domains": ["*"],
                    "routes": routes
                }]},
                "http_filters": http_filters
            }
        }]});
        if let Some(certs) = &self.tls {
            filter_chain["transport_socket"] = crate::tls::downstream_tls(certs);
        }

        json!({
            "node": {"id": "gatehouse-test", "cluster": "gatehouse-test"},
            "admin": {"address": socket(SocketAddr::from(([127, 0, 0, 1], 0)))},
            "static_resources": {
                "listeners": [{
                    "name": "gateway",
                    "address": socket(SocketAddr::from(([127, 0, 0, 1], 0))),
                    "filter_chains": [filter_chain]
                }],
                "clusters": clusters
            }
        })
    }
}

impl GatewayBuilder {
    /// The Envoy routes of one header route: per target value the mirrored variant
    /// (when mirroring is on) then the plain one, then the default (mirrored, plain).
    fn header_route_entries(&self, index: usize, route: &HeaderRoute) -> Vec<Value> {
        let exact =
            |name: &str, value: &str| json!({"name": name, "string_match": {"exact": value}});
        let action = |cluster: &str, mirrored: bool| {
            let mut action = json!({"cluster": cluster, "timeout": "10s"});
            if let (true, Some((_, backend))) = (mirrored, &self.mirror) {
                action["request_mirror_policies"] = json!([{"cluster": backend}]);
            }
            action
        };
        let variants: &[bool] = if self.mirror.is_some() {
            &[true, false]
        } else {
            &[false]
        };
        let mirror_header = |mirrored: bool| {
            self.mirror
                .as_ref()
                .filter(|_| mirrored)
                .map(|(header, _)| exact(header, "1"))
        };
        let mut entries = Vec::new();
        for (value, backend) in &route.targets {
            for &mirrored in variants {
                let mut headers = vec![exact(&route.header, value)];
                headers.extend(mirror_header(mirrored));
                entries.push(json!({
                    "name": format!("header-{index}-{value}{}", if mirrored { "-mirrored" } else { "" }),
                    "match": {"prefix": "/", "headers": headers},
                    "route": action(backend, mirrored)
                }));
            }
        }
        for &mirrored in variants {
            let headers: Vec<Value> = mirror_header(mirrored).into_iter().collect();
            entries.push(json!({
                "name": format!("header-{index}-default{}", if mirrored { "-mirrored" } else { "" }),
                "match": {"prefix": route.prefix, "headers": headers},
                "route": action(&route.default_backend, mirrored)
            }));
        }
        entries
    }
}

fn socket(address: SocketAddr) -> Value {
    json!({"socket_address": {"address": address.ip().to_string(), "port_value": address.port()}})
}

fn cluster(name: &str, address: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(address)}}]}]
        }
    })
}

/// Asks the kernel to kill Envoy if the test process dies without dropping it.
#[allow(unsafe_code)]
pub fn kill_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A running Envoy.
pub struct Gateway {
    child: Child,
    directory: tempfile::TempDir,
    admin: SocketAddr,
    listener: SocketAddr,
    access_log: PathBuf,
    log: PathBuf,
    ecds: PathBuf,
}

impl Gateway {
    /// `http://127.0.0.1:<port>` of the gateway listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listener, path)
    }

    pub fn address(&self) -> SocketAddr {
        self.listener
    }

    /// `http://127.0.0.1:<port>` of the admin interface.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The watched directory the filters are discovered from.
    pub fn ecds_dir(&self) -> &Path {
        &self.ecds
    }

    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// GET from the gateway.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
        client::get(&self.url(path), headers)
    }

    /// Lines of Envoy's access log, each expected to be one audit record.
    pub fn access_log_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Envoy's own log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A metric's value from the admin's Prometheus endpoint. Filters define their
    /// metrics when configured, so a name the page lacks is an error (a misspelt
    /// name must not read as zero).
    pub fn metric(&self, name: &str) -> Result<f64> {
        let page = client::get(&self.admin_url("/stats/prometheus"), &[])?;
        page.body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                let key = key.split('{').next()?;
                (key == name).then(|| value.parse::<f64>().ok()).flatten()
            })
            .ok_or_else(|| HarnessError(format!("no metric {name} on the admin's page")))
    }

    /// A metric's value once it equals `expected`, or its last value after two
    /// seconds: filters add per-request counts on their 100 ms tick.
    pub fn settled_metric(&self, name: &str, expected: f64) -> Result<f64> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let last = self.metric(name)?;
            if (last - expected).abs() < f64::EPSILON || std::time::Instant::now() > deadline {
                return Ok(last);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A counter from the admin's `/stats` (Envoy's own names).
    pub fn stat(&self, name: &str) -> Result<u64> {
        let page = client::get(&self.admin_url(&format!("/stats?filter=^{name}$")), &[])?;
        Ok(page
            .body
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(": ")?;
                (key == name)
                    .then(|| value.trim().parse::<u64>().ok())
                    .flatten()
            })
            .unwrap_or(0))
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether Envoy is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_ready(&mut self, admin_path: &Path) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.is_running() {
                return Err(HarnessError(format!(
                    "envoy exited while starting:\n{}",
                    self.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(HarnessError(format!(
                    "envoy not ready in time:\n{}",
                    self.log_tail()
                )));
            }
            if self.admin.port() == 0 {
                if let Some(address) = fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|text| text.trim().parse::<SocketAddr>().ok())
                {
                    self.admin = address;
                }
            } else if let Ok(ready) = client::get(&self.admin_url("/ready"), &[]) {
                if ready.status == 200 {
                    if let Some(listener) = self.find_listener() {
                        self.listener = listener;
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn find_listener(&self) -> Option<SocketAddr> {
        let page = client::get(&self.admin_url("/listeners?format=json"), &[]).ok()?;
        let value: Value = serde_json::from_str(&page.body).ok()?;
        let socket = &value["listener_statuses"][0]["local_address"]["socket_address"];
        let address = format!(
            "{}:{}",
            socket["address"].as_str()?,
            socket["port_value"].as_u64()?
        );
        address
            .parse()
            .ok()
            .filter(|address: &SocketAddr| address.port() != 0)
    }

    /// The last lines of Envoy's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let file = match fs::File::open(&self.log) {
            Ok(file) => file,
            Err(error) => return format!("(no log: {error})"),
        };
        let lines: Vec<String> = BufReader::new(file)
            .lines()
            .map_while(|line| line.ok())
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log ({}) ---\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

impl Gateway {
    /// The access-log records whose correlation id is `id`, once at least `count`
    /// are there (or what is there after 5 s). Panics on a line that is not JSON:
    /// the access log must hold one clean record per line.
    pub fn records_for(&self, id: &str, count: usize) -> Vec<Value> {
        let found = crate::wait_for(Duration::from_secs(5), || {
            let records = self.records_matching(id);
            (records.len() >= count).then_some(records)
        });
        found.unwrap_or_else(|| self.records_matching(id))
    }

    // The harness's job is to fail the scenario on a broken access log.
    #[allow(clippy::panic)]
    fn records_matching(&self, id: &str) -> Vec<Value> {
        self.access_log_lines()
            .iter()
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(value) => value,
                Err(error) => panic!("access log line is not one JSON record ({error}): {line:?}"),
            })
            .filter(|record| record["correlation_id"] == id)
            .collect()
    }
}
