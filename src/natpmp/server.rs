//! The UDP front end LAN clients talk to.
