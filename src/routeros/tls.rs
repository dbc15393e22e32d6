//! TLS for api-ssl (8729) with rustls.
