//! Alerting: rule files ([`rules`]) and their templates ([`template`]), evaluation at
//! event-time ticks with durable alert state ([`eval`]), and the alert manager ([`notify`]):
//! routing, grouping, silences, inhibition and delivery through a durable outbox.
pub mod api;
pub mod eval;
pub mod incremental;
pub mod kafka;
pub mod notify;
pub mod rules;
pub mod template;
