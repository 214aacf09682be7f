//! Label selectors as kubectl's `-l` takes them (`k=v`, `k!=v`, `k in (a,b)`, `k notin (a)`,
//! `k`, `!k`, comma-separated), turned into the `LabelSelector` a Link stores.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use std::collections::BTreeMap;

/// Why a selector does not parse; the message quotes the offending part.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error(
        "{0:?} is not a requirement (use key=value, key!=value, key in (a,b), key notin (a,b), key or !key)"
    )]
    Requirement(String),
    #[error(
        "{0:?} is not a label key (a DNS subdomain prefix and / are optional; the name is up to 63 of [A-Za-z0-9._-])"
    )]
    Key(String),
    #[error(
        "{0:?} is not a label value (up to 63 of [A-Za-z0-9._-], starting and ending alphanumeric)"
    )]
    Value(String),
    #[error("unbalanced parentheses in {0:?}")]
    Parens(String),
}

/// Parses `s`; an empty string is an empty selector (which a Link treats as "nothing").
pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
    let mut labels = BTreeMap::new();
    let mut exprs = Vec::new();
    for part in split_top_level(s)? {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        if let Some((key, values)) = set_requirement(part, " notin ")? {
            exprs.push(requirement(key, "NotIn", values));
        } else if let Some((key, values)) = set_requirement(part, " in ")? {
            exprs.push(requirement(key, "In", values));
        } else if let Some((k, v)) = part.split_once("!=") {
            exprs.push(requirement(key(k)?, "NotIn", vec![value(v)?]));
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            labels.insert(key(k)?, value(v)?);
        } else if let Some(k) = part.strip_prefix('!') {
            exprs.push(requirement(key(k)?, "DoesNotExist", Vec::new()));
        } else {
            exprs.push(requirement(key(part)?, "Exists", Vec::new()));
        }
    }
    Ok(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    })
}

fn requirement(key: String, operator: &str, values: Vec<String>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key,
        operator: operator.into(),
        values: (!values.is_empty()).then_some(values),
    }
}

/// Commas outside parentheses separate requirements.
fn split_top_level(s: &str) -> Result<Vec<&str>, SelectorError> {
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(SelectorError::Parens(s.into()));
        }
    }
    if depth != 0 {
        return Err(SelectorError::Parens(s.into()));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// `key in (a, b)` / `key notin (a)`, when `part` has that operator.
fn set_requirement(part: &str, op: &str) -> Result<Option<(String, Vec<String>)>, SelectorError> {
    let Some((k, rest)) = part.split_once(op) else {
        return Ok(None);
    };
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Requirement(part.into()))?;
    let values = inner
        .split(',')
        .map(|v| value(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if values.iter().any(String::is_empty) {
        return Err(SelectorError::Requirement(part.into()));
    }
    Ok(Some((key(k)?, values)))
}

fn name_ok(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn key(k: &str) -> Result<String, SelectorError> {
    let k = k.trim();
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty() && p.len() <= 253 && p.split('.').all(strait_core::identity::is_dns_label)
    });
    if name.is_empty() || !name_ok(name) || !prefix_ok {
        return Err(SelectorError::Key(k.into()));
    }
    Ok(k.into())
}

fn value(v: &str) -> Result<String, SelectorError> {
    let v = v.trim();
    if !name_ok(v) {
        return Err(SelectorError::Value(v.into()));
    }
    Ok(v.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        requirement(
            key.into(),
            op,
            values.iter().map(|v| v.to_string()).collect(),
        )
    }

    #[test]
    fn every_form_kubectl_takes() {
        let s = parse("mirror.strait.dev/exported=true, tier in (web, api),env!=dev,canary,!legacy,zone notin (a)").unwrap();
        assert_eq!(
            s.match_labels,
            Some(BTreeMap::from([(
                "mirror.strait.dev/exported".to_string(),
                "true".to_string()
            )]))
        );
        assert_eq!(
            s.match_expressions.unwrap(),
            vec![
                req("tier", "In", &["web", "api"]),
                req("env", "NotIn", &["dev"]),
                req("canary", "Exists", &[]),
                req("legacy", "DoesNotExist", &[]),
                req("zone", "NotIn", &["a"]),
            ]
        );
        assert_eq!(parse("a==b").unwrap().match_labels.unwrap()["a"], "b");
        assert_eq!(parse("").unwrap(), LabelSelector::default());
    }

    #[test]
    fn bad_selectors_name_the_bad_part() {
        for (input, want) in [
            ("a=b,(", SelectorError::Parens("a=b,(".into())),
            (
                "tier in web",
                SelectorError::Requirement("tier in web".into()),
            ),
            (
                "tier in ()",
                SelectorError::Requirement("tier in ()".into()),
            ),
            ("-bad=1", SelectorError::Key("-bad".into())),
            ("a=b c", SelectorError::Value("b c".into())),
            ("Bad_Prefix/x=1", SelectorError::Key("Bad_Prefix/x".into())),
        ] {
            assert_eq!(parse(input), Err(want), "{input}");
        }
    }
}
