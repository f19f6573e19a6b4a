//! The traffic filter against a real Envoy with two workers, Envoy's route table
//! picking the cluster from the target header the filter sets: a random weighted
//! split within statistical bounds and exact at 100/0 and 0/100; sticky callers that
//! keep their backend across connections, both workers and a restart; a monotone
//! ramp; schedule steps in force from their time on; a health gate that rolls a
//! failing backend back once (metric, webhook), holds for its cooldown and lifts on a
//! configuration change; mirroring that never changes the client's answer; rewrites
//! that keep the query; a circuit breaker that opens, answers without touching the
//! backend, half-opens with a bounded number of probes and closes; weights swapped
//! under load without an error; client-sent routing headers removed and the override
//! header honoured only for the configured role; and refused bad configurations.

// Scenario helpers fail the scenario the same way its assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_tests::client::{self, Response};
use gatehouse_tests::collector::{Collector, Mode};
use gatehouse_tests::ecds::{self, FilterSpec};
use gatehouse_tests::echo::EchoBackend;
use gatehouse_tests::envoy::{Gateway, GatewayBuilder};
use gatehouse_tests::http1::{self, Connection, RawRequest, Tally};
use gatehouse_tests::load::Load;
use gatehouse_tests::{paths, wait_for};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TARGET: &str = "x-gatehouse-target";
const MIRROR: &str = "x-gatehouse-mirror";
const FORCE: &str = "x-gatehouse-force-target";
const ORDERS: &str = "/api/v1/orders/7";
const RELOADS: &str = "extension_config_discovery.http_filter.gatehouse.traffic.config_reload";
const REJECTED: &str = "extension_config_discovery.http_filter.gatehouse.traffic.update_rejected";
/// Shared state moves between workers on the filters' 100 ms tick: three ticks.
const TICK_GRACE: Duration = Duration::from_millis(300);
/// Fresh connections used to check a swapped configuration is in force everywhere.
const PROBE_CONNECTIONS: usize = 16;

// ---------------------------------------------------------------------------------
// Scene

fn traffic(config: &Value) -> FilterSpec {
    FilterSpec::new("traffic", paths::module("traffic"), &config.to_string())
}

fn audit() -> FilterSpec {
    FilterSpec::new("audit", paths::module("audit"), "{}")
}

/// Two echo backends, `monolith` and `orders-v2`, chosen by Envoy from the target
/// header (anything else under `/api/` goes to `monolith`); a request carrying the
/// mirror header is copied to `orders-v2`.
struct Scene {
    monolith: EchoBackend,
    v2: EchoBackend,
    gateway: Gateway,
}

fn scene(filters: Vec<FilterSpec>) -> Scene {
    scene_with(filters, |builder| builder)
}

