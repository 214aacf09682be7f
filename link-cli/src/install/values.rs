//! The charts' values, in Rust: the defaults are the charts' own `values.yaml` (embedded),
//! `--ha` overlays their `values-ha.yaml`, and `--set key=value` follows Helm's rules for the
//! subset the charts need (dotted keys with `\.` and `\,` escapes, comma-separated pairs,
//! `true`/`false`/`null`/integers typed, everything else a string). The merged tree is then
//! read into typed structs that refuse unknown keys and check what `values.schema.json`
//! checks, so a value `helm install` refuses is refused here too.

use super::InstallError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One of the two charts: where its values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chart {
    ControlPlane,
    Multicluster,
}

impl Chart {
    pub fn name(self) -> &'static str {
        match self {
            Chart::ControlPlane => "strait-control-plane",
            Chart::Multicluster => "strait-multicluster",
        }
    }

    fn defaults_yaml(self) -> &'static str {
        match self {
            Chart::ControlPlane => include_str!("../../../charts/strait-control-plane/values.yaml"),
            Chart::Multicluster => include_str!("../../../charts/strait-multicluster/values.yaml"),
        }
    }

    fn ha_yaml(self) -> &'static str {
        match self {
            Chart::ControlPlane => {
                include_str!("../../../charts/strait-control-plane/values-ha.yaml")
            }
            Chart::Multicluster => {
                include_str!("../../../charts/strait-multicluster/values-ha.yaml")
            }
        }
    }

    /// Keys below which any name is allowed (free-form maps).
    fn free_maps(self) -> &'static [&'static str] {
        match self {
            Chart::ControlPlane => &[],
            Chart::Multicluster => &["gateway.service.annotations"],
        }
    }
}

fn parse_yaml(yaml: &str, what: &str) -> Result<Value, InstallError> {
    serde_saphyr::from_str(yaml).map_err(|e| InstallError::EmbeddedValues {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The chart's defaults, with `values-ha.yaml` over them when `ha`.
pub fn defaults(chart: Chart, ha: bool) -> Result<Value, InstallError> {
    let mut v = parse_yaml(chart.defaults_yaml(), "values.yaml")?;
    if ha {
        merge(&mut v, parse_yaml(chart.ha_yaml(), "values-ha.yaml")?);
    }
    Ok(v)
}

/// Deep merge as Helm does for values files: maps merge, anything else replaces.
pub fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Splits `a=1,b\,c=2` on unescaped commas, keeping escapes for [`split_key`].
fn split_pairs(arg: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let last = out.last_mut().expect("never empty");
                match chars.next() {
                    Some(',') => last.push(','),
                    Some(n) => {
                        last.push('\\');
                        last.push(n);
                    }
                    None => last.push('\\'),
                }
            }
            ',' => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    out
}

/// `gateway.service.annotations.a\.b/c` → `["gateway", "service", "annotations", "a.b/c"]`.
fn split_key(key: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out.last_mut().expect("never empty").push(n),
                None => out.last_mut().expect("never empty").push('\\'),
            },
            '.' => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    out
}

/// Helm's typing of a `--set` value.
fn typed(v: &str) -> Value {
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => {
            let digits = v.strip_prefix('-').unwrap_or(v);
            let plain_int = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            match v.parse::<i64>() {
                Ok(n) if plain_int => Value::from(n),
                _ => Value::String(v.to_string()),
            }
        }
    }
}

/// Applies one `--set` argument (one or more comma-separated `key=value` pairs).
pub fn apply_set(chart: Chart, values: &mut Value, arg: &str) -> Result<(), InstallError> {
    apply(chart, values, arg, typed)
}

/// Applies one `--set-string` argument: every value stays a string.
pub fn apply_set_string(chart: Chart, values: &mut Value, arg: &str) -> Result<(), InstallError> {
    apply(chart, values, arg, |v| Value::String(v.to_string()))
}

fn apply(
    chart: Chart,
    values: &mut Value,
    arg: &str,
    typed: fn(&str) -> Value,
) -> Result<(), InstallError> {
    for pair in split_pairs(arg) {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(InstallError::Set {
                arg: arg.to_string(),
                reason: format!("{pair:?} is not key=value"),
            });
        };
        let path = split_key(key);
        if path.iter().any(|p| p.is_empty() || p.contains('[')) {
            return Err(InstallError::Set {
                arg: arg.to_string(),
                reason: format!("{key:?} is not a dotted key (lists are not supported)"),
            });
        }
        check_known(chart, values, &path)?;
        set_path(values, &path, typed(raw));
    }
    Ok(())
}

