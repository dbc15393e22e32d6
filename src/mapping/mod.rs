//! The double-NAT mapping transactions (router rule + upstream mapping), port allocation,
//! expiry and reconciliation.
