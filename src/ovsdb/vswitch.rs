//! Typed helpers for the Open_vSwitch schema: bridges and their controllers,
//! interfaces (with the `external_ids` libvirt writes), ingress policing, and
//! `linux-htb` QoS with queues.
//!
//! OVS never removes QoS and Queue rows that nothing references, so every such
//! row solive creates carries `external_ids:solive-owner=<owner>`, and the
//! helpers here delete the rows they replace; [`cleanup_owned`] removes whatever
//! an owner left behind.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use uuid::Uuid;

use super::ops::{Condition, Mutation, Mutator, Operation, WaitUntil};
use super::value::{Atom, Row, Value};
use super::{Client, OvsdbError, VSWITCH_DB};

/// The `external_ids` key that marks the QoS and Queue rows solive created.
pub const OWNER_KEY: &str = "solive-owner";

/// A bridge as solive sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bridge {
    pub uuid: Uuid,
    pub name: String,
    /// The OpenFlow datapath id, once ovs-vswitchd has set it.
    pub datapath_id: Option<u64>,
    /// `""` (the system default), `system` or `netdev`.
    pub datapath_type: String,
    /// The targets of the bridge's Controller rows, sorted.
    pub controllers: Vec<String>,
    pub fail_mode: Option<String>,
    pub protocols: Vec<String>,
    /// The names of the bridge's ports, sorted.
    pub ports: Vec<String>,
}

/// An interface of a bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub uuid: Uuid,
    pub name: String,
    /// The name of the port the interface belongs to.
    pub port: String,
    /// `""` (a system interface), `internal`, `tap`, `patch`, ...
    pub kind: String,
    /// The OpenFlow port number; `-1` if OVS could not add the interface.
    pub ofport: Option<i64>,
    pub mac_in_use: Option<String>,
    /// For a VM's interface, libvirt writes `iface-id`, `vm-id`, `attached-mac`
    /// and `iface-status`.
    pub external_ids: BTreeMap<String, String>,
    /// kbit/s; 0 means no policing.
    pub ingress_policing_rate: i64,
    /// kbit.
    pub ingress_policing_burst: i64,
}

/// One queue of an HTB QoS. Rates are bit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct QueueConfig {
    pub min_rate: Option<u64>,
    pub max_rate: Option<u64>,
    pub priority: Option<u32>,
    /// `other_config:burst`, bits: what the queue may send at once after
    /// idling. OVS's default is about one MTU, which holds a queue under
    /// its `max-rate` on a host whose timers are coarse.
    pub burst: Option<u64>,
}

/// A QoS row created by solive.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedQos {
    pub uuid: Uuid,
    pub owner: String,
    pub kind: String,
    /// The ports whose `qos` points at this row.
    pub ports: Vec<String>,
    /// `other_config:max-rate`, bit/s.
    pub max_rate: Option<u64>,
    /// Queue id to Queue row.
    pub queues: BTreeMap<u32, Uuid>,
}

fn s(v: &str) -> String {
    v.to_string()
}

fn select(table: &str, r#where: Vec<Condition>, columns: &[&str]) -> Operation {
    Operation::Select {
        table: s(table),
        r#where,
        columns: Some(columns.iter().map(|c| s(c)).collect()),
    }
}

fn col<'a>(row: &'a Row, name: &str) -> Result<&'a Value, OvsdbError> {
    row.get(name)
        .ok_or_else(|| OvsdbError::Unexpected(format!("a row without column {name}")))
}

fn uuid_of(row: &Row) -> Result<Uuid, OvsdbError> {
    col(row, "_uuid")?
        .as_optional()
        .and_then(Atom::as_uuid)
        .ok_or_else(|| OvsdbError::Unexpected(s("a row whose _uuid is not a uuid")))
}

fn str_of(row: &Row, name: &str) -> Result<String, OvsdbError> {
    Ok(col(row, name)?
        .as_optional()
        .and_then(Atom::as_str)
        .unwrap_or_default()
        .to_string())
}

fn opt_str(row: &Row, name: &str) -> Result<Option<String>, OvsdbError> {
    Ok(col(row, name)?
        .as_optional()
        .and_then(Atom::as_str)
        .map(str::to_string))
}

fn int_of(row: &Row, name: &str) -> Result<Option<i64>, OvsdbError> {
    Ok(col(row, name)?.as_optional().and_then(Atom::as_i64))
}

