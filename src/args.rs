//! Command-line flags of the `ril` subcommands and of `cargo xtask`: `--flag value` pairs read in
//! order, with errors that name the flag.

use std::str::FromStr;

use anyhow::{Context, Result, anyhow};

/// The flags of one subcommand.
pub struct Flags<'a> {
    it: std::slice::Iter<'a, String>,
    usage: &'a str,
}

impl<'a> Flags<'a> {
    pub fn new(args: &'a [String], usage: &'a str) -> Self {
        Self {
            it: args.iter(),
            usage,
        }
    }

    /// The next flag, or None after the last.
    pub fn next_flag(&mut self) -> Option<&'a str> {
        self.it.next().map(String::as_str)
    }

    /// The value that follows `flag`.
    pub fn value(&mut self, flag: &str) -> Result<String> {
        self.it
            .next()
            .cloned()
            .with_context(|| format!("{flag} needs a value"))
    }

    /// The value that follows `flag`, parsed.
    pub fn parse<T: FromStr>(&mut self, flag: &str) -> Result<T> {
        let v = self.value(flag)?;
        v.parse().map_err(|_| anyhow!("{flag}: cannot parse {v:?}"))
    }

    /// The error for a flag the subcommand does not know, with its usage.
    pub fn unknown(&self, flag: &str) -> anyhow::Error {
        anyhow!("unknown option {flag}\n{}", self.usage)
    }
}