/// Sets a string by path, as `--set-file` does.
pub fn set_string(values: &mut Value, dotted: &str, v: String) {
    set_value(values, dotted, Value::String(v));
}

/// Sets a value by a dotted path (no escapes).
pub fn set_value(values: &mut Value, dotted: &str, v: Value) {
    let path: Vec<String> = dotted.split('.').map(str::to_string).collect();
    set_path(values, &path, v);
}

fn set_path(values: &mut Value, path: &[String], v: Value) {
    let mut node = values;
    for (i, p) in path.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            return;
        };
        if i + 1 == path.len() {
            if v.is_null() {
                map.remove(p);
            } else {
                map.insert(p.clone(), v);
            }
            return;
        }
        node = map
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// A key must exist in the defaults, unless it is below a free-form map.
fn check_known(chart: Chart, defaults: &Value, path: &[String]) -> Result<(), InstallError> {
    let dotted = path.join(".");
    if chart
        .free_maps()
        .iter()
        .any(|m| dotted.starts_with(&format!("{m}.")))
    {
        return Ok(());
    }
    let mut node = defaults;
    for (i, p) in path.iter().enumerate() {
        match node.get(p) {
            Some(next) => node = next,
            None if i > 0
                && path[..i]
                    .last()
                    .is_some_and(|l| l == "requests" || l == "limits") =>
            {
                // resources.{requests,limits}.<name>: typed checking names cpu/memory.
                return Ok(());
            }
            None => {
                let known = node
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                return Err(InstallError::UnknownKey {
                    chart: chart.name(),
                    key: dotted,
                    known,
                });
            }
        }
    }
    Ok(())
}

/// Reads the merged tree into typed values, with the checks of `values.schema.json`.
pub fn typed_values<T: for<'de> Deserialize<'de> + Check>(
    chart: Chart,
    values: Value,
) -> Result<T, InstallError> {
    let v: T = serde_json::from_value(values).map_err(|e| InstallError::Values {
        chart: chart.name(),
        reason: e.to_string(),
    })?;
    v.check().map_err(|(key, reason)| InstallError::Invalid {
        chart: chart.name(),
        key,
        reason,
    })?;
    Ok(v)
}

/// What `values.schema.json` checks beyond types: `Err((key, reason))`.
pub trait Check {
    fn check(&self) -> Result<(), (String, String)>;
}

fn fail<T>(key: &str, reason: impl Into<String>) -> Result<T, (String, String)> {
    Err((key.to_string(), reason.into()))
}

pub(crate) fn check_dns_label(key: &str, v: &str) -> Result<(), (String, String)> {
    if strait_core::identity::is_dns_label(v) {
        Ok(())
    } else {
        fail(key, format!("{v:?} is not a DNS label"))
    }
}

pub(crate) fn check_dns_name(key: &str, v: &str) -> Result<(), (String, String)> {
    if !v.is_empty() && v.len() <= 253 && v.split('.').all(strait_core::identity::is_dns_label) {
        Ok(())
    } else {
        fail(key, format!("{v:?} is not a DNS name"))
    }
}

/// Go's duration syntax, as the schema's pattern: `([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+`.
pub(crate) fn check_duration(key: &str, v: &str) -> Result<(), (String, String)> {
    let bad = || {
        fail(
            key,
            format!("{v:?} is not a duration such as 30s, 15m or 24h"),
        )
    };
    let mut rest = v;
    if rest.is_empty() {
        return bad();
    }
    while !rest.is_empty() {
        let int = rest.bytes().take_while(u8::is_ascii_digit).count();
        if int == 0 {
            return bad();
        }
        rest = &rest[int..];
        if let Some(r) = rest.strip_prefix('.') {
            let frac = r.bytes().take_while(u8::is_ascii_digit).count();
            if frac == 0 {
                return bad();
            }
            rest = &r[frac..];
        }
        let Some(unit) = ["ns", "us", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return bad();
        };
        rest = &rest[unit.len()..];
    }
    Ok(())
}

