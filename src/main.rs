//! The `solive` command: the controller (`serve`) and operator tools.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "solive",
    version,
    about = "Order-aware, bandwidth-reserving live migration controller"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the controller: OpenFlow listener, OVSDB agents and REST API.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run beside a host's ovsdb-server: when no controller holds the host
    /// (its OVSDB lock), lift solive's queue-mode queues and policing, so
    /// no VM stays throttled by a controller that is gone.
    Watchdog {
        /// The host's ovsdb-server: unix:PATH, tcp:IP:PORT or ssl:IP:PORT.
        #[arg(long)]
        ovsdb: String,
        /// For ssl: targets: a solive configuration whose [tls] to use.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show the hosts of a running solive: connection, datapath, enforcement
    /// mode, and each port's rates.
    Hosts {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the reservations of a running solive.
    Reservations {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Empty a host: solive measures its VMs, orders them and migrates them,
    /// as many at once as `--concurrency` allows, each with its part of the
    /// link's bandwidth reservation. Repeat `--from` to empty several hosts
    /// at once, `--to` to spread the VMs over several destinations (each VM
    /// where there is room).
    Evacuate {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long = "from", required = true)]
        source: Vec<String>,
        #[arg(long = "to", required = true)]
        destination: Vec<String>,
        /// Plan to move the most priority weight within this many seconds.
        #[arg(long)]
        deadline_s: Option<f64>,
        /// Algorithm 1's urgency, percent of the uplink.
        #[arg(long, default_value_t = 50.0)]
        urgency: f64,
        #[arg(long, default_value_t = 10.0)]
        threshold: f64,
        #[arg(long, value_enum, default_value = "precopy")]
        mode: PlanMode,
        /// Only these VMs (repeat the option); default every VM on the source.
        #[arg(long = "vm")]
        vms: Vec<String>,
        /// The order to use instead of solive's (comma-separated names).
        #[arg(long, value_delimiter = ',')]
        order: Vec<String>,
        /// How many migrations at once: `auto` (the feedback controller) or
        /// a number from 1 to 16.
        #[arg(long, default_value = "auto")]
        concurrency: String,
        /// The older name of a pinned `--concurrency`.
        #[arg(long)]
        max_parallel: Option<u32>,
        /// TCP connections per migration (libvirt's parallel migration).
        #[arg(long)]
        parallel_connections: Option<u32>,
        /// The weight of the total time against the mean individual time in
        /// the evacuation's score, 0 to 1.
        #[arg(long, default_value_t = solive::evacuation::metric::DEFAULT_WEIGHT)]
        score_weight: f64,
        /// Migrate without reserving bandwidth (the baseline).
        #[arg(long)]
        no_reserve: bool,
        /// What to do when a pre-copy migration stops converging (`auto`:
        /// post-copy without a deadline, a longer pause with one).
        #[arg(long, value_enum, default_value = "auto")]
        on_stall: OnStallArg,
        /// The longest downtime `--on-stall downtime` may allow, ms.
        #[arg(long, default_value_t = solive::evacuation::request::DEFAULT_MAX_DOWNTIME_MS)]
        max_downtime_ms: u64,
        /// Show each VM's progress until it ends, then a summary table; exit
        /// non-zero unless every VM migrated.
        #[arg(long)]
        watch: bool,
    },
    /// List the evacuations, or show one, or (`--group G`) the evacuations
    /// one request with several sources started, as one.
    Evacuations {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(conflicts_with = "group")]
        id: Option<u64>,
        /// A request's group (its first evacuation's id): every source's
        /// VMs beside the forecast of all sources together.
        #[arg(long)]
        group: Option<u64>,
    },
    /// Cancel a running evacuation (running pre-copy migrations are aborted).
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        id: u64,
    },
    /// Is solive up? Its version, hosts connected and reservations.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Algorithm 1 over a recorded trace: CSV on stdin with header
    /// total_outgoing_bps,outgoing_bps,migration_bps (row 0 before the
    /// migration); prints step,avail_pct,mig_pct,reserve_pct.
    Replay {
        /// Urgency, percent of the uplink capacity.
        #[arg(long)]
        urgency: f64,
        /// Threshold, percent.
        #[arg(long)]
        threshold: f64,
        /// Upper bound of the reservation, percent.
        #[arg(long, default_value_t = solive::reserve::DEFAULT_MAX_RESERVE)]
        max_reserve: f64,
    },
    /// Order VMs for migration and predict the evacuation: JSON on stdin
    /// ({"capacity_bps": C, "vms": [{"name", "non_zero_pages",
    /// "dirty_pages_per_sec", "tx_bps", "rx_bps"}, ...]}, and any of
    /// `POST /v1/plan`'s other fields), the order, its reasons and its
    /// forecast as JSON on stdout.
    Plan {
        #[arg(long, value_enum)]
        mode: PlanMode,
        /// Margin, percent of capacity, within which a VM counts as balanced.
        #[arg(long, default_value_t = solive::order::DEFAULT_BALANCE_PCT)]
        balance_pct: f64,
        /// `predict`: the order the model says ends first (or saves most
        /// by the deadline) instead of the paper's rules.
        #[arg(long, value_enum, default_value = "rules")]
        order: PlanOrder,
        /// Plan to move the most priority weight by this many seconds.
        #[arg(long)]
        deadline_s: Option<f64>,
        /// What the source host can send in all, bit/s (default: C).
        #[arg(long)]
        push_bps: Option<f64>,
        /// Migrations at once.
        #[arg(long)]
        concurrency: Option<u32>,
    },
    /// Scatter-gather through intermediaries' Redis stores (README
    /// "Scatter-gather"): the two relays of a migration stream.
    Scatter {
        #[command(subcommand)]
        cmd: ScatterCmd,
    },
    /// Decode one OpenFlow 1.3 message given as hex (spaces allowed; "-" reads stdin).
    OfpPrint {
        /// The message as hex, possibly split over several arguments.
        #[arg(required = true)]
        hex: Vec<String>,
        /// Print the decoded message as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Draw an evacuation's timeline (each VM's migration, the source
    /// uplink's reserved and used %) as a standalone SVG file.
    Report {
        #[command(flatten)]
        api: ApiArgs,
        id: u64,
        /// Where to write the SVG.
        #[arg(long)]
        out: PathBuf,
    },
    /// Evacuate a whole site in simulated time (README "Simulating a
    /// site"): the same placement, order, Algorithm 1 and concurrency
    /// rules as a real evacuation, on a fluid model of the hosts' links.
    /// Prints a summary; writes the record (JSON) and its timeline (SVG).
    Simulate {
        /// A testbed topology (its guests' model inputs estimated).
        #[arg(long, group = "input")]
        topology: Option<PathBuf>,
        /// A site as JSON: {"name", "hosts": [{"name", "role",
        /// "capacity_bps", ...}], "vms": [{"name", "host", "memory_kib",
        /// "non_zero_pages", "dirty_pages_per_sec", ...}]}.
        #[arg(long, group = "input")]
        site: Option<PathBuf>,
        /// A made-up site: SOURCES:DESTINATIONS:VMS[:SEED].
        #[arg(long, group = "input")]
        generate: Option<solive::simulate::generate::Spec>,
        /// Write the site simulated as JSON (to edit and rerun with --site).
        #[arg(long)]
        write_site: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "precopy")]
        mode: PlanMode,
        #[arg(long, value_enum, default_value = "rules")]
        order: PlanOrder,
        /// Per source: "auto" (the feedback controller) or a number.
        #[arg(long, default_value = "auto")]
        concurrency: String,
        /// No reservation: the migrations compete with the VMs' traffic.
        #[arg(long)]
        no_reserve: bool,
        #[arg(long, default_value_t = 50.0)]
        urgency: f64,
        #[arg(long, default_value_t = 10.0)]
        threshold: f64,
        #[arg(long, value_enum, default_value = "auto")]
        on_stall: OnStallArg,
        #[arg(long, default_value_t = solive::evacuation::request::DEFAULT_MAX_DOWNTIME_MS)]
        max_downtime_ms: u64,
        /// Plan to, and report what made it by, this many seconds.
        #[arg(long)]
        deadline_s: Option<f64>,
        /// With --topology: what each host can send in all, bit/s (the
        /// testbed's TCG guests: about 30e6; default: the link).
        #[arg(long)]
        push_bps: Option<f64>,
        /// Where to write the record (JSON).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Where to write the timeline (SVG, as `solive report` draws).
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Check the migration-time model against finished evacuation records
    /// (JSON files, replayed in the order given, the model learning from
    /// each migration as a running controller would): each migration's
    /// predicted time up front and at its start against the actual, as
    /// CSV on stdout, the median and worst errors on stderr.
    PredictCheck {
        /// The testbed topology the records ran on (its hosts' capacities).
        #[arg(long)]
        topology: PathBuf,
        records: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ScatterCmd {
    /// Source side: read a migration stream (one TCP connection on --listen,
    /// or stdin) and spread it over the stores; prints a JSON report.
    Push {
        #[command(flatten)]
        common: ScatterArgs,
        /// Where the source QEMU connects (libvirt's migration URI points
        /// here); without it the stream is read from stdin (QEMU `exec:`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Chunk size, KiB.
        #[arg(long, default_value_t = 256)]
        chunk_kib: usize,
        /// A pause of the stream this long sends a partial chunk, ms.
        #[arg(long, default_value_t = 20)]
        flush_ms: u64,
        /// How long to wait for the source QEMU to connect, s.
        #[arg(long, default_value_t = 300)]
        accept_secs: u64,
    },
    /// Destination side: gather the stream from the stores, check it and
    /// write it to the destination QEMU (--connect, retried until it
    /// listens) or stdout; prints a JSON report.
    Gather {
        #[command(flatten)]
        common: ScatterArgs,
        #[arg(long)]
        connect: Option<std::net::SocketAddr>,
        /// How long to wait for the push to appear, s.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
        /// How long the next chunk may take before the stream is incomplete, s.
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
    },
}

#[derive(clap::Args)]
struct ScatterArgs {
    /// The VM: names its keyspace on every store.
    #[arg(long)]
    vm: String,
    /// An intermediary's store, `redis://HOST:PORT` (repeat for each).
    #[arg(long = "store", required = true)]
    stores: Vec<String>,
    /// Chunks per pipelined write or read.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Response timeout of a store, s.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
    /// Write the JSON report to this file instead of stdout (stderr when
    /// stdout carries the stream).
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ApiArgs {
    /// The REST API of the solive to ask.
    #[arg(long, env = "SOLIVE_API", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Bearer token, when the API has a tokens_file.
    #[arg(long, env = "SOLIVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA that signed an HTTPS API's certificate (when it is
    /// not a public one).
    #[arg(long, env = "SOLIVE_CA")]
    ca: Option<PathBuf>,
}

impl ApiArgs {
    fn client(self) -> anyhow::Result<solive::client::Client> {
        Ok(match &self.ca {
            Some(path) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                solive::client::Client::with_ca(&self.api, self.token, &pem)?
            }
            None => solive::client::Client::new(&self.api, self.token),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PlanOrder {
    Rules,
    Predict,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PlanMode {
    Precopy,
    Postcopy,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnStallArg {
    Auto,
    Downtime,
    Throttle,
    Postcopy,
    Abort,
    None,
}

impl From<OnStallArg> for solive::evacuation::converge::OnStall {
    fn from(a: OnStallArg) -> Self {
        use solive::evacuation::converge::OnStall;
        match a {
            OnStallArg::Auto => OnStall::Auto,
            OnStallArg::Downtime => OnStall::Downtime,
            OnStallArg::Throttle => OnStall::Throttle,
            OnStallArg::Postcopy => OnStall::Postcopy,
            OnStallArg::Abort => OnStall::Abort,
            OnStallArg::None => OnStall::None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("solive: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::OfpPrint { hex, json } => {
            let mut text = hex.join(" ");
            if text.trim() == "-" {
                text.clear();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading stdin")?;
            }
            let out = solive::openflow::print::ofp_print(&text, json)?;
            println!("{out}");
            Ok(())
        }
        Cmd::Replay {
            urgency,
            threshold,
            max_reserve,
        } => {
            let params = solive::reserve::Params::new(urgency, threshold, max_reserve)?;
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading stdin")?;
            print!("{}", solive::reserve::replay::replay(params, &input)?);
            Ok(())
        }
        Cmd::Plan {
            mode,
            balance_pct,
            order,
            deadline_s,
            push_bps,
            concurrency,
        } => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading stdin")?;
            let mut req: solive::order::PlanRequest =
                serde_json::from_str(&input).context("invalid plan input")?;
            req.mode = match mode {
                PlanMode::Precopy => solive::order::Mode::Precopy,
                PlanMode::Postcopy => solive::order::Mode::Postcopy,
            };
            req.balance_pct = balance_pct;
            if order == PlanOrder::Predict {
                req.order = solive::order::OrderBy::Predict;
            }
            req.deadline_s = deadline_s.or(req.deadline_s);
            req.push_bps = push_bps.or(req.push_bps);
            req.concurrency = concurrency.or(req.concurrency);
            let plan = req.plan()?;
            println!("{}", serde_json::to_string_pretty(&plan)?);
            Ok(())
        }
        Cmd::Hosts { api } => ask(api, |c| async move {
            Ok(solive::client::hosts_table(&c.get("/v1/hosts").await?))
        }),
        Cmd::Reservations { api } => ask(api, |c| async move {
            Ok(solive::client::reservations_table(
                &c.get("/v1/reservations").await?,
            ))
        }),
        Cmd::Status { api } => ask(api, |c| async move {
            let health = c.get("/v1/health").await?;
            let hosts = c.get("/v1/hosts").await?;
            let rs = c.get("/v1/reservations").await?;
            let all = hosts.as_array().map_or(0, Vec::len);
            let up = hosts
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| h["connected"] == true)
                .count();
            Ok(format!(
                "solive {} is up: {up}/{all} hosts connected, {} reservations\n",
                health["version"].as_str().unwrap_or("?"),
                rs.as_array().map_or(0, Vec::len)
            ))
        }),
        Cmd::Evacuate {
            api,
            source,
            destination,
            urgency,
            threshold,
            mode,
            vms,
            order,
            concurrency,
            max_parallel,
            parallel_connections,
            score_weight,
            no_reserve,
            on_stall,
            max_downtime_ms,
            deadline_s,
            watch,
        } => {
            let on_stall = match on_stall {
                OnStallArg::Auto => "auto",
                OnStallArg::Downtime => "downtime",
                OnStallArg::Throttle => "throttle",
                OnStallArg::Postcopy => "postcopy",
                OnStallArg::Abort => "abort",
                OnStallArg::None => "none",
            };
            let mut body = serde_json::json!({
                "urgency": urgency,
                "threshold": threshold, "reserve": !no_reserve, "score_weight": score_weight,
                "mode": match mode { PlanMode::Precopy => "precopy", PlanMode::Postcopy => "postcopy" },
                "on_stall": on_stall, "max_downtime_ms": max_downtime_ms,
            });
            // The server checks the range and names the field.
            match (max_parallel, concurrency.parse::<u64>()) {
                (Some(n), _) => body["max_parallel"] = serde_json::json!(n),
                (None, Ok(n)) => body["concurrency"] = serde_json::json!(n),
                (None, Err(_)) => body["concurrency"] = serde_json::json!(concurrency),
            }
            if let Some(n) = parallel_connections {
                body["parallel_connections"] = serde_json::json!(n);
            }
            // One host: the plain fields; several: the lists.
            match source.as_slice() {
                [one] => body["source"] = serde_json::json!(one),
                many => body["sources"] = serde_json::json!(many),
            }
            match destination.as_slice() {
                [one] => body["destination"] = serde_json::json!(one),
                many => body["destinations"] = serde_json::json!(many),
            }
            if let Some(d) = deadline_s {
                body["deadline_s"] = serde_json::json!(d);
            }
            if !vms.is_empty() {
                body["vms"] = serde_json::json!(vms);
            }
            if !order.is_empty() {
                body["order"] = serde_json::json!(order);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(evacuate(api, body, watch))
        }
        Cmd::Evacuations { api, id, group } => ask(api, |c| async move {
            if let Some(g) = group {
                let r = c.get(&format!("/v1/evacuation-groups/{g}")).await?;
                return Ok(solive::client::group_summary(&r));
            }
            Ok(match id {
                Some(id) => {
                    let r = c.get(&format!("/v1/evacuations/{id}")).await?;
                    solive::client::evacuation_progress(&r)
                        + &solive::client::evacuation_summary(&r)
                }
                None => solive::client::evacuations_table(&c.get("/v1/evacuations").await?),
            })
        }),
        Cmd::Cancel { api, id } => ask(api, |c| async move {
            let r = c.delete(&format!("/v1/evacuations/{id}")).await?;
            Ok(format!(
                "evacuation {id}: {}\n",
                r["state"].as_str().unwrap_or("?")
            ))
        }),
        Cmd::Scatter { cmd } => scatter(cmd),
        Cmd::Serve { config } => {
            let config = solive::config::Config::load(&config)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(config))
        }
        Cmd::Watchdog { ovsdb, config } => {
            let tls = match config {
                Some(path) => match solive::config::Config::load(&path)?.tls {
                    Some(t) => Some(solive::pki::Pki::load(&t)?.client),
                    None => None,
                },
                None => None,
            };
            if ovsdb.starts_with("ssl:") && tls.is_none() {
                anyhow::bail!("--ovsdb {ovsdb} needs --config with a [tls] section");
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(solive::watchdog::run(
                ovsdb,
                tls,
                solive::controller::OVSDB_OWNER,
                shutdown_signal(),
            ));
            Ok(())
        }
        Cmd::PredictCheck { topology, records } => predict_check(&topology, &records),
        Cmd::Simulate {
            topology,
            site,
            generate,
            write_site,
            mode,
            order,
            concurrency,
            no_reserve,
            urgency,
            threshold,
            on_stall,
            max_downtime_ms,
            deadline_s,
            push_bps,
            record,
            svg,
        } => {
            use solive::simulate;
            let site = match (topology, site, generate) {
                (Some(t), _, _) => {
                    simulate::Site::from_topology(&solive::topology::Topology::load(&t)?, push_bps)
                }
                (_, Some(path), _) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a site", path.display()))?
                }
                (_, _, Some(spec)) => simulate::generate::site(&spec),
                _ => anyhow::bail!("give --topology, --site or --generate"),
            };
            if let Some(path) = write_site {
                std::fs::write(&path, serde_json::to_string_pretty(&site)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let concurrency = match concurrency.as_str() {
                "auto" => solive::evacuation::Concurrency::Auto,
                n => solive::evacuation::Concurrency::Fixed(n.parse().with_context(|| {
                    format!("--concurrency must be \"auto\" or a number, not {n:?}")
                })?),
            };
            let opts = simulate::Options {
                mode: match mode {
                    PlanMode::Precopy => solive::order::Mode::Precopy,
                    PlanMode::Postcopy => solive::order::Mode::Postcopy,
                },
                order: match order {
                    PlanOrder::Rules => simulate::OrderChoice::Rules,
                    PlanOrder::Predict => simulate::OrderChoice::Predict,
                },
                concurrency,
                reserve: if no_reserve {
                    None
                } else {
                    Some(solive::reserve::Params::new(
                        urgency,
                        threshold,
                        solive::reserve::DEFAULT_MAX_RESERVE,
                    )?)
                },
                on_stall: on_stall.into(),
                max_downtime_ms,
                deadline_s,
                ..simulate::Options::default()
            };
            let started = std::time::Instant::now();
            let rec = simulate::simulate(&site, &opts)?;
            let wall = started.elapsed().as_secs_f64();
            print!("{}", simulate::summary(&rec, wall));
            if let Some(path) = record {
                std::fs::write(&path, serde_json::to_string_pretty(&rec)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = svg {
                let svg = solive::report::evacuation_svg(&serde_json::to_value(&rec)?)?;
                std::fs::write(&path, svg)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Cmd::Report { api, id, out } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = solive::client::Client::new(&api.api, api.token);
            let record = rt.block_on(client.get(&format!("/v1/evacuations/{id}")))?;
            let svg = solive::report::evacuation_svg(&record)
                .with_context(|| format!("evacuation {id}"))?;
            std::fs::write(&out, svg).with_context(|| format!("writing {}", out.display()))?;
            println!("evacuation {id}: wrote {}", out.display());
            Ok(())
        }
    }
}

fn predict_check(topology: &std::path::Path, records: &[PathBuf]) -> anyhow::Result<()> {
    use solive::evacuation::replay;
    let topo = solive::topology::Topology::load(topology)?;
    let capacity = |name: &str| {
        topo.hosts
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.capacity_mbps as f64 * 1e6)
            .with_context(|| format!("host {name:?} is not in {}", topology.display()))
    };
    let mut learned = solive::predict::learn::Learned::default();
    let mut rows = Vec::new();
    for path in records {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let rec: solive::evacuation::EvacuationRecord = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an evacuation record", path.display()))?;
        let name = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        if let Some(why) = replay::skip_reason(&rec) {
            eprintln!("{name}: skipped ({why})");
            continue;
        }
        let caps = (
            capacity(&rec.request.source)?,
            capacity(&rec.request.destination)?,
        );
        rows.extend(replay::replay(&name, &rec, caps, &mut learned));
    }
    println!("record,vm,position,actual_s,upfront_s,at_start_s,upfront_err_pct,at_start_err_pct");
    let f = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.2}"));
    for r in &rows {
        println!(
            "{},{},{},{:.2},{},{},{},{}",
            r.record,
            r.vm,
            r.position,
            r.actual_s,
            f(r.upfront_s),
            f(r.at_start_s),
            f(r.upfront_err_pct),
            f(r.at_start_err_pct)
        );
    }
    // A prediction that the migration never ends is the worst error there
    // is: it counts, as infinite, not left out.
    for (what, errs) in [
        (
            "up front",
            rows.iter().map(|r| r.upfront_err_pct).collect::<Vec<_>>(),
        ),
        (
            "at start",
            rows.iter().map(|r| r.at_start_err_pct).collect(),
        ),
    ] {
        let never = errs.iter().filter(|e| e.is_none()).count();
        let errs = errs.into_iter().map(|e| e.unwrap_or(f64::INFINITY));
        let pct = |x: f64| match x.is_finite() {
            true => format!("{x:.1}%"),
            false => "never ends".to_string(),
        };
        match replay::summary(errs) {
            Some((n, median, worst)) => eprintln!(
                "{what}: {n} migrations ({never} predicted never to end), median |error| {}, worst {}",
                pct(median),
                pct(worst)
            ),
            None => eprintln!("{what}: no migrations"),
        }
    }
    Ok(())
}

fn scatter(cmd: ScatterCmd) -> anyhow::Result<()> {
    use solive::scatter::{self, GatherConfig, PushConfig};
    use std::time::Duration;
    let rt = tokio::runtime::Runtime::new()?;
    let (report, path, stdout_busy) = match cmd {
        ScatterCmd::Push {
            common,
            listen,
            chunk_kib,
            flush_ms,
            accept_secs,
        } => {
            let mut cfg = PushConfig::new(&common.vm, common.stores);
            cfg.batch = common.batch;
            cfg.chunk_bytes = chunk_kib.saturating_mul(1024);
            cfg.flush = Duration::from_millis(flush_ms);
            cfg.timeout = Duration::from_secs(common.timeout_secs);
            let r = rt.block_on(async {
                match listen {
                    Some(addr) => {
                        let l = tokio::net::TcpListener::bind(addr)
                            .await
                            .with_context(|| format!("binding {addr}"))?;
                        Ok::<_, anyhow::Error>(
                            scatter::push_tcp(&cfg, l, Duration::from_secs(accept_secs)).await?,
                        )
                    }
                    None => Ok(
                        scatter::push(&cfg, tokio::io::stdin(), None::<tokio::io::Sink>).await?,
                    ),
                }
            })?;
            (serde_json::to_string(&r)?, common.report, false)
        }
        ScatterCmd::Gather {
            common,
            connect,
            wait_secs,
            idle_secs,
        } => {
            let mut cfg = GatherConfig::new(&common.vm, common.stores);
            cfg.batch = common.batch;
            cfg.wait = Duration::from_secs(wait_secs);
            cfg.idle = Duration::from_secs(idle_secs);
            cfg.timeout = Duration::from_secs(common.timeout_secs);
            let r = rt.block_on(async {
                match connect {
                    Some(addr) => scatter::gather_tcp(&cfg, addr).await,
                    None => {
                        scatter::gather(&cfg, tokio::io::stdout(), None::<tokio::io::Empty>).await
                    }
                }
            })?;
            (serde_json::to_string(&r)?, common.report, connect.is_none())
        }
    };
    match path {
        Some(p) => {
            std::fs::write(&p, report + "\n").with_context(|| format!("writing {}", p.display()))?
        }
        None if stdout_busy => eprintln!("{report}"),
        None => println!("{report}"),
    }
    Ok(())
}

/// Runs one client request and prints its text.
fn ask<F, Fut>(api: ApiArgs, f: F) -> anyhow::Result<()>
where
    F: FnOnce(solive::client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<String, solive::client::ClientError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = rt.block_on(f(api.client()?))?;
    print!("{text}");
    Ok(())
}

/// `solive evacuate`: starts it, then with `watch` redraws the VMs' progress
/// every second until it ends.
async fn evacuate(api: ApiArgs, body: serde_json::Value, watch: bool) -> anyhow::Result<()> {
    let c = api.client()?;
    let r = c.post("/v1/evacuations", &body).await?;
    // Several sources: one evacuation each, running at once.
    let ids: Vec<u64> = match r["evacuations"].as_array() {
        Some(list) => list.iter().filter_map(|e| e["id"].as_u64()).collect(),
        None => r["id"].as_u64().into_iter().collect(),
    };
    anyhow::ensure!(!ids.is_empty(), "the server's answer has no id");
    let group = r["evacuations"][0]["group"].as_u64();
    let mut failed = Vec::new();
    for &id in &ids {
        if !watch {
            println!("evacuation {id} started: solive evacuations {id}");
        } else if let Err(e) = watch_one(&c, id).await {
            failed.push(e.to_string());
        }
    }
    // Several sources: the request as one, beside the forecast of them all.
    if let Some(g) = group {
        if watch {
            let g = c.get(&format!("/v1/evacuation-groups/{g}")).await?;
            print!("{}", solive::client::group_summary(&g));
        } else {
            println!("all of them: GET /v1/evacuation-groups/{g}");
        }
    }
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(())
}

/// Shows evacuation `id`'s progress until it ends, then its summary; an
/// error unless every VM migrated.
async fn watch_one(c: &solive::client::Client, id: u64) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    // Into a file or pipe: a drawing when a VM changes state, else every 10 s.
    let (mut states, mut printed) = (String::new(), std::time::Instant::now());
    let r = loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let r = c.get(&format!("/v1/evacuations/{id}")).await?;
        let text = solive::client::evacuation_progress(&r);
        if tty {
            if !last.is_empty() {
                // Back over the previous drawing.
                print!("\x1b[{}A\x1b[J", last.lines().count());
            }
            print!("{text}");
        } else {
            let now: String = r["vms"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v["state"].to_string())
                .collect();
            if now != states || printed.elapsed() >= std::time::Duration::from_secs(10) {
                print!("{text}");
                states = now;
                printed = std::time::Instant::now();
            }
        }
        last = text;
        let state = r["state"].as_str().unwrap_or("");
        if ["done", "failed", "cancelled", "interrupted"].contains(&state) {
            break r;
        }
    };
    print!("{}", solive::client::evacuation_summary(&r));
    if r["state"] != "done" {
        anyhow::bail!("evacuation {id} ended {}", r["state"]);
    }
    Ok(())
}

async fn serve(config: solive::config::Config) -> anyhow::Result<()> {
    let of = tokio::net::TcpListener::bind(config.controller.openflow_listen)
        .await
        .with_context(|| {
            format!(
                "binding OpenFlow listener {}",
                config.controller.openflow_listen
            )
        })?;
    let api = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding REST API listener {}", config.api.listen))?;
    tracing::info!(openflow = %of.local_addr()?, api = %api.local_addr()?, hosts = config.hosts.len(), "solive serving");
    if config.cluster.is_some() {
        solive::cluster::replica::run(config, of, api, shutdown_signal()).await?;
    } else {
        solive::server::run(config, of, api, shutdown_signal()).await?;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
