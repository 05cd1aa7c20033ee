//! The OVSDB value model of RFC 7047 section 5.1 and its JSON encoding.
//!
//! ```text
//! <atom>  string | integer | real | boolean | ["uuid", "<uuid>"] | ["named-uuid", "<id>"]
//! <set>   <atom> | ["set", [<atom>, ...]]      (a one-element set may be sent bare)
//! <map>   ["map", [[<atom>, <atom>], ...]]
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value as Json};
use uuid::Uuid;

use super::OvsdbError;

/// One OVSDB atom.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    String(String),
    Integer(i64),
    Real(f64),
    Boolean(bool),
    Uuid(Uuid),
    /// A reference to a row inserted earlier in the same transaction.
    NamedUuid(String),
}

/// An OVSDB column value: an atom, a set or a map.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Atom(Atom),
    Set(Vec<Atom>),
    Map(Vec<(Atom, Atom)>),
}

/// A row: column name to value.
pub type Row = BTreeMap<String, Value>;

impl Atom {
    pub fn to_json(&self) -> Json {
        match self {
            Atom::String(s) => Json::String(s.clone()),
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => Json::Bool(*b),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    pub fn from_json(j: &Json) -> Result<Atom, OvsdbError> {
        match j {
            Json::String(s) => Ok(Atom::String(s.clone())),
            Json::Bool(b) => Ok(Atom::Boolean(*b)),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Atom::Integer(i))
                } else if let Some(f) = n.as_f64() {
                    Ok(Atom::Real(f))
                } else {
                    Err(unexpected("a number out of range", j))
                }
            }
            Json::Array(a) if a.len() == 2 => match (a[0].as_str(), a[1].as_str()) {
                (Some("uuid"), Some(u)) => Uuid::parse_str(u)
                    .map(Atom::Uuid)
                    .map_err(|_| unexpected("an invalid uuid", j)),
                (Some("named-uuid"), Some(n)) => Ok(Atom::NamedUuid(n.to_string())),
                _ => Err(unexpected("an unknown atom", j)),
            },
            _ => Err(unexpected("an unknown atom", j)),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }
}

fn unexpected(what: &str, j: &Json) -> OvsdbError {
    OvsdbError::Unexpected(format!("{what} in {j}"))
}

impl Value {
    /// The empty set, which is how OVSDB spells "no value" for optional columns.
    pub fn empty() -> Value {
        Value::Set(Vec::new())
    }

    pub fn string(s: impl Into<String>) -> Value {
        Value::Atom(Atom::String(s.into()))
    }

    pub fn integer(i: i64) -> Value {
        Value::Atom(Atom::Integer(i))
    }

    pub fn uuid(u: Uuid) -> Value {
        Value::Atom(Atom::Uuid(u))
    }

    pub fn named_uuid(n: impl Into<String>) -> Value {
        Value::Atom(Atom::NamedUuid(n.into()))
    }

    /// A set of strings.
    pub fn string_set<S: AsRef<str>>(items: &[S]) -> Value {
        Value::Set(
            items
                .iter()
                .map(|s| Atom::String(s.as_ref().to_string()))
                .collect(),
        )
    }

