//! Identifiers, checked against strict patterns before they are ever used to build a path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorCode};

/// A VM id: `vm-` followed by exactly 8 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(String);

impl VmId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let n: u32 = rand::random();
        Self(format!("vm-{n:08x}"))
    }

    /// Parse and validate.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if is_vm_id(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::new(
                ErrorCode::ValidationId,
                format!("Invalid VM id: {:?}", truncate(s)),
            )
            .why("VM ids are `vm-` followed by 8 lowercase hex digits, e.g. vm-1a2b3c4d.")
            .detail("vmId", truncate(s)))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A snapshot id: `<vm id>-<creation time in ms since the epoch>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// The id for a snapshot of `vm` taken at `epoch_ms`.
    pub fn new(vm: &VmId, epoch_ms: u64) -> Self {
        Self(format!("{}-{epoch_ms}", vm.as_str()))
    }

    /// Parse and validate.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = s.len() > 12
            && is_vm_id(&s[..11])
            && s.as_bytes()[11] == b'-'
            && (1..=20).contains(&(s.len() - 12))
            && s[12..].bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::new(
                ErrorCode::ValidationId,
                format!("Invalid snapshot id: {:?}", truncate(s)),
            )
            .why("Snapshot ids are a VM id, a dash and a number, e.g. vm-1a2b3c4d-1767225600000.")
            .detail("snapshotId", truncate(s)))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_vm_id(s: &str) -> bool {
    s.len() == 11
        && s.starts_with("vm-")
        && s[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Keep error messages bounded even for hostile input.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

macro_rules! string_id {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::parse(s)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_id!(VmId);
string_id!(SnapshotId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_ids() {
        for good in ["vm-00000000", "vm-1a2b3c4d", "vm-ffffffff"] {
            assert!(VmId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "vm-",
            "vm-1234567",
            "vm-123456789",
            "vm-1A2B3C4D",
            "vm-1a2b3c4g",
            "../vm-1a2b3c4d",
            "vm-1a2b3c4d/..",
            "VM-1a2b3c4d",
            "vm_1a2b3c4d",
            "vm-1a2b 3c4",
        ] {
            let e = VmId::parse(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::ValidationId, "{bad}");
        }
    }

    #[test]
    fn generated_ids_validate() {
        for _ in 0..100 {
            let id = VmId::generate();
            assert!(VmId::parse(id.as_str()).is_ok(), "{id}");
        }
    }

    #[test]
    fn snapshot_ids() {
        let vm = VmId::parse("vm-1a2b3c4d").unwrap();
        let s = SnapshotId::new(&vm, 1_767_225_600_000);
        assert_eq!(s.as_str(), "vm-1a2b3c4d-1767225600000");
        assert!(SnapshotId::parse(s.as_str()).is_ok());
        for bad in [
            "..",
            "../..",
            "vm-1a2b3c4d",
            "vm-1a2b3c4d-",
            "vm-1a2b3c4d-12a",
            "vm-1a2b3c4d-1/..",
            "x",
        ] {
            assert_eq!(
                SnapshotId::parse(bad).unwrap_err().code(),
                ErrorCode::ValidationId,
                "{bad}"
            );
        }
    }

    #[test]
    fn serde_rejects_bad_ids() {
        assert!(serde_json::from_str::<VmId>("\"../etc\"").is_err());
        assert_eq!(
            serde_json::from_str::<VmId>("\"vm-0000abcd\"")
                .unwrap()
                .as_str(),
            "vm-0000abcd"
        );
    }
}
