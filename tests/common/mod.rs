//! Test support shared by the integration tests.

pub mod arm;
pub mod container;
pub mod daemon;
pub mod fakes;
pub mod lab;
pub mod skip;
pub mod traffic;
