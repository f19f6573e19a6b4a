//! Every structural problem of a configuration at once, against the filter's JSON
//! Schema: unknown fields, wrong types, missing members, values outside an enum or
//! a bound. The filter's own check stops at its first problem; this walk lists the
//! others beside it. It reads the subset of JSON Schema that `gatehouse schema`
//! emits (`$ref` into `$defs`, `type`, `enum`, `const`, `oneOf`/`anyOf`/`allOf`,
//! `properties`, `required`, `additionalProperties`, `items`, `minimum`/`maximum`,
//! `minItems`/`maxItems`); what it does not know it does not judge.

use serde_json::{Map, Value};

/// One problem: the field's path (as the filters write it, `limits[0].key`) and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// The problems of `value` against `schema` (the whole schema, with its `$defs`).
pub fn problems(schema: &Value, value: &Value) -> Vec<Problem> {
    let mut found = Vec::new();
    walk(schema, schema, value, "", &mut found, 0);
    found
}

fn member(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn shown(path: &str) -> String {
    if path.is_empty() {
        "(the configuration)".into()
    } else {
        path.to_string()
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => true,
    }
}

/// Deep enough for every shipped schema; a cycle of `$ref`s cannot loop forever.
const MAX_DEPTH: usize = 64;

fn walk(
    root: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    found: &mut Vec<Problem>,
    depth: usize,
) {
    let Value::Object(rules) = schema else {
        return;
    };
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(Value::String(reference)) = rules.get("$ref") {
        if let Some(target) = resolve(root, reference) {
            walk(root, target, value, path, found, depth + 1);
        }
        return;
    }
    if !admits_type(schema, value) {
        let names = type_names(schema);
        push(
            found,
            path,
            format!("expected {}, found {}", names.join(" or "), kind_of(value)),
        );
        return;
    }
    if let Some(Value::Array(allowed)) = rules.get("enum") {
        if !allowed.contains(value) {
            push(found, path, format!("must be one of {}", list(allowed)));
            return;
        }
    }
    if let Some(constant) = rules.get("const") {
        if constant != value {
            push(found, path, format!("must be {constant}"));
            return;
        }
    }
    for keyword in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = rules.get(keyword) {
            alternatives(root, branches, value, path, found, depth);
        }
    }
    if let Some(Value::Array(all)) = rules.get("allOf") {
        for branch in all {
            walk(root, branch, value, path, found, depth + 1);
        }
    }
    if let Some(number) = value.as_f64() {
        if let Some(minimum) = rules.get("minimum").and_then(Value::as_f64) {
            if number < minimum {
                push(found, path, format!("must be at least {minimum}"));
            }
        }
        if let Some(maximum) = rules.get("maximum").and_then(Value::as_f64) {
            if number > maximum {
                push(found, path, format!("must be at most {maximum}"));
            }
        }
    }
    match value {
        Value::Object(members) => object(root, rules, members, path, found, depth),
        Value::Array(items) => {
            if let Some(least) = rules.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < least {
                    push(found, path, format!("needs at least {least} entries"));
                }
            }
            if let Some(most) = rules.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > most {
                    push(found, path, format!("takes at most {most} entries"));
                }
            }
            if let Some(item) = rules.get("items") {
                for (index, entry) in items.iter().enumerate() {
                    walk(
                        root,
                        item,
                        entry,
                        &format!("{path}[{index}]"),
                        found,
                        depth + 1,
                    );
                }
            }
        }
        _ => {}
    }
}

fn object(
    root: &Value,
    rules: &Map<String, Value>,
    members: &Map<String, Value>,
    path: &str,
    found: &mut Vec<Problem>,
    depth: usize,
) {
    let properties = rules.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = rules.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !members.contains_key(name) {
                found.push(Problem {
                    path: member(path, name),
                    message: "is required".into(),
                });
            }
        }
    }
    for (name, entry) in members {
        let here = member(path, name);
        match properties.and_then(|properties| properties.get(name)) {
            Some(schema) => walk(root, schema, entry, &here, found, depth + 1),
            None => match rules.get("additionalProperties") {
                Some(Value::Bool(false)) => found.push(Problem {
                    path: here,
                    message: match properties {
                        Some(known) => format!(
                            "unknown field (known: {})",
                            known.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                        None => "unknown field".into(),
                    },
                }),
                Some(schema @ Value::Object(_)) => {
                    walk(root, schema, entry, &here, found, depth + 1)
                }
                _ => {}
            },
        }
    }
}

/// A value must fit one of `branches`. When none fits, the problems reported are
/// those of the closest branch (fewest problems), or a list of the allowed
/// values when every branch is a constant.
fn alternatives(
    root: &Value,
    branches: &[Value],
    value: &Value,
    path: &str,
    found: &mut Vec<Problem>,
    depth: usize,
) {
    if let Some(tagged) = tagged_union(root, branches, value, path, depth) {
        found.extend(tagged);
        return;
    }
    // The closest branch: one whose type the value has comes before one it does
    // not (an optional object with problems is judged as an object, not as a
    // wrong null), then the one with the fewest problems.
    let mut best: Option<(bool, Vec<Problem>)> = None;
    for branch in branches {
        let mut branch_found = Vec::new();
        walk(root, branch, value, path, &mut branch_found, depth + 1);
        if branch_found.is_empty() {
            return;
        }
        let wrong_type = !admits_type(deref(root, branch), value);
        let closer = best.as_ref().is_none_or(|(best_wrong, best_found)| {
            (wrong_type, branch_found.len()) < (*best_wrong, best_found.len())
        });
        if closer {
            best = Some((wrong_type, branch_found));
        }
    }
    let best = best.map(|(_, found)| found);
    let constants: Vec<Value> = branches
        .iter()
        .filter_map(|branch| branch.get("const").cloned())
        .collect();
    if !constants.is_empty() && constants.len() == branches.len() {
        push(found, path, format!("must be one of {}", list(&constants)));
    } else if let Some(best) = best {
        found.extend(best);
    }
}

