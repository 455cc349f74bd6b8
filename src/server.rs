//! `tidemark up`.
use crate::config::Config;
pub fn run(_cfg: Config) -> anyhow::Result<()> { anyhow::bail!("not yet") }
