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
    /// Order VMs for migration: JSON on stdin
    /// ({"capacity_bps": C, "vms": [{"name", "non_zero_pages",
    /// "dirty_pages_per_sec", "tx_bps", "rx_bps"}, ...]}), the order and its
    /// reasons as JSON on stdout.
    Plan {
        #[arg(long, value_enum)]
        mode: PlanMode,
        /// Margin, percent of capacity, within which a VM counts as balanced.
        #[arg(long, default_value_t = solive::order::DEFAULT_BALANCE_PCT)]
        balance_pct: f64,
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
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PlanMode {
    Precopy,
    Postcopy,
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
        Cmd::Plan { mode, balance_pct } => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading stdin")?;
            let input: solive::order::PlanInput =
                serde_json::from_str(&input).context("invalid plan input")?;
            let mode = match mode {
                PlanMode::Precopy => solive::order::Mode::Precopy,
                PlanMode::Postcopy => solive::order::Mode::Postcopy,
            };
            let plan = solive::order::plan(&input, mode, balance_pct)?;
            println!("{}", serde_json::to_string_pretty(&plan)?);
            Ok(())
        }
        Cmd::Serve { config } => {
            let config = solive::config::Config::load(&config)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(config))
        }
    }
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
    solive::server::run(config, of, api, shutdown_signal()).await?;
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
