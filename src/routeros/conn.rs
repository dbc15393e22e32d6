//! One RouterOS API connection: connect, log in, run one command at a time.
