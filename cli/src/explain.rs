//! `gatehouse explain`: a described request through the configured filters, in the
//! documented order (edge limits, auth, tier limits, traffic), with the filters'
//! own decision code, an in-memory store for the counters and a fixed clock.

use gatehouse_shared::auth::{
    decide as auth_decide, AuthSettings, KeyLookup, KeyWait, ProviderKeys, RequestView, TokenCache,
    Verdict,
};
use gatehouse_shared::host::{millis_since_epoch, MemoryStore};
use gatehouse_shared::jwt::{parse_jwks, KeySet};
use gatehouse_shared::ratelimit::decision::LimitOutcome;
use gatehouse_shared::ratelimit::table::create_all;
use gatehouse_shared::ratelimit::{self, LimitResult, RateLimitSettings};
use gatehouse_shared::traffic::{self, Reason, TrafficSettings};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::SystemTime;

/// A ratelimit instance and its counters.
struct Limiter {
    file: String,
    settings: RateLimitSettings,
    store: MemoryStore,
}

struct Setup {
    edge: Vec<Limiter>,
    auth: Option<AuthSettings>,
    tiers: Vec<Limiter>,
    traffic: Option<TrafficSettings>,
    jwks: BTreeMap<String, Rc<KeySet>>,
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    client: IpAddr,
    now_ms: u64,
    requests: u32,
}

fn read(file: &str) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|error| format!("cannot read {file}: {error}"))
}

fn limiter(file: &str) -> Result<Limiter, String> {
    let settings =
        RateLimitSettings::from_json(&read(file)?).map_err(|error| format!("{file}: {error}"))?;
    let mut settings = settings;
    // The same decisions with a smaller table: one client never collides.
    settings.slots = settings.slots.min(1024);
    let store = MemoryStore::default();
    create_all(&store, &settings).map_err(|_| "cannot create a counter table".to_string())?;
    Ok(Limiter {
        file: file.to_string(),
        settings,
        store,
    })
}

fn parse(args: &[String]) -> Result<Setup, String> {
    let mut setup = Setup {
        edge: Vec::new(),
        auth: None,
        tiers: Vec::new(),
        traffic: None,
        jwks: BTreeMap::new(),
        method: "GET".into(),
        path: String::new(),
        headers: Vec::new(),
        client: IpAddr::from([127, 0, 0, 1]),
        now_ms: millis_since_epoch(SystemTime::now()),
        requests: 1,
    };
    let mut api_key = None;
    let mut index = 0;
    while index < args.len() {
        let flag = args[index].as_str();
        let value = args
            .get(index + 1)
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        index += 2;
        match flag {
            "--edge" => setup.edge.push(limiter(&value)?),
            "--ratelimit" => setup.tiers.push(limiter(&value)?),
            "--auth" => {
                setup.auth = Some(
                    AuthSettings::from_json(&read(&value)?)
                        .map_err(|error| format!("{value}: {error}"))?,
                );
            }
            "--traffic" => {
                setup.traffic = Some(
                    TrafficSettings::from_json(&read(&value)?)
                        .map_err(|error| format!("{value}: {error}"))?,
                );
            }
            "--jwks" => {
                let (provider, file) = value.split_once('=').ok_or("--jwks wants PROVIDER=FILE")?;
                let (keys, _) =
                    parse_jwks(&read(file)?).map_err(|error| format!("{file}: {error}"))?;
                setup.jwks.insert(provider.to_string(), Rc::new(keys));
            }
            "--method" => setup.method = value.to_ascii_uppercase(),
            "--path" => setup.path = value,
            "--header" => {
                let (name, text) = value
                    .split_once(':')
                    .ok_or("--header wants 'name: value'")?;
                setup.headers.push((
                    name.trim().to_ascii_lowercase(),
                    text.trim().as_bytes().to_vec(),
                ));
            }
            "--token" => setup.headers.push((
                "authorization".into(),
                format!("Bearer {value}").into_bytes(),
            )),
            "--api-key" => api_key = Some(value),
            "--client" => {
                setup.client = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not an IP address"))?;
            }
            "--at" => {
                let time = humantime_like(&value)?;
                setup.now_ms = time;
            }
            "--requests" => {
                setup.requests = value
                    .parse()
                    .ok()
                    .filter(|count| (1..=100_000).contains(count))
                    .ok_or("--requests wants a number from 1 to 100000")?;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if setup.path.is_empty() {
        return Err("--path is required".into());
    }
    if let Some(key) = api_key {
        let header = setup
            .auth
            .as_ref()
            .and_then(|auth| auth.api_keys.as_ref())
            .and_then(|keys| keys.header.clone())
            .unwrap_or_else(|| "x-api-key".into());
        setup.headers.push((header, key.into_bytes()));
    }
    Ok(setup)
}

/// An RFC 3339 time in ms since the epoch.
fn humantime_like(text: &str) -> Result<u64, String> {
    gatehouse_shared::time::parse_rfc3339_millis(text)
        .ok_or_else(|| format!("{text:?} is not an RFC 3339 time (2026-12-01T00:00:00Z)"))
}

struct Keys<'a> {
    auth: &'a AuthSettings,
    jwks: &'a BTreeMap<String, Rc<KeySet>>,
}

impl KeyLookup for Keys<'_> {
    fn keys(&self, provider: &str) -> Option<ProviderKeys> {
        if let Some(keys) = self.jwks.get(provider) {
            return Some(ProviderKeys {
                keys: keys.clone(),
                generation: 1,
            });
        }
        let found = self.auth.providers.iter().find(|p| p.name == provider)?;
        found.inline_keys.as_ref().map(|keys| ProviderKeys {
            keys: Rc::new(keys.clone()),
            generation: 1,
        })
    }

    /// Offline there is nothing to fetch: an unknown key is refused.
    fn may_refetch(&self, _provider: &str) -> bool {
        false
    }
}

/// What happened to one request, for the summary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    Forwarded(String),
    Answered(u16, String),
}

