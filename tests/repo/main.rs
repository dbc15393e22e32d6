//! The repository ring: checks of the repository itself, not of the daemon's behaviour: the
//! docs' citations resolve (`docs.rs`), and the source layout has no import cycle and no
//! oversized file (`layout.rs`).

mod docs;
mod layout;