/// Runs a transaction of selects and returns each one's rows.
async fn selects(client: &Client, ops: Vec<Operation>) -> Result<Vec<Vec<Row>>, OvsdbError> {
    let results = client.transact(VSWITCH_DB, ops).await?;
    Ok(results
        .into_iter()
        .map(|r| r.rows.unwrap_or_default())
        .collect())
}

/// Runs a transaction whose operation `index` must have matched a row.
async fn transact_on(
    client: &Client,
    ops: Vec<Operation>,
    index: usize,
    kind: &'static str,
    name: &str,
) -> Result<(), OvsdbError> {
    let results = client.transact(VSWITCH_DB, ops).await?;
    if results.get(index).and_then(|r| r.count) == Some(0) {
        return Err(OvsdbError::NotFound {
            kind,
            name: s(name),
        });
    }
    Ok(())
}

/// The bridge named `name`, or `None`.
pub async fn bridge(client: &Client, name: &str) -> Result<Option<Bridge>, OvsdbError> {
    let mut r = selects(
        client,
        vec![
            select(
                "Bridge",
                vec![Condition::eq("name", name)],
                &[
                    "_uuid",
                    "name",
                    "datapath_id",
                    "datapath_type",
                    "controller",
                    "fail_mode",
                    "protocols",
                    "ports",
                ],
            ),
            select("Controller", vec![], &["_uuid", "target"]),
            select("Port", vec![], &["_uuid", "name"]),
        ],
    )
    .await?;
    let ports: HashMap<Uuid, String> = r[2]
        .iter()
        .map(|p| Ok((uuid_of(p)?, str_of(p, "name")?)))
        .collect::<Result<_, OvsdbError>>()?;
    let ctrls: HashMap<Uuid, String> = r[1]
        .iter()
        .map(|c| Ok((uuid_of(c)?, str_of(c, "target")?)))
        .collect::<Result<_, OvsdbError>>()?;
    let Some(b) = r[0].pop() else { return Ok(None) };
    let mut controllers: Vec<String> = col(&b, "controller")?
        .as_uuids()
        .iter()
        .filter_map(|u| ctrls.get(u).cloned())
        .collect();
    controllers.sort();
    let mut port_names: Vec<String> = col(&b, "ports")?
        .as_uuids()
        .iter()
        .filter_map(|u| ports.get(u).cloned())
        .collect();
    port_names.sort();
    let datapath_id = opt_str(&b, "datapath_id")?.and_then(|h| u64::from_str_radix(&h, 16).ok());
    Ok(Some(Bridge {
        uuid: uuid_of(&b)?,
        name: str_of(&b, "name")?,
        datapath_id,
        datapath_type: str_of(&b, "datapath_type")?,
        controllers,
        fail_mode: opt_str(&b, "fail_mode")?,
        protocols: col(&b, "protocols")?.as_strings(),
        ports: port_names,
    }))
}

async fn update_bridge(client: &Client, name: &str, row: Row) -> Result<(), OvsdbError> {
    let op = Operation::Update {
        table: s("Bridge"),
        r#where: vec![Condition::eq("name", name)],
        row,
    };
    transact_on(client, vec![op], 0, "bridge", name).await
}

/// Makes `targets` (e.g. `tcp:127.0.0.1:6653`) the bridge's only controllers.
/// The replaced Controller rows go away with their last reference.
pub async fn set_controller(
    client: &Client,
    bridge: &str,
    targets: &[&str],
) -> Result<(), OvsdbError> {
    let mut ops = Vec::new();
    let mut refs = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let name = format!("ctrl{i}");
        ops.push(Operation::Insert {
            table: s("Controller"),
            row: Row::from([(s("target"), Value::string(*t))]),
            uuid_name: Some(name.clone()),
        });
        refs.push(Atom::NamedUuid(name));
    }
    let index = ops.len();
    ops.push(Operation::Update {
        table: s("Bridge"),
        r#where: vec![Condition::eq("name", bridge)],
        row: Row::from([(s("controller"), Value::Set(refs))]),
    });
    transact_on(client, ops, index, "bridge", bridge).await
}

/// Sets `fail_mode` to `secure` or `standalone`.
pub async fn set_fail_mode(client: &Client, bridge: &str, mode: &str) -> Result<(), OvsdbError> {
    update_bridge(
        client,
        bridge,
        Row::from([(s("fail_mode"), Value::string(mode))]),
    )
    .await
}

