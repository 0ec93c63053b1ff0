//! What a connection may do with topics, from its user's prefixes: the
//! one rule both front ends apply (Kafka answers
//! TOPIC_AUTHORIZATION_FAILED, HTTP 403).
//!
//! A user with no prefixes at all may read and write every topic. A user
//! with any may read the topics under its read prefixes, write those
//! under its write prefixes, and see (in topic lists, Kafka's Metadata)
//! those under either. The prefix `""` covers every topic.

use std::sync::Arc;

use super::users::User;

/// What one connection or request may do.
#[derive(Clone, Debug)]
pub enum Access {
    /// No users are configured (no `--users`): everything, as without auth.
    Open,
    /// An authenticated user.
    User(Arc<User>),
}

impl Access {
    /// The user's name, if authenticated.
    pub fn user(&self) -> Option<&str> {
        match self {
            Access::Open => None,
            Access::User(user) => Some(&user.name),
        }
    }

    fn unlimited(&self) -> bool {
        match self {
            Access::Open => true,
            Access::User(user) => user.read.is_empty() && user.write.is_empty(),
        }
    }

    /// Fetch, list offsets, commit or fetch a group's offsets of `topic`.
    pub fn may_read(&self, topic: &str) -> bool {
        self.unlimited() || matches!(self, Access::User(user) if under(&user.read, topic))
    }

    /// Produce to, create, delete or alter `topic`.
    pub fn may_write(&self, topic: &str) -> bool {
        self.unlimited() || matches!(self, Access::User(user) if under(&user.write, topic))
    }

    /// See `topic` in a list or in Metadata: read or write.
    pub fn may_see(&self, topic: &str) -> bool {
        self.may_read(topic) || self.may_write(topic)
    }

    /// Whether every topic is allowed for everything (no check is needed).
    pub fn is_unlimited(&self) -> bool {
        self.unlimited()
    }
}

fn under(prefixes: &[String], topic: &str) -> bool {
    prefixes.iter().any(|p| topic.starts_with(p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(read: &[&str], write: &[&str]) -> Access {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        let user = User::new("u", b"pw", strings(read), strings(write)).expect("user");
        Access::User(Arc::new(user))
    }

    #[test]
    fn no_prefixes_is_every_topic() {
        for access in [Access::Open, user(&[], &[])] {
            assert!(access.may_read("x") && access.may_write("x") && access.may_see("x"));
        }
    }

    #[test]
    fn prefixes_split_reading_from_writing() {
        let access = user(&["orders."], &["logs."]);
        assert!(access.may_read("orders.eu") && !access.may_write("orders.eu"));
        assert!(!access.may_read("logs.a") && access.may_write("logs.a"));
        assert!(access.may_see("logs.a") && access.may_see("orders.eu"));
        assert!(!access.may_see("secret") && !access.may_read("orders"));
        let everything_readable = user(&[""], &["mine."]);
        assert!(everything_readable.may_read("any") && !everything_readable.may_write("any"));
    }
}
