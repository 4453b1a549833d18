//! The `muster` binary: the agent and its command-line client.
//!
//! This is the only crate whose errors are `anyhow` (muster-gossip meets it
//! only in chitchat's `Transport` trait), that builds the tokio runtime, and
//! that knows how the pieces are put together.

mod agent;
mod client;
mod config;
mod register;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::client::{ClientArgs, Outcome};
use crate::config::AgentArgs;

/// muster: a gossip-based directory of containers, served over DNS and gRPC.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an agent: publish this host's records, gossip with the others,
    /// serve the whole directory over DNS and gRPC.
    ///
    /// Example: muster agent --node-name a --static-file records.toml --join 10.0.0.2:7946
    Agent(Box<AgentArgs>),
    /// Show the records with a name (or alias), on every host.
    ///
    /// Example: muster lookup web-1 -o json
    Lookup {
        /// Record name or alias, any case
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List records, optionally those whose labels match a selector, on one
    /// host, in one state.
    ///
    /// Examples: muster ls -l app=web,env=prod;
    /// muster ls -l 'system=billing,role in (batch,cron)' --host a --state running -o wide
    Ls {
        /// Label selector: k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k; comma for AND
        #[arg(short = 'l', long, default_value = "", value_name = "SELECTOR")]
        selector: String,
        /// Only the records of this agent (node name)
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// Only records in this state: running, created, restarting, paused, exited
        #[arg(long, value_name = "STATE", value_parser = client::parse_state)]
        state: Option<muster_core::State>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow the records a selector matches: first every one of them
    /// (`added`), then `synced`, then each change as it happens (`added`,
    /// `updated`, `removed`) until interrupted.
    ///
    /// Resume after a revision with --from-revision and --epoch (both
    /// printed with every event by `-o json`).
    ///
    /// Example: muster watch -l app=web -o json
    Watch {
        /// Label selector, as for `ls`
        #[arg(short = 'l', long, default_value = "", value_name = "SELECTOR")]
        selector: String,
        /// Resume after this revision instead of starting with the full set
        #[arg(long, default_value_t = 0, value_name = "REVISION")]
        from_revision: u64,
        /// The epoch the revision belongs to (the agent's run)
        #[arg(long, default_value_t = 0, value_name = "EPOCH")]
        epoch: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Publish a record from the agent asked, for as long as this command
    /// runs: it sends a keep-alive every third of --ttl, and deregisters on
    /// SIGINT or SIGTERM. With --once it registers and exits, and the
    /// record lapses after --ttl. Names other records already answer to
    /// are reported on stderr.
    ///
    /// Example: muster register mon-1 --ip 10.0.0.9 --label app=mon --port 9100/tcp --ttl 30s
    Register(Box<register::RegisterArgs>),
    /// Show the records that break the naming policy, and names held on
    /// several hosts: rule, record, host, why, since when. Exit code 0 when
    /// there is any, 1 when there is none.
    ///
    /// Examples: muster violations; muster violations --rule duplicate-name -o json;
    /// muster violations --watch
    Violations {
        /// Only violations of this rule (`duplicate-name` for duplicates)
        #[arg(long, default_value = "", value_name = "RULE")]
        rule: String,
        /// Keep printing violations as they start and end, until interrupted
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show every agent of the cluster with its liveness.
    ///
    /// Example: muster members -o json
    Members {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a new gossip key: the base64 of 32 random bytes, one line of a
    /// --gossip-key-file.
    ///
    /// Example: muster keygen > /etc/muster/gossip.key
    Keygen,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("muster: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Agent(args) => {
            init_logging();
            let result = args
                .resolve()
                .and_then(|config| runtime.block_on(agent::run(config)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("muster agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Lookup { name, client } => {
            finish(runtime.block_on(client::lookup(&name, &client)))
        }
        Command::Ls {
            selector,
            host,
            state,
            client,
        } => {
            let filter = client::ListFilter {
                selector,
                host,
                state,
            };
            finish(runtime.block_on(client::list(&filter, &client)))
        }
        Command::Watch {
            selector,
            from_revision,
            epoch,
            client,
        } => finish(runtime.block_on(client::watch(&selector, from_revision, epoch, &client))),
        Command::Register(args) => finish(runtime.block_on(register::run(&args))),
        Command::Violations {
            rule,
            watch,
            client,
        } => finish(runtime.block_on(client::violations(&rule, watch, &client))),
        Command::Members { client } => finish(runtime.block_on(client::members(&client))),
        Command::Keygen => match muster_gossip::generate_key() {
            Ok(key) => {
                println!("{key}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("muster keygen: no random bytes from the operating system: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn finish(result: Result<Outcome, client::ClientError>) -> ExitCode {
    match result {
        Ok(Outcome::Found) => ExitCode::SUCCESS,
        Ok(Outcome::NotFound) => ExitCode::from(1),
        Err(e) => {
            eprintln!("muster: {e}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr; `MUSTER_LOG` (or `RUST_LOG`) filters them.
fn init_logging() {
    let filter = std::env::var("MUSTER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,hickory_server=warn,chitchat=warn".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
