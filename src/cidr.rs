//! IPv4 networks ([`Cidr`]) and lists of them ([`CidrList`]): who may ask for mappings
//! (ALLOWED_CLIENTS). Parsed by the configuration, matched by the NAT-PMP front end; neither
//! needs the other for it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use thiserror::Error;

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address (host bits cleared).
    pub network: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix_len` bits (host bits cleared); `None` above 32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Cidr> {
        (prefix_len <= 32).then(|| Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)),
            prefix_len,
        })
    }

    /// Whether `addr` is inside this network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix_len) == u32::from(self.network)
    }
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len.min(32)))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// A list of IPv4 networks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CidrList(pub Vec<Cidr>);

impl CidrList {
    /// Whether any network contains `addr`.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.0.iter().any(|c| c.contains(addr))
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Cidr::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// A network list that does not parse; the text says what is expected.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("expected comma-separated IPv4 networks such as 192.168.88.0/24,10.0.0.0/8")]
pub struct CidrError;

impl FromStr for Cidr {
    type Err = CidrError;

    /// `a.b.c.d/len`, or a bare address for /32.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().map_err(|_| CidrError)?),
            None => (s, 32),
        };
        let addr = Ipv4Addr::from_str(addr).map_err(|_| CidrError)?;
        Cidr::new(addr, len).ok_or(CidrError)
    }
}

impl FromStr for CidrList {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<CidrList, CidrError> {
        parse_cidr_list(s)
    }
}

/// `ALLOWED_CLIENTS`: comma-separated `a.b.c.d/len` (a bare address means /32); at least one.
pub fn parse_cidr_list(s: &str) -> Result<CidrList, CidrError> {
    let list = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(Cidr::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err(CidrError);
    }
    Ok(CidrList(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_list_parses_and_matches() {
        let l = parse_cidr_list("192.168.88.0/24, 10.0.0.0/8,127.0.0.1").unwrap();
        assert!(l.contains("192.168.88.10".parse().unwrap()));
        assert!(l.contains("10.200.1.1".parse().unwrap()));
        assert!(l.contains("127.0.0.1".parse().unwrap()));
        assert!(!l.contains("127.0.0.2".parse().unwrap()));
        assert!(!l.contains("198.51.101.1".parse().unwrap()));
        assert!(parse_cidr_list("1.2.3.4/33").is_err());
        assert!(parse_cidr_list("").is_err());
        assert!(parse_cidr_list(" , ").is_err());
    }

    #[test]
    fn host_bits_are_cleared_and_zero_prefix_matches_everything() {
        let c: Cidr = "192.168.88.77/24".parse().unwrap();
        assert_eq!(c.to_string(), "192.168.88.0/24");
        let all: Cidr = "1.2.3.4/0".parse().unwrap();
        assert_eq!(all.network, Ipv4Addr::UNSPECIFIED);
        assert!(all.contains(Ipv4Addr::new(203, 0, 113, 9)));
    }
}
