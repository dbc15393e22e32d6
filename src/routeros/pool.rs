//! The pool of RouterOS API connections (deadpool).
