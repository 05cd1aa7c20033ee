//! Transaction operations (RFC 7047 section 5.2), their results, and the monitor
//! request and update types (section 4.1.5/4.1.6).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value as Json};
use uuid::Uuid;

use super::value::{row_from_json, row_to_json, Row, Value};
use super::OvsdbError;

/// A comparison function of a `where` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    Includes,
    Excludes,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// One clause of a `where`: `[column, function, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Value,
}

impl Condition {
    pub fn new(column: impl Into<String>, function: Function, value: impl Into<Value>) -> Self {
        Condition {
            column: column.into(),
            function,
            value: value.into(),
        }
    }

    pub fn eq(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Eq, value)
    }

    pub fn ne(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Ne, value)
    }

    pub fn includes(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Includes, value)
    }

    /// The row whose `_uuid` is `uuid`.
    pub fn uuid(uuid: Uuid) -> Self {
        Self::eq("_uuid", uuid)
    }

    pub fn to_json(&self) -> Json {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// A mutator of a `mutate` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// One mutation: `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Value,
}

impl Mutation {
    pub fn new(column: impl Into<String>, mutator: Mutator, value: impl Into<Value>) -> Self {
        Mutation {
            column: column.into(),
            mutator,
            value: value.into(),
        }
    }

    pub fn to_json(&self) -> Json {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// The `until` of a `wait` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    Equal,
    NotEqual,
}

/// One operation of a `transact` request.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Insert {
        table: String,
        row: Row,
        /// Lets later operations of the same transaction refer to the new row
        /// as `["named-uuid", uuid_name]`.
        uuid_name: Option<String>,
    },
    Update {
        table: String,
        r#where: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        r#where: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        r#where: Vec<Condition>,
    },
    Select {
        table: String,
        r#where: Vec<Condition>,
        /// `None` selects every column.
        columns: Option<Vec<String>>,
    },
    Wait {
        table: String,
        r#where: Vec<Condition>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<Row>,
        /// `None` waits as long as the server allows; `Some(0)` fails at once.
        timeout: Option<Duration>,
    },
    Comment(String),
    /// Makes the transaction fail (useful to test, or to discard a dry run).
    Abort,
}

fn conditions(w: &[Condition]) -> Json {
    Json::Array(w.iter().map(Condition::to_json).collect())
}