fn describe_limits(
    out: &mut String,
    limiter: &Limiter,
    decision: &ratelimit::Decision,
    key_of: &dyn Fn(&LimitOutcome) -> String,
) {
    let settings = &limiter.settings;
    if decision.outcomes.is_empty() {
        let _ = writeln!(
            out,
            "ratelimit {} ({}): no limit applies (no match, or no key on the request)",
            settings.name, limiter.file
        );
        return;
    }
    for outcome in &decision.outcomes {
        let Some(limit) = settings.limits.get(outcome.limit) else {
            continue;
        };
        let verdict = match (outcome.result, outcome.quota) {
            (LimitResult::Allowed, Some(quota)) => format!("admitted, {} left", quota.remaining),
            (LimitResult::Limited, Some(quota)) => format!(
                "429, retry after {} s",
                ratelimit::decision::retry_after_seconds(&quota)
            ),
            (LimitResult::ShadowLimited, _) => "would be 429 (shadow mode: passes)".into(),
            (LimitResult::Contention, _) => "contention".into(),
            _ => "counted".into(),
        };
        let _ = writeln!(
            out,
            "ratelimit {}: limit {} [{}, tier {}: {} per {} s, {:?}] -> {verdict}",
            settings.name,
            limit.name,
            key_of(outcome),
            outcome.tier,
            outcome.rule.requests,
            outcome.rule.window_ms / 1000,
            limit.algorithm,
        );
    }
}

/// The request through a list of ratelimit instances; the refusal, if one refuses.
fn run_limiters(
    limiters: &[Limiter],
    facts: &ratelimit::RequestFacts<'_>,
    who: &str,
    now_ms: u64,
    out: &mut String,
) -> Option<Fate> {
    for limiter in limiters {
        let decision = ratelimit::decide(&limiter.settings, facts, &limiter.store, 1, now_ms);
        describe_limits(out, limiter, &decision, &|_| format!("key {who}"));
        if let Some(refused) = decision.refused.and_then(|i| decision.outcomes.get(i)) {
            let name = limiter
                .settings
                .limits
                .get(refused.limit)
                .map(|l| l.name.clone());
            return Some(Fate::Answered(
                429,
                format!("by limit {}", name.unwrap_or_default()),
            ));
        }
    }
    None
}