/// Sets the OpenFlow versions the bridge speaks, e.g. `["OpenFlow13"]`.
pub async fn set_protocols(
    client: &Client,
    bridge: &str,
    protocols: &[&str],
) -> Result<(), OvsdbError> {
    update_bridge(
        client,
        bridge,
        Row::from([(s("protocols"), Value::string_set(protocols))]),
    )
    .await
}

/// Sets `datapath_type` (`netdev` for the userspace datapath).
pub async fn set_datapath_type(
    client: &Client,
    bridge: &str,
    datapath_type: &str,
) -> Result<(), OvsdbError> {
    update_bridge(
        client,
        bridge,
        Row::from([(s("datapath_type"), Value::string(datapath_type))]),
    )
    .await
}

fn interface_from_row(row: &Row, port: String) -> Result<Interface, OvsdbError> {
    Ok(Interface {
        uuid: uuid_of(row)?,
        name: str_of(row, "name")?,
        port,
        kind: str_of(row, "type")?,
        ofport: int_of(row, "ofport")?,
        mac_in_use: opt_str(row, "mac_in_use")?,
        external_ids: col(row, "external_ids")?.as_string_map(),
        ingress_policing_rate: int_of(row, "ingress_policing_rate")?.unwrap_or(0),
        ingress_policing_burst: int_of(row, "ingress_policing_burst")?.unwrap_or(0),
    })
}

const IFACE_COLUMNS: &[&str] = &[
    "_uuid",
    "name",
    "type",
    "ofport",
    "mac_in_use",
    "external_ids",
    "ingress_policing_rate",
    "ingress_policing_burst",
];

