//! A RouterOS API emulator that follows the real wire protocol and reply texts.
