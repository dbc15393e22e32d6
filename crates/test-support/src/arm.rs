//! The ARM builds under test: the static binaries `scripts/static-build.sh --arch all` writes
//! and the image files `scripts/image.sh --arch all` writes, run on this x86_64 machine through
//! qemu-user, registered with the kernel's binfmt_misc (`scripts/qemu-binfmt.sh`, which the test
//! command runs). The registration has the `F` flag, so the ARM binaries run as they are, also
//! in an empty root and inside containers.

use std::path::{Path, PathBuf};

/// One ARM architecture the project ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// 64-bit ARM (RB5009, hAP ax², hAP ax³, CCR2004, Chateau).
    Arm64,
    /// 32-bit ARM with hard float (hAP ac², hAP ac³, RB4011).
    Armv7,
}

impl Arch {
    /// Both.
    pub const ALL: [Arch; 2] = [Arch::Arm64, Arch::Armv7];

    /// The name the scripts use (`--arch`, file names).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armv7 => "armv7",
        }
    }

    /// The container platform (`podman run --platform`).
    pub fn platform(self) -> &'static str {
        match self {
            Arch::Arm64 => "linux/arm64",
            Arch::Armv7 => "linux/arm/v7",
        }
    }

    /// The binfmt_misc entry that runs this architecture's binaries.
    fn binfmt(self) -> &'static str {
        match self {
            Arch::Arm64 => "qemu-aarch64",
            Arch::Armv7 => "qemu-arm",
        }
    }

    /// The static binary (`target/static/double-natpmp-<arch>`).
    pub fn binary(self) -> PathBuf {
        repo().join(format!("target/static/double-natpmp-{}", self.name()))
    }

    /// The image file (`target/image/double-natpmp-<arch>.tar`).
    pub fn archive(self) -> PathBuf {
        repo().join(format!("target/image/double-natpmp-{}.tar", self.name()))
    }

    /// Whether the kernel runs this architecture's binaries through qemu-user: the binfmt_misc
    /// entry exists and is enabled.
    pub fn runs_here(self) -> bool {
        let entry = Path::new("/proc/sys/fs/binfmt_misc").join(self.binfmt());
        std::fs::read_to_string(entry).is_ok_and(|text| text.starts_with("enabled"))
    }

    /// Whether `test` can run this architecture's `file`: it exists and qemu-user is
    /// registered. Under CI=true a missing one fails the test; locally it is a loud skip.
    pub fn available(self, test: &str, file: &Path, made_by: &str) -> bool {
        if !file.is_file() {
            return crate::skip::skip(test, &format!("needs {}: run {made_by}", file.display()));
        }
        if !self.runs_here() {
            return crate::skip::skip(
                test,
                &format!(
                    "needs qemu-user for {} registered with binfmt_misc: run scripts/qemu-binfmt.sh",
                    self.name()
                ),
            );
        }
        true
    }
}

fn repo() -> &'static Path {
    crate::repo_root()
}
