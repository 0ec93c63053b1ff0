//! The command-line client: `seglog topic`, `produce`, `consume` and
//! `group` against a running server's HTTP API, like Redpanda's `rpk` or
//! kcat for Kafka. It is a layer of its own above everything else: it
//! talks to the server over HTTP only and imports no server module (only
//! the leaf `table`), so it works against any seglog it can reach.
//!
//! Output is for people by default (aligned tables, one line per record)
//! and for scripts with `--output json`. Results go to stdout; progress
//! lines, summaries of long work and errors go to stderr. The exit code
//! says what happened ([`Failure`]), and every error says what to do.
//!
//! # Layout
//! - this file: the arguments every command shares, the failure kinds and
//!   their exit codes, and the dispatch.
//! - [`client`]: requests to the server, its error replies as failures
//!   with a hint.
//! - [`output`]: tables, JSON, the progress line, sizes and times for people.
//! - [`when`]: the times `--time` takes.
//! - [`topic`], [`produce`], [`consume`], [`group`]: one file per command.

pub mod client;
pub mod consume;
pub mod group;
pub mod output;
pub mod produce;
pub mod topic;
pub mod when;

use std::fmt;
use std::process::ExitCode;

/// Where the server listens unless `--server` or `SEGLOG_SERVER` says
/// otherwise: `seglog serve`'s default address.
pub const SERVER_DEFAULT: &str = "http://127.0.0.1:8000";

/// The options every client command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The server's HTTP address.
    #[arg(long, value_name = "URL", env = "SEGLOG_SERVER", default_value = SERVER_DEFAULT, global = true)]
    pub server: String,
    /// `human` (tables, one line per record) or `json` (for scripts).
    #[arg(long, value_enum, default_value_t = Format::Human, global = true)]
    pub output: Format,
    /// Show the progress line of long work on stderr even when it is not
    /// a terminal (it is shown on a terminal anyway), and leave its final
    /// state as a last line.
    #[arg(long, global = true)]
    pub progress: bool,
    /// Whether `server` came from `SEGLOG_SERVER` (set by `main.rs` from
    /// the parsed command line), so that an error can say so.
    #[arg(skip)]
    pub server_from_env: bool,
}

/// How results are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// Why a command failed; each kind has its own exit code, so a script can
/// tell them apart.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an error (no such topic, a topic that
    /// exists, a record too large, ...): exit 1.
    /// `status` and `code` are the server's reply's, when it was one.
    /// `next_offset` is where a search by time that stopped at its bound
    /// goes on from (code 42201).
    Refused {
        message: String,
        status: Option<u16>,
        code: Option<u32>,
        next_offset: Option<u64>,
    },
    /// The command line or the input is wrong: exit 2 (as clap's own
    /// usage errors).
    Usage(String),
    /// The server could not be reached, or its reply was not understood:
    /// exit 3. `maybe_applied` says whether the request may have reached
    /// the server and been carried out (a reply lost to a timeout or a
    /// reset connection), which a write must not take for "nothing
    /// happened".
    /// A reply that never came to a write is exit 4, as [`Failure::MaybeApplied`].
    Unreachable {
        message: String,
        maybe_applied: bool,
    },
    /// A write failed in a way that leaves unknown whether the server
    /// carried it out, in whole or in part (its reply was lost, or it
    /// answered a storage error that may have written): exit 4, so that
    /// a script does not take it for "nothing happened" (1, 2, 3) and
    /// send it again blindly, nor for success.
    MaybeApplied(String),
}

impl Failure {
    /// A refusal that is not a server's error reply (a seek kept lower, ...).
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure::Refused {
            message: message.into(),
            status: None,
            code: None,
            next_offset: None,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused { .. } => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable {
                maybe_applied: false,
                ..
            } => 3,
            Failure::Unreachable {
                maybe_applied: true,
                ..
            }
            | Failure::MaybeApplied(_) => 4,
        }
    }

    /// The server's stable error code, for a refusal it replied with.
    pub fn code(&self) -> Option<u32> {
        match self {
            Failure::Refused { code, .. } => *code,
            _ => None,
        }
    }

    /// The same failure with `note` added to its message.
    pub fn noted(mut self, note: &str) -> Failure {
        self.message_mut().push_str(note);
        self
    }

    /// The same failure with `prefix` before its message.
    pub fn prefixed(mut self, prefix: &str) -> Failure {
        self.message_mut().insert_str(0, prefix);
        self
    }

    fn message_mut(&mut self) -> &mut String {
        match self {
            Failure::Refused { message, .. }
            | Failure::Usage(message)
            | Failure::Unreachable { message, .. }
            | Failure::MaybeApplied(message) => message,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused { message, .. }
            | Failure::Usage(message)
            | Failure::Unreachable { message, .. }
            | Failure::MaybeApplied(message) => f.write_str(message),
        }
    }
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

/// A write to stdout failed: the reader left (`| head`), which ends the
/// command quietly, or another error, which is a failure.
pub fn stdout_failed(e: &std::io::Error) -> Failure {
    Failure::Unreachable {
        message: format!("cannot write to stdout: {e}"),
        maybe_applied: false,
    }
}

/// The client commands (`main.rs` parses them beside their [`Connection`]).
#[derive(Debug)]
pub enum Command {
    Topic(topic::TopicCommand),
    Produce(produce::ProduceArgs),
    Consume(consume::ConsumeArgs),
    Group(group::GroupCommand),
}

/// Runs a client command against the server `connection` names, prints
/// its failure if any, and returns its exit code.
pub fn run(command: Command, connection: &Connection) -> ExitCode {
    let client = match client::Client::new(&connection.server, connection.server_from_env) {
        Ok(client) => client,
        Err(failure) => return report("seglog", &failure),
    };
    let out = output::Out::new(connection.output, connection.progress);
    let (name, result) = match command {
        Command::Topic(command) => ("seglog topic", topic::run(&client, &out, command)),
        Command::Produce(args) => ("seglog produce", produce::run(&client, &out, &args)),
        Command::Consume(args) => ("seglog consume", consume::run(&client, &out, &args)),
        Command::Group(command) => ("seglog group", group::run(&client, &out, command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Done::Failed(failure)) => report(name, &failure),
        // The reader of stdout left (`seglog consume ... | head`).
        Err(Done::PipeClosed) => ExitCode::SUCCESS,
    }
}

fn report(name: &str, failure: &Failure) -> ExitCode {
    eprintln!("{name}: {failure}");
    ExitCode::from(failure.exit_code())
}

/// How a command ended early.
#[derive(Debug)]
pub enum Done {
    Failed(Failure),
    /// stdout's reader is gone: stop quietly.
    PipeClosed,
}

impl From<Failure> for Done {
    fn from(failure: Failure) -> Done {
        Done::Failed(failure)
    }
}

impl From<std::io::Error> for Done {
    fn from(e: std::io::Error) -> Done {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Done::PipeClosed
        } else {
            Done::Failed(stdout_failed(&e))
        }
    }
}

/// What a command returns.
pub type Outcome = std::result::Result<(), Done>;