fn one_request(setup: &Setup, cache: &mut TokenCache, index: u32, out: &mut String) -> Fate {
    let now_ms = setup.now_ms;
    let detail = index == 0;
    let mut scratch = String::new();
    let out_ref: &mut String = if detail { out } else { &mut scratch };

    let facts = ratelimit::RequestFacts {
        method: &setup.method,
        path: &setup.path,
        client: Some(setup.client),
        consumer: None,
        tier: None,
        claims: None,
        headers: &setup.headers,
    };
    let client = setup.client.to_string();
    if let Some(fate) = run_limiters(&setup.edge, &facts, &client, now_ms, out_ref) {
        return fate;
    }

    let mut consumer = None;
    let mut tier = None;
    let mut roles: Vec<String> = Vec::new();
    let mut claims = BTreeMap::new();
    if let Some(auth) = &setup.auth {
        let keys = Keys {
            auth,
            jwks: &setup.jwks,
        };
        let request = RequestView {
            method: &setup.method,
            path: &setup.path,
            headers: &setup.headers,
        };
        let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let verdict = auth_decide(auth, request, &keys, cache, now_s, KeyWait::Keys);
        match verdict {
            Verdict::Allow { rule, identity, .. } => match &identity {
                Some(identity) => {
                    let _ = writeln!(
                        out_ref,
                        "auth: rule {rule} -> allowed: consumer {}, tier {}, roles [{}]",
                        identity.consumer,
                        identity.tier.as_deref().unwrap_or("-"),
                        identity.roles.join(", ")
                    );
                    consumer = Some(identity.consumer.clone());
                    tier = identity.tier.clone();
                    roles = identity.roles.clone();
                }
                None => {
                    let _ = writeln!(out_ref, "auth: rule {rule} -> allowed, anonymous");
                }
            },
            Verdict::ShadowDeny {
                rule,
                denial,
                identity,
                ..
            } => {
                let _ = writeln!(
                    out_ref,
                    "auth: rule {} -> would be {} {} (shadow mode: passes)",
                    rule.as_deref().unwrap_or("(none)"),
                    denial.status,
                    denial.reason
                );
                if let Some(identity) = identity {
                    consumer = Some(identity.consumer);
                    tier = identity.tier;
                    roles = identity.roles;
                    claims = identity.claims;
                }
            }
            Verdict::Deny { rule, denial } => {
                let _ = writeln!(
                    out_ref,
                    "auth: rule {} -> {} {} ({})",
                    rule.as_deref()
                        .unwrap_or("(none: unmatched requests are denied)"),
                    denial.status,
                    denial.error,
                    denial.reason
                );
                return Fate::Answered(denial.status, format!("by auth ({})", denial.reason));
            }
            Verdict::WaitForKeys { provider } | Verdict::RefetchKeys { provider } => {
                let _ = writeln!(
                    out_ref,
                    "auth: the token is for provider {provider}, whose keys are fetched at run time; \
                     pass --jwks {provider}=FILE to check it here"
                );
                return Fate::Answered(0, format!("undecided: keys of {provider}"));
            }
        }
    }

    let facts = ratelimit::RequestFacts {
        method: &setup.method,
        path: &setup.path,
        client: Some(setup.client),
        consumer: consumer.as_deref(),
        tier: tier.as_deref(),
        claims: Some(&claims),
        headers: &setup.headers,
    };
    let who = consumer.clone().unwrap_or_else(|| setup.client.to_string());
    if let Some(fate) = run_limiters(&setup.tiers, &facts, &who, now_ms, out_ref) {
        return fate;
    }

    let mut backend = "the route's backend".to_string();
    if let Some(traffic) = &setup.traffic {
        let facts = traffic::RequestFacts {
            method: &setup.method,
            path: &setup.path,
            headers: &setup.headers,
            consumer: consumer.as_deref(),
            roles: &roles,
            client: Some(setup.client),
        };
        let never = |_: usize, _: usize| false;
        let random = gatehouse_shared::traffic::select::stable_hash(&index.to_le_bytes());
        match traffic::choose(traffic, &facts, now_ms, &never, random) {
            Some(choice) => {
                let route = traffic.routes.get(choice.route);
                let target = route.and_then(|route| route.targets.get(choice.target));
                let weights = route
                    .map(|route| route.weights_at(now_ms))
                    .unwrap_or_default();
                let why = match choice.reason {
                    Reason::Sticky => "sticky key",
                    Reason::Random => "random (no sticky key)",
                    Reason::Override => "override header",
                    Reason::Rollback => "rolled back",
                };
                let name = target.map(|target| target.name.clone()).unwrap_or_default();
                let _ = writeln!(
                    out_ref,
                    "traffic {}: route {} (weights {:?}) -> target {name} by {why}{}{}",
                    traffic.name,
                    route.map(|route| route.name.as_str()).unwrap_or(""),
                    weights,
                    choice
                        .path
                        .as_ref()
                        .map(|path| format!(", path rewritten to {path}"))
                        .unwrap_or_default(),
                    if choice.mirror { ", mirrored" } else { "" },
                );
                backend = format!("target {name}");
            }
            None => {
                let _ = writeln!(out_ref, "traffic {}: no route matches", traffic.name);
            }
        }
    }
    Fate::Forwarded(backend)
}

/// Runs the explanation and returns the report.
pub fn run(args: &[String]) -> Result<String, String> {
    let setup = parse(args)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} from {} at {}",
        setup.method,
        setup.path,
        setup.client,
        gatehouse_shared::time::rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(setup.now_ms)
        )
    );
    let mut cache = TokenCache::new(16);
    let mut fates: Vec<Fate> = Vec::new();
    for index in 0..setup.requests {
        fates.push(one_request(&setup, &mut cache, index, &mut out));
    }
    let describe = |fate: &Fate| match fate {
        Fate::Forwarded(backend) => format!("forwarded to {backend}"),
        Fate::Answered(0, why) => why.clone(),
        Fate::Answered(status, why) => format!("answered {status} {why}"),
    };
    if setup.requests == 1 {
        let _ = writeln!(
            out,
            "=> {}",
            fates.first().map(describe).unwrap_or_default()
        );
    } else {
        // Runs of the same fate, in order, or a count per fate when they alternate.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut start = 0;
        for index in 1..=fates.len() {
            if index == fates.len() || fates[index] != fates[start] {
                runs.push((start, index));
                start = index;
            }
        }
        if runs.len() <= 6 {
            for (first, end) in runs {
                let _ = writeln!(
                    out,
                    "  requests {}-{end}: {}",
                    first + 1,
                    describe(&fates[first])
                );
            }
        } else {
            let mut counts: BTreeMap<&Fate, usize> = BTreeMap::new();
            for fate in &fates {
                *counts.entry(fate).or_default() += 1;
            }
            for (fate, count) in counts {
                let _ = writeln!(out, "  {count} of {}: {}", fates.len(), describe(fate));
            }
        }
    }
    Ok(out)
}