fn scene_with(
    filters: Vec<FilterSpec>,
    extra: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> Scene {
    let monolith = EchoBackend::start("monolith").unwrap();
    let v2 = EchoBackend::start("orders-v2").unwrap();
    let gateway = start_gateway(&monolith, &v2, filters, extra);
    Scene {
        monolith,
        v2,
        gateway,
    }
}

fn start_gateway(
    monolith: &EchoBackend,
    v2: &EchoBackend,
    filters: Vec<FilterSpec>,
    extra: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> Gateway {
    let mut builder = GatewayBuilder::new()
        .backend("monolith", monolith.address())
        .backend("orders-v2", v2.address())
        .header_route(
            "/api/",
            TARGET,
            &[("monolith", "monolith"), ("orders-v2", "orders-v2")],
            "monolith",
        )
        .header_mirror(MIRROR, "orders-v2");
    for filter in filters {
        builder = builder.filter(filter);
    }
    extra(builder).start().unwrap()
}

impl Scene {
    fn connection(&self) -> Connection {
        Connection::open(self.gateway.address()).unwrap()
    }

    /// Both backends' request counts.
    fn counts(&self) -> (u64, u64) {
        (self.monolith.requests(), self.v2.requests())
    }
}

/// The filter configuration `shop` with `routes`.
fn config(routes: Vec<Value>) -> Value {
    json!({"name": "shop", "routes": routes})
}

/// Route `orders` (prefix `/api/v1/orders`) splitting between the two targets.
fn orders(monolith: u64, v2: u64) -> Value {
    json!({
        "name": "orders",
        "match": {"path": {"prefix": "/api/v1/orders"}},
        "targets": [
            {"name": "monolith", "weight": monolith},
            {"name": "orders-v2", "weight": v2},
        ],
    })
}

/// `route` with `extra` fields merged in.
fn with(mut route: Value, extra: Value) -> Value {
    if let (Value::Object(route), Value::Object(extra)) = (&mut route, extra) {
        route.extend(extra);
    }
    route
}

/// `route` with `extra` merged into its target `target`.
fn with_target(mut route: Value, target: &str, extra: Value) -> Value {
    let targets = route["targets"].as_array_mut().unwrap();
    let entry = targets
        .iter_mut()
        .find(|entry| entry["name"] == target)
        .unwrap();
    if let (Value::Object(entry), Value::Object(extra)) = (entry, extra) {
        entry.extend(extra);
    }
    route
}

/// `gatehouse_traffic_<name>_<route>_<target>_<what>_total`, `-` as `_`.
fn counter(route: &str, target: &str, what: &str) -> String {
    format!("gatehouse_traffic_shop_{route}_{target}_{what}_total").replace('-', "_")
}

fn rollbacks_counter(route: &str) -> String {
    format!("gatehouse_traffic_shop_{route}_rollbacks_total").replace('-', "_")
}

/// The backend that answered, from the echo body.
fn backend_of(response: &Response) -> String {
    assert_eq!(response.status, 200, "{response:?}");
    response.json().unwrap()["backend"]
        .as_str()
        .unwrap_or_else(|| panic!("no backend in {response:?}"))
        .to_string()
}

/// The headers the backend received, from the echo body.
fn seen_headers(response: &Response) -> Value {
    response.json().unwrap()["headers"].clone()
}

fn get(path: &str) -> RawRequest {
    RawRequest::get(path, &[])
}

fn as_user(user: &str) -> RawRequest {
    RawRequest::get(ORDERS, &[("x-user", user)])
}

/// Sends request `i` on keep-alive connection `i % connections` (one thread each,
/// in order) and returns the answers in request order.
fn send_each(address: SocketAddr, connections: usize, requests: &[RawRequest]) -> Vec<Response> {
    let mut answers: Vec<Option<Response>> = vec![None; requests.len()];
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..connections)
            .map(|first| {
                scope.spawn(move || {
                    let mut connection = Connection::open(address).unwrap();
                    requests
                        .iter()
                        .enumerate()
                        .skip(first)
                        .step_by(connections)
                        .map(|(index, request)| (index, connection.send(request).unwrap()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for thread in threads {
            for (index, answer) in thread.join().unwrap() {
                answers[index] = Some(answer);
            }
        }
    });
    answers.into_iter().map(Option::unwrap).collect()
}

/// How many of `answers` each backend gave.
fn by_backend(answers: &[Response]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        *counts.entry(backend_of(answer)).or_insert(0) += 1;
    }
    counts
}

fn assert_clean(tally: &Tally, total: u64) {
    assert!(
        tally.errors.is_empty(),
        "{} requests got no answer: {:?}",
        tally.errors.len(),
        &tally.errors[..tally.errors.len().min(5)]
    );
    assert_eq!(tally.count(200), total, "{:?}", tally.statuses);
}

/// Installs `config` over the running traffic filter and waits until Envoy applied it.
fn swap(gateway: &Gateway, config: &Value) {
    let before = gateway.stat(RELOADS).unwrap();
    ecds::install(gateway.ecds_dir(), &traffic(config)).unwrap();
    let applied = wait_for(Duration::from_secs(20), || {
        (gateway.stat(RELOADS).ok()? > before).then_some(())
    });
    assert!(
        applied.is_some(),
        "configuration not applied ({config}):\n{}",
        gateway.log_tail()
    );
}

/// Waits until a swapped configuration is in force on fresh connections over both
/// workers: each of 16 new connections sends `probes`, and `in_force` must hold for
/// every connection's answers. Returns every probe answer sent.
fn wait_in_force(
    gateway: &Gateway,
    probes: &[RawRequest],
    in_force: impl Fn(&[Response]) -> bool,
) -> Vec<Response> {
    let requests: Vec<RawRequest> = probes
        .iter()
        .flat_map(|probe| std::iter::repeat_n(probe.clone(), PROBE_CONNECTIONS))
        .collect();
    let mut sent = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answers = send_each(gateway.address(), PROBE_CONNECTIONS, &requests);
        let everywhere = (0..PROBE_CONNECTIONS).all(|connection| {
            let mine: Vec<Response> = answers
                .iter()
                .skip(connection)
                .step_by(PROBE_CONNECTIONS)
                .cloned()
                .collect();
            in_force(&mine)
        });
        sent.extend(answers);
        if everywhere {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "the new configuration is not in force after 10 s:\n{}",
            gateway.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Swaps in `config` and waits until every probe of `/api/v1/orders/7` lands on `backend`.
fn swap_to_all(gateway: &Gateway, config: &Value, backend: &str) {
    swap(gateway, config);
    wait_in_force(
        gateway,
        &[get(ORDERS), get(ORDERS), get(ORDERS)],
        |answers| answers.iter().all(|answer| backend_of(answer) == backend),
    );
}

/// Connections each of Envoy's workers accepted on the gateway listener.
fn worker_connections(gateway: &Gateway) -> Vec<u64> {
    let page = client::get(&gateway.admin_url("/stats?filter=worker_"), &[]).unwrap();
    page.body
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            let worker = name.strip_prefix("listener.")?;
            worker
                .ends_with(".downstream_cx_total")
                .then(|| value.trim().parse::<u64>().ok())
                .flatten()
        })
        .collect()
}

/// Checks both workers accepted connections since `before` was read.
fn assert_on_both_workers(gateway: &Gateway, before: &[u64]) {
    let after = worker_connections(gateway);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after
            .iter()
            .zip(before)
            .all(|(after, before)| after > before),
        "both workers took connections: {before:?} -> {after:?}"
    );
}

/// `time` as RFC 3339 in whole seconds: `2026-12-03T16:13:29Z`.
fn rfc3339(time: SystemTime) -> String {
    let text = gatehouse_shared::time::rfc3339_millis(time);
    format!("{}Z", &text[..19])
}

/// A whole second at least `ahead` from now.
fn whole_second_after(ahead: Duration) -> SystemTime {
    let seconds = (SystemTime::now() + ahead)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn until_instant(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// 1. Weighted split

#[test]
fn random_split_is_proportional_and_100_0_and_0_100_are_exact() {
    const TOTAL: u64 = 10_000;
    let scene = scene(vec![traffic(&config(vec![orders(90, 10)]))]);
    let gateway = &scene.gateway;

    let tally = http1::send_all(gateway.address(), 16, TOTAL, |_| get(ORDERS));
    assert_clean(&tally, TOTAL);
    let (monolith, v2) = scene.counts();
    assert_eq!(monolith + v2, TOTAL);
    // 10% of 10,000 is 1,000 with a standard deviation of 30: 1.5 points is 5 sigma.
    assert!(
        (850..=1150).contains(&v2),
        "orders-v2 got {v2} of {TOTAL} at 10%"
    );
    for (target, count) in [("monolith", monolith), ("orders-v2", v2)] {
        let name = counter("orders", target, "requests");
        let value = gateway.settled_metric(&name, count as f64).unwrap();
        assert_eq!(value, count as f64, "{name}");
    }

    for (weights, backend) in [((0, 100), "orders-v2"), ((100, 0), "monolith")] {
        swap_to_all(
            gateway,
            &config(vec![orders(weights.0, weights.1)]),
            backend,
        );
        let before = scene.counts();
        let tally = http1::send_all(gateway.address(), 16, 2_000, |_| get(ORDERS));
        assert_clean(&tally, 2_000);
        let after = scene.counts();
        let moved = (after.0 - before.0, after.1 - before.1);
        let expected = if backend == "monolith" {
            (2_000, 0)
        } else {
            (0, 2_000)
        };
        assert_eq!(moved, expected, "{weights:?}: (monolith, orders-v2)");
    }
}

// ---------------------------------------------------------------------------------
// 2. Stickiness

fn sticky_orders(monolith: u64, v2: u64) -> Value {
    with(
        orders(monolith, v2),
        json!({"sticky": {"kind": "header", "name": "x-user"}}),
    )
}

/// Where each of `users` lands: one request each over `connections` connections,
/// every user on every connection when `every_connection`.
fn placements(
    gateway: &Gateway,
    users: &[String],
    connections: usize,
    every_connection: bool,
) -> BTreeMap<String, BTreeSet<String>> {
    let requests: Vec<RawRequest> = if every_connection {
        users
            .iter()
            .flat_map(|user| std::iter::repeat_n(as_user(user), connections))
            .collect()
    } else {
        users.iter().map(|user| as_user(user)).collect()
    };
    let answers = send_each(gateway.address(), connections, &requests);
    let mut placed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (request, answer) in requests.iter().zip(&answers) {
        let user = request.headers[0].1.clone();
        let backend = backend_of(answer);
        assert_eq!(
            seen_headers(answer)["x-user"],
            user.as_str(),
            "the answer is this user's"
        );
        placed.entry(user).or_default().insert(backend);
    }
    placed
}

/// Each user's one backend, failing when a user reached two.
fn single(placed: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, String> {
    placed
        .iter()
        .map(|(user, backends)| {
            assert_eq!(backends.len(), 1, "{user} reached {backends:?}");
            (user.clone(), backends.iter().next().unwrap().clone())
        })
        .collect()
}

fn users(count: usize) -> Vec<String> {
    (0..count).map(|number| format!("user-{number}")).collect()
}

#[test]
fn sticky_users_keep_their_backend_over_connections_both_workers_and_a_restart() {
    const CONNECTIONS: usize = 16;
    let sticky = config(vec![sticky_orders(50, 50)]);
    let scene = scene(vec![traffic(&sticky)]);
    let users = users(200);

    let workers_before = worker_connections(&scene.gateway);
    // Every user sends one request on each of 16 connections.
    let placed = single(&placements(&scene.gateway, &users, CONNECTIONS, true));
    assert_on_both_workers(&scene.gateway, &workers_before);
    let on_v2 = placed
        .values()
        .filter(|backend| *backend == "orders-v2")
        .count();
    // 50/50 over 200 users: 100 with a standard deviation of 7.
    assert!((60..=140).contains(&on_v2), "{on_v2} of 200 on orders-v2");
    assert_eq!(
        scene.counts(),
        (
            ((200 - on_v2) * CONNECTIONS) as u64,
            (on_v2 * CONNECTIONS) as u64
        )
    );

    // A second Envoy with the same configuration places every user the same way:
    // the hash is fixed, not seeded.
    let restarted = start_gateway(&scene.monolith, &scene.v2, vec![traffic(&sticky)], |b| b);
    let again = single(&placements(&restarted, &users, 4, false));
    assert_eq!(again, placed, "placements after a restart");

    // Without the key, the choice is per request: one request per user id is no
    // longer sticky (a random 50/50 split over 400 requests reaches both).
    let anonymous = send_each(scene.gateway.address(), 4, &vec![get(ORDERS); 400]);
    let counts = by_backend(&anonymous);
    assert!(
        counts.get("monolith").copied().unwrap_or(0) >= 140
            && counts.get("orders-v2").copied().unwrap_or(0) >= 140,
        "{counts:?}"
    );
}

#[test]
fn sticky_by_cookie_and_by_client_address_behind_one_trusted_hop() {
    const CONNECTIONS: usize = 8;
    let by_cookie = with(
        orders(50, 50),
        json!({"sticky": {"kind": "cookie", "name": "session"}}),
    );
    let mut by_address = with(
        orders(50, 50),
        json!({"sticky": {"kind": "client_address"}}),
    );
    by_address["name"] = json!("by-address");
    by_address["match"] = json!({"path": {"prefix": "/api/v2/orders"}});
    let mut sticky = config(vec![by_cookie, by_address]);
    sticky["trusted_proxy_hops"] = json!(1);
    let scene = scene(vec![traffic(&sticky)]);

    // Each caller sends one request on each of 8 connections (both workers).
    let check = |path: &str, header: &str, values: Vec<String>| {
        let requests: Vec<RawRequest> = values
            .iter()
            .flat_map(|value| {
                std::iter::repeat_n(RawRequest::get(path, &[(header, value)]), CONNECTIONS)
            })
            .collect();
        let answers = send_each(scene.gateway.address(), CONNECTIONS, &requests);
        let mut placed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (request, answer) in requests.iter().zip(&answers) {
            assert_eq!(answer.status, 200, "{answer:?}");
            placed
                .entry(request.headers[0].1.clone())
                .or_default()
                .insert(backend_of(answer));
        }
        let placed = single(&placed);
        let on_v2 = placed
            .values()
            .filter(|backend| *backend == "orders-v2")
            .count();
        // 50/50 over 100 callers: 50 with a standard deviation of 5.
        assert!(
            (25..=75).contains(&on_v2),
            "{path}: {on_v2} of 100 on orders-v2"
        );
    };
    check(
        ORDERS,
        "cookie",
        (0..100)
            .map(|n| format!("theme=dark; session=s-{n}; lang=en"))
            .collect(),
    );
    // The rightmost forwarded entry is the client; entries left of it (which a
    // client can write) change nothing.
    check(
        "/api/v2/orders/7",
        "x-forwarded-for",
        (0..100)
            .map(|n| format!("198.51.100.{}, 203.0.113.{n}", n % 7))
            .collect(),
    );
    let spoofed: BTreeSet<String> = (0..20)
        .map(|n| {
            let chain = format!("198.51.100.{n}, 203.0.113.9");
            let mut connection = scene.connection();
            backend_of(
                &connection
                    .get("/api/v2/orders/7", &[("x-forwarded-for", &chain)])
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(spoofed.len(), 1, "one client, one target: {spoofed:?}");
}

// ---------------------------------------------------------------------------------
// 3. Monotone ramp

#[test]
fn a_ramp_from_5_to_25_percent_keeps_every_sticky_user_already_on_the_new_backend() {
    const USERS: usize = 2_000;
    let scene = scene(vec![traffic(&config(vec![sticky_orders(95, 5)]))]);
    let gateway = &scene.gateway;
    let users = users(USERS);

    let at_5 = single(&placements(gateway, &users, 8, false));
    let early: BTreeSet<&String> = at_5
        .iter()
        .filter(|(_, backend)| *backend == "orders-v2")
        .map(|(user, _)| user)
        .collect();
    // 5% of 2,000 is 100 with a standard deviation of 10.
    assert!(
        (50..=150).contains(&early.len()),
        "{} of {USERS} on orders-v2 at 5%",
        early.len()
    );

    // Fifty users on the monolith at 5%: about a fifth of them move at 25%; the new
    // weights are in force on a connection once one of them has.
    let sample: Vec<RawRequest> = at_5
        .iter()
        .filter(|(_, backend)| *backend == "monolith")
        .take(50)
        .map(|(user, _)| as_user(user))
        .collect();
    swap(gateway, &config(vec![sticky_orders(75, 25)]));
    wait_in_force(gateway, &sample, |answers| {
        answers
            .iter()
            .any(|answer| backend_of(answer) == "orders-v2")
    });

    let at_25 = single(&placements(gateway, &users, 8, false));
    let stayed: Vec<&&String> = early
        .iter()
        .filter(|user| at_25[**user] != "orders-v2")
        .collect();
    assert!(
        stayed.is_empty(),
        "users on orders-v2 at 5% moved back at 25%: {stayed:?}"
    );
    let late = at_25
        .values()
        .filter(|backend| *backend == "orders-v2")
        .count();
    // 25% of 2,000 is 500 with a standard deviation of 19.
    assert!(
        (400..=600).contains(&late),
        "{late} of {USERS} on orders-v2 at 25%"
    );
    assert!(late > early.len());
}

// ---------------------------------------------------------------------------------
// 4. Schedule

#[test]
fn a_schedule_step_in_the_past_is_in_force_and_one_in_the_future_only_from_its_time() {
    let scene = scene(vec![traffic(&config(vec![orders(100, 0)]))]);
    let gateway = &scene.gateway;

    let at = whole_second_after(Duration::from_secs(4));
    let scheduled = config(vec![
        with(
            orders(100, 0),
            json!({"schedule": [
                {"at": "2020-01-01T00:00:00Z", "weights": {"monolith": 0, "orders-v2": 100}},
                {"at": rfc3339(at), "weights": {"monolith": 100, "orders-v2": 0}},
            ]}),
        ),
        // Before its only step, a route has its targets' weights.
        with(
            json!({
                "name": "invoices",
                "match": {"path": {"prefix": "/api/v1/invoices"}},
                "targets": [
                    {"name": "monolith", "weight": 0},
                    {"name": "orders-v2", "weight": 100},
                ],
            }),
            json!({"schedule": [
                {"at": "2099-01-01T00:00:00Z", "weights": {"monolith": 100, "orders-v2": 0}},
            ]}),
        ),
    ]);
    // The past step is in force: everything on orders-v2 (the old configuration
    // sent everything to the monolith).
    swap_to_all(gateway, &scheduled, "orders-v2");
    let step = until_instant(at);
    assert!(
        Instant::now() + Duration::from_millis(500) < step,
        "the configuration took too long to apply for this check"
    );

    // Until just before the future step, every request stays on orders-v2.
    let mut before_step = 0;
    while Instant::now() + Duration::from_millis(200) < step {
        let answers = send_each(gateway.address(), 4, &vec![get(ORDERS); 40]);
        for answer in &answers {
            assert_eq!(
                backend_of(answer),
                "orders-v2",
                "a step is in force before its time ({})",
                rfc3339(at)
            );
        }
        before_step += answers.len();
        let invoices = send_each(gateway.address(), 2, &vec![get("/api/v1/invoices/1"); 4]);
        assert_eq!(
            by_backend(&invoices),
            BTreeMap::from([("orders-v2".into(), 4)])
        );
    }
    assert!(
        before_step >= 200,
        "only {before_step} requests before the step"
    );

    // From the step on, the monolith, everywhere (within two seconds of its time).
    let switched = wait_for(Duration::from_secs(4), || {
        let answers = send_each(gateway.address(), PROBE_CONNECTIONS, &vec![get(ORDERS); 48]);
        answers
            .iter()
            .all(|answer| backend_of(answer) == "monolith")
            .then(Instant::now)
    })
    .expect("the future step came into force");
    assert!(
        switched <= step + Duration::from_secs(2),
        "in force {:?} late",
        switched - step
    );
    let answers = send_each(gateway.address(), 8, &vec![get(ORDERS); 400]);
    assert_eq!(
        by_backend(&answers),
        BTreeMap::from([("monolith".into(), 400)])
    );
    let invoices = send_each(gateway.address(), 2, &vec![get("/api/v1/invoices/1"); 20]);
    assert_eq!(
        by_backend(&invoices),
        BTreeMap::from([("orders-v2".into(), 20)])
    );
}

// ---------------------------------------------------------------------------------
// 5. Health gate

#[test]
fn a_failing_new_backend_is_rolled_back_once_held_for_the_cooldown_and_released_by_a_new_configuration(
) {
    const COOLDOWN: Duration = Duration::from_secs(5);
    const WINDOW: Duration = Duration::from_secs(2);
    let gated = |max_error_percent: u64| {
        config(vec![with(
            orders(50, 50),
            json!({"health_gate": {
                "stable": "monolith",
                "window_seconds": WINDOW.as_secs(),
                "min_requests": 20,
                "max_error_percent": max_error_percent,
                "cooldown_seconds": COOLDOWN.as_secs(),
                "webhook": {"cluster": "hooks", "path": "/rollback", "authority": "hooks", "timeout_ms": 2000},
            }}),
        )])
    };
    let hooks = Collector::start(Mode::Accept).unwrap();
    let scene = scene_with(vec![traffic(&gated(20))], |builder| {
        builder.cluster("hooks", hooks.address())
    });
    let gateway = &scene.gateway;
    let rollbacks = rollbacks_counter("orders");
    let send = |count: u64| http1::send_all(gateway.address(), 4, count, |_| get(ORDERS));
    let warnings = || {
        gateway
            .log()
            .lines()
            .filter(|line| line.contains("[warning]") && line.contains("gatehouse.traffic"))
            .count()
    };

    // Healthy: both backends serve.
    let tally = send(200);
    assert_clean(&tally, 200);
    assert!(scene.v2.requests() >= 50, "{:?}", scene.counts());
    let warnings_before = warnings();

    // orders-v2 fails every request: rolled back once the window's answers (at least
    // 20) are more than 20% failures.
    scene.v2.fail(500);
    let failing_from = scene.v2.requests();
    let mut failed = 0;
    let observed = wait_for(Duration::from_secs(10), || {
        let tally = send(20);
        failed += tally.count(500);
        (gateway.metric(&rollbacks).ok()? >= 1.0).then(Instant::now)
    })
    .unwrap_or_else(|| panic!("no rollback:\n{}", gateway.log_tail()));
    let served_failures = scene.v2.requests() - failing_from;
    assert_eq!(
        failed, served_failures,
        "every failure reached the client unchanged"
    );

    // Held: every request goes to the monolith.
    std::thread::sleep(TICK_GRACE);
    let v2_at_rollback = scene.v2.requests();
    let tally = send(600);
    assert_clean(&tally, 600);
    assert_eq!(scene.v2.requests(), v2_at_rollback, "orders-v2 untouched");
    assert!(observed.elapsed() < COOLDOWN - Duration::from_secs(2));

    // Once: the metric, the webhook, the warning.
    assert_eq!(gateway.settled_metric(&rollbacks, 1.0).unwrap(), 1.0);
    let hook = wait_for(Duration::from_secs(5), || hooks.batches().first().cloned())
        .expect("the rollback webhook was called");
    assert_eq!(hook.path, "/rollback");
    let event: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(event["event"], "rollback", "{event}");
    assert_eq!(event["filter"], "shop", "{event}");
    assert_eq!(event["route"], "orders", "{event}");
    assert_eq!(event["target"], "orders-v2", "{event}");
    assert_eq!(event["stable"], "monolith", "{event}");
    // The window also holds the healthy answers from before the failures.
    let requests = event["requests"].as_u64().unwrap();
    assert!((20..=scene.v2.requests()).contains(&requests), "{event}");
    let percent = event["error_percent"].as_f64().unwrap();
    let failures = percent * requests as f64 / 100.0;
    assert!(
        percent > 20.0 && failures <= served_failures as f64 + 0.5,
        "{event}: {served_failures} failures were served"
    );
    assert!(
        (failures - failures.round()).abs() < 0.1,
        "{event}: error_percent is not failures over requests"
    );
    let until = event["until"].as_str().unwrap();
    let now = SystemTime::now();
    let earliest = rfc3339(now - observed.elapsed() + COOLDOWN - Duration::from_secs(1));
    let latest = rfc3339(now + COOLDOWN + Duration::from_secs(1));
    assert!(
        until.len() >= 20
            && until.ends_with('Z')
            && until[..19] >= earliest[..19]
            && until[..19] <= latest[..19],
        "until {until} is not the end of the cooldown ({earliest} .. {latest})"
    );
    assert!(
        warnings() > warnings_before,
        "the rollback is logged as a warning"
    );

    // Released when the cooldown has passed (the window holds no failure by then):
    // orders-v2, now healthy, serves again.
    scene.v2.recover();
    let released = wait_for(COOLDOWN + Duration::from_secs(3), || {
        let tally = send(20);
        assert_clean(&tally, 20);
        (scene.v2.requests() > v2_at_rollback).then(Instant::now)
    })
    .expect("released after the cooldown");
    assert!(
        released >= observed + COOLDOWN - Duration::from_millis(500),
        "released {:?} after the rollback was seen, the cooldown is {COOLDOWN:?}",
        released - observed
    );
    assert_eq!(hooks.batches().len(), 1, "one webhook call per rollback");
    assert_eq!(gateway.settled_metric(&rollbacks, 1.0).unwrap(), 1.0);

    // A second failure rolls back again (a second call) ...
    scene.v2.fail(503);
    let observed = wait_for(Duration::from_secs(10), || {
        send(20);
        (gateway.metric(&rollbacks).ok()? >= 2.0).then(Instant::now)
    })
    .expect("a second rollback");
    assert!(
        wait_for(Duration::from_secs(5), || (hooks.batches().len() == 2)
            .then_some(()))
        .is_some(),
        "{:?}",
        hooks.batches()
    );
    // ... and a new configuration lifts it well before its cooldown ends, once the
    // failures have left the window.
    scene.v2.recover();
    std::thread::sleep(WINDOW + TICK_GRACE);
    let v2_before = scene.v2.requests();
    swap(gateway, &gated(25));
    let lifted = wait_for(Duration::from_secs(2), || {
        let tally = send(20);
        assert_clean(&tally, 20);
        (scene.v2.requests() > v2_before).then(Instant::now)
    })
    .expect("a new configuration lifts the rollback");
    assert!(
        lifted < observed + COOLDOWN - Duration::from_millis(500),
        "lifted only {:?} after the rollback, as if by the cooldown",
        lifted - observed
    );
    assert_eq!(gateway.settled_metric(&rollbacks, 2.0).unwrap(), 2.0);
    assert_eq!(hooks.batches().len(), 2);
}

// ---------------------------------------------------------------------------------
// 6. Mirroring

/// Whether the backend saw the mirror header (`1`) on this request.
fn carries_mirror(answer: &Response) -> bool {
    match seen_headers(answer).get(MIRROR) {
        None => false,
        Some(value) => {
            assert_eq!(value, "1", "{answer:?}");
            true
        }
    }
}

/// Checks every answer came from the monolith; returns how many were mirrored.
fn primary_answers(answers: &[Response]) -> u64 {
    answers
        .iter()
        .filter(|answer| {
            assert_eq!(backend_of(answer), "monolith", "the client's answer");
            carries_mirror(answer)
        })
        .count() as u64
}

#[test]
fn mirrored_requests_reach_the_mirror_while_every_answer_comes_from_the_primary() {
    let mirrored = |percent: u64| {
        config(vec![with(
            orders(100, 0),
            json!({"mirror": {"percent": percent, "target": "orders-v2"}}),
        )])
    };
    let scene = scene(vec![traffic(&mirrored(0))]);
    let gateway = &scene.gateway;
    // Every request whose primary saw the mirror header makes exactly one copy.
    let copies_arrived = |copies: u64| {
        let arrived = wait_for(Duration::from_secs(5), || {
            (scene.v2.requests() >= copies).then_some(())
        });
        assert!(
            arrived.is_some(),
            "{} of {copies} copies",
            scene.v2.requests()
        );
        std::thread::sleep(TICK_GRACE);
        assert_eq!(scene.v2.requests(), copies, "one copy per mirrored request");
    };
    let mut copies = 0;

    // 0%: no copy.
    let answers = send_each(gateway.address(), 4, &vec![get(ORDERS); 200]);
    assert_eq!(primary_answers(&answers), 0);
    copies_arrived(0);

    // 100%: every request is copied to orders-v2, every answer is the monolith's.
    swap(gateway, &mirrored(100));
    let probes = wait_in_force(gateway, &[get(ORDERS), get(ORDERS)], |answers| {
        answers.iter().all(carries_mirror)
    });
    copies += primary_answers(&probes);
    let answers = send_each(gateway.address(), 4, &vec![get(ORDERS); 200]);
    assert_eq!(primary_answers(&answers), 200);
    copies += 200;
    copies_arrived(copies);

    // 30%: about that share.
    swap(gateway, &mirrored(30));
    let probes = wait_in_force(
        gateway,
        &[get(ORDERS), get(ORDERS), get(ORDERS)],
        |answers| !answers.iter().all(carries_mirror),
    );
    copies += primary_answers(&probes);
    let answers = send_each(gateway.address(), 8, &vec![get(ORDERS); 1_000]);
    let share = primary_answers(&answers);
    // 300 with a standard deviation of 14.5.
    assert!(
        (230..=370).contains(&share),
        "{share} of 1000 mirrored at 30%"
    );
    copies += share;
    copies_arrived(copies);

    // The mirrored counter (whichever of the route's targets it is kept under).
    let mirrored_total = || -> f64 {
        ["monolith", "orders-v2"]
            .iter()
            .map(|target| {
                gateway
                    .metric(&counter("orders", target, "mirrored"))
                    .unwrap()
            })
            .sum()
    };
    let settled = wait_for(Duration::from_secs(2), || {
        (mirrored_total() == copies as f64).then_some(())
    });
    assert!(
        settled.is_some(),
        "mirrored counters: {} for {copies} copies",
        mirrored_total()
    );
}

// ---------------------------------------------------------------------------------
// 7. Rewrites

#[test]
fn a_target_rewrite_changes_the_path_prefix_and_keeps_the_query() {
    let rewritten = |monolith: u64, v2: u64| {
        config(vec![with_target(
            orders(monolith, v2),
            "orders-v2",
            json!({"rewrite": {"prefix": "/api/v1/orders", "replacement": "/orders/v2"}}),
        )])
    };
    let scene = scene(vec![audit(), traffic(&rewritten(0, 100))]);
    let gateway = &scene.gateway;
    let mut connection = scene.connection();

    let cases = [
        ("/api/v1/orders/7?x=1&y=2", "/orders/v2/7", Some("x=1&y=2")),
        ("/api/v1/orders/7", "/orders/v2/7", None),
        ("/api/v1/orders?page=2", "/orders/v2", Some("page=2")),
    ];
    for (path, arrived, query) in cases {
        let answer = connection.get(path, &[]).unwrap();
        assert_eq!(backend_of(&answer), "orders-v2", "{path}");
        let echo = answer.json().unwrap();
        assert_eq!(echo["path"], arrived, "{path}: {echo}");
        assert_eq!(echo["query"].as_str(), query, "{path}: {echo}");
        let id = answer.header("x-correlation-id").unwrap();
        let record = &gateway.records_for(id, 1)[0];
        assert_eq!(record["traffic_target"], "orders-v2", "{record}");
    }

    swap_to_all(gateway, &rewritten(100, 0), "monolith");
    let mut connection = scene.connection();
    let answer = connection.get("/api/v1/orders/7?x=1&y=2", &[]).unwrap();
    assert_eq!(backend_of(&answer), "monolith");
    let echo = answer.json().unwrap();
    assert_eq!(echo["path"], "/api/v1/orders/7", "{echo}");
    assert_eq!(echo["query"], "x=1&y=2", "{echo}");
    let id = answer.header("x-correlation-id").unwrap();
    let record = &gateway.records_for(id, 1)[0];
    assert_eq!(record["traffic_target"], "monolith", "{record}");
}

// ---------------------------------------------------------------------------------
// 8. Circuit breaker

/// The breaker's 503: JSON body, `retry-after` matching it, the request's id.
/// Returns the seconds announced.
fn assert_breaker_answer(response: &Response) -> u64 {
    assert_eq!(response.status, 503, "{response:?}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json")),
        "{response:?}"
    );
    let body = response.json().unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    assert_eq!(
        body["message"], "the backend is temporarily unavailable",
        "{body}"
    );
    let seconds = body["retry_after_seconds"].as_u64().unwrap();
    assert!((1..=2).contains(&seconds), "open_seconds is 2: {body}");
    assert_eq!(
        response.header("retry-after"),
        Some(seconds.to_string().as_str()),
        "{response:?}"
    );
    let id = response.header("x-correlation-id").unwrap();
    assert!(!id.is_empty());
    assert_eq!(body["correlation_id"], id, "{body}");
    seconds
}

#[test]
fn the_breaker_opens_after_consecutive_failures_answers_without_the_backend_and_recovers_through_probes(
) {
    let breaker = config(vec![with_target(
        orders(0, 100),
        "orders-v2",
        json!({"circuit_breaker": {
            "consecutive_failures": 5,
            "failure_percent": 0,
            "window_seconds": 10,
            "min_requests": 10,
            "open_seconds": 2,
            "half_open_probes": 2,
        }}),
    )]);
    let scene = scene(vec![audit(), traffic(&breaker)]);
    let gateway = &scene.gateway;
    let mut connection = scene.connection();
    let mut rejected = 0;

    let healthy = connection.get(ORDERS, &[]).unwrap();
    assert_eq!(backend_of(&healthy), "orders-v2");

    // Five failures in a row reach the backend (four 500s, then a connection reset
    // without an answer); the sixth request does not.
    scene.v2.fail(500);
    for attempt in 1..=4 {
        let answer = connection.get(ORDERS, &[]).unwrap();
        assert_eq!(answer.status, 500, "failure {attempt}: {answer:?}");
        assert_eq!(answer.json().unwrap()["backend"], "orders-v2");
    }
    let reset = connection.get(ORDERS, &[("x-echo-reset", "1")]).unwrap();
    assert_eq!(reset.status, 503, "Envoy's answer to a reset: {reset:?}");
    assert!(reset.json().is_err(), "not the breaker's answer: {reset:?}");
    assert_eq!(scene.v2.requests(), 6);
    let mut retry_after = 0;
    for _ in 0..10 {
        retry_after = assert_breaker_answer(&connection.get(ORDERS, &[]).unwrap());
        rejected += 1;
    }
    assert_eq!(
        scene.v2.requests(),
        6,
        "an open breaker does not touch the backend"
    );
    let answer = connection.get(ORDERS, &[]).unwrap();
    assert_breaker_answer(&answer);
    rejected += 1;
    let record = &gateway.records_for(answer.header("x-correlation-id").unwrap(), 1)[0];
    assert_eq!(record["status"], 503, "{record}");
    assert_eq!(record["traffic_target"], "orders-v2", "{record}");

    // Open on both workers.
    std::thread::sleep(TICK_GRACE);
    let workers_before = worker_connections(gateway);
    for answer in send_each(gateway.address(), PROBE_CONNECTIONS, &vec![get(ORDERS); 16]) {
        retry_after = assert_breaker_answer(&answer);
        rejected += 1;
    }
    assert_on_both_workers(gateway, &workers_before);
    assert_eq!(scene.v2.requests(), 6);

    // Half-open after the announced time: a failing probe opens it again.
    std::thread::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100));
    let probe = connection.get(ORDERS, &[]).unwrap();
    assert_eq!(
        probe.status, 500,
        "the probe reaches the backend: {probe:?}"
    );
    assert_eq!(scene.v2.requests(), 7);
    retry_after = assert_breaker_answer(&connection.get(ORDERS, &[]).unwrap());
    rejected += 1;
    assert_eq!(scene.v2.requests(), 7, "open again after the failed probe");
    let opened = counter("orders", "orders-v2", "breaker_opened");
    assert_eq!(
        gateway.settled_metric(&opened, 2.0).unwrap(),
        2.0,
        "{opened}"
    );

    // The backend recovers; half-open again: of six concurrent requests (slow
    // answers) exactly the two probes pass.
    scene.v2.recover();
    std::thread::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100));
    let slow = RawRequest::get(ORDERS, &[("x-echo-delay-ms", "500")]);
    let answers = send_each(gateway.address(), 6, &vec![slow; 6]);
    let passed = answers.iter().filter(|answer| answer.status == 200).count();
    for answer in answers.iter().filter(|answer| answer.status != 200) {
        assert_breaker_answer(answer);
        rejected += 1;
    }
    assert_eq!(passed, 2, "half_open_probes is 2: {answers:?}");
    assert_eq!(scene.v2.requests(), 9);

    // Both probes succeeded: closed.
    for _ in 0..20 {
        let answer = connection.get(ORDERS, &[]).unwrap();
        assert_eq!(backend_of(&answer), "orders-v2");
    }
    assert_eq!(scene.v2.requests(), 29);
    assert_eq!(scene.monolith.requests(), 0);

    for (what, expected) in [
        ("failures", 6.0),
        ("breaker_opened", 2.0),
        ("breaker_rejected", rejected as f64),
    ] {
        let name = counter("orders", "orders-v2", what);
        assert_eq!(
            gateway.settled_metric(&name, expected).unwrap(),
            expected,
            "{name}"
        );
    }
}

#[test]
fn the_breaker_opens_on_the_failure_rate_only_past_its_threshold_and_minimum() {
    let breaker = config(vec![with_target(
        orders(0, 100),
        "orders-v2",
        json!({"circuit_breaker": {
            "failure_percent": 40,
            "window_seconds": 10,
            "min_requests": 10,
            "open_seconds": 2,
        }}),
    )]);
    let scene = scene(vec![audit(), traffic(&breaker)]);
    let mut connection = scene.connection();
    let ok = |connection: &mut Connection| {
        let answer = connection.get(ORDERS, &[]).unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
    };
    let fail = |connection: &mut Connection| {
        let answer = connection.get(ORDERS, &[("x-echo-status", "500")]).unwrap();
        assert_eq!(answer.status, 500, "the backend's own answer: {answer:?}");
    };

    // Never two failures in a row: only the rate can open it. After nine answers
    // 4 failed (44%, but under the minimum of 10 answers): still closed, so the
    // tenth reaches the backend.
    for failing in [false, true, false, true, false, true, false, false, true] {
        if failing {
            fail(&mut connection);
        } else {
            ok(&mut connection);
        }
    }
    std::thread::sleep(TICK_GRACE);
    ok(&mut connection);
    // 4 of 10: exactly 40%, not over it: still closed, the eleventh gets through.
    std::thread::sleep(TICK_GRACE);
    fail(&mut connection);
    assert_eq!(
        scene.v2.requests(),
        11,
        "closed under the minimum and at 40%"
    );

    // 5 of 11 is over 40%. The rate is checked on the tick.
    let opened = counter("orders", "orders-v2", "breaker_opened");
    let open = wait_for(Duration::from_secs(5), || {
        (scene.gateway.metric(&opened).ok()? >= 1.0).then_some(())
    });
    assert!(open.is_some(), "{opened}");
    std::thread::sleep(TICK_GRACE); // every worker has looked at the shared state
    let before = scene.v2.requests();
    for _ in 0..5 {
        assert_breaker_answer(&connection.get(ORDERS, &[]).unwrap());
    }
    assert_eq!(
        scene.v2.requests(),
        before,
        "open: the backend is left alone"
    );
    assert_eq!(scene.gateway.settled_metric(&opened, 1.0).unwrap(), 1.0);
}

// ---------------------------------------------------------------------------------
// 9. Swaps under load

#[test]
fn weights_swapped_under_load_fail_no_request_and_the_new_split_applies() {
    let scene = scene(vec![traffic(&config(vec![orders(50, 50)]))]);
    let gateway = &scene.gateway;
    let load = Load::start(&gateway.url(ORDERS), &[], 4, 200);
    let running = wait_for(Duration::from_secs(10), || {
        let (monolith, v2) = scene.counts();
        (monolith > 100 && v2 > 100).then_some(())
    });
    assert!(
        running.is_some(),
        "both backends serve: {:?}",
        scene.counts()
    );

    for (weights, backend) in [((0, 100), "orders-v2"), ((100, 0), "monolith")] {
        let mark = load.sent();
        swap_to_all(
            gateway,
            &config(vec![orders(weights.0, weights.1)]),
            backend,
        );
        let more = wait_for(Duration::from_secs(10), || {
            (load.sent() > mark + 300).then_some(())
        });
        assert!(more.is_some(), "the load keeps running");
    }
    let report = load.finish();
    assert!(
        report.failures.is_empty(),
        "{} of {} failed: {:?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.sent > 800, "only {} requests", report.sent);

    let before = scene.counts();
    let tally = http1::send_all(gateway.address(), 8, 1_000, |_| get(ORDERS));
    assert_clean(&tally, 1_000);
    let after = scene.counts();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1_000, 0),
        "100/0 in force"
    );
}

// ---------------------------------------------------------------------------------
// 10. Client-sent routing headers and the override

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A request (path, headers) and the backend that must answer it.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn clients_cannot_choose_a_target_and_only_the_override_role_can_force_one() {
    let auth = json!({
        "api_keys": {"header": "x-api-key", "keys": [
            {"sha256": sha256_hex("tester-key"), "consumer": "qa", "tier": "pro", "roles": ["tester"]},
            {"sha256": sha256_hex("user-key"), "consumer": "bob", "tier": "pro", "roles": ["user"]},
        ]},
        "rules": [{"name": "all", "path": {"prefix": "/"}, "access": "authenticated"}],
    });
    let mut routing = config(vec![orders(100, 0)]);
    routing["override"] = json!({"header": FORCE, "roles": ["tester"]});
    let scene = scene(vec![
        audit(),
        FilterSpec::new("auth", paths::module("auth"), &auth.to_string()),
        traffic(&routing),
    ]);
    let gateway = &scene.gateway;
    let user = ("x-api-key", "user-key");
    let tester = ("x-api-key", "tester-key");

    let cases: Vec<Case> = vec![
        (ORDERS, vec![user, (TARGET, "orders-v2")], "monolith"),
        (
            ORDERS,
            vec![user, (TARGET, "orders-v2"), (MIRROR, "1")],
            "monolith",
        ),
        (ORDERS, vec![user, (MIRROR, "1")], "monolith"),
        // A path no traffic route matches: Envoy's default for /api/ unless the
        // client's header were left in place.
        (
            "/api/v1/invoices/1",
            vec![user, (TARGET, "orders-v2"), (MIRROR, "1")],
            "monolith",
        ),
        (
            "/api/v1/invoices/1",
            vec![tester, (TARGET, "orders-v2")],
            "monolith",
        ),
        // The override header without the role, or the role without the header.
        (ORDERS, vec![user, (FORCE, "orders-v2")], "monolith"),
        (ORDERS, vec![tester], "monolith"),
        (ORDERS, vec![tester, (TARGET, "orders-v2")], "monolith"),
    ];
    for (path, headers, backend) in &cases {
        // Four connections, so both workers are likely to see each case.
        for answer in send_each(
            gateway.address(),
            4,
            &vec![RawRequest::get(path, headers); 4],
        ) {
            assert_eq!(backend_of(&answer), *backend, "{path} {headers:?}");
            let seen = seen_headers(&answer);
            assert!(seen.get(FORCE).is_none(), "{path} {headers:?}: {seen}");
            assert!(seen.get(MIRROR).is_none(), "{path} {headers:?}: {seen}");
            if path.starts_with("/api/v1/orders") {
                assert_eq!(seen[TARGET], "monolith", "{path} {headers:?}: {seen}");
            } else {
                assert!(seen.get(TARGET).is_none(), "{path} {headers:?}: {seen}");
            }
        }
    }
    std::thread::sleep(TICK_GRACE);
    assert_eq!(
        scene.v2.requests(),
        0,
        "no request nor copy reached orders-v2"
    );

    // The role with the header forces the target; the header does not reach it.
    let mut connection = scene.connection();
    let forced = connection
        .get(ORDERS, &[tester, (FORCE, "orders-v2")])
        .unwrap();
    assert_eq!(backend_of(&forced), "orders-v2", "{forced:?}");
    let seen = seen_headers(&forced);
    assert!(seen.get(FORCE).is_none(), "{seen}");
    assert_eq!(seen[TARGET], "orders-v2", "{seen}");
    let id = forced.header("x-correlation-id").unwrap();
    let record = &gateway.records_for(id, 1)[0];
    assert_eq!(record["traffic_target"], "orders-v2", "{record}");
    assert_eq!(record["consumer"], "qa", "{record}");
    let forced_back = connection
        .get(ORDERS, &[tester, (FORCE, "monolith")])
        .unwrap();
    assert_eq!(backend_of(&forced_back), "monolith");
    assert_eq!(scene.v2.requests(), 1);
}

// ---------------------------------------------------------------------------------
// 11. Bad configurations

#[test]
fn bad_configurations_are_refused_and_the_running_filter_keeps_routing() {
    let good = config(vec![orders(0, 100)]);
    let scene = scene(vec![traffic(&good)]);
    let gateway = &scene.gateway;
    let answers = send_each(gateway.address(), 4, &vec![get(ORDERS); 20]);
    assert_eq!(
        by_backend(&answers),
        BTreeMap::from([("orders-v2".into(), 20)])
    );
    let refusals = || {
        gateway
            .log()
            .matches("traffic configuration refused")
            .count()
    };

    let scheduled = |steps: Value| config(vec![with(orders(0, 100), json!({"schedule": steps}))]);
    let gate = |stable: &str| {
        config(vec![with(
            orders(0, 100),
            json!({"health_gate": {"stable": stable, "window_seconds": 10, "min_requests": 20,
                   "max_error_percent": 20, "cooldown_seconds": 60}}),
        )])
    };
    let step = |at: &str, monolith: u64, v2: u64| json!({"at": at, "weights": {"monolith": monolith, "orders-v2": v2}});
    let bad: Vec<(&str, Value)> = vec![
        ("weights summing to 95", config(vec![orders(90, 5)])),
        ("weights summing to 105", config(vec![orders(90, 15)])),
        (
            "a negative weight",
            config(vec![json!({
                "name": "orders",
                "match": {"path": {"prefix": "/api/v1/orders"}},
                "targets": [{"name": "monolith", "weight": -5}, {"name": "orders-v2", "weight": 105}],
            })]),
        ),
        (
            "an unknown target in a schedule step",
            scheduled(
                json!([{"at": "2030-01-01T00:00:00Z", "weights": {"monolith": 50, "canary": 50}}]),
            ),
        ),
        (
            "schedule weights summing to 90",
            scheduled(json!([step("2030-01-01T00:00:00Z", 50, 40)])),
        ),
        (
            "two schedule steps at the same time",
            scheduled(json!([
                step("2030-01-01T00:00:00Z", 50, 50),
                step("2030-01-01T00:00:00Z", 25, 75),
            ])),
        ),
        (
            "schedule steps out of order",
            scheduled(json!([
                step("2031-01-01T00:00:00Z", 50, 50),
                step("2030-01-01T00:00:00Z", 25, 75),
            ])),
        ),
        (
            "a schedule time that is not RFC 3339",
            scheduled(json!([step("tomorrow", 50, 50)])),
        ),
        ("an unknown stable target", gate("canary")),
        (
            "an unknown mirror target",
            config(vec![with(
                orders(0, 100),
                json!({"mirror": {"percent": 10, "target": "canary"}}),
            )]),
        ),
        ("an unknown top-level field", {
            let mut config = good.clone();
            config["colour"] = json!("red");
            config
        }),
        (
            "an unknown route field",
            config(vec![with(orders(0, 100), json!({"priority": 1}))]),
        ),
        (
            "an unknown target field",
            config(vec![with_target(
                orders(0, 100),
                "monolith",
                json!({"zone": "a"}),
            )]),
        ),
        ("no name", json!({"routes": [orders(0, 100)]})),
        (
            "an upper-case name",
            json!({"name": "Shop", "routes": [orders(0, 100)]}),
        ),
        ("no routes", config(vec![])),
        (
            "two routes of one name",
            config(vec![orders(0, 100), orders(100, 0)]),
        ),
        (
            "two targets of one name",
            config(vec![json!({
                "name": "orders",
                "match": {"path": {"prefix": "/api/v1/orders"}},
                "targets": [{"name": "monolith", "weight": 50}, {"name": "monolith", "weight": 50}],
            })]),
        ),
        ("not JSON", json!("{\"name\": ")),
    ];
    for (why, config) in bad {
        let (before, refused_before) = (gateway.stat(REJECTED).unwrap(), refusals());
        let spec = match &config {
            Value::String(text) => FilterSpec::new("traffic", paths::module("traffic"), text),
            config => traffic(config),
        };
        ecds::install(gateway.ecds_dir(), &spec).unwrap();
        let refused = wait_for(Duration::from_secs(20), || {
            (gateway.stat(REJECTED).ok()? > before).then_some(())
        });
        assert!(
            refused.is_some(),
            "{why}: not refused ({config}):\n{}",
            gateway.log_tail()
        );
        assert!(
            wait_for(Duration::from_secs(5), || (refusals() > refused_before)
                .then_some(()))
            .is_some(),
            "{why}: refused by the filter's own check:\n{}",
            gateway.log_tail()
        );
    }

    // The running filter still routes by the good configuration, on both workers.
    let workers_before = worker_connections(gateway);
    let answers = send_each(gateway.address(), PROBE_CONNECTIONS, &vec![get(ORDERS); 64]);
    assert_on_both_workers(gateway, &workers_before);
    assert_eq!(
        by_backend(&answers),
        BTreeMap::from([("orders-v2".into(), 64)])
    );
}