/// Every interface of `bridge`, sorted by name.
pub async fn interfaces(client: &Client, bridge: &str) -> Result<Vec<Interface>, OvsdbError> {
    let r = selects(
        client,
        vec![
            select("Bridge", vec![Condition::eq("name", bridge)], &["ports"]),
            select("Port", vec![], &["_uuid", "name", "interfaces"]),
            select("Interface", vec![], IFACE_COLUMNS),
        ],
    )
    .await?;
    let Some(b) = r[0].first() else {
        return Err(OvsdbError::NotFound {
            kind: "bridge",
            name: s(bridge),
        });
    };
    let bridge_ports = col(b, "ports")?.as_uuids();
    let mut port_of: HashMap<Uuid, String> = HashMap::new();
    for p in &r[1] {
        if bridge_ports.contains(&uuid_of(p)?) {
            for i in col(p, "interfaces")?.as_uuids() {
                port_of.insert(i, str_of(p, "name")?);
            }
        }
    }
    let mut out = Vec::new();
    for i in &r[2] {
        if let Some(port) = port_of.get(&uuid_of(i)?) {
            out.push(interface_from_row(i, port.clone())?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The interface named `name`, whichever bridge it is on.
pub async fn interface(client: &Client, name: &str) -> Result<Option<Interface>, OvsdbError> {
    let mut r = selects(
        client,
        vec![select(
            "Interface",
            vec![Condition::eq("name", name)],
            IFACE_COLUMNS,
        )],
    )
    .await?;
    let Some(row) = r[0].pop() else {
        return Ok(None);
    };
    let port = port_of_uuid(client, uuid_of(&row)?)
        .await?
        .unwrap_or_default();
    interface_from_row(&row, port).map(Some)
}

async fn port_of_uuid(client: &Client, iface: Uuid) -> Result<Option<String>, OvsdbError> {
    let r = selects(
        client,
        vec![select(
            "Port",
            vec![Condition::includes(
                "interfaces",
                Value::Set(vec![Atom::Uuid(iface)]),
            )],
            &["name"],
        )],
    )
    .await?;
    r[0].first().map(|p| str_of(p, "name")).transpose()
}

/// The name of the port interface `iface` belongs to.
pub async fn port_of_interface(client: &Client, iface: &str) -> Result<Option<String>, OvsdbError> {
    let r = selects(
        client,
        vec![select(
            "Interface",
            vec![Condition::eq("name", iface)],
            &["_uuid"],
        )],
    )
    .await?;
    match r[0].first() {
        None => Ok(None),
        Some(row) => port_of_uuid(client, uuid_of(row)?).await,
    }
}

/// Polls until OVS has given `iface` an OpenFlow port number and returns it.
pub async fn wait_for_ofport(
    client: &Client,
    iface: &str,
    timeout: Duration,
) -> Result<i64, OvsdbError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(i) = interface(client, iface).await? {
            match i.ofport {
                Some(p) if p > 0 => return Ok(p),
                Some(-1) => {
                    return Err(OvsdbError::Unexpected(format!(
                        "ofport -1 for interface {iface} (OVS could not add it)"
                    )))
                }
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(OvsdbError::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polices traffic the interface receives from its VM at `rate_kbps` kbit/s with
/// a burst of `burst_kb` kbit; a rate of 0 turns policing off.
pub async fn set_ingress_policing(
    client: &Client,
    iface: &str,
    rate_kbps: u32,
    burst_kb: u32,
) -> Result<(), OvsdbError> {
    let op = Operation::Update {
        table: s("Interface"),
        r#where: vec![Condition::eq("name", iface)],
        row: Row::from([
            (s("ingress_policing_rate"), Value::integer(rate_kbps.into())),
            (s("ingress_policing_burst"), Value::integer(burst_kb.into())),
        ]),
    };
    transact_on(client, vec![op], 0, "interface", iface).await
}

/// The `external_ids` key that marks an interface whose ingress policing
/// solive set (policing has no row of its own to tag).
pub const POLICING_OWNER_KEY: &str = "solive-policing-owner";

/// Sets ingress policing on an interface on behalf of `owner` and tags the
/// interface with `external_ids:solive-policing-owner=<owner>`, so that
/// [`cleanup_owned`] can find and undo it after a crash. A rate of 0 removes
/// the policing and the tag.
pub async fn set_owned_policing(
    client: &Client,
    iface: &str,
    rate_kbps: u32,
    burst_kb: u32,
    owner: &str,
) -> Result<(), OvsdbError> {
    let tag = if rate_kbps > 0 {
        Mutation::new(
            "external_ids",
            Mutator::Insert,
            Value::string_map(&[(POLICING_OWNER_KEY, owner)]),
        )
    } else {
        Mutation::new(
            "external_ids",
            Mutator::Delete,
            Value::string_set(&[POLICING_OWNER_KEY]),
        )
    };
    let ops = vec![
        Operation::Update {
            table: s("Interface"),
            r#where: vec![Condition::eq("name", iface)],
            row: Row::from([
                (s("ingress_policing_rate"), Value::integer(rate_kbps.into())),
                (s("ingress_policing_burst"), Value::integer(burst_kb.into())),
            ]),
        },
        Operation::Mutate {
            table: s("Interface"),
            r#where: vec![Condition::eq("name", iface)],
            mutations: vec![tag],
        },
    ];
    transact_on(client, ops, 0, "interface", iface).await
}

fn owner_tag(owner: &str) -> Value {
    Value::string_map(&[(OWNER_KEY, owner)])
}

/// The port's current `qos` (empty or one uuid) and, if it points at a QoS row
/// of `owner`, that row and its queues that `owner` also owns.
struct PortQos {
    current: Value,
    owned_old: Option<(Uuid, Vec<Uuid>)>,
}

async fn port_qos(client: &Client, port: &str, owner: &str) -> Result<PortQos, OvsdbError> {
    let tag = || vec![Condition::includes("external_ids", owner_tag(owner))];
    let r = selects(
        client,
        vec![
            select("Port", vec![Condition::eq("name", port)], &["qos"]),
            select("QoS", tag(), &["_uuid", "queues"]),
            select("Queue", tag(), &["_uuid"]),
        ],
    )
    .await?;
    let Some(p) = r[0].first() else {
        return Err(OvsdbError::NotFound {
            kind: "port",
            name: s(port),
        });
    };
    let current = col(p, "qos")?.clone();
    let owned_queues: Vec<Uuid> = r[2].iter().map(uuid_of).collect::<Result<_, _>>()?;
    let mut owned_old = None;
    if let Some(old) = current.as_uuids().first() {
        for q in &r[1] {
            if uuid_of(q)? == *old {
                let queues = col(q, "queues")?
                    .as_map()
                    .iter()
                    .filter_map(|(_, v)| v.as_uuid())
                    .filter(|u| owned_queues.contains(u))
                    .collect();
                owned_old = Some((*old, queues));
            }
        }
    }
    Ok(PortQos { current, owned_old })
}

/// Guards a read-modify-write: the transaction fails if `Port.qos` changed
/// since it was read.
fn port_qos_unchanged(port: &str, current: &Value) -> Operation {
    Operation::Wait {
        table: s("Port"),
        r#where: vec![Condition::eq("name", port)],
        columns: vec![s("qos")],
        until: WaitUntil::Equal,
        rows: vec![Row::from([(s("qos"), current.clone())])],
        timeout: Some(Duration::ZERO),
    }
}

/// Deletes a solive-owned QoS row and its solive-owned queues.
fn delete_owned(ops: &mut Vec<Operation>, qos: Uuid, queues: &[Uuid]) {
    ops.push(Operation::Delete {
        table: s("QoS"),
        r#where: vec![Condition::uuid(qos)],
    });
    for q in queues {
        ops.push(Operation::Delete {
            table: s("Queue"),
            r#where: vec![Condition::uuid(*q)],
        });
    }
}

/// Gives `port` a `linux-htb` QoS shaping it to `max_rate_bps` with `queues`,
/// all in one transaction: inserts the Queue rows and the QoS row tagged
/// `solive-owner=<owner>`, points `Port.qos` at it, and deletes the QoS and
/// Queue rows of `owner` that the port had before. Fails (with nothing
/// changed) if `Port.qos` changed between our read and the transaction. Returns the new QoS
/// row's uuid.
pub async fn set_htb_qos(
    client: &Client,
    port: &str,
    max_rate_bps: u64,
    queues: &[(u32, QueueConfig)],
    owner: &str,
) -> Result<Uuid, OvsdbError> {
    let before = port_qos(client, port, owner).await?;
    let mut ops = vec![port_qos_unchanged(port, &before.current)];
    let mut queue_map = Vec::new();
    for (id, cfg) in queues {
        let mut other = Vec::new();
        if let Some(r) = cfg.min_rate {
            other.push(("min-rate", r.to_string()));
        }
        if let Some(r) = cfg.max_rate {
            other.push(("max-rate", r.to_string()));
        }
        if let Some(p) = cfg.priority {
            other.push(("priority", p.to_string()));
        }
        if let Some(b) = cfg.burst {
            other.push(("burst", b.to_string()));
        }
        let name = format!("queue{id}");
        ops.push(Operation::Insert {
            table: s("Queue"),
            row: Row::from([
                (s("other_config"), Value::string_map(&other)),
                (s("external_ids"), owner_tag(owner)),
            ]),
            uuid_name: Some(name.clone()),
        });
        queue_map.push((Atom::Integer((*id).into()), Atom::NamedUuid(name)));
    }
    let qos_index = ops.len();
    ops.push(Operation::Insert {
        table: s("QoS"),
        row: Row::from([
            (s("type"), Value::string("linux-htb")),
            (
                s("other_config"),
                Value::string_map(&[("max-rate", max_rate_bps.to_string())]),
            ),
            (s("queues"), Value::Map(queue_map)),
            (s("external_ids"), owner_tag(owner)),
        ]),
        uuid_name: Some(s("qos")),
    });
    ops.push(Operation::Update {
        table: s("Port"),
        r#where: vec![Condition::eq("name", port)],
        row: Row::from([(s("qos"), Value::named_uuid("qos"))]),
    });
    if let Some((old, old_queues)) = &before.owned_old {
        delete_owned(&mut ops, *old, old_queues);
    }
    let results = client.transact(VSWITCH_DB, ops).await?;
    results
        .get(qos_index)
        .and_then(|r| r.uuid)
        .ok_or_else(|| OvsdbError::Unexpected(s("an insert result without a uuid")))
}

/// Removes the port's QoS; if `owner` owned it, deletes it and its queues.
pub async fn clear_qos(client: &Client, port: &str, owner: &str) -> Result<(), OvsdbError> {
    let before = port_qos(client, port, owner).await?;
    let mut ops = vec![
        port_qos_unchanged(port, &before.current),
        Operation::Update {
            table: s("Port"),
            r#where: vec![Condition::eq("name", port)],
            row: Row::from([(s("qos"), Value::empty())]),
        },
    ];
    if let Some((old, old_queues)) = &before.owned_old {
        delete_owned(&mut ops, *old, old_queues);
    }
    client.transact(VSWITCH_DB, ops).await.map(|_| ())
}

/// Every QoS row tagged with `owner`, with the ports that use it.
pub async fn owned_qos(client: &Client, owner: &str) -> Result<Vec<OwnedQos>, OvsdbError> {
    let r = selects(
        client,
        vec![
            select(
                "QoS",
                vec![Condition::includes("external_ids", owner_tag(owner))],
                &["_uuid", "type", "other_config", "queues", "external_ids"],
            ),
            select("Port", vec![], &["name", "qos"]),
        ],
    )
    .await?;
    let mut out = Vec::new();
    for q in &r[0] {
        let uuid = uuid_of(q)?;
        let mut ports = Vec::new();
        for p in &r[1] {
            if col(p, "qos")?.as_uuids().contains(&uuid) {
                ports.push(str_of(p, "name")?);
            }
        }
        ports.sort();
        let queues = col(q, "queues")?
            .as_map()
            .iter()
            .filter_map(|(k, v)| Some((u32::try_from(k.as_i64()?).ok()?, v.as_uuid()?)))
            .collect();
        out.push(OwnedQos {
            uuid,
            owner: s(owner),
            kind: str_of(q, "type")?,
            ports,
            max_rate: col(q, "other_config")?
                .as_string_map()
                .get("max-rate")
                .and_then(|r| r.parse().ok()),
            queues,
        });
    }
    Ok(out)
}

/// Removes every QoS and Queue row tagged with `owner`, first clearing the
/// `Port.qos` references to those QoS rows and removing those queues from
/// QoS rows that are not ours, and undoes the ingress policing `owner` set
/// (see [`set_owned_policing`]). Returns how many QoS/Queue rows were deleted.
pub async fn cleanup_owned(client: &Client, owner: &str) -> Result<u64, OvsdbError> {
    let tag = || vec![Condition::includes("external_ids", owner_tag(owner))];
    let r = selects(
        client,
        vec![
            select("QoS", tag(), &["_uuid"]),
            select("Queue", tag(), &["_uuid"]),
            select("Port", vec![], &["_uuid", "qos"]),
            select("QoS", vec![], &["_uuid", "queues", "external_ids"]),
        ],
    )
    .await?;
    let qos: Vec<Uuid> = r[0].iter().map(uuid_of).collect::<Result<_, _>>()?;
    let queues: Vec<Uuid> = r[1].iter().map(uuid_of).collect::<Result<_, _>>()?;
    let mut ops = Vec::new();
    for p in &r[2] {
        if col(p, "qos")?.as_uuids().iter().any(|u| qos.contains(u)) {
            ops.push(Operation::Update {
                table: s("Port"),
                r#where: vec![Condition::uuid(uuid_of(p)?)],
                row: Row::from([(s("qos"), Value::empty())]),
            });
        }
    }
    for q in &r[3] {
        let id = uuid_of(q)?;
        if qos.contains(&id) {
            continue;
        }
        let foreign: Vec<(Atom, Atom)> = col(q, "queues")?
            .as_map()
            .iter()
            .filter(|(_, v)| v.as_uuid().is_some_and(|u| queues.contains(&u)))
            .cloned()
            .collect();
        if !foreign.is_empty() {
            ops.push(Operation::Mutate {
                table: s("QoS"),
                r#where: vec![Condition::uuid(id)],
                mutations: vec![Mutation::new(
                    "queues",
                    Mutator::Delete,
                    Value::Map(foreign),
                )],
            });
        }
    }
    // Policing solive set: back to none, tag removed.
    let policed = vec![Condition::includes(
        "external_ids",
        Value::string_map(&[(POLICING_OWNER_KEY, owner)]),
    )];
    ops.push(Operation::Update {
        table: s("Interface"),
        r#where: policed.clone(),
        row: Row::from([
            (s("ingress_policing_rate"), Value::integer(0)),
            (s("ingress_policing_burst"), Value::integer(0)),
        ]),
    });
    ops.push(Operation::Mutate {
        table: s("Interface"),
        r#where: policed,
        mutations: vec![Mutation::new(
            "external_ids",
            Mutator::Delete,
            Value::string_set(&[POLICING_OWNER_KEY]),
        )],
    });
    let first_delete = ops.len();
    ops.push(Operation::Delete {
        table: s("QoS"),
        r#where: tag(),
    });
    ops.push(Operation::Delete {
        table: s("Queue"),
        r#where: tag(),
    });
    let results = client.transact(VSWITCH_DB, ops).await?;
    Ok(results[first_delete..].iter().filter_map(|r| r.count).sum())
}