/// The names both charts share: `namespace`, `clusterDomain`, `identity.trustDomain`.
pub(crate) fn check_names(
    namespace: &str,
    cluster_domain: &str,
    trust_domain: &str,
) -> Result<(), (String, String)> {
    check_dns_label("namespace", namespace)?;
    check_dns_name("clusterDomain", cluster_domain)?;
    check_dns_name("identity.trustDomain", trust_domain)
}

pub(crate) fn check_replicas(key: &str, n: u32, max: u32) -> Result<(), (String, String)> {
    if (1..=max).contains(&n) {
        Ok(())
    } else {
        fail(key, format!("{n} is outside 1-{max}"))
    }
}

/// A percentage strictly between 0 and 100.
pub(crate) fn check_percent(key: &str, n: u8) -> Result<(), (String, String)> {
    if (1..=99).contains(&n) {
        Ok(())
    } else {
        fail(key, format!("{n} is outside 1-99"))
    }
}

pub(crate) fn check_port(key: &str, n: u16) -> Result<(), (String, String)> {
    if n == 0 {
        fail(key, "0 is not a port (1-65535)")
    } else {
        Ok(())
    }
}

/// `image.*`, as in both charts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    pub registry: String,
    pub tag: String,
    pub pull_policy: PullPolicy,
}

impl Image {
    /// `<registry>/<name>:<tag>`
    pub fn of(&self, name: &str) -> String {
        format!("{}/{name}:{}", self.registry, self.tag)
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        if self.registry.is_empty() {
            return fail("image.registry", "must not be empty");
        }
        if self.tag.is_empty() {
            return fail("image.tag", "must not be empty");
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub enum PullPolicy {
    IfNotPresent,
    Always,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IfNotPresent => "IfNotPresent",
            Self::Always => "Always",
            Self::Never => "Never",
        }
    }
}

/// `resources`: requests and limits of cpu and memory, passed through as given.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub requests: ResourceList,
    pub limits: ResourceList,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// A quantity as the user wrote it (`100m`, `"1"`, `2`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Quantity {
    Int(i64),
    Str(String),
}

impl Resources {
    pub fn check(&self, key: &str) -> Result<(), (String, String)> {
        for (which, list) in [("requests", &self.requests), ("limits", &self.limits)] {
            for (name, q) in [("cpu", &list.cpu), ("memory", &list.memory)] {
                if let Some(Quantity::Str(s)) = q {
                    let digits = s
                        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                        .to_string();
                    let unit = &s[digits.len()..];
                    let ok_num = !digits.is_empty()
                        && digits.split('.').count() <= 2
                        && digits
                            .split('.')
                            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                    let ok_unit =
                        ["", "m", "k", "Ki", "M", "Mi", "G", "Gi", "T", "Ti"].contains(&unit);
                    if !(ok_num && ok_unit) {
                        return fail(
                            &format!("{key}.{which}.{name}"),
                            format!("{s:?} is not a quantity such as 100m or 64Mi"),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// A free-form string map (annotations).
pub type StringMap = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn set_follows_helm() {
        let mut v = defaults(Chart::Multicluster, false).unwrap();
        apply_set(
            Chart::Multicluster,
            &mut v,
            "gateway.replicas=2,gateway.service.annotations.a\\.b/c=x\\,y",
        )
        .unwrap();
        assert_eq!(v["gateway"]["replicas"], 2);
        assert_eq!(v["gateway"]["service"]["annotations"]["a.b/c"], "x,y");
        apply_set(Chart::Multicluster, &mut v, "image.tag=007").unwrap();
        assert_eq!(v["image"]["tag"], "007");
        apply_set(Chart::Multicluster, &mut v, "remoteAccess.pods=true").unwrap();
        assert_eq!(v["remoteAccess"]["pods"], true);
        let e = apply_set(Chart::Multicluster, &mut v, "gateway.replicaz=2").unwrap_err();
        assert!(e.to_string().contains("replicas"), "{e}");
        assert!(apply_set(Chart::Multicluster, &mut v, "gateway").is_err());
    }

    #[test]
    fn durations() {
        for ok in ["3s", "1h30m", "1.5h", "100ms"] {
            assert!(check_duration("k", ok).is_ok(), "{ok}");
        }
        for bad in ["", "3", "s", "3 s", "1.h", "3d"] {
            assert!(check_duration("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ha_overlays_defaults() {
        let v = defaults(Chart::ControlPlane, true).unwrap();
        assert_eq!(v["controlPlane"]["replicas"], 3);
        assert_eq!(v["image"]["tag"], "dev");
    }
}
