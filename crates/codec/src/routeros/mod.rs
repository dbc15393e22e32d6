//! The RouterOS API's framing: words, sentences, commands and replies.

pub mod wire;
