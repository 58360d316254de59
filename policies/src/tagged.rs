//! Deserialising enums written as one-entry mappings (`{tenant: acme}`,
//! `{regex: '...'}`). serde_norway reads externally tagged enums only from
//! YAML tags (`!tenant acme`), which people do not write by hand.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::document::{AppliesTo, BuiltinDetector, Matcher};
use crate::names::ScopeName;

const SCOPES: &[&str] = &["tenant", "key", "model", "agent"];
const MATCHERS: &[&str] = &["regex", "keywords", "detector"];

/// Reads the single key of a one-entry mapping, then hands the map over for
/// the value and checks nothing follows.
fn single_key<'de, A: MapAccess<'de>>(
    map: &mut A,
    allowed: &'static [&'static str],
) -> Result<String, A::Error> {
    let Some(key) = map.next_key::<String>()? else {
        return Err(de::Error::custom(format!(
            "expected one entry, one of {}",
            allowed.join(", ")
        )));
    };
    if !allowed.contains(&key.as_str()) {
        return Err(de::Error::unknown_field(&key, allowed));
    }
    Ok(key)
}

fn no_more<'de, A: MapAccess<'de>>(
    map: &mut A,
    first: &str,
    allowed: &'static [&'static str],
) -> Result<(), A::Error> {
    match map.next_key::<String>()? {
        None => Ok(()),
        Some(second) => Err(de::Error::custom(format!(
            "`{second}` given together with `{first}`: give exactly one of {}",
            allowed.join(", ")
        ))),
    }
}

impl<'de> Deserialize<'de> for AppliesTo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AppliesTo;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`default` or one of {tenant: ..}, {key: ..}, {model: ..}, {agent: ..}")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<AppliesTo, E> {
                match s {
                    "default" => Ok(AppliesTo::Default),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AppliesTo, A::Error> {
                let key = single_key(&mut map, SCOPES)?;
                let name: ScopeName = map.next_value()?;
                no_more(&mut map, &key, SCOPES)?;
                Ok(match key.as_str() {
                    "tenant" => AppliesTo::Tenant(name),
                    "key" => AppliesTo::Key(name),
                    "model" => AppliesTo::Model(name),
                    _ => AppliesTo::Agent(name),
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Matcher;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one of {regex: ..}, {keywords: [..]}, {detector: ..}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Matcher, A::Error> {
                let key = single_key(&mut map, MATCHERS)?;
                let m = match key.as_str() {
                    "regex" => Matcher::Regex(map.next_value()?),
                    "keywords" => Matcher::Keywords(map.next_value()?),
                    _ => Matcher::Detector(map.next_value::<BuiltinDetector>()?),
                };
                no_more(&mut map, &key, MATCHERS)?;
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}
