//! [`ResultCode`]: how a NAT-PMP request ended (RFC 6886 §3.5), as replies carry it.

/// Result codes of RFC 6886 §3.5 (C-19).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ResultCode {
    /// 0: success.
    Success = 0,
    /// 1: unsupported version.
    UnsupportedVersion = 1,
    /// 2: not authorized / refused (policy, or a mapping we did not make).
    NotAuthorized = 2,
    /// 3: network failure (upstream or router unreachable).
    NetworkFailure = 3,
    /// 4: out of resources (no free port, upstream quota).
    OutOfResources = 4,
    /// 5: unsupported opcode.
    UnsupportedOpcode = 5,
}

impl ResultCode {
    /// The code as it travels on the wire.
    pub fn to_u16(self) -> u16 {
        self as u16
    }

    /// A known code, or `None` for values above 5 (C-20).
    pub fn from_u16(v: u16) -> Option<ResultCode> {
        Some(match v {
            0 => ResultCode::Success,
            1 => ResultCode::UnsupportedVersion,
            2 => ResultCode::NotAuthorized,
            3 => ResultCode::NetworkFailure,
            4 => ResultCode::OutOfResources,
            5 => ResultCode::UnsupportedOpcode,
            _ => return None,
        })
    }

    /// Short human text, as libnatpmp words it.
    pub fn describe(self) -> &'static str {
        match self {
            ResultCode::Success => "success",
            ResultCode::UnsupportedVersion => "unsupported version",
            ResultCode::NotAuthorized => "not authorized/refused",
            ResultCode::NetworkFailure => "network failure",
            ResultCode::OutOfResources => "out of resources",
            ResultCode::UnsupportedOpcode => "unsupported opcode",
        }
    }
}

impl std::fmt::Display for ResultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.to_u16(), self.describe())
    }
}
