//! `seglog users add|remove|list`: the users file that `seglog serve
//! --users PATH` reads, edited offline. The file is replaced atomically
//! on every change; a running server sees the change at its next start.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use super::users::{PASSWORD_BYTES_MAX, User, Users};
use crate::table::{Align, Table};

/// Options every `seglog users` command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct UsersArgs {
    /// The users file (created by the first `add`); the same PATH as
    /// `seglog serve --users`.
    #[arg(
        long = "users",
        value_name = "PATH",
        env = "SEGLOG_USERS",
        global = true
    )]
    pub path: Option<PathBuf>,
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum UsersCommand {
    /// Add a user, or replace an existing user's password and prefixes.
    Add {
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(
            long,
            conflicts_with = "password",
            required_unless_present = "password"
        )]
        password_stdin: bool,
        /// The password (visible to other users of this machine in the
        /// process list: prefer --password-stdin).
        #[arg(long, value_name = "PASSWORD")]
        password: Option<String>,
        /// A topic prefix the user may read (fetch, list offsets, commit
        /// offsets); repeat for more. No --read and no --write: every topic.
        #[arg(long = "read", value_name = "PREFIX")]
        read: Vec<String>,
        /// A topic prefix the user may write (produce, create, delete,
        /// alter); repeat for more.
        #[arg(long = "write", value_name = "PREFIX")]
        write: Vec<String>,
    },
    /// Remove a user.
    Remove { name: String },
    /// List the users and their prefixes (never a password or key).
    List,
}

/// Runs a `seglog users` command; the error is the sentence `main` prints.
pub fn run(args: UsersArgs, stdin: &mut dyn BufRead, out: &mut dyn Write) -> Result<(), String> {
    let path = args.path.ok_or(
        "give the users file with --users PATH (or SEGLOG_USERS); `seglog serve --users PATH` \
         reads the same file",
    )?;
    let mut users = Users::load_or_empty(&path)?;
    match args.command {
        UsersCommand::Add {
            name,
            password_stdin,
            password,
            read,
            write,
        } => {
            let password = match password {
                Some(password) if !password_stdin => password,
                _ => read_password(stdin)?,
            };
            let user = User::new(&name, password.as_bytes(), read, write)?;
            let replaced = users.put(user)?;
            users.save(&path)?;
            let done = if replaced { "replaced" } else { "added" };
            writeln!(out, "{done} user {name} in {}", path.display()).map_err(io)?;
        }
        UsersCommand::Remove { name } => {
            if !users.remove(&name) {
                return Err(format!(
                    "no user {name:?} in {} (`seglog users list` lists them)",
                    path.display()
                ));
            }
            users.save(&path)?;
            writeln!(out, "removed user {name} from {}", path.display()).map_err(io)?;
        }
        UsersCommand::List => {
            let mut table = Table::new(&[
                ("USER", Align::Left),
                ("READ", Align::Left),
                ("WRITE", Align::Left),
            ])
            .unindented();
            for user in users.iter() {
                let prefixes = |list: &[String]| {
                    if user.read.is_empty() && user.write.is_empty() {
                        "(all topics)".to_string()
                    } else if list.is_empty() {
                        "-".to_string()
                    } else {
                        list.iter()
                            .map(|p| format!("{p:?}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    }
                };
                table.push(vec![
                    user.name.clone(),
                    prefixes(&user.read),
                    prefixes(&user.write),
                ]);
            }
            table.write(out).map_err(io)?;
        }
    }
    Ok(())
}

/// The first line of stdin, without its line end.
fn read_password(stdin: &mut dyn BufRead) -> Result<String, String> {
    let mut line = String::new();
    std::io::Read::take(stdin, PASSWORD_BYTES_MAX as u64 + 2)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err("no password on stdin (--password-stdin reads its first line)".into());
    }
    Ok(password.to_string())
}

fn io(e: std::io::Error) -> String {
    format!("cannot write to stdout: {e}")
}