/// A union whose branches are told apart by one member's constant (`"kind":
/// "header"`): the problems of the branch the value names, or the list of the
/// names when it names none. `None` when the branches are not of that shape.
fn tagged_union(
    root: &Value,
    branches: &[Value],
    value: &Value,
    path: &str,
    depth: usize,
) -> Option<Vec<Problem>> {
    let members = value.as_object()?;
    let tag_of = |branch: &Value| -> Option<(String, Value)> {
        deref(root, branch)
            .get("properties")?
            .as_object()?
            .iter()
            .find_map(|(name, rule)| Some((name.clone(), rule.get("const")?.clone())))
    };
    let tags: Vec<(String, Value)> = branches.iter().map(tag_of).collect::<Option<_>>()?;
    let name = tags.first()?.0.clone();
    if tags.iter().any(|(other, _)| *other != name) {
        return None;
    }
    let given = members.get(&name);
    match tags.iter().position(|(_, tag)| Some(tag) == given) {
        Some(index) => {
            let mut found = Vec::new();
            walk(root, &branches[index], value, path, &mut found, depth + 1);
            Some(found)
        }
        None => {
            let allowed: Vec<Value> = tags.into_iter().map(|(_, tag)| tag).collect();
            Some(vec![Problem {
                path: member(path, &name),
                message: match given {
                    Some(_) => format!("must be one of {}", list(&allowed)),
                    None => format!("is required (one of {})", list(&allowed)),
                },
            }])
        }
    }
}

/// The type names a schema's `type` allows (none: any).
fn type_names(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(name)) => vec![name.as_str()],
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether a schema's own `type` admits the value's type; one without admits any.
fn admits_type(schema: &Value, value: &Value) -> bool {
    let names = type_names(schema);
    names.is_empty() || names.iter().any(|name| has_type(value, name))
}

/// A branch, or what its `$ref` points at (itself when the reference is dangling).
fn deref<'a>(root: &'a Value, branch: &'a Value) -> &'a Value {
    branch
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|reference| resolve(root, reference))
        .unwrap_or(branch)
}

fn push(found: &mut Vec<Problem>, path: &str, message: String) {
    found.push(Problem {
        path: shown(path),
        message,
    });
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

fn list(values: &[Value]) -> String {
    values
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ratelimit_schema() -> Value {
        gatehouse_shared::ratelimit::RateLimitSettings::json_schema()
    }

    #[test]
    fn a_valid_configuration_has_no_problems() {
        let config = json!({"name": "edge", "limits": [{"name": "a", "key": {"kind": "client_address"},
            "tiers": {"default": {"requests": 5, "window_seconds": 60}}}]});
        assert_eq!(problems(&ratelimit_schema(), &config), vec![]);
    }

    #[test]
    fn every_structural_problem_is_listed_with_its_path() {
        let config = json!({
            "name": 5,
            "extra": true,
            "on_contention": "maybe",
            "limits": [
                {"name": "a", "key": {"kind": "nope"}, "tiers": {"default": {"requests": "5", "window_seconds": 60}}},
                {"key": {"kind": "client_address"}, "tiers": {}},
            ],
        });
        let found = problems(&ratelimit_schema(), &config);
        let paths: Vec<&str> = found.iter().map(|problem| problem.path.as_str()).collect();
        for expected in [
            "name",
            "extra",
            "on_contention",
            "limits[0].key.kind",
            "limits[0].tiers.default.requests",
            "limits[1].name",
        ] {
            assert!(paths.contains(&expected), "{expected} in {found:#?}");
        }
        let extra = found
            .iter()
            .find(|problem| problem.path == "extra")
            .unwrap();
        assert!(extra.message.starts_with("unknown field"), "{extra:?}");
        let kind = found
            .iter()
            .find(|problem| problem.path == "limits[0].key.kind")
            .unwrap();
        assert!(kind.message.starts_with("must be one of"), "{kind:?}");
        assert!(kind.message.contains(r#""client_address""#), "{kind:?}");
        let contention = found
            .iter()
            .find(|problem| problem.path == "on_contention")
            .unwrap();
        assert_eq!(contention.message, r#"must be one of "allow", "deny""#);
    }

    #[test]
    fn an_optional_object_with_problems_is_judged_as_an_object() {
        let schema = gatehouse_shared::auth::AuthSettings::json_schema();
        let config = json!({"rules": [{"name": "r", "path": {"prefix": "/"}, "access": "public"}],
                            "api_keys": {"header": 5, "kees": []}});
        let found = problems(&schema, &config);
        let paths: Vec<&str> = found.iter().map(|problem| problem.path.as_str()).collect();
        assert!(paths.contains(&"api_keys.kees"), "{found:#?}");
        assert!(paths.contains(&"api_keys.header"), "{found:#?}");
        assert!(
            !found.iter().any(|problem| problem.path == "api_keys"),
            "not a wrong null: {found:#?}"
        );
    }

    #[test]
    fn a_reference_cycle_cannot_loop_forever() {
        let schema = json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}});
        assert_eq!(problems(&schema, &json!(1)), vec![]);
    }
}
