//! The Connect listener: verified, durable, deduplicated, streaming.

pub mod formats;
pub mod notification;
