//! A NAT-PMP gateway emulator with ProtonVPN-like behaviour.