impl Operation {
    /// The operation's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Select { .. } => "select",
            Operation::Wait { .. } => "wait",
            Operation::Comment(_) => "comment",
            Operation::Abort => "abort",
        }
    }

    pub fn to_json(&self) -> Json {
        let mut o = Map::new();
        o.insert("op".into(), self.name().into());
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                o.insert("table".into(), table.as_str().into());
                o.insert("row".into(), row_to_json(row));
                if let Some(n) = uuid_name {
                    o.insert("uuid-name".into(), n.as_str().into());
                }
            }
            Operation::Update {
                table,
                r#where,
                row,
            } => {
                o.insert("table".into(), table.as_str().into());
                o.insert("where".into(), conditions(r#where));
                o.insert("row".into(), row_to_json(row));
            }
            Operation::Mutate {
                table,
                r#where,
                mutations,
            } => {
                o.insert("table".into(), table.as_str().into());
                o.insert("where".into(), conditions(r#where));
                o.insert(
                    "mutations".into(),
                    Json::Array(mutations.iter().map(Mutation::to_json).collect()),
                );
            }
            Operation::Delete { table, r#where } => {
                o.insert("table".into(), table.as_str().into());
                o.insert("where".into(), conditions(r#where));
            }
            Operation::Select {
                table,
                r#where,
                columns,
            } => {
                o.insert("table".into(), table.as_str().into());
                o.insert("where".into(), conditions(r#where));
                if let Some(c) = columns {
                    o.insert("columns".into(), json!(c));
                }
            }
            Operation::Wait {
                table,
                r#where,
                columns,
                until,
                rows,
                timeout,
            } => {
                o.insert("table".into(), table.as_str().into());
                o.insert("where".into(), conditions(r#where));
                o.insert("columns".into(), json!(columns));
                let until = match until {
                    WaitUntil::Equal => "==",
                    WaitUntil::NotEqual => "!=",
                };
                o.insert("until".into(), until.into());
                o.insert(
                    "rows".into(),
                    Json::Array(rows.iter().map(row_to_json).collect()),
                );
                if let Some(t) = timeout {
                    o.insert("timeout".into(), json!(t.as_millis() as u64));
                }
            }
            Operation::Comment(c) => {
                o.insert("comment".into(), c.as_str().into());
            }
            Operation::Abort => {}
        }
        Json::Object(o)
    }
}

/// The result of one successful operation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OperationResult {
    /// The new row's uuid, for `insert`.
    pub uuid: Option<Uuid>,
    /// How many rows matched, for `update`, `mutate` and `delete`.
    pub count: Option<u64>,
    /// The selected rows, for `select`.
    pub rows: Option<Vec<Row>>,
}

impl OperationResult {
    pub fn from_json(j: &Json) -> Result<Self, OvsdbError> {
        let mut r = OperationResult::default();
        if j.is_null() {
            return Ok(r);
        }
        if let Some(u) = j.get("uuid") {
            r.uuid = super::value::Atom::from_json(u)?.as_uuid();
        }
        r.count = j.get("count").and_then(Json::as_u64);
        if let Some(rows) = j.get("rows").and_then(Json::as_array) {
            r.rows = Some(rows.iter().map(row_from_json).collect::<Result<_, _>>()?);
        }
        Ok(r)
    }
}

/// Which changes a monitor reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorSelect {
    pub initial: bool,
    pub insert: bool,
    pub delete: bool,
    pub modify: bool,
}

impl Default for MonitorSelect {
    fn default() -> Self {
        MonitorSelect {
            initial: true,
            insert: true,
            delete: true,
            modify: true,
        }
    }
}

/// What to monitor in one table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MonitorRequest {
    /// `None` monitors every column.
    pub columns: Option<Vec<String>>,
    pub select: MonitorSelect,
}

impl MonitorRequest {
    pub fn columns(columns: &[&str]) -> Self {
        MonitorRequest {
            columns: Some(columns.iter().map(|c| c.to_string()).collect()),
            select: MonitorSelect::default(),
        }
    }

    pub fn to_json(&self) -> Json {
        let mut o = Map::new();
        if let Some(c) = &self.columns {
            o.insert("columns".into(), json!(c));
        }
        let s = &self.select;
        o.insert(
            "select".into(),
            json!({"initial": s.initial, "insert": s.insert, "delete": s.delete, "modify": s.modify}),
        );
        Json::Object(o)
    }
}

/// The old and new contents of a changed row (RFC 7047 `<row-update>`): `old`
/// is absent for an insert, `new` for a delete; for a modify `old` holds only
/// the columns that changed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowUpdate {
    pub old: Option<Row>,
    pub new: Option<Row>,
}

/// Table name to row uuid to change.
pub type TableUpdates = BTreeMap<String, BTreeMap<Uuid, RowUpdate>>;

/// Decodes a `<table-updates>` object.
pub fn table_updates_from_json(j: &Json) -> Result<TableUpdates, OvsdbError> {
    let bad = || OvsdbError::Unexpected(format!("malformed table updates {j}"));
    let mut out = TableUpdates::new();
    for (table, rows) in j.as_object().ok_or_else(bad)? {
        let mut t = BTreeMap::new();
        for (uuid, upd) in rows.as_object().ok_or_else(bad)? {
            let uuid = Uuid::parse_str(uuid).map_err(|_| bad())?;
            let old = upd.get("old").map(row_from_json).transpose()?;
            let new = upd.get("new").map(row_from_json).transpose()?;
            t.insert(uuid, RowUpdate { old, new });
        }
        out.insert(table.clone(), t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_encode_as_rfc7047() {
        let mut row = Row::new();
        row.insert("name".into(), "br0".into());
        let ins = Operation::Insert {
            table: "Bridge".into(),
            row,
            uuid_name: Some("b".into()),
        };
        assert_eq!(
            ins.to_json(),
            json!({"op": "insert", "table": "Bridge", "row": {"name": "br0"}, "uuid-name": "b"})
        );
        let m = Operation::Mutate {
            table: "Bridge".into(),
            r#where: vec![Condition::eq("name", "br0")],
            mutations: vec![Mutation::new(
                "external_ids",
                Mutator::Insert,
                Value::string_map(&[("a", "b")]),
            )],
        };
        assert_eq!(
            m.to_json(),
            json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
                   "mutations": [["external_ids", "insert", ["map", [["a", "b"]]]]]})
        );
        let w = Operation::Wait {
            table: "Port".into(),
            r#where: vec![],
            columns: vec!["qos".into()],
            until: WaitUntil::Equal,
            rows: vec![Row::from([("qos".to_string(), Value::empty())])],
            timeout: Some(Duration::ZERO),
        };
        assert_eq!(
            w.to_json(),
            json!({"op": "wait", "table": "Port", "where": [], "columns": ["qos"],
                   "until": "==", "rows": [{"qos": ["set", []]}], "timeout": 0})
        );
        let s = Operation::Select {
            table: "QoS".into(),
            r#where: vec![],
            columns: None,
        };
        assert_eq!(
            s.to_json(),
            json!({"op": "select", "table": "QoS", "where": []})
        );
        assert_eq!(
            Operation::Comment("hi".into()).to_json(),
            json!({"op": "comment", "comment": "hi"})
        );
    }

    #[test]
    fn results_and_updates_decode() {
        let u = "36bb3ad5-3a63-4d76-a3e2-a9a44ac0b4b7";
        let r = OperationResult::from_json(&json!({"uuid": ["uuid", u]})).unwrap();
        assert_eq!(r.uuid.unwrap().to_string(), u);
        let r = OperationResult::from_json(&json!({"count": 2})).unwrap();
        assert_eq!(r.count, Some(2));
        let r = OperationResult::from_json(&json!({"rows": [{"name": "br0"}]})).unwrap();
        assert_eq!(r.rows.unwrap()[0]["name"], Value::string("br0"));
        let t = table_updates_from_json(&json!({"Bridge": {u: {"new": {"name": "br0"}}}})).unwrap();
        let upd = &t["Bridge"][&Uuid::parse_str(u).unwrap()];
        assert!(upd.old.is_none());
        assert_eq!(upd.new.as_ref().unwrap()["name"], Value::string("br0"));
    }
}
