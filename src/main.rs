//! The `seglog` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Huge allocations are lazy mappings (see the module for why: a Kafka
/// request must not be able to abort the process).
#[global_allocator]
static ALLOCATOR: seglog::lazy_alloc::LazyHuge = seglog::lazy_alloc::LazyHuge;

/// A persistent segmented log server for Maelstrom's kafka workload.
///
/// With no subcommand, seglog runs a Maelstrom node: JSON messages on
/// stdin/stdout, logs on stderr.
#[derive(Parser)]
#[command(name = "seglog", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: seglog::node::NodeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Dump and verify segment files offline, without changing them.
    Inspect(seglog::inspect::InspectArgs),
    /// Serve topics, produce, fetch and consumer group offsets over HTTP.
    Serve(Box<seglog::serve::ServeArgs>),
    /// Create, list, describe and delete topics of a running server.
    Topic {
        #[command(subcommand)]
        command: seglog::cli::topic::TopicCommand,
        #[command(flatten)]
        connection: seglog::cli::Connection,
    },
    /// Produce lines of stdin as records to a running server, in batches.
    Produce {
        #[command(flatten)]
        args: seglog::cli::produce::ProduceArgs,
        #[command(flatten)]
        connection: seglog::cli::Connection,
    },
    /// Print a topic's records from a running server, to its end or as they come.
    Consume {
        #[command(flatten)]
        args: seglog::cli::consume::ConsumeArgs,
        #[command(flatten)]
        connection: seglog::cli::Connection,
    },
    /// List and describe consumer groups of a running server, and move their offsets.
    Group {
        #[command(subcommand)]
        command: seglog::cli::group::GroupCommand,
        #[command(flatten)]
        connection: seglog::cli::Connection,
    },
    /// Add, remove and list the users of a users file (`serve --users`).
    Users(seglog::auth::command::UsersArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Inspect(args)) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let result = seglog::inspect::run(&args, &mut out)
                .and_then(|ok| std::io::Write::flush(&mut out).map(|()| ok));
            match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                // `seglog inspect ... | head`: the reader left, nothing is wrong.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("seglog inspect: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Serve(args)) => match seglog::serve::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("seglog serve: {e}");
                ExitCode::from(1)
            }
        },
        Some(Command::Topic {
            command,
            connection,
        }) => seglog::cli::run(seglog::cli::Command::Topic(command), &connection),
        Some(Command::Produce { args, connection }) => {
            seglog::cli::run(seglog::cli::Command::Produce(args), &connection)
        }
        Some(Command::Consume { args, connection }) => {
            seglog::cli::run(seglog::cli::Command::Consume(args), &connection)
        }
        Some(Command::Group {
            command,
            connection,
        }) => seglog::cli::run(seglog::cli::Command::Group(command), &connection),
        Some(Command::Users(args)) => {
            let mut stdin = std::io::stdin().lock();
            let mut stdout = std::io::stdout().lock();
            match seglog::auth::command::run(args, &mut stdin, &mut stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("seglog users: {e}");
                    ExitCode::from(1)
                }
            }
        }
        None => match seglog::node::run(&cli.node) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("seglog: {e}");
                ExitCode::from(1)
            }
        },
    }
}