    /// A string-to-string map, the type of every `external_ids` and `other_config`.
    pub fn string_map<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        Atom::String(k.as_ref().to_string()),
                        Atom::String(v.as_ref().to_string()),
                    )
                })
                .collect(),
        )
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Atom(a) => a.to_json(),
            Value::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Value::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    pub fn from_json(j: &Json) -> Result<Value, OvsdbError> {
        if let Json::Array(a) = j {
            if a.len() == 2 {
                match (a[0].as_str(), &a[1]) {
                    (Some("set"), Json::Array(items)) => {
                        return items
                            .iter()
                            .map(Atom::from_json)
                            .collect::<Result<_, _>>()
                            .map(Value::Set)
                    }
                    (Some("map"), Json::Array(pairs)) => {
                        return pairs
                            .iter()
                            .map(|p| match p {
                                Json::Array(kv) if kv.len() == 2 => {
                                    Ok((Atom::from_json(&kv[0])?, Atom::from_json(&kv[1])?))
                                }
                                _ => Err(unexpected("a malformed map pair", p)),
                            })
                            .collect::<Result<_, _>>()
                            .map(Value::Map)
                    }
                    _ => {}
                }
            }
        }
        Atom::from_json(j).map(Value::Atom)
    }

    /// The value as a set of atoms; a bare atom is a one-element set.
    pub fn as_set(&self) -> Vec<&Atom> {
        match self {
            Value::Atom(a) => vec![a],
            Value::Set(s) => s.iter().collect(),
            Value::Map(_) => Vec::new(),
        }
    }

    /// The single atom of a value, or `None` for an empty set (an unset optional
    /// column). A set of several atoms also yields `None`.
    pub fn as_optional(&self) -> Option<&Atom> {
        match self {
            Value::Atom(a) => Some(a),
            Value::Set(s) if s.len() == 1 => Some(&s[0]),
            _ => None,
        }
    }

    /// A string-to-string map; an empty set (as some servers send) is an empty map.
    pub fn as_string_map(&self) -> BTreeMap<String, String> {
        match self {
            Value::Map(m) => m
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    pub fn as_map(&self) -> &[(Atom, Atom)] {
        match self {
            Value::Map(m) => m,
            _ => &[],
        }
    }

    /// Every uuid in a set-valued (or single) reference column.
    pub fn as_uuids(&self) -> Vec<Uuid> {
        self.as_set()
            .into_iter()
            .filter_map(Atom::as_uuid)
            .collect()
    }

    /// Every string in a set-valued column.
    pub fn as_strings(&self) -> Vec<String> {
        self.as_set()
            .into_iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect()
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::string(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::string(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::integer(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Atom(Atom::Boolean(b))
    }
}

impl From<Uuid> for Value {
    fn from(u: Uuid) -> Value {
        Value::uuid(u)
    }
}

impl From<Atom> for Value {
    fn from(a: Atom) -> Value {
        Value::Atom(a)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        let j = Json::deserialize(d)?;
        Value::from_json(&j).map_err(serde::de::Error::custom)
    }
}

/// Encodes a row as a JSON object.
pub fn row_to_json(row: &Row) -> Json {
    Json::Object(row.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

/// Decodes a JSON object into a row.
pub fn row_from_json(j: &Json) -> Result<Row, OvsdbError> {
    let obj = j
        .as_object()
        .ok_or_else(|| unexpected("a row that is not an object", j))?;
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), Value::from_json(v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "36bb3ad5-3a63-4d76-a3e2-a9a44ac0b4b7";

    fn roundtrip(v: Value, j: Json) {
        assert_eq!(v.to_json(), j, "encoding of {v:?}");
        assert_eq!(Value::from_json(&j).unwrap(), v, "decoding of {j}");
    }

    #[test]
    fn atoms_encode_and_decode() {
        roundtrip(Value::string("br0"), json!("br0"));
        roundtrip(Value::integer(-7), json!(-7));
        roundtrip(Value::Atom(Atom::Real(1.5)), json!(1.5));
        roundtrip(true.into(), json!(true));
        let u = Uuid::parse_str(U).unwrap();
        roundtrip(Value::uuid(u), json!(["uuid", U]));
        roundtrip(Value::named_uuid("row1"), json!(["named-uuid", "row1"]));
    }

    #[test]
    fn sets_and_maps_encode_and_decode() {
        roundtrip(Value::empty(), json!(["set", []]));
        roundtrip(
            Value::string_set(&["OpenFlow10", "OpenFlow13"]),
            json!(["set", ["OpenFlow10", "OpenFlow13"]]),
        );
        roundtrip(
            Value::string_map(&[("iface-id", "vm1-eth0"), ("vm-id", "x")]),
            json!(["map", [["iface-id", "vm1-eth0"], ["vm-id", "x"]]]),
        );
        let u = Uuid::parse_str(U).unwrap();
        roundtrip(
            Value::Map(vec![(Atom::Integer(1), Atom::Uuid(u))]),
            json!(["map", [[1, ["uuid", U]]]]),
        );
        roundtrip(
            Value::Set(vec![Atom::Uuid(u)]),
            json!(["set", [["uuid", U]]]),
        );
    }

    #[test]
    fn a_bare_atom_reads_as_a_one_element_set() {
        let v = Value::from_json(&json!(["uuid", U])).unwrap();
        assert_eq!(v.as_uuids(), vec![Uuid::parse_str(U).unwrap()]);
        let v = Value::from_json(&json!("OpenFlow13")).unwrap();
        assert_eq!(v.as_strings(), vec!["OpenFlow13".to_string()]);
        assert_eq!(v.as_optional(), Some(&Atom::String("OpenFlow13".into())));
        assert_eq!(Value::empty().as_optional(), None);
        assert!(Value::empty().as_string_map().is_empty());
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        for j in [
            json!(null),
            json!({}),
            json!(["uuid", "not-a-uuid"]),
            json!(["map", [[1]]]),
            json!(["bogus", 1]),
            json!([1, 2, 3]),
        ] {
            assert!(Value::from_json(&j).is_err(), "{j} should not decode");
        }
    }

    #[test]
    fn rows_roundtrip_through_serde() {
        let mut row = Row::new();
        row.insert("name".into(), "br0".into());
        row.insert(
            "other_config".into(),
            Value::string_map(&[("max-rate", "1000")]),
        );
        let text = serde_json::to_string(&row).unwrap();
        let back: Row = serde_json::from_str(&text).unwrap();
        assert_eq!(back, row);
        assert_eq!(row_from_json(&row_to_json(&row)).unwrap(), row);
    }
}
